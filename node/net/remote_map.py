"""An entity's agreed state whose maps are read from a node as a walk needs them.

The accountant checks a hub's frame by executing it on the state before it. Reading
that state whole costs what the hub holds (a million channels); executing the frame
touches a few channels and the forwards it adds and settles. So :func:`lazy_state`
reads the certified header only, and gives it maps whose top is a stub: a walk that
reaches a stub without its node asks the node for it (READ_ENTITY's node part,
``node/entity_reads.py``), and checks it against the hash its parent names, so the
node cannot feed the walk anything the certified state does not hold. A small
subtree (at most ``entity_reads.SUBTREE`` keys) comes whole in one reply.

The walks are synchronous (``node.merkle_map``), the reads are not: a walk over
these maps runs off the event loop (``asyncio.to_thread``), and each read it needs
is run on the loop while the walk's thread waits (:class:`RemoteSource`). Nodes read
stay with the state that read them (and the states made from it), bounded by the
paths walked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from node.entity_reads import CHANNELS, FORWARDS, MAP_NAMES, check_node, check_top
from node.machines.accounts import FRAME
from node.machines.entity import EntityState
from node.machines.frames import Frame
from node.merkle_map import KEY_LEN, MerkleMap, Node, Source, Stub
from node.net.client import NodeError
from node.net.entity_client import EntityReader
from node.net.protocol import Err

READ_TIMEOUT_S = 30.0
# A partial state's sources, kept beside its cached properties (EntityState is frozen).
_SOURCES = "_read_from_node"
NO_KEY = bytes(KEY_LEN)


class ReadNeeded(RuntimeError):
    """A walk on the event loop reached a node not read yet: walk it again off the loop
    (the read runs on the loop, which the walk would block)."""


def refuse_on(loop: asyncio.AbstractEventLoop) -> None:
    """ReadNeeded if this runs on ``loop``: a read the walk waits for runs there."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise ReadNeeded("a remote map is walked off its event loop (asyncio.to_thread)")


class RemoteSource:
    """One map of one entity state (``at``: its state hash), node by node from the node
    behind ``reader``; the reads run on ``loop``."""

    def __init__(
        self,
        reader: EntityReader,
        signer: bytes,
        entity: bytes,
        which: int,
        at: bytes,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.reader = reader
        self.signer = signer
        self.entity = entity
        self.which = which
        self.at = at
        self.loop = loop

    def load(self, stub: Stub[Any]) -> Node[Any]:
        refuse_on(self.loop)
        future = asyncio.run_coroutine_threadsafe(self._read(stub), self.loop)
        node = future.result(timeout=READ_TIMEOUT_S)
        stub.node = node
        return node

    def pin(self, stub: Stub[Any]) -> Node[Any]:
        return stub.open()  # nothing here is ever deleted: what was read stays

    async def _read(self, stub: Stub[Any]) -> Node[Any]:
        args = (self.which, stub.rep, stub.count, stub.h)
        try:
            _, item = await self.reader.node(self.signer, self.entity, self.at, *args)
        except NodeError as exc:
            # The node keeps a few recent states by hash; past them, the subtree is
            # read from its current state, where it still is if nothing changed it
            # (and if something did, it is not there: NOT_FOUND again).
            if exc.code is not Err.NOT_FOUND:
                raise
            _, item = await self.reader.node(self.signer, self.entity, b"", *args)
        return check_node(*args, item, lambda h, rep, n: Stub(h, rep, n, self))


async def lazy_state(
    reader: EntityReader, signer: bytes, entity: bytes, whole_up_to: int = 0
) -> EntityState:
    """``signer``'s replica's current agreed state of ``entity``: its certified header
    read now, its channels and forwards read as walks reach them (run those walks off
    the loop; :func:`is_partial` says so). If its maps hold ``whole_up_to`` records or
    fewer, read whole instead (``EntityReader.state``): a state to walk anywhere."""
    loop = asyncio.get_running_loop()
    header = await reader.header(signer, entity)
    tops = []
    for which in (CHANNELS, FORWARDS):
        _, item = await reader.node(signer, entity, header.hash, which, NO_KEY, 0, NO_KEY)
        tops.append(check_top(header, which, item))
    if sum(0 if top is None else top[1] for top in tops) <= whole_up_to:
        return await reader.state(signer, entity)
    maps: dict[str, MerkleMap[Any]] = {}
    sources: list[RemoteSource] = []
    for which, top in zip((CHANNELS, FORWARDS), tops, strict=True):
        if top is None:
            maps[MAP_NAMES[which]] = MerkleMap.empty()
            continue
        sources.append(RemoteSource(reader, signer, entity, which, header.hash, loop))
        maps[MAP_NAMES[which]] = MerkleMap.stored(Stub(header.root(which), *top, sources[-1]))
    state = replace(header.small, channels=maps["channels"], forwards=maps["forwards"])
    mark_partial(state, sources)
    return state


def mark_partial(state: EntityState, sources: Sequence[Source[Any]]) -> None:
    """Mark ``state``, whose maps read their nodes from ``sources`` as walks reach
    them, as partial (:func:`is_partial`): walked off the loop only. Its waiting
    channels start empty: each frame names them (:func:`assume_waiting`), never a
    scan of every channel."""
    state.__dict__["waiting"] = frozenset()
    state.__dict__[_SOURCES] = tuple(sources)


def assume_waiting(state: EntityState, frame: Frame) -> None:
    """Before executing ``frame`` on a partial ``state``: take the counterparties the
    frame proposes channel frames to as (part of) the state's waiting channels (ready,
    with a queue), which only a scan of every channel would find, and which the node
    does not commit to. A superset is harmless (the execution looks at each and skips
    those with nothing to propose); one left out makes the execution propose less than
    the frame did, so the outbox differs and the frame is refused, never approved
    wrongly."""
    peers = {o.peer for o in frame.outbox if o.kind == FRAME}
    state.__dict__["waiting"] = state.waiting | peers


def is_partial(state: EntityState) -> bool:
    """Whether ``state``'s maps are read from a node as walks reach them: one that
    :func:`lazy_state` made lazily, or one made from such a state
    (:func:`carry_reads`). Walk those off the loop."""
    return bool(state.__dict__.get(_SOURCES))


def carry_reads(new: EntityState, old: EntityState) -> None:
    """``new`` was made by executing a frame on ``old``: it reaches the nodes ``old``
    read from the node, and reads the rest the same way."""
    new.__dict__[_SOURCES] = old.__dict__.get(_SOURCES, ())


def read_at(state: EntityState) -> None:
    """Let the walks of a partial ``state`` read at ``state``'s own hash: every node its
    maps still reach is in that state, which the node keeps for a while after it (a
    state made from a lazy read by executing frames reaches nodes of the read's state
    that those frames left alone, and the node may have moved past both)."""
    for source in state.__dict__.get(_SOURCES, ()):
        source.at = state.hash
