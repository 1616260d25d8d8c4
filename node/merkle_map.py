"""An authenticated, persistent map from 32-byte keys: a compressed binary Merkle trie.

An entity's channels live here (a hub may hold a million of them; a frame touches a
few). The map is immutable: every update returns a new map that shares all but the
changed paths with the old one, and its **root** (32 bytes) commits to the whole set
of ``(key, value)`` pairs, so one entry can be proven to a holder of the root alone.

Layout
------
A binary Patricia trie (a sparse Merkle tree with compressed paths). A key is used
directly as a 256-bit path: bit ``i`` is bit ``7 - i % 8`` of byte ``i // 8``, so bit 0
is the most significant bit of byte 0 and walking left (bit 0) before right (bit 1)
visits the keys in ascending byte order. There are two kinds of node:

- a **leaf** holds one key and its value;
- a **branch** holds a ``depth`` (0..255) and two non-empty subtrees, ``left`` and
  ``right``: every key under the branch agrees on bits ``0 .. depth-1``, and
  ``depth`` is the first bit at which they do not; ``left`` holds the keys whose bit
  ``depth`` is 0, ``right`` those whose bit is 1.

A branch exists only where two non-empty subtrees split, and depths increase
strictly from the root down, so for a given set of pairs there is exactly one trie:
its shape and root never depend on the order in which the pairs were inserted.
A walk from the root reads bit ``depth`` of the key at each branch; the leaf it ends
on holds the key if the key is in the map at all.

Hashing (keccak-256, :func:`node.codec.keccak`)
-----------------------------------------------
- value hash: ``keccak(value_bytes)``, ``value_bytes`` the canonical encoding of the
  value (its ``encoded`` attribute, see :class:`Encoded`);
- leaf hash: ``keccak(b"\\x00" + key + value_hash)`` (65 bytes hashed);
- branch hash: ``keccak(b"\\x01" + bytes([depth]) + left_hash + right_hash)``
  (66 bytes hashed; the first byte keeps leaves and branches apart);
- the root of the empty map is 32 zero bytes; the root of any other map is the hash
  of its top node (for a one-entry map, its leaf hash).

Hashes are computed lazily, when ``root`` is read, and cached in each node: an update
makes new nodes only on the path to the changed key (no more than its depth, about
``log2(N)`` for random keys), so a batch of updates hashes each new node once, and
nodes shared with older maps keep their hashes. A large batch (``set_many`` of more
than a few changes, such as a hub frame's thousand forwards) is merged in one pass
instead: the changes under each branch are found by bisection of the sorted keys,
and each new node is made once. ``diff`` walks two maps together and skips the
subtrees they share, so it costs what differs between a map and its update.

Proofs
------
``prove(key)`` walks from the root by the key's bits and collects, for each branch on
the way, its depth and the hash of the subtree the walk did not take:
``Proof.steps = ((depth, sibling_hash), ...)`` from the root down. The walk ends on a
leaf (or on nothing, for the empty map):

- **membership**: the leaf holds the key; ``end`` is None. The verifier hashes the
  leaf from the key and the value bytes it was given, then folds the siblings in
  from the bottom up, on the side that bit ``depth`` of the key picks, and compares
  with the root.
- **non-membership**: the leaf holds another key; ``end = (that key, its value
  hash)``. Its key agrees with ``key`` at every step's depth (the walk for ``key``
  reaches it), so if ``key`` were in the map the walk would have ended on it instead.
  The verifier checks that, then folds as above from the end leaf's hash.
- the empty map: no steps, no end, and the root is 32 zero bytes.

:func:`verify` also insists on strictly increasing depths below 256, 32-byte hashes
and at most 256 steps, the shape every honest proof has. ``Proof.to_tree`` is the
RLP form: ``[[[depth, sibling], ...], [] or [key, value_hash]]``, the depth a
minimal big-endian integer; ``Proof.from_item`` decodes it strictly.

Stored maps
-----------
A node's replicas keep their maps in LevelDB a node at a time (``node.merkle_store``).
Such a map points at :class:`Stub` s: a stored node's hash, its first key and its
count, and the node itself while it is in memory. Every walk here opens a stub when
it reaches one (its source reads and checks the node), and everything that needs
no node below (the root, the size, a new branch above a subtree) uses the stub
alone. :meth:`MerkleMap.changes` gives storage what a new version adds and removes;
it pins the removed stored nodes, which the old version may still need once storage
has deleted them. A map built in memory never meets a stub.

Why not Ethereum's hexary Merkle Patricia trie
----------------------------------------------
The ``trie`` package (pure Python) measured ~0.5 ms per update here, 136 ms for 256
updates in a 100,000-entry map: each update re-encodes up-to-17-item RLP nodes along
the path. This trie needs about ``log2(N)`` small fixed-size hashes per update (20
for a million entries), no encoding at all, and its proofs are ``log2(N)`` sibling
hashes instead of whole hexary nodes.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import ClassVar, Protocol, Self

from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    int_bytes,
    keccak,
)

KEY_LEN = 32
KEY_BITS = 8 * KEY_LEN
MAX_STEPS = KEY_BITS  # a proof has at most one step per bit of the key

_ONE_BY_ONE = 8  # set_many walks each key's path below this many changes, else merges
_LEAF_TAG = b"\x00"
_BRANCH_TAGS = tuple(b"\x01" + bytes([depth]) for depth in range(KEY_BITS))


class Encoded(Protocol):
    """A value with a canonical encoding: what its leaf commits to."""

    @property
    def encoded(self) -> bytes: ...


class Leaf[V: Encoded]:
    __slots__ = ("h", "key", "s", "value")

    count: ClassVar[int] = 1

    def __init__(self, key: bytes, value: V) -> None:
        self.key = key
        self.value = value
        self.h: bytes | None = None
        # The stub that owns it once it is stored, weakly: the stub holds the node,
        # and a cycle would leave both to the cyclic collector when a state is dropped.
        self.s: weakref.ref[Stub[V]] | None = None

    @property
    def rep(self) -> bytes:
        return self.key

    def digest(self) -> bytes:
        h = self.h
        if h is None:
            h = self.h = keccak(_LEAF_TAG + self.key + keccak(self.value.encoded))
        return h


class Branch[V: Encoded]:
    __slots__ = ("count", "depth", "h", "left", "rep", "right", "s")

    def __init__(self, depth: int, left: Ref[V], right: Ref[V], count: int) -> None:
        self.depth = depth
        self.left = left
        self.right = right
        self.count = count
        self.h: bytes | None = None
        self.s: weakref.ref[Stub[V]] | None = None  # as Leaf.s
        # One key under the branch (its leftmost): all of them agree with it above
        # ``depth``.
        self.rep: bytes = left.key if type(left) is Leaf else left.rep

    def digest(self) -> bytes:
        h = self.h
        if h is None:
            left = self.left
            right = self.right
            h = self.h = keccak(
                _BRANCH_TAGS[self.depth] + (left.h or left.digest()) + (right.h or right.digest())
            )
        return h


class Source[V: Encoded](Protocol):
    """Where a :class:`Stub`'s node is read from (``node.merkle_store``)."""

    def load(self, stub: Stub[V]) -> Node[V]:
        """Read, check and remember the stub's node (setting ``stub.node``)."""
        ...

    def pin(self, stub: Stub[V]) -> Node[V]:
        """The stub's node, kept in memory for as long as the stub lives: it is about
        to leave storage while an older version of the map still reaches it."""
        ...


