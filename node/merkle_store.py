"""Merkle maps kept in LevelDB, read a node at a time through a bounded cache.

A replica's channels, forwards and kept messages are :class:`~node.merkle_map.MerkleMap`
s. Storage keeps every node of each map under its own key, so a restart reads a map's
top node and nothing else, and a walk reads the nodes on its path when it needs them:

- a **leaf** is the map's record itself (``C``, ``W`` or ``K`` + route + key, the
  value's encoding), which storage writes anyway; it is not stored twice;
- a **branch** is stored under ``N`` + route + map tag + its hash (:func:`branch_key`),
  as :func:`encode_branch`: ``depth (1) ‖ left hash (32) ‖ right hash (32) ‖ left
  count (8) ‖ right count (8) ‖ right subtree's first key (32)``, 113 bytes. The
  children's hashes give the branch's hash, and the counts and first keys let a
  walk make the children's stubs without reading them. Only branches of ``BUCKET``
  keys or more are stored: a smaller subtree is read back whole from its records
  (their run from its first key), which spares a block most of a trie's nodes;
- the **top** is ``N`` + route + map tag (:func:`top_key`): ``hash (32) ‖ first key
  (32) ‖ count (8)``, absent for an empty map.

Every node read is checked against the hash its parent holds, so storage cannot
feed a map a node it does not commit to. A wrong node is :class:`StoredNodeError`.

Pruning: the only stored version of a map is the current one. The block that
replaces a branch deletes it (:func:`node_writes`), in the same batch that writes
its replacement, so the disk holds exactly the nodes the replica's current roots
reach. The in-memory states a node keeps for a while after they are replaced (for
reads of recent states, frames in flight) still reach nodes that are no longer
stored: those are **pinned** before the batch that deletes them (:meth:`NodeCache.pin`),
kept in memory for as long as such a state holds them, and never evicted.

The cache (:class:`NodeCache`) bounds what stored nodes take in memory: every node
read from LevelDB, or stored by a block, is accounted (an estimate of its Python
objects) and the least recently used ones are dropped past the budget. New nodes
that no block has stored yet are not in it: a frame's work, bounded by the frame.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from node.codec import HASH_LEN, keccak
from node.merkle_map import (
    KEY_LEN,
    Branch,
    Leaf,
    MerkleMap,
    NodeChanges,
    Ref,
    Source,
    Stub,
    owning_stub,
)

NODE = b"N"
BRANCH_LEN = 1 + 2 * HASH_LEN + 8 + 8 + KEY_LEN
TOP_LEN = HASH_LEN + KEY_LEN + 8
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
# A subtree of fewer keys is not stored as nodes: it is read back whole from its
# records (one range scan of at most 15 records), which spares a block the writes and
# deletes of a trie's lowest levels, most of its nodes.
BUCKET = 16

# What a node read into memory costs, roughly (CPython objects: the node, its hash
# and key bytes, a branch's two child stubs; a leaf's value, decoded, and its cached
# encoding). Measured with tracemalloc on a stored hub (docs/STORAGE.md, "The node cache").
_BRANCH_COST = 900
_LEAF_COST = 400
_VALUE_FACTOR = 8


class StoredNodeError(Exception):
    """A stored node is missing or does not match the hash that names it."""


def branch_key(prefix: bytes, h: bytes) -> bytes:
    return prefix + h


def top_key(prefix: bytes) -> bytes:
    return prefix


def encode_branch(branch: Branch[Any]) -> bytes:
    left, right = branch.left, branch.right
    return b"".join(
        (
            bytes([branch.depth]),
            left.h or left.digest(),
            right.h or right.digest(),
            left.count.to_bytes(8, "big"),
            right.count.to_bytes(8, "big"),
            right.rep,
        )
    )


def decode_branch(
    raw: bytes, rep: bytes, count: int, stub_of: Callable[[bytes, bytes, int], Stub[Any]]
) -> Branch[Any]:
    """The branch that :func:`encode_branch` gave ``raw``, for a node known (by its
    parent) to start at key ``rep`` and hold ``count`` keys; its children are
    ``stub_of(hash, first key, count)``. ValueError if it cannot be that node (its
    hash is the caller's to check: ``node.h`` is set from ``raw``)."""
    if len(raw) != BRANCH_LEN:
        raise ValueError(f"a branch is {BRANCH_LEN} bytes, not {len(raw)}")
    depth = raw[0]
    left_h, right_h = raw[1:33], raw[33:65]
    left_count = int.from_bytes(raw[65:73], "big")
    right_count = int.from_bytes(raw[73:81], "big")
    right_rep = raw[81:]
    # The right subtree's first key agrees with the branch's keys above ``depth``
    # and takes bit 1 there (the left one starts at the branch's own first key).
    if (
        left_count < 1
        or right_count < 1
        or left_count + right_count != count
        or not _splits_at(rep, right_rep, depth)
    ):
        raise ValueError("malformed")
    node = Branch(
        depth, stub_of(left_h, rep, left_count), stub_of(right_h, right_rep, right_count), count
    )
    node.h = keccak(b"\x01" + raw[:65])
    return node


def encode_top(m: MerkleMap[Any]) -> bytes | None:
    top = m.top
    if top is None:
        return None
    return m.root + top.rep + top.count.to_bytes(8, "big")


class NodeCache:
    """The stored nodes in memory, least recently used first, within ``budget`` bytes
    (estimated). Shared by every map of one store; safe across threads (the loop, the
    store's writer, the threads that serve reads)."""

    def __init__(self, budget: int = DEFAULT_CACHE_BYTES) -> None:
        if budget < 0:
            raise ValueError("the cache budget is a number of bytes, at least 0")
        self.budget = budget
        self.used = 0
        self.loads = 0  # nodes read from LevelDB
        self._lru: OrderedDict[Stub[Any], int] = OrderedDict()
        self._lock = threading.Lock()
        # One stub per stored node while anything holds it, so pinning it (or reading
        # it back) serves every version of every map that reaches that node.
        self._live: weakref.WeakValueDictionary[bytes, Stub[Any]] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._lru)

    def add(self, stub: Stub[Any], cost: int) -> None:
        """Account a stub whose node is now in memory; drop nodes past the budget."""
        if stub.pinned:
            return
        with self._lock:
            self._account(stub, cost)
            self._evict()

    def _account(self, stub: Stub[Any], cost: int) -> None:
        old = self._lru.pop(stub, None)
        if old is not None:
            self.used -= old
        self._lru[stub] = cost
        self.used += cost

    def _evict(self) -> None:
        """The clock: the oldest node goes, unless it was used since it last came up,
        in which case it gets a second chance at the end of the line. (An opening only
        sets ``stub.used``: no lock, no reordering, on the hot path.)"""
        lru = self._lru
        while self.used > self.budget and lru:
            stub, cost = lru.popitem(last=False)
            if stub.used:
                stub.used = False
                lru[stub] = cost
                continue
            self.used -= cost
            stub.node = None

    def stub(self, h: bytes, rep: bytes, count: int, source: Source[Any]) -> Stub[Any]:
        """The stub of the stored node ``h``: the one already held, if any, else a new
        one without its node."""
        with self._lock:
            stub = self._live.get(h)
            if stub is None:
                stub = self._live[h] = Stub(h, rep, count, source)
            return stub

    def stored(
        self,
        branches: list[Branch[Any]],
        small: list[Leaf[Any] | Branch[Any]],
        source: Source[Any],
        given: dict[int, Stub[Any]],
    ) -> list[Stub[Any]]:
        """Give each new stored branch, and each new small subtree's top, a stub,
        ``node.s``: the one already held for its hash, if any (never given another node
        object: the one it opens to reaches stubs), else a new one holding the node,
        accounted. One lock for all. Each stub goes into ``given`` by its node's id,
        which holds it while the caller points the map at it (``node.s`` is weak, and
        the budget may drop a stub from the cache as soon as it is accounted). Returns
        the stubs held for nodes inside the small subtrees (see ``MapSource.stored``)."""
        absorbed: list[Stub[Any]] = []
        with self._lock:
            live = self._live
            costs: list[tuple[Leaf[Any] | Branch[Any], int]] = [
                (node, _BRANCH_COST) for node in branches
            ]
            costs += [(node, _small_subtree(node, live, absorbed)) for node in small]
            for node, cost in costs:
                h = node.digest()
                stub = live.get(h)
                if stub is None:
                    stub = live[h] = Stub(h, node.rep, node.count, source, node)
                    self._account(stub, cost)
                node.s = weakref.ref(stub)
                given[id(node)] = stub
            self._evict()
        return absorbed

    def pin(self, stub: Stub[Any]) -> Leaf[Any] | Branch[Any]:
        """Keep ``stub``'s node (read now if it was dropped) in memory for as long as
        the stub lives: it is about to leave the store while older states reach it."""
        if stub.pinned and stub.node is not None:
            return stub.node
        node = stub.open()
        with self._lock:
            cost = self._lru.pop(stub, None)
            if cost is not None:
                self.used -= cost
            stub.node = node  # even if the budget dropped it as it was read
            stub.pinned = True
        return node


