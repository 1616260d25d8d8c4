"""A large entity's state as the wallet holds it, for tests that need no node: the
same fields and roots as a whole state, its maps a stored top that no walk may open
(a walk that reaches one fails the test: something walked a partial state where it
must not, such as a view on the GUI thread)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from node.machines.entity import EntityState
from node.merkle_map import MerkleMap, Node, Stub
from node.net.remote_map import mark_partial


class NoWalkHere:
    """The source of a partial state's maps in view tests: a walk that reaches it fails
    the test (a view walked a partial state's channels on the GUI thread)."""

    def load(self, stub: Stub[Any]) -> Node[Any]:
        raise AssertionError("a view walked a partial state's map")

    def pin(self, stub: Stub[Any]) -> Node[Any]:
        raise AssertionError("a view walked a partial state's map")


def partial_of(state: EntityState) -> EntityState:
    """``state`` as the wallet holds a large entity: the same fields and roots, its maps
    a stored top that no walk may open (:class:`NoWalkHere`)."""
    source = NoWalkHere()

    def stored(m: MerkleMap[Any]) -> MerkleMap[Any]:
        first = next(m.keys(), None)
        return m if first is None else MerkleMap.stored(Stub(m.root, first, len(m), source))

    partial = replace(state, channels=stored(state.channels), forwards=stored(state.forwards))
    assert partial.hash == state.hash
    mark_partial(partial, [source])
    return partial
