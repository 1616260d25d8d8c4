"""``wallet.agent.analyze_frame`` on a partial state (a large entity's, its maps read
from the node as walks reach them): it runs on the loop while the walk finds its nodes
in memory, and again off the loop once a walk needs a read (which only the loop can
run), with the same outcome as on the state held whole. The node's reads are played
by a source that serves the whole map's nodes, and refuses on the loop as
``RemoteSource`` does."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from node.machines.accounts import ExtendCredit
from node.machines.entity import EntityState, Increment, Propose, execute
from node.machines.frames import Frame
from node.merkle_map import MerkleMap, Node, Stub
from node.net.remote_map import ReadNeeded, is_partial, mark_partial, refuse_on
from node.txs import TxBody
from tests.node import accounts_cases as cases
from tests.node.machines.test_entity import A
from wallet.agent import analyze_frame
from wallet.flows.effects import analyze


class OffTheLoop:
    """Serves ``whole``'s nodes, never on ``loop`` (there a walk would wait on itself)."""

    def __init__(self, whole: MerkleMap[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.whole, self.loop = whole, loop
        self.loads = 0
        self.refused = 0  # walks stopped on the loop

    def load(self, stub: Stub[Any]) -> Node[Any]:
        try:
            refuse_on(self.loop)
        except ReadNeeded:
            self.refused += 1
            raise
        sub = self.whole.subtree(stub.rep, stub.count, stub.h)
        assert sub is not None
        top = sub.top
        assert top is not None
        assert not isinstance(top, Stub)
        stub.node = top
        self.loads += 1
        return top

    def pin(self, stub: Stub[Any]) -> Node[Any]:
        return stub.open()


def frame_of(state: EntityState, nonce: int, body: TxBody) -> Frame:
    e = cases.entity()
    e.state = state
    batch = e.batch(A, body, nonce=nonce)
    new, events = execute(state, [batch])
    return Frame.make(
        state.entity_id, state.height + 1, b"\x00" * 32, [batch], new.hash, outbox=events.outbox
    )


async def test_a_partial_state_is_checked_on_the_loop_until_a_walk_needs_a_read() -> None:
    state = cases.entity().state
    source = OffTheLoop(state.channels, asyncio.get_running_loop())
    top = Stub(state.channels.root, next(state.channels.keys()), len(state.channels), source)
    partial = replace(state, channels=MerkleMap.stored(top))
    mark_partial(partial, [source])

    # The first frame walks to a channel (FULL waits with a queue: the frame proposes
    # on it): that needs the node's read, so the check runs again off the loop, and
    # gives what the state held whole gives.
    first = frame_of(state, 1, Increment(3))
    analysis = await analyze_frame(partial, first)
    whole = analyze(state, first)
    assert analysis.error is None
    assert whole.error is None
    assert analysis.new_state is not None
    assert whole.new_state is not None
    assert analysis.new_state.hash == whole.new_state.hash == first.state_hash
    assert is_partial(analysis.new_state)
    assert (source.refused, source.loads) == (1, 1)  # five channels: one small subtree

    # The next frame walks what the first read: checked on the loop, nothing read.
    after = whole.new_state
    credit = frame_of(after, 2, Propose(ExtendCredit(cases.FUNDED, 1, 40), after.height + 10))
    again = await analyze_frame(analysis.new_state, credit)
    expected = analyze(after, credit)
    assert again.error is None
    assert again.new_state is not None
    assert again.new_state.hash == credit.state_hash
    assert [e.text for e in again.effects] == [e.text for e in expected.effects]
    assert [e.kind for e in again.effects] == ["proposal", "set_credit"]
    assert (source.refused, source.loads) == (1, 1)
