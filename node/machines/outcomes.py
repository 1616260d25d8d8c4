"""Frame outcomes remembered for a while: an optimisation, passed in, never required.

The same frame is executed on the same state several times in one process: the
proposer builds it and later commits it, a member checks the proposal and later
applies its commit, and the replicas of one entity's members hosted on one server
each do the same. A frame of thousands of payments costs tens of milliseconds each
time. :class:`Outcomes` remembers the last few outcomes so the later executions
are lookups.

The cache is an object its owner passes in (``replica.step(..., outcomes=)``,
``server.apply_block``, ``replica.check_proposal``, ``Replica.load``), not a module
global: two nodes in one process do not share it, a test gets a fresh one by making
one, and the transition's signature shows it. The owner is the runtime: one per
:class:`node.runtime.Node`, shared by its block production (every hosted signer and
replica) and its coordinator's proposal checks. ``None`` means no caching.

**A hit never changes a result.** The outcome of executing a frame is a function of
the :class:`Key`: the pre-state (its hash commits to everything the execution
reads), the frame (its hash covers its batches and inputs, signatures included),
the server's ``simulation`` flag (whether a faucet mint applies), and whether the
execution checked the signatures (``verified``). The code is fixed for a process's
life, so it is not in the key. An execution that skipped the signature checks
(``verify=False``: a replica reloading its own frame in flight, a proposer
committing the frame it built) is never served to a caller that asks for them; a
checked outcome serves both. An execution that fails is not remembered. Without the
cache every result is byte-identical, only slower.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from node.machines.entity import EntityState, FrameEvents

DEFAULT_SIZE = 16

type Outcome = tuple[EntityState, FrameEvents]


class Key(NamedTuple):
    """Everything that decides a frame's outcome (see the module docstring)."""

    state: bytes  # the pre-state's hash
    frame: bytes  # the frame's hash
    simulation: bool  # the server allows faucet mints
    verified: bool  # every signature was checked


class Outcomes:
    """A small LRU of frame outcomes: at most ``size`` entries, the least recently
    used evicted first."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("an outcome cache holds at least one entry")
        self.size = size
        self._entries: OrderedDict[Key, Outcome] = OrderedDict()

    def get(self, key: Key) -> Outcome | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: Key, value: Outcome) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
