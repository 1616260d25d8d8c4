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
  walk make the children's stubs without reading them;
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from node.codec import HASH_LEN, keccak
from node.merkle_map import KEY_LEN, Branch, Leaf, MerkleMap, NodeChanges, Source, Stub

NODE = b"N"
BRANCH_LEN = 1 + 2 * HASH_LEN + 8 + 8 + KEY_LEN
TOP_LEN = HASH_LEN + KEY_LEN + 8
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

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
        """Account a stub whose node is now in memory; drop the oldest past the budget."""
        if stub.pinned:
            return
        with self._lock:
            old = self._lru.pop(stub, None)
            if old is not None:
                self.used -= old
            self._lru[stub] = cost
            self.used += cost
            while self.used > self.budget and self._lru:
                dropped, c = self._lru.popitem(last=False)
                self.used -= c
                dropped.node = None

    def stub(
        self,
        h: bytes,
        rep: bytes,
        count: int,
        source: Source[Any],
        node: Leaf[Any] | Branch[Any] | None = None,
        cost: int = 0,
    ) -> Stub[Any]:
        """The stub of the stored node ``h``: the one already held, if any, else a new
        one holding ``node`` (whose children must be stubs or hold theirs). A held
        stub is never given another node object: the one it opens to reaches stubs."""
        with self._lock:
            stub = self._live.get(h)
            if stub is not None:
                return stub
            stub = self._live[h] = Stub(h, rep, count, source, node)
        if node is not None:
            self.add(stub, cost)
        return stub

    def touch(self, stub: Stub[Any]) -> None:
        with self._lock:
            if stub in self._lru:
                self._lru.move_to_end(stub)

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
        node_prefix: bytes,
        record_prefix: bytes,
        decode: Callable[[bytes, bytes], V],
        cache: NodeCache,
    ) -> None:
        self._get = get
        self.node_prefix = node_prefix
        self.record_prefix = record_prefix
        self._decode = decode
        self.cache = cache

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
        else:
            raw = self._read(branch_key(self.node_prefix, stub.h))
            if raw is None:
                raise StoredNodeError(f"node {stub.h.hex()} of {self._where()} is missing")
            node = self._branch(stub, raw)
            cost = _BRANCH_COST
        if node.digest() != stub.h:
            raise StoredNodeError(f"node {stub.h.hex()} of {self._where()} has another hash")
        node.s = stub
        stub.node = node
        self.cache.loads += 1
        self.cache.add(stub, cost)
        return node

    def _branch(self, stub: Stub[Any], raw: bytes) -> Branch[Any]:
        if len(raw) != BRANCH_LEN:
            raise StoredNodeError(f"node {stub.h.hex()} of {self._where()} is {len(raw)} bytes")
        depth = raw[0]
        left_h, right_h = raw[1:33], raw[33:65]
        left_count = int.from_bytes(raw[65:73], "big")
        right_count = int.from_bytes(raw[73:81], "big")
        right_rep = raw[81:]
        rep = stub.rep
        # The right subtree's first key agrees with the branch's keys above ``depth``
        # and takes bit 1 there (the left one starts at the branch's own first key).
        if (
            left_count < 1
            or right_count < 1
            or left_count + right_count != stub.count
            or not _splits_at(rep, right_rep, depth)
        ):
            raise StoredNodeError(f"node {stub.h.hex()} of {self._where()} is malformed")
        node = Branch(
            depth,
            self.cache.stub(left_h, rep, left_count, self),
            self.cache.stub(right_h, right_rep, right_count, self),
            stub.count,
        )
        node.h = keccak(b"\x01" + raw[:65])
        return node

    def touch(self, stub: Stub[Any]) -> None:
        self.cache.touch(stub)

    def pin(self, stub: Stub[Any]) -> Leaf[Any] | Branch[Any]:
        return self.cache.pin(stub)

    def stored(self, m: MerkleMap[Any], nodes: NodeChanges[Any]) -> None:
        """After the batch holding ``nodes.added`` (new nodes of ``m``) is durable: give
        each a stub in the cache (the one of an equal node, if one is held), and point
        ``m`` and the new branches at the stubs, so the nodes can leave memory like any
        node read back."""
        for same in nodes.same:
            # Equal to the stored node in its place, but made anew with its own
            # subtree: the stored node's stub (read back if need be) stands for it.
            if same.s is None:
                same.s = self.cache.stub(same.digest(), same.rep, same.count, self)
        for ref in nodes.added:
            if type(ref) is Stub or ref.s is not None:  # type: ignore[union-attr]
                continue
            node: Leaf[Any] | Branch[Any] = ref  # type: ignore[assignment]
            cost = (
                _BRANCH_COST
                if type(node) is Branch
                else _LEAF_COST + _VALUE_FACTOR * len(node.value.encoded)  # type: ignore[union-attr]
            )
            node.s = self.cache.stub(node.digest(), node.rep, node.count, self, node, cost)
        for ref in nodes.added:
            if type(ref) is Branch:
                left, right = ref.left, ref.right
                if type(left) is not Stub and left.s is not None:  # type: ignore[union-attr]
                    ref.left = left.s  # type: ignore[union-attr]
                if type(right) is not Stub and right.s is not None:  # type: ignore[union-attr]
                    ref.right = right.s  # type: ignore[union-attr]
        top = m.top
        if top is not None and type(top) is not Stub and top.s is not None:  # type: ignore[union-attr]
            m.now_stored(top.s)  # type: ignore[union-attr]

    def _where(self) -> str:
        return f"map {self.node_prefix.hex()}"


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
    added = {ref.digest(): ref for ref in w.nodes.added if ref.count > 1}
    for ref in w.nodes.removed:
        if ref.count > 1 and ref.digest() not in added:
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
    "encode_branch",
    "node_writes",
]
