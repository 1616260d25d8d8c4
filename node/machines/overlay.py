"""A frame's changes over a persistent map: reads fall through, writes stay on top.

An entity's channels live in a ``MerkleMap`` that a frame must not change in
place (the state before the frame stays valid: the proposer tries inputs one by
one and keeps the state it started from). A frame works on an ``Overlay`` of the
state's map instead: ``copy()`` copies only what the frame changed so far, so
trying one input costs what that input touches, never the number of channels.
At the end of the frame, ``changes`` go into the map in one ``set_many``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Base[K, V](Protocol):
    """What an overlay reads through to: a persistent map's lookups."""

    def get(self, key: K) -> V | None: ...


class Overlay[K, V]:
    """``base`` with ``changes`` on top (a value of None: deleted in this frame). It
    does not count its entries: that would cost a lookup in ``base`` per write."""

    __slots__ = ("base", "changes")

    def __init__(self, base: Base[K, V], changes: dict[K, V | None] | None = None) -> None:
        self.base = base
        self.changes: dict[K, V | None] = {} if changes is None else changes

    def get(self, key: K) -> V | None:
        changes = self.changes
        if key in changes:
            return changes[key]
        return self.base.get(key)

    def __getitem__(self, key: K) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __setitem__(self, key: K, value: V) -> None:
        self.changes[key] = value

    def pop(self, key: K, default: V | None = None) -> V | None:
        value = self.get(key)
        if value is None:
            return default
        self.changes[key] = None
        return value

    def __delitem__(self, key: K) -> None:
        if self.pop(key) is None:
            raise KeyError(key)

    def touched(self) -> Iterator[K]:
        """The keys this frame wrote (set or deleted), in the order first written."""
        return iter(self.changes)

    def copy(self) -> Overlay[K, V]:
        return Overlay(self.base, dict(self.changes))