class Stub[V: Encoded]:
    """A stored node, known by its hash, its leftmost key and how many keys it holds.

    A walk that reaches it opens it: its node comes from ``node`` if it is in memory,
    else from its source, which reads it (checking it against the hash) and may drop it
    again later. Everything about the map that does not need the node below (its
    root, its size, a new branch above it) uses the stub alone, so a map of a million
    stored entries is one stub until it is walked. ``used`` is set at each opening: the
    cache's clock (a second chance before a node is dropped), one store per walk step.
    """

    __slots__ = ("__weakref__", "count", "h", "node", "pinned", "rep", "source", "used")

    def __init__(
        self,
        h: bytes,
        rep: bytes,
        count: int,
        source: Source[V],
        node: Node[V] | None = None,
    ) -> None:
        self.h = h
        self.rep = rep
        self.count = count
        self.source = source
        self.node = node
        self.pinned = False  # kept in memory: no longer stored (an older version's node)
        self.used = False

    def open(self) -> Node[V]:
        node = self.node
        if node is None:
            return self.source.load(self)
        self.used = True
        return node

    def digest(self) -> bytes:
        return self.h


type Node[V: Encoded] = Leaf[V] | Branch[V]
type Ref[V: Encoded] = Leaf[V] | Branch[V] | Stub[V]  # what a branch or a map points at


