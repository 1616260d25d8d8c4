"""The sub-machines a machine holds, by id, in a Merkle map of their state hashes.

A server holds its signers (by signer id), a signer its replicas (by entity id).
Both sit in a :class:`Subs`: a :class:`node.merkle_map.MerkleMap` whose leaf for
each sub-machine commits to that sub-machine's **32-byte state hash** (the map's
value bytes are the hash; the leaf is ``keccak(0x00 ‖ id ‖ keccak(hash))``). The
parent's encoding holds the map's root, not the list of its children, so when one
child changes, the parent's hash costs one path of the trie (about ``log2(N)``
hashes), not a pass over all ``N`` children.

Why the hash and not the child's header encoding as the value: the root is then a
function of the ``(id, state hash)`` pairs alone, so whoever holds only those pairs
(storage at load time, a wallet reading a signer's list of replicas, a proof's
verifier) can rebuild and check the root without any child's bytes
(:func:`refs_root`). Committing to the header would save one keccak of 32 bytes per
changed leaf, and lose that.

The map is immutable and its iteration is in ascending id order, so a transition
that walks it stays deterministic; its root depends only on the set of pairs, never
on the order of updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from node.codec import HASH_LEN, DecodeError, RlpItem, as_bytes, as_int, as_list
from node.merkle_map import MerkleMap


class Hashed(Protocol):
    """A sub-machine: what its parent's map commits to is its state hash."""

    @property
    def hash(self) -> bytes: ...


class _Held[T: Hashed]:
    """A sub-machine as a map value: its value bytes are its state hash."""

    __slots__ = ("machine",)

    def __init__(self, machine: T) -> None:
        self.machine = machine

    @property
    def encoded(self) -> bytes:
        return self.machine.hash


class _Ref:
    """A bare ``(id, hash)`` reference as a map value (for :func:`refs_root`)."""

    __slots__ = ("encoded",)

    def __init__(self, state_hash: bytes) -> None:
        self.encoded = state_hash


class Subs[T: Hashed](Mapping[bytes, T]):
    """An immutable map from 32-byte ids to sub-machines, with the Merkle root of
    their ``(id, state hash)`` pairs. Reading one id walks one path (O(log N));
    :meth:`set_many` copies only the changed paths."""

    __slots__ = ("_map",)

    def __init__(self, tree: MerkleMap[_Held[T]] | None = None) -> None:
        self._map: MerkleMap[_Held[T]] = MerkleMap() if tree is None else tree

    @classmethod
    def of(cls, machines: Iterable[tuple[bytes, T]]) -> Subs[T]:
        """The map of ``(id, machine)`` pairs, in any order (an id twice: ValueError)."""
        return cls(MerkleMap.from_items((key, _Held(m)) for key, m in machines))

    # Reading ------------------------------------------------------------------------------

    def __getitem__(self, key: bytes) -> T:
        held = self._map.get(key)
        if held is None:
            raise KeyError(key)
        return held.machine

    def get(self, key: bytes, default: T | None = None) -> T | None:  # type: ignore[override]
        held = self._map.get(key)
        return default if held is None else held.machine

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and len(key) == 32 and self._map.get(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        return self._map.keys()

    def __len__(self) -> int:
        return len(self._map)

    def __bool__(self) -> bool:
        return bool(self._map)

    def values(self) -> Iterator[T]:  # type: ignore[override]
        """The sub-machines in ascending id order (a walk over all of them)."""
        for held in self._map.values():
            yield held.machine

    def items(self) -> Iterator[tuple[bytes, T]]:  # type: ignore[override]
        for key, held in self._map.items():
            yield key, held.machine

    def refs(self) -> Iterator[tuple[bytes, bytes]]:
        """``(id, state hash)`` in ascending id order."""
        for key, held in self._map.items():
            yield key, held.machine.hash

    def listed(self, cap: int) -> tuple[list[list[bytes]], bool]:
        """The first ``cap`` ``[id, state hash]`` pairs, and whether more were left out
        (what READ_STATE lists after a server's or signer's state)."""
        refs: list[list[bytes]] = []
        for key, state_hash in self.refs():
            if len(refs) == cap:
                return refs, True
            refs.append([key, state_hash])
        return refs, False

    @property
    def root(self) -> bytes:
        """The Merkle root of the ``(id, state hash)`` pairs: 32 zero bytes when empty."""
        return self._map.root

    def __eq__(self, other: object) -> bool:
        """Equal iff the roots are: the same ids with the same state hashes."""
        if not isinstance(other, Subs):
            return NotImplemented
        return self._map == other._map

    def __hash__(self) -> int:
        return hash(self._map)

    def __repr__(self) -> str:
        return f"<Subs of {len(self)}>"

    # Updating -----------------------------------------------------------------------------

    def set(self, key: bytes, machine: T) -> Subs[T]:
        return Subs(self._map.set(key, _Held(machine)))

    def set_many(self, changes: Mapping[bytes, T]) -> Subs[T]:
        """With every ``(id, machine)`` of ``changes`` set; the same map if none."""
        if not changes:
            return self
        return Subs(self._map.set_many({key: _Held(m) for key, m in changes.items()}))


def refs_root(refs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The root a :class:`Subs` holding sub-machines with these ``(id, state hash)``
    pairs has (an id twice: ValueError)."""
    return MerkleMap.from_items((key, _Ref(h)) for key, h in refs).root


def read_refs(
    listed: RlpItem, more: RlpItem, root: bytes, owner: str, sub: str, id_name: str
) -> list[tuple[bytes, bytes]]:
    """The ``[[id, state hash], ...]`` pairs READ_STATE lists after ``owner``'s state
    (``sub``: one of them, such as "replica"), strictly. A complete list (``more``
    0) must give ``root``; a list cut at the cap is its first part, unchecked."""
    refs = [
        (
            as_bytes(as_list(x, f"{sub} ref", size=2)[0], id_name, size=HASH_LEN),
            as_bytes(as_list(x, f"{sub} ref", size=2)[1], f"{sub} hash", size=HASH_LEN),
        )
        for x in as_list(listed, f"{sub}s")
    ]
    if not as_int(more, f"more {sub}s", max_value=1):
        try:
            listed_root = refs_root(refs)
        except ValueError as exc:
            raise DecodeError(f"{owner}: {exc}") from None
        if listed_root != root:
            raise DecodeError(f"{owner}: its {sub}s do not match its root")
    return refs


__all__ = ["Hashed", "Subs", "read_refs", "refs_root"]