class MapSource[V]:
    """One stored map's nodes: its records under ``record_prefix`` + key, its branches
    and top under ``node_prefix``; ``decode`` turns a record's bytes into its value."""

    def __init__(
        self,
        get: Callable[[bytes], bytes | None],
        scan: Callable[[bytes, bytes], Iterable[tuple[bytes, bytes]]],
        node_prefix: bytes,
        record_prefix: bytes,
        decode: Callable[[bytes, bytes], V],
        cache: NodeCache,
    ) -> None:
        self._get = get
        self._scan = scan  # (start, stop): the keys and values from start, below stop
        self.node_prefix = node_prefix
        self.record_prefix = record_prefix
        self._decode = decode
        self.cache = cache
        self._records_end = _after(record_prefix)

    def top(self) -> MerkleMap[Any]:
        """The stored map, by its top record alone (empty if there is none)."""
        raw = self._read(top_key(self.node_prefix))
        if raw is None:
            return MerkleMap.empty()
        if len(raw) != TOP_LEN:
            raise StoredNodeError(f"the top of {self.node_prefix.hex()} is {len(raw)} bytes")
        count = int.from_bytes(raw[HASH_LEN + KEY_LEN :], "big")
        if count < 1:
            raise StoredNodeError(f"the top of {self.node_prefix.hex()} counts no keys")
        return MerkleMap.stored(
            self.cache.stub(raw[:HASH_LEN], raw[HASH_LEN : HASH_LEN + KEY_LEN], count, self)
        )

    def _read(self, key: bytes) -> bytes | None:
        try:
            return self._get(key)
        except RuntimeError as exc:  # plyvel: "Database is closed"
            raise StoredNodeError(f"cannot read {self._where()}: {exc}") from exc

    def load(self, stub: Stub[Any]) -> Leaf[Any] | Branch[Any]:
        node: Leaf[Any] | Branch[Any]
        if stub.count == 1:
            raw = self._read(self.record_prefix + stub.rep)
            if raw is None:
                raise StoredNodeError(f"record {stub.rep.hex()} of {self._where()} is missing")
            try:
                value = self._decode(stub.rep, raw)
            except ValueError as exc:
                raise StoredNodeError(f"record {stub.rep.hex()} of {self._where()}: {exc}") from exc
            node = Leaf(stub.rep, value)
            cost = _LEAF_COST + _VALUE_FACTOR * len(raw)
        elif stub.count < BUCKET:
            node, cost = self._bucket(stub)
        else:
            raw = self._read(branch_key(self.node_prefix, stub.h))
            if raw is None:
                raise StoredNodeError(f"node {stub.h.hex()} of {self._where()} is missing")
            node = self._branch(stub, raw)
            cost = _BRANCH_COST
        if node.digest() != stub.h:
            raise StoredNodeError(f"node {stub.h.hex()} of {self._where()} has another hash")
        node.s = weakref.ref(stub)
        stub.node = node
        self.cache.loads += 1
        self.cache.add(stub, cost)
        return node

    def _branch(self, stub: Stub[Any], raw: bytes) -> Branch[Any]:
        try:
            return decode_branch(
                raw, stub.rep, stub.count, lambda h, rep, n: self.cache.stub(h, rep, n, self)
            )
        except ValueError as exc:
            raise StoredNodeError(f"node {stub.h.hex()} of {self._where()}: {exc}") from None

    def _bucket(self, stub: Stub[Any]) -> tuple[Leaf[Any] | Branch[Any], int]:
        """A small subtree (fewer than ``BUCKET`` keys), not stored as nodes: rebuilt from
        its records. A subtree's keys are all the map's keys that share its prefix, so
        they are consecutive, from its first key: ``count`` records from ``rep``, one
        range scan. (Whatever those records are, the hash check in ``load`` decides.)"""
        pairs: list[tuple[bytes, Any]] = []
        cost = 0
        cut = len(self.record_prefix)
        try:
            for key, raw in self._scan(self.record_prefix + stub.rep, self._records_end):
                k = key[cut:]
                pairs.append((k, self._decode(k, raw)))
                cost += _LEAF_COST + _BRANCH_COST + _VALUE_FACTOR * len(raw)
                if len(pairs) == stub.count:
                    break
        except ValueError as exc:
            raise StoredNodeError(f"a record of {self._where()}: {exc}") from exc
        except RuntimeError as exc:  # plyvel: "Database is closed"
            raise StoredNodeError(f"cannot read {self._where()}: {exc}") from exc
        if len(pairs) < stub.count or pairs[0][0] != stub.rep:
            raise StoredNodeError(f"node {stub.h.hex()} of {self._where()}: missing records")
        top = MerkleMap[Any].from_items(pairs).top
        return top, cost  # type: ignore[return-value]

    def pin(self, stub: Stub[Any]) -> Leaf[Any] | Branch[Any]:
        return self.cache.pin(stub)

    def stored(self, m: MerkleMap[Any]) -> None:
        """After the batch holding ``m``'s new nodes is durable: give each stored one (a
        branch of ``BUCKET`` keys or more), and each small subtree below one, a stub in
        the cache (the one of an equal node, if one is held), and point ``m`` and the new
        branches at the stubs, so the nodes can leave memory like any node read back.
        Walks the new nodes only: it stops at stubs and at nodes already stored.

        A stored small subtree that ``m`` now holds inside a bigger small one (itself, or
        a node made anew with its hash) is stored no more as such: the walks of later
        blocks go through ``m``'s nodes, and will not reach its stub when they change its
        records. So it is pinned now, for the older states that reach it (its records
        are still ``m``'s, so it reads right)."""
        top = m.top
        if top is None:
            return
        branches: list[Branch[Any]] = []
        small: list[Leaf[Any] | Branch[Any]] = []
        stubs: dict[int, Stub[Any]] = {}  # by node id: what the new branches will point at
        todo: list[Ref[Any]] = [top]
        while todo:
            ref = todo.pop()
            if type(ref) is Stub:
                continue
            node: Leaf[Any] | Branch[Any] = ref  # type: ignore[assignment]
            held = owning_stub(node)
            if held is not None:  # stored already
                stubs[id(node)] = held
                continue
            if type(node) is Branch and node.count >= BUCKET:
                branches.append(node)
                todo.append(node.left)
                todo.append(node.right)
            else:
                small.append(node)
        for stub in self.cache.stored(branches, small, self, stubs):
            self.cache.pin(stub)
        for branch in branches:
            left, right = branch.left, branch.right
            if type(left) is not Stub:
                branch.left = stubs[id(left)]
            if type(right) is not Stub:
                branch.right = stubs[id(right)]
        if type(top) is not Stub:
            m.now_stored(stubs[id(top)])

    def _where(self) -> str:
        return f"map {self.node_prefix.hex()}"