def owning_stub[V: Encoded](node: Node[V]) -> Stub[V] | None:
    """The stub that stands for ``node`` in storage, if one is alive."""
    s = node.s
    return None if s is None else s()


def _open[V: Encoded](ref: Ref[V]) -> Node[V]:
    return ref.open() if type(ref) is Stub else ref  # type: ignore[return-value]


def _check_key(key: object) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, got {key!r}")


def _bit(key: bytes, depth: int) -> int:
    return key[depth >> 3] >> (7 - (depth & 7)) & 1


def _first_difference(a: bytes, b: bytes) -> int:
    """The first bit at which two different keys differ."""
    return KEY_BITS - (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_length()


def _walk[V: Encoded](root: Ref[V], key: bytes) -> tuple[list[Branch[V]], Leaf[V]]:
    """The branches on ``key``'s walk from ``root``, and the leaf it ends on (stubs on
    the way opened)."""
    path: list[Branch[V]] = []
    node = root.open() if type(root) is Stub else root
    while type(node) is Branch:
        path.append(node)
        d = node.depth
        node = node.right if key[d >> 3] >> (7 - (d & 7)) & 1 else node.left
        if type(node) is Stub:
            node = node.open()
    return path, node  # type: ignore[return-value]


def _child[V: Encoded](root: Ref[V], path: list[Branch[V]], at: int, key: bytes) -> Ref[V]:
    """What ``path[at - 1]`` points at on ``key``'s side (``root`` for ``at`` 0): the
    reference itself, a stub if it is one, so a new branch above it keeps it stored."""
    if not at:
        return root
    b = path[at - 1]
    d = b.depth
    return b.right if key[d >> 3] >> (7 - (d & 7)) & 1 else b.left


def _rebuild[V: Encoded](
    path: list[Branch[V]], at: int, key: bytes, new: Ref[V], grown: int
) -> Ref[V]:
    """``path[:at]`` copied from the bottom up over ``new``, each count moved by
    ``grown``: the new nodes on ``key``'s path."""
    while at:
        at -= 1
        b = path[at]
        d = b.depth
        if key[d >> 3] >> (7 - (d & 7)) & 1:
            new = Branch(d, b.left, new, b.count + grown)
        else:
            new = Branch(d, new, b.right, b.count + grown)
    return new


def _put[V: Encoded](root: Ref[V] | None, key: bytes, value: V) -> Ref[V]:
    """``root`` with ``key`` set to ``value``: new nodes on the key's path only."""
    if root is None:
        return Leaf(key, value)
    path, leaf = _walk(root, key)
    at = len(path)
    if leaf.key == key:
        if leaf.value is value:
            return root
        return _rebuild(path, at, key, Leaf(key, value), 0)
    # The new branch goes above the first node on the path that is deeper than the
    # first bit where the key leaves the path's keys.
    split = _first_difference(leaf.key, key)
    while at and path[at - 1].depth > split:
        at -= 1
    below = _child(root, path, at, key)
    added = Leaf(key, value)
    if key[split >> 3] >> (7 - (split & 7)) & 1:
        new = Branch(split, below, added, below.count + 1)
    else:
        new = Branch(split, added, below, below.count + 1)
    return _rebuild(path, at, key, new, 1)


def _remove[V: Encoded](root: Ref[V] | None, key: bytes) -> Ref[V] | None:
    """``root`` without ``key`` (``root`` itself when the key is absent)."""
    if root is None:
        return None
    path, leaf = _walk(root, key)
    if leaf.key != key:
        return root
    if not path:
        return None
    parent = path.pop()
    d = parent.depth
    # The parent goes; the leaf's sibling takes its place.
    sibling = parent.left if key[d >> 3] >> (7 - (d & 7)) & 1 else parent.right
    return _rebuild(path, len(path), key, sibling, -1)


def _build[V: Encoded](pairs: list[tuple[bytes, V]]) -> Ref[V] | None:
    """The trie of ``pairs``, sorted by key with no key twice, in one pass."""
    return _build_nodes([(key, Leaf(key, value)) for key, value in pairs])


def _build_nodes[V: Encoded](parts: list[tuple[bytes, Ref[V]]]) -> Ref[V] | None:
    """The trie over ``parts``: subtrees in ascending key order, each with one of its
    keys, any two of them first differing above the top branch of either (leaves, for
    :func:`_build`).

    The branch between two neighbours has the depth of their keys' first different
    bit, and the trie is the Cartesian tree of those depths (the smallest at the top),
    built with a stack of open branches: ``(depth, left subtree)`` waiting for their
    right subtree, depths increasing up the stack.
    """
    if not parts:
        return None
    depths: list[int] = []
    lefts: list[Ref[V]] = []
    key, node = parts[0]
    prev = int.from_bytes(key, "big")
    for key, nxt in parts[1:]:
        cur = int.from_bytes(key, "big")
        split = KEY_BITS - (prev ^ cur).bit_length()
        prev = cur
        while depths and depths[-1] > split:
            left = lefts.pop()
            node = Branch(depths.pop(), left, node, left.count + node.count)
        depths.append(split)
        lefts.append(node)
        node = nxt
    while depths:
        left = lefts.pop()
        node = Branch(depths.pop(), left, node, left.count + node.count)
    return node


def _apply[V: Encoded](
    ref: Ref[V] | None,
    iks: list[int],
    items: list[tuple[bytes, V | None]],
    lo: int,
    hi: int,
) -> Ref[V] | None:
    """``node`` with ``items[lo:hi]`` applied (ascending keys, each once; None deletes;
    ``iks`` the keys as integers). One pass: the changes under each branch are found
    by bisection, each node on the changed paths is made once, the rest shared."""
    if lo == hi:
        return ref
    if ref is None:
        return _build_nodes([(k, Leaf(k, v)) for k, v in items[lo:hi] if v is not None])
    node = _open(ref)
    sub: Ref[V] | None = ref
    if type(node) is Leaf:
        rep = node.key
        irep = int.from_bytes(rep, "big")
        a = bisect_left(iks, irep, lo, hi)
        b = a
        if a < hi and iks[a] == irep:
            b = a + 1
            v = items[a][1]
            sub = None if v is None else ref if v is node.value else Leaf(rep, v)
    else:
        branch: Branch[V] = node  # type: ignore[assignment]
        rep = branch.rep
        shift = KEY_BITS - branch.depth
        start = (int.from_bytes(rep, "big") >> shift) << shift
        a = bisect_left(iks, start, lo, hi)
        b = bisect_left(iks, start + (1 << shift), a, hi)
        if a < b:
            mid = bisect_left(iks, start + (1 << (shift - 1)), a, b)
            left = _apply(branch.left, iks, items, a, mid)
            right = _apply(branch.right, iks, items, mid, b)
            if left is None or right is None:
                sub = right if left is None else left
            elif left is not branch.left or right is not branch.right:
                sub = Branch(branch.depth, left, right, left.count + right.count)
    if a == lo and b == hi:
        return sub
    # Keys that leave ``node``'s prefix: a new trie over them and ``sub``, which
    # ``rep`` places among them (every key under ``sub`` agrees with it above the bit
    # where each of them leaves it).
    parts: list[tuple[bytes, Ref[V]]] = [(k, Leaf(k, v)) for k, v in items[lo:a] if v is not None]
    if sub is not None:
        parts.append((rep, sub))
    parts.extend((k, Leaf(k, v)) for k, v in items[b:hi] if v is not None)
    return _build_nodes(parts)


def _leaves[V: Encoded](
    root: Ref[V] | None, seen: list[Ref[V]] | None = None, pin: bool = False
) -> Iterator[Leaf[V]]:
    """The leaves under ``root`` in ascending key order, lazily; every node on the way
    (as referenced: a stub as the stub) also goes into ``seen``, if given, and stored
    ones are pinned in memory if ``pin``."""
    if root is None:
        return
    stack: list[Ref[V]] = [root]
    while stack:
        ref = stack.pop()
        if seen is not None:
            seen.append(ref)
        node = _pin_open(ref) if pin else ref.open() if type(ref) is Stub else ref
        while type(node) is Branch:
            stack.append(node.right)
            ref = node.left
            if seen is not None:
                seen.append(ref)
            node = _pin_open(ref) if pin else ref.open() if type(ref) is Stub else ref
        yield node  # type: ignore[misc]


def _leaves_from[V: Encoded](root: Ref[V] | None, start: bytes) -> Iterator[Leaf[V]]:
    """The leaves under ``root`` whose keys are at least ``start``, ascending, lazily:
    one walk down to where ``start`` would be, then the subtrees to its right."""
    right: list[Ref[V]] = []  # whole subtrees still to visit, the next one last
    ref = root
    while ref is not None:
        node = _open(ref)
        if type(node) is Leaf:
            if node.key >= start:
                right.append(ref)
            break
        branch: Branch[V] = node  # type: ignore[assignment]
        d = branch.depth
        rep = branch.rep
        if rep != start and _first_difference(rep, start) < d:
            if rep > start:  # the keys here all agree with rep above d: all above start
                right.append(ref)
            break
        if _bit(start, d):
            ref = branch.right
        else:
            right.append(branch.right)
            ref = branch.left
    while right:
        yield from _leaves(right.pop())


def _depth[V: Encoded](node: Node[V]) -> int:
    """A branch's depth; a leaf counts as deeper than any branch."""
    return node.depth if type(node) is Branch else KEY_BITS


@dataclass(slots=True)
class NodeChanges[V: Encoded]:
    """The nodes one map has and another has not, as :meth:`MerkleMap.diff` finds
    them for storage: ``added`` in the new map, ``removed`` from the old, each as
    referenced (a stored node by its stub), leaves and branches alike."""

    added: list[Ref[V]]
    removed: list[Ref[V]]


def _pin_open[V: Encoded](ref: Ref[V]) -> Node[V]:
    """``ref``'s node, pinned in memory if it is stored (``Source.pin``)."""
    if type(ref) is Stub:
        return ref.source.pin(ref)
    stub = owning_stub(ref)  # type: ignore[arg-type]
    if stub is not None:
        stub.source.pin(stub)
    return ref  # type: ignore[return-value]


def _diff[V: Encoded](
    new: Ref[V] | None,
    old: Ref[V] | None,
    out: dict[bytes, V | None],
    nodes: NodeChanges[V] | None,
) -> None:
    """Into ``out``, what turns ``old`` into ``new`` (two subtrees at the same place in
    the trie), and into ``nodes`` the nodes that differ: walks only where they differ,
    skipping the subtrees they share (the same object, or the same hash).

    With ``nodes``, every stored node of ``old`` that ``new`` lacks is pinned in memory
    as the walk reaches it, before its children are read: storage is about to delete
    it, and ``old`` (a state still held) must keep reaching it, and its children
    through it. (Ancestors of a removed node are removed too, so the walk pins them
    first.)"""
    if new is old:
        return
    if new is None or old is None:
        for leaf in _leaves(old, None if nodes is None else nodes.removed, nodes is not None):
            out[leaf.key] = None
        for leaf in _leaves(new, None if nodes is None else nodes.added):
            out[leaf.key] = leaf.value
        return
    if new.h is not None and new.h == old.h:
        return
    n_node = _open(new)
    o_node = _open(old) if nodes is None else _pin_open(old)
    dn, do = _depth(n_node), _depth(o_node)
    if dn == do == KEY_BITS:
        a: Leaf[V] = n_node  # type: ignore[assignment]
        b: Leaf[V] = o_node  # type: ignore[assignment]
        if a.key == b.key and a.value is b.value:
            return
        if a.key != b.key:
            out[b.key] = None
        out[a.key] = a.value
        if nodes is not None:
            nodes.added.append(new)
            nodes.removed.append(old)
        return
    if nodes is not None:
        if dn <= do:
            nodes.added.append(new)
        if do <= dn:
            nodes.removed.append(old)
    if dn == do:
        n: Branch[V] = n_node  # type: ignore[assignment]
        o: Branch[V] = o_node  # type: ignore[assignment]
        _diff(n.left, o.left, out, nodes)
        _diff(n.right, o.right, out, nodes)
    elif dn < do:
        # ``new`` splits above ``old``: all of ``old`` lies on one side of it, the
        # other side is new.
        n = n_node  # type: ignore[assignment]
        if _bit(old.rep, dn):
            _diff(n.right, old, out, nodes)
            _diff(n.left, None, out, nodes)
        else:
            _diff(n.left, old, out, nodes)
            _diff(n.right, None, out, nodes)
    else:
        o = o_node  # type: ignore[assignment]
        if _bit(new.rep, do):
            _diff(new, o.right, out, nodes)
            _diff(None, o.left, out, nodes)
        else:
            _diff(new, o.left, out, nodes)
            _diff(None, o.right, out, nodes)


class MerkleMap[V: Encoded]:
    """An immutable map from 32-byte keys to values with a Merkle root (see the module
    docstring). Updates return new maps; the old ones stay as they were."""

    __slots__ = ("_root",)

    _root: Ref[V] | None

    def __init__(self) -> None:
        """The empty map (as :meth:`empty`)."""
        self._root = None

    @classmethod
    def _of(cls, root: Ref[V] | None) -> Self:
        m = object.__new__(cls)
        m._root = root
        return m

    @classmethod
    def empty(cls) -> MerkleMap[V]:
        return cls._of(None)

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, V]]) -> MerkleMap[V]:
        """The map of ``items`` (in any order); a key given twice is a ValueError.

        Sorts the keys, then builds each node once (linear after the sort)."""
        pairs = list(items)
        for key, _ in pairs:
            if not isinstance(key, bytes) or len(key) != KEY_LEN:
                _check_key(key)
        pairs.sort(key=itemgetter(0))
        for i in range(1, len(pairs)):
            if pairs[i - 1][0] == pairs[i][0]:
                raise ValueError(f"key {pairs[i][0].hex()} given twice")
        return cls._of(_build(pairs))

    # Reading ------------------------------------------------------------------------------

    def get(self, key: bytes) -> V | None:
        """The value at ``key``, or None. Walks one path from the root."""
        if not isinstance(key, bytes) or len(key) != KEY_LEN:
            _check_key(key)
        node = self._root
        if node is None:
            return None
        if type(node) is Stub:
            node = node.open()
        while type(node) is Branch:
            d = node.depth
            node = node.right if key[d >> 3] >> (7 - (d & 7)) & 1 else node.left
            if type(node) is Stub:
                node = node.open()
        return node.value if node.key == key else None  # type: ignore[union-attr]

    def __contains__(self, key: object) -> bool:
        _check_key(key)
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        root = self._root
        return 0 if root is None else root.count

    def __bool__(self) -> bool:
        return self._root is not None

    def items(self) -> Iterator[tuple[bytes, V]]:
        """The entries in ascending key order, lazily."""
        for leaf in _leaves(self._root):
            yield leaf.key, leaf.value

    def items_from(self, start: bytes) -> Iterator[tuple[bytes, V]]:
        """The entries whose keys are at least ``start``, ascending, lazily: one walk to
        ``start``, then a step per entry (a page costs its size plus ``log N``)."""
        _check_key(start)
        for leaf in _leaves_from(self._root, start):
            yield leaf.key, leaf.value

    def keys(self) -> Iterator[bytes]:
        for leaf in _leaves(self._root):
            yield leaf.key

    def values(self) -> Iterator[V]:
        for leaf in _leaves(self._root):
            yield leaf.value

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    @property
    def root(self) -> bytes:
        """The Merkle root: 32 zero bytes for the empty map. Hashes only the nodes made
        since their hashes were last asked for."""
        root = self._root
        return ZERO_HASH if root is None else root.digest()

    def __eq__(self, other: object) -> bool:
        """Equal iff the roots are: the same set of (key, encoded value) pairs."""
        if not isinstance(other, MerkleMap):
            return NotImplemented
        return self._root is other._root or self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"<MerkleMap of {len(self)} entries>"

    # Updating -----------------------------------------------------------------------------

    def set(self, key: bytes, value: V) -> MerkleMap[V]:
        _check_key(key)
        root = _put(self._root, key, value)
        return self if root is self._root else self._of(root)

    def delete(self, key: bytes) -> MerkleMap[V]:
        """Without ``key``; the same map if it is absent."""
        _check_key(key)
        root = _remove(self._root, key)
        return self if root is self._root else self._of(root)

    def set_many(self, changes: Mapping[bytes, V | None]) -> MerkleMap[V]:
        """The map with every change applied: a value sets its key, None deletes it
        (an absent key: nothing to do). Costs one path per change; the hashes wait
        for ``root``, so nodes made and replaced within the batch are never hashed."""
        for key in changes:
            _check_key(key)
        if len(changes) <= _ONE_BY_ONE:
            root = self._root
            for key, value in changes.items():
                root = _remove(root, key) if value is None else _put(root, key, value)
        else:
            items = sorted(changes.items(), key=itemgetter(0))
            iks = [int.from_bytes(k, "big") for k, _ in items]
            root = _apply(self._root, iks, items, 0, len(items))
        return self if root is self._root else self._of(root)

    def diff(self, old: MerkleMap[V]) -> dict[bytes, V | None]:
        """The changes that turn ``old`` into this map (None: deleted), as ``set_many``
        takes them. Costs what differs: subtrees the two maps share (an update shares
        all but its paths with the map it came from) are skipped whole, and so are
        subtrees whose hashes are known to be equal. A value replaced by another object
        counts as changed if the two leaves' hashes are not both known."""
        out: dict[bytes, V | None] = {}
        _diff(self._root, old._root, out, None)
        return out

    def changes(self, old: MerkleMap[V]) -> tuple[dict[bytes, V | None], NodeChanges[V]]:
        """As :meth:`diff`, with the nodes that differ: what storage writes and deletes
        (``node.merkle_store``). Hashes the new map's new nodes."""
        self.root  # noqa: B018 - every node's hash is needed to compare and to store
        out: dict[bytes, V | None] = {}
        nodes: NodeChanges[V] = NodeChanges([], [])
        _diff(self._root, old._root, out, nodes)
        return out, nodes

    # Stored maps ------------------------------------------------------------------------------

    @classmethod
    def stored(cls, top: Stub[V]) -> MerkleMap[V]:
        """The map whose top node is stored: nothing is read until a walk needs it."""
        return cls._of(top)

    @property
    def top(self) -> Ref[V] | None:
        """The top node, as referenced (a stub once it is stored); None if empty."""
        return self._root

    def now_stored(self, stub: Stub[V]) -> None:
        """Point at ``stub`` instead of the top node it stores (the same hash). Changes
        nothing a reader sees (the stub opens to an equal node); lets it leave memory."""
        if self._root is not None and self._root.digest() == stub.h:
            self._root = stub

    def subtree(self, rep: bytes, count: int, h: bytes) -> MerkleMap[V] | None:
        """The subtree whose first key is ``rep``, which holds ``count`` keys and hashes
        to ``h``, as a map of its own (sharing its nodes), or None if this map has none:
        the one walk toward ``rep`` that would reach it."""
        _check_key(rep)
        ref = self._root
        while ref is not None and ref.count >= count:
            node = _open(ref)
            if ref.count == count and ref.rep == rep and ref.digest() == h:
                return self._of(ref)
            if type(node) is not Branch:
                return None
            d = node.depth
            ref = node.right if rep[d >> 3] >> (7 - (d & 7)) & 1 else node.left
        return None

    # Proofs -------------------------------------------------------------------------------

    def prove(self, key: bytes) -> Proof:
        """A proof that ``key`` holds its value here, or that it is absent."""
        _check_key(key)
        if self._root is None:
            return Proof((), None)
        steps: list[tuple[int, bytes]] = []
        node = _open(self._root)
        while type(node) is Branch:
            d = node.depth
            if key[d >> 3] >> (7 - (d & 7)) & 1:
                steps.append((d, node.left.digest()))
                node = _open(node.right)
            else:
                steps.append((d, node.right.digest()))
                node = _open(node.left)
        leaf: Leaf[V] = node  # type: ignore[assignment]
        end = None if leaf.key == key else (leaf.key, keccak(leaf.value.encoded))
        return Proof(tuple(steps), end)


