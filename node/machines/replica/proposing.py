"""The proposer's frame: re-proposing a lock or building a fresh frame, within a frame's budget.

At the end of a step, the round's proposer with no frame in flight proposes: at a
later round only once the round-change reports hold the threshold, the locked
frame with its polka if one still applies (``rounds.locked_frame``), else the oldest pooled
batches and inbox inputs that fit one frame (at least one: a batch or a channel
message too big for any frame is refused on intake, ``checks.over_frame_budget``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from node.codec import Limits, keccak, scan
from node.machines import entity as ent
from node.machines.accounts import FrameInput
from node.machines.entity import Batch, EntityState
from node.machines.frames import Frame, Polka
from node.machines.outcomes import Key
from node.machines.replica.effects import ProposeFrame
from node.machines.replica.rounds import locked_frame
from node.machines.replica.state import Pending, input_key
from node.machines.replica.stepping import Step

# A frame must fit, with its certificate, in one commit input (MAX_ENTITY_INPUT_BYTES).
MAX_FRAME_BATCH_BYTES = 256 * 1024
MAX_FRAME_INPUTS = 256
# Inputs (mostly channel frames, each at most ch.MAX_FRAME_TX_BYTES of transactions)
# beside MAX_FRAME_BATCH_BYTES of batches: the frame still fits one commit input.
MAX_FRAME_INPUT_BYTES = 192 * 1024
# RLP items, counted as the network counts them (node.net.limits): a proposal or
# commit carrying the frame, its outbox and certificate stays within the peer
# link's item cap. A batch or input alone above its budget is refused on intake.
MAX_FRAME_BATCH_ITEMS = 24_576
MAX_FRAME_INPUT_ITEMS = 24_576
COUNTING = Limits(max_bytes=2**40, max_depth=2**16, max_items=2**40)  # our own bytes


def try_propose(s: Step) -> None:
    r = s.r
    if r.pending is not None or r.proposer != r.signer:
        return
    config = r.entity.config
    if r.round > 0 and config.shares_of(r.changes) < config.threshold:
        return  # wait for the round-change reports that could name a lock
    frame: Frame | None = None
    post: EntityState | None = None
    valid: Polka | None = None
    locked = locked_frame(s) if r.round > 0 else None
    if locked is not None:
        lock, post = locked
        frame, valid = lock.frame, lock.polka
    else:
        r = s.r
        waiting = _channels_waiting(r.entity)
        if not (r.pool or r.inbox or waiting):
            return
        built = ent.build(
            r.entity, _frame_sized(r.pool), _inputs_sized(r.inbox), allow_mint=s.simulation
        )
        for batch, reason in built.refused_batches:
            s.note(-1, f"batch {keccak(batch.raw).hex()[:16]} dropped: {reason}")
        if built.refused_batches:
            dropped = {b.raw for b, _ in built.refused_batches}
            s.r = r = replace(r, pool=tuple(b for b in r.pool if b.raw not in dropped))
        for _inp, reason in built.refused_inputs:
            s.note(-1, f"input dropped: {reason}")
        if built.refused_inputs:
            gone = {input_key(i) for i, _ in built.refused_inputs}
            s.r = r = replace(r, inbox=tuple(i for i in r.inbox if input_key(i) not in gone))
        if not (built.batches or built.inputs or waiting):
            return
        post, events = built.post, built.events
        frame = Frame.make(
            r.entity_id,
            r.next_height,
            r.head,
            built.batches,
            post.hash,
            built.inputs,
            events.outbox,
        )
        if s.outcomes is not None:  # ent.build checked every signature it kept
            s.outcomes.put(Key(r.entity.hash, frame.hash, s.simulation, True), (post, events))
    assert post is not None
    s.r = replace(r, pending=Pending(frame, r.round, post))
    s.effects.append(ProposeFrame(frame, r.round, r.entity.config.ids, valid))


def _inputs_sized(inbox: Sequence[FrameInput]) -> list[FrameInput]:
    """The oldest inputs of the inbox that fit one frame (at least one)."""
    out: list[FrameInput] = []
    size = items = 0
    for inp in inbox[:MAX_FRAME_INPUTS]:
        size += len(inp.raw)
        items += scan(inp.raw, COUNTING)
        if (size > MAX_FRAME_INPUT_BYTES or items > MAX_FRAME_INPUT_ITEMS) and out:
            break
        out.append(inp)
    return out


def _channels_waiting(entity: EntityState) -> bool:
    """A ready channel with queued transactions: a frame would send them."""
    return bool(entity.waiting)


def _frame_sized(pool: Sequence[Batch]) -> list[Batch]:
    """The oldest batches of the pool that fit one frame."""
    out: list[Batch] = []
    size = items = 0
    for batch in pool:
        size += len(batch.raw)
        items += scan(batch.raw, COUNTING)
        if (size > MAX_FRAME_BATCH_BYTES or items > MAX_FRAME_BATCH_ITEMS) and out:
            break
        out.append(batch)
    return out