def _small_subtree(
    node: Leaf[Any] | Branch[Any],
    live: weakref.WeakValueDictionary[bytes, Stub[Any]],
    absorbed: list[Stub[Any]],
) -> int:
    """What a new small subtree held whole in memory costs (its leaves and branches).
    A node inside it that a stub stands for (a stored small subtree, or an equal node
    made anew) goes into ``absorbed`` instead (its cost is its own)."""
    cost = 0
    todo: list[Ref[Any]] = [node]
    while todo:
        ref = todo.pop()
        if ref is not node:
            stub = (
                ref if type(ref) is Stub else owning_stub(ref) or live.get(ref.digest())  # type: ignore[arg-type]
            )
            if stub is not None:
                absorbed.append(stub)
                continue
        if type(ref) is Leaf:
            cost += _LEAF_COST + _VALUE_FACTOR * len(ref.value.encoded)
        else:
            branch: Branch[Any] = ref  # type: ignore[assignment]
            cost += _BRANCH_COST
            todo.append(branch.left)
            todo.append(branch.right)
    return cost


def _after(prefix: bytes) -> bytes:
    """The least key above every key that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _splits_at(left: bytes, right: bytes, depth: int) -> bool:
    """Whether two keys first differ at bit ``depth``, ``left`` below ``right``."""
    if left >= right:
        return False
    x = int.from_bytes(left, "big") ^ int.from_bytes(right, "big")
    return 8 * KEY_LEN - x.bit_length() == depth


@dataclass(frozen=True, slots=True)
class MapWrite:
    """One map of a replica that a block changed: its new version, and the nodes that
    differ from the version stored before (``MerkleMap.changes``)."""

    tag: bytes
    map: MerkleMap[Any]
    nodes: NodeChanges[Any]


def node_writes(prefix: bytes, w: MapWrite) -> Iterator[tuple[bytes, bytes | None]]:
    """The batch entries for a map's nodes under ``prefix`` (route + tag after ``N``):
    the deleted branches first, then the new ones, then the top. A branch whose hash
    is both removed and added (a value set back to what it was) stays."""
    added = {ref.digest(): ref for ref in w.nodes.added if ref.count >= BUCKET}
    for ref in w.nodes.removed:
        if ref.count >= BUCKET and ref.digest() not in added:
            yield branch_key(prefix, ref.digest()), None
    for h, ref in added.items():
        node = ref.open() if type(ref) is Stub else ref
        yield branch_key(prefix, h), encode_branch(node)  # type: ignore[arg-type]
    yield top_key(prefix), encode_top(w.map)


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "NODE",
    "MapSource",
    "MapWrite",
    "NodeCache",
    "StoredNodeError",
    "decode_branch",
    "encode_branch",
    "node_writes",
]