@dataclass(frozen=True, slots=True)
class Proof:
    """A Merkle proof for one key (see the module docstring).

    ``steps``: ``(branch depth, sibling hash)`` for each branch from the root down.
    ``end``: for a key that is absent, the key and value hash of the leaf its walk
    reaches; None for a member, and for the empty map.
    """

    steps: tuple[tuple[int, bytes], ...]
    end: tuple[bytes, bytes] | None

    def to_tree(self) -> list[RlpItem]:
        """``[[[depth, sibling], ...], [] or [key, value_hash]]``, depth minimal big-endian."""
        steps: list[RlpItem] = [[int_bytes(depth), sibling] for depth, sibling in self.steps]
        end: list[RlpItem] = [] if self.end is None else [self.end[0], self.end[1]]
        return [steps, end]

    @classmethod
    def from_item(cls, item: RlpItem) -> Proof:
        """Strictly: 32-byte hashes and keys, depths below 256 and strictly increasing,
        at most 256 steps; anything else is a :class:`DecodeError`."""
        f = as_list(item, "merkle proof", size=2)
        steps: list[tuple[int, bytes]] = []
        previous = -1
        for raw in as_list(f[0], "merkle proof steps", max_len=MAX_STEPS):
            step = as_list(raw, "merkle proof step", size=2)
            depth = as_int(step[0], "merkle proof depth", max_value=KEY_BITS - 1)
            if depth <= previous:
                raise DecodeError("merkle proof: depths not strictly increasing")
            previous = depth
            steps.append((depth, as_bytes(step[1], "merkle proof sibling", size=HASH_LEN)))
        end_f = as_list(f[1], "merkle proof end")
        end: tuple[bytes, bytes] | None
        if not end_f:
            end = None
        elif len(end_f) == 2:
            end = (
                as_bytes(end_f[0], "merkle proof end key", size=KEY_LEN),
                as_bytes(end_f[1], "merkle proof end value hash", size=HASH_LEN),
            )
        else:
            raise DecodeError(f"merkle proof end: expected 0 or 2 items, got {len(end_f)}")
        return cls(tuple(steps), end)


