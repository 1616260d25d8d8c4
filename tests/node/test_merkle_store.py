"""Merkle maps stored a node at a time (node/merkle_store.py), on a real LevelDB.

Blocks of random changes are stored as a node stores them (pin what a block
removes, write the batch, hand the new nodes to the cache), with caches so small
that almost every node is read back from the database. After every block:

- the map, and every older version still held, reads exactly what an in-memory
  map of the same pairs reads (items, pages, proofs, sizes, roots);
- the database holds exactly the current version: one record per key, one node per
  branch of the current trie, nothing a removed branch left behind (the pruning rule);
- a map opened again from the database alone (a restart) reads the same.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel_next as plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.codec import keccak
from node.merkle_map import Branch, MerkleMap, Stub, verify
from node.merkle_store import (
    BRANCH_LEN,
    BUCKET,
    MapSource,
    NodeCache,
    StoredNodeError,
    node_writes,
)
from node.merkle_store import MapWrite as Changed

NODES = b"Nx"
RECORDS = b"Rx"
KEYS = [keccak(b"key %d" % i) for i in range(48)]


class Val:
    __slots__ = ("encoded",)

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Val) and other.encoded == self.encoded

    def __hash__(self) -> int:
        return hash(self.encoded)


def _decode(key: bytes, raw: bytes) -> Val:
    return Val(raw)


class Stored:
    """One map stored in a real LevelDB the way ``node.storage`` stores a replica's."""

    def __init__(
        self,
        path: Path,
        budget: int,
        db: Any = None,
        cache: NodeCache | None = None,
        tag: bytes = b"x",
    ) -> None:
        self.db: Any = plyvel.DB(str(path), create_if_missing=True) if db is None else db
        self.cache = NodeCache(budget) if cache is None else cache
        self.nodes, self.records = b"N" + tag, b"R" + tag
        self.source: MapSource[Val] = MapSource(
            self.db.get, self._scan, self.nodes, self.records, _decode, self.cache
        )
        self.map: MerkleMap[Val] = MerkleMap.empty()

    def block(self, changes: dict[bytes, Val | None]) -> MerkleMap[Val]:
        return self.adopt(self.map.set_many(changes))

    def adopt(self, new: MerkleMap[Val]) -> MerkleMap[Val]:
        """Store ``new`` as this map's next version (made from this map, or from
        another map's version of the same pairs, as a replica adopts a frame's outcome
        that another local replica computed)."""
        diff, nodes = new.changes(self.map)
        w = Changed(b"x", new, nodes)
        with self.db.write_batch(transaction=True, sync=True) as batch:
            for key, value in diff.items():
                if value is None:
                    batch.delete(self.records + key)
                else:
                    batch.put(self.records + key, value.encoded)
            for key, raw in node_writes(self.nodes, w):
                if raw is None:
                    batch.delete(key)
                else:
                    batch.put(key, raw)
        self.source.stored(new)
        self.map = new
        return new

    def reopen(self, budget: int) -> MerkleMap[Val]:
        return MapSource(
            self.db.get, self._scan, self.nodes, self.records, _decode, NodeCache(budget)
        ).top()

    def _scan(self, start: bytes, stop: bytes) -> Any:
        return self.db.iterator(start=start, stop=stop)

    def stored_nodes(self) -> set[bytes]:
        return {
            k[len(self.nodes) :]
            for k, v in self.db.iterator(prefix=self.nodes)
            if len(k) == len(self.nodes) + 32 and len(v) == BRANCH_LEN
        }

    def stored_records(self) -> dict[bytes, bytes]:
        return {k[len(self.records) :]: v for k, v in self.db.iterator(prefix=self.records)}

    def check(self, pairs: dict[bytes, Val]) -> None:
        """The database holds this map's current version and nothing else."""
        assert self.stored_records() == {k: v.encoded for k, v in pairs.items()}
        assert self.stored_nodes() == _branch_hashes(MerkleMap.from_items(pairs.items()))


def _branch_hashes(m: MerkleMap[Any]) -> set[bytes]:
    """The branches storage keeps: those over ``BUCKET`` keys or more."""
    out: set[bytes] = set()

    def walk(ref: Any) -> Iterator[None]:
        node = ref.open() if type(ref) is Stub else ref
        if type(node) is Branch:
            if node.count >= BUCKET:
                out.add(node.digest())
            yield from walk(node.left)
            yield from walk(node.right)

    if m.top is not None:
        for _ in walk(m.top):
            pass
    return out


def _same(m: MerkleMap[Val], pairs: dict[bytes, Val]) -> None:
    reference = MerkleMap.from_items(pairs.items())
    assert m.root == reference.root
    assert len(m) == len(pairs)
    assert list(m.items()) == sorted(pairs.items())
    for key in KEYS[::5]:
        assert m.get(key) == pairs.get(key)
        assert list(m.items_from(key)) == list(reference.items_from(key))
        proof = m.prove(key)
        assert proof == reference.prove(key)
        value = pairs.get(key)
        assert verify(m.root, key, None if value is None else value.encoded, proof)


changes_st = st.dictionaries(
    st.integers(0, len(KEYS) - 1),
    st.one_of(st.none(), st.binary(min_size=1, max_size=40)),
    max_size=12,
)


@settings(deadline=None, max_examples=40)
@given(blocks=st.lists(changes_st, min_size=1, max_size=12), budget=st.sampled_from([0, 3000]))
def test_a_stored_map_reads_as_the_same_map_in_memory(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[dict[int, bytes | None]], budget: int
) -> None:
    s = Stored(tmp_path_factory.mktemp("db"), budget)
    try:
        pairs: dict[bytes, Val] = {}
        older: list[tuple[MerkleMap[Val], dict[bytes, Val]]] = []
        for block in blocks:
            m = s.block(_apply(pairs, block))
            _same(m, pairs)
            s.check(pairs)
            older.append((m, dict(pairs)))
        # Older versions still read right: their removed nodes were kept in memory.
        for m, then in older:
            assert dict(m.items()) == then
            assert m.root == MerkleMap.from_items(then.items()).root
        _same(s.reopen(budget), pairs)
    finally:
        s.db.close()