def verify(root: bytes, key: bytes, value_bytes: bytes | None, proof: Proof) -> bool:
    """Whether ``proof`` shows that, under ``root``, ``key`` holds the value encoded as
    ``value_bytes`` (or, for ``value_bytes`` None, that ``key`` is absent).

    A key that is not 32 bytes is a ValueError (the caller's mistake); a proof of any
    other shape than :meth:`MerkleMap.prove` makes simply fails.
    """
    return verify_hash(root, key, None if value_bytes is None else keccak(value_bytes), proof)


def verify_hash(root: bytes, key: bytes, value_hash: bytes | None, proof: Proof) -> bool:
    """As :func:`verify`, for a value known by its hash (``keccak(value_bytes)``)."""
    _check_key(key)
    steps = proof.steps
    if len(steps) > MAX_STEPS:
        return False
    previous = -1
    for depth, sibling in steps:
        if not previous < depth < KEY_BITS or len(sibling) != HASH_LEN:
            return False
        previous = depth
    end = proof.end
    if value_hash is None:
        if end is None:
            return not steps and root == ZERO_HASH
        end_key, end_value_hash = end
        if len(end_key) != KEY_LEN or len(end_value_hash) != HASH_LEN or end_key == key:
            return False
        if any(_bit(end_key, depth) != _bit(key, depth) for depth, _ in steps):
            return False
        h = keccak(_LEAF_TAG + end_key + end_value_hash)
    else:
        if end is not None or len(value_hash) != HASH_LEN:
            return False
        h = keccak(_LEAF_TAG + key + value_hash)
    for depth, sibling in reversed(steps):
        if _bit(key, depth):
            h = keccak(_BRANCH_TAGS[depth] + sibling + h)
        else:
            h = keccak(_BRANCH_TAGS[depth] + h + sibling)
    return h == root


def is_edge(key: bytes, proof: Proof, side: int) -> bool:
    """Whether a membership ``proof`` of ``key`` shows it is the map's first key
    (``side`` 0: its walk goes left at every branch) or its last (``side`` 1)."""
    return all(_bit(key, depth) == side for depth, _ in proof.steps)


def adjacent(low: bytes, low_proof: Proof, high: bytes, high_proof: Proof) -> bool:
    """Whether membership proofs (already verified against one root) of ``low`` <
    ``high`` show that no key lies between them.

    The two keys first differ at bit ``d``; both walks must pass the branch at depth
    ``d`` (``low`` going left, ``high`` right), and below it ``low`` must be the
    rightmost key of the left subtree (its walk goes right at every deeper branch)
    and ``high`` the leftmost of the right one. A key in between would share the
    walk down to ``d`` and leave one of the two walks at a deeper branch the other way.
    """
    if not low < high:
        return False
    d = _first_difference(low, high)
    if not any(depth == d for depth, _ in low_proof.steps):
        return False
    if not any(depth == d for depth, _ in high_proof.steps):
        return False
    return all(_bit(low, depth) for depth, _ in low_proof.steps if depth > d) and not any(
        _bit(high, depth) for depth, _ in high_proof.steps if depth > d
    )


__all__ = [
    "KEY_LEN",
    "Encoded",
    "MerkleMap",
    "Proof",
    "adjacent",
    "is_edge",
    "verify",
    "verify_hash",
]