def _apply(pairs: dict[bytes, Val], block: dict[int, bytes | None]) -> dict[bytes, Val | None]:
    changes = {KEYS[i]: None if v is None else Val(v) for i, v in block.items()}
    for key, value in changes.items():
        if value is None:
            pairs.pop(key, None)
        else:
            pairs[key] = value
    return changes


@settings(deadline=None, max_examples=40)
@given(
    before=st.lists(changes_st, min_size=1, max_size=4),
    first=st.lists(changes_st, max_size=6),
    second=st.lists(changes_st, max_size=6),
    budget=st.sampled_from([0, 3000]),
)
def test_two_maps_that_shared_a_version_keep_their_own_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[dict[int, bytes | None]],
    first: list[dict[int, bytes | None]],
    second: list[dict[int, bytes | None]],
    budget: int,
) -> None:
    """Two replicas on one server, one cache: the second adopts the first's version (a
    frame outcome computed once), then each goes on alone. Each namespace holds its own
    current version, and every version either held reads right."""
    db = plyvel.DB(str(tmp_path_factory.mktemp("db")), create_if_missing=True)
    try:
        cache = NodeCache(budget)
        a = Stored(Path(), budget, db, cache, b"a")
        b = Stored(Path(), budget, db, cache, b"b")
        pairs: dict[bytes, Val] = {}
        held: list[tuple[MerkleMap[Val], dict[bytes, Val]]] = []
        for block in before:
            changes = _apply(pairs, block)
            shared = a.block(changes)
            b.adopt(shared)
            held.append((shared, dict(pairs)))
        a_pairs, b_pairs = dict(pairs), dict(pairs)
        for mine, other in ((first, a), (second, b)):
            own = a_pairs if other is a else b_pairs
            for block in mine:
                held.append((other.block(_apply(own, block)), dict(own)))
        a.check(a_pairs)
        b.check(b_pairs)
        _same(a.map, a_pairs)
        _same(b.map, b_pairs)
        for m, then in held:
            assert dict(m.items()) == then
        _same(a.reopen(budget), a_pairs)
        _same(b.reopen(budget), b_pairs)
    finally:
        db.close()


def test_a_map_read_back_reads_only_the_path_it_walks(tmp_path: Path) -> None:
    """A restart reads the top record only; one lookup reads one path (about log2 N
    nodes), and the cache keeps what it read."""
    s = Stored(tmp_path / "db", 1 << 20)
    pairs = {keccak(b"many %d" % i): Val(b"v%d" % i) for i in range(4096)}
    s.block(dict(pairs))
    s.db.close()
    s.db = plyvel.DB(str(tmp_path / "db"))
    cache = NodeCache(1 << 20)
    m = MapSource(s.db.get, s._scan, NODES, RECORDS, _decode, cache).top()
    assert len(m) == 4096
    assert cache.loads == 0
    key = next(iter(sorted(pairs)))
    assert m.get(key) == pairs[key]
    walked = cache.loads
    # A random trie of 4,096 keys is about 12 deep; its lowest levels (subtrees of
    # fewer than 16 keys) come in one range scan of their records.
    assert 2 <= walked <= 20
    assert m.get(key) == pairs[key]
    assert cache.loads == walked
    s.db.close()


def test_the_cache_stays_within_its_budget(tmp_path: Path) -> None:
    s = Stored(tmp_path / "db", 1 << 20)
    pairs = {keccak(b"many %d" % i): Val(bytes(100)) for i in range(3000)}
    s.block(dict(pairs))
    cache = NodeCache(200_000)
    m = MapSource(s.db.get, s._scan, NODES, RECORDS, _decode, cache).top()
    assert dict(m.items()) == pairs  # every stored branch and small subtree read once
    assert cache.loads >= 2 * 3000 // BUCKET
    assert 0 < cache.used <= 200_000
    assert len(cache) < 200
    s.db.close()


def test_a_closed_store_is_a_clear_error(tmp_path: Path) -> None:
    s = Stored(tmp_path / "db", 0)
    s.block({KEYS[0]: Val(b"a"), KEYS[1]: Val(b"b")})
    s.db.close()
    with pytest.raises(StoredNodeError, match="cannot read"):
        s.map.get(KEYS[0])


def test_a_dropped_version_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """A stored node and its stub hold each other one way only (``node.s`` is weak): an
    older version whose nodes a block pinned is freed by reference counting as soon as
    nothing holds it, with the cyclic collector off."""
    s = Stored(tmp_path / "db", 1 << 20)
    pairs = {keccak(b"many %d" % i): Val(b"v%d" % i) for i in range(2048)}
    old = s.block(dict(pairs))
    top = old.top
    assert type(top) is Stub
    pinned_before = top
    changed: dict[bytes, Val | None] = dict.fromkeys(list(pairs)[:200], Val(b"new"))
    gc.disable()
    try:
        s.block(changed)  # deletes the old top and the branches above the changes
        assert pinned_before.pinned
        assert pinned_before.node is not None
        probe = weakref.ref(pinned_before)
        assert old.get(KEYS[0]) is None
        assert old.get(next(iter(pairs))) == Val(b"v0")
        del old, top, pinned_before
        assert probe() is None  # and with it its node, which only the stub held
        assert dict(s.map.items()) == {**pairs, **changed}
    finally:
        gc.enable()
    s.db.close()
