"""The replica's transition, ``step(replica, inputs) -> (replica, effects)`` (pure).

Its inputs (``inputs``) are the entity-level entries of the server's mempool, so a
replay re-derives every decision. Effects are sent only after the block is
durable. This module dispatches the inputs, pools batches and keeps channel
messages in the inbox, gathers approvals into a polka and pre-commits into a
certificate, and commits a certified frame; the rounds, locks and catch-up are
``rounds``'s, the proposer's frame ``proposing``'s.

Two steps (``docs/CONSENSUS.md``): members approve the proposer's frame; once
approvals hold the threshold (a polka), the proposer tells the members, and each
member's agent pre-commits (locks on) the frame it approved; pre-commits holding
the threshold certify it. Nothing locks before a polka, so a frame that members
refuse is dropped by not being proposed again.

The proposer builds a frame at the end of a step when it has none in flight
and has batches or inputs to apply, a channel with queued transactions that may
propose, or a lock to re-propose. At the end of a step it makes the polka once
the approvals it has verified hold the threshold, and commits once the
pre-commits do: aggregate first, single signatures only if the aggregate fails,
so a bad one is found and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from node.machines import accounts
from node.machines import entity as ent
from node.machines.accounts import FrameInput
from node.machines.entity import Batch, EntityState, FrameInvalid
from node.machines.frames import (
    Certificate,
    Frame,
    Signatures,
    aggregate_approvals,
    aggregate_precommits,
    approval_valid,
    approve_message,
    precommit_valid,
    verify_certificate,
    verify_polka,
)
from node.machines.mailbox import signed_messages
from node.machines.outcomes import Outcomes
from node.machines.replica.effects import (
    Committed,
    Effect,
    Invite,
    PrecommitDue,
    Send,
    transmissions,
)
from node.machines.replica.inputs import (
    AnnounceBinding,
    Approve,
    Commit,
    Deliver,
    PolkaNotice,
    Precommit,
    RefusalInput,
    RoundChange,
    SeenLock,
    SignedRoundChange,
    SubmitBatch,
    Timeout,
)
from node.machines.replica.proposing import try_propose
from node.machines.replica.rounds import (
    enter_round,
    on_binding,
    on_lock,
    on_round_change,
    on_signed_round_change,
    on_timeout,
)
from node.machines.replica.state import MAX_INBOX, MAX_POOL, Replica, input_key
from node.machines.replica.stepping import Step
from node.txs import Tx


def step(
    replica: Replica,
    inputs: Sequence[Tx],
    *,
    simulation: bool = False,
    outcomes: Outcomes | None = None,
) -> tuple[Replica, list[Effect]]:
    """The transition. ``outcomes``: the caller's cache of frame outcomes (see
    ``node.machines.outcomes``); None executes every frame. It changes only the time."""
    s = Step(replica, simulation, outcomes)
    for index, tx in enumerate(inputs):
        match tx.body:
            case SubmitBatch(batch=batch):
                _on_batch(s, index, batch, tx)
            case Approve() as approval:
                _on_approve(s, index, approval)
            case PolkaNotice() as notice:
                _on_polka(s, index, notice)
            case Precommit() as pc:
                _on_precommit(s, index, pc)
            case Commit(frame=frame, cert=cert):
                _on_commit(s, index, frame, cert)
            case Timeout(height=height, round=round_):
                on_timeout(s, index, height, round_)
            case SeenLock(lock=lock):
                on_lock(s, index, lock)
            case RoundChange() as rc:
                on_round_change(s, index, rc)  # this server's own (an internal input)
            case SignedRoundChange() as src:
                on_signed_round_change(s, index, src)
            case AnnounceBinding(binding=binding):
                on_binding(s, index, binding)
            case Deliver(message=message):
                _on_inbound(s, index, message)
            case RefusalInput():
                s.note(index, "a refusal is kept beside the replicas (node/refusals.py)")
            case _:
                s.note(index, f"{tx.body.NAME} is not an entity input")
    _try_polka(s)
    _try_commit(s)
    try_propose(s)
    return s.r, s.effects


def _on_batch(s: Step, index: int, batch: Batch, tx: Tx) -> None:
    r = s.r
    if batch.signer not in r.entity.config.index:
        s.note(index, "batch from a signer not in the entity")
        return
    if batch.nonce <= r.entity.nonce_of(batch.signer):
        s.note(index, f"batch nonce {batch.nonce} already used")
        return
    if not s.simulation and any(isinstance(t.body, accounts.Faucet) for t in batch.txs):
        s.note(index, f"batch refused: {accounts.FAUCET_DISABLED}")
        return
    if any(b.raw == batch.raw for b in r.pool):
        return  # a resend: idempotent
    same = [b for b in r.pool if (b.signer, b.nonce) == (batch.signer, batch.nonce)]
    if any(ent.is_withdrawal(b) for b in same):
        s.note(index, f"batch at nonce {batch.nonce} of {batch.signer.hex()[:16]} withdrawn")
        return
    if ent.is_withdrawal(batch):
        p = r.pending
        if p is not None and p.polka is not None and any(b in p.frame.batches for b in same):
            s.note(
                index,
                f"withdrawal of nonce {batch.nonce} refused: too late, approved by the"
                f" threshold at round {p.round}",
            )
            return
        r = replace(r, pool=tuple(b for b in r.pool if b not in same))
    if len(r.pool) >= MAX_POOL:
        s.note(index, "entity pool full; retry later")
        return
    s.r = replace(r, pool=(*r.pool, batch))
    if r.proposer != r.signer:
        s.effects.append(Send(r.proposer, tx))


def _on_inbound(s: Step, index: int, inp: FrameInput) -> None:
    r = s.r
    if accounts.is_stale(r.entity.channels, inp):
        # Applied already. If it is the frame we acked last, our ack was lost: again.
        if inp.kind == accounts.FRAME:
            ack = r.mailbox.ack_for(inp.sender, inp.hash)
            if ack is not None:
                s.effects.extend(transmissions(r.entity, [(inp.sender, ack)]))
        return
    key = input_key(inp)
    if any(input_key(i) == key for i in r.inbox):
        return  # another copy: idempotent
    if len(r.inbox) >= MAX_INBOX:
        s.note(index, "entity inbox full; the sender will resend")
        return
    s.r = replace(r, inbox=(*r.inbox, inp))


def _vote_slot(
    s: Step,
    index: int,
    what: str,
    vote: Approve | Precommit,
    taken: Sequence[tuple[int, object]],
) -> int | None:
    """The voter's slot for a vote (an approval or a pre-commit) on the frame in flight,
    not yet taken, or None (and why is noted; a vote for a committed height is late,
    and quietly ignored). Its signature is the caller's to check."""
    r = s.r
    p = r.pending
    slot = r.entity.config.index.get(vote.signer)
    who = vote.signer.hex()[:16]
    if vote.height <= r.entity.height:
        return None  # late: that frame is committed already
    if p is None or vote.height != p.frame.height or vote.round != p.round:
        s.note(index, f"{what} at {vote.height}/{vote.round}: no frame in flight there")
    elif vote.frame_hash != p.frame.hash:
        s.note(index, f"{what} from {who} for a different frame")
    elif slot is None:
        s.note(index, f"{what} from {who}, not a signer")
    elif any(i == slot for i, _ in taken):
        s.note(index, f"duplicate {what} from {who}")
    else:
        return slot
    return None


def _on_approve(s: Step, index: int, a: Approve) -> None:
    r = s.r
    p = r.pending
    slot = _vote_slot(s, index, "approval", a, p.approvals if p is not None else ())
    if p is None or slot is None:
        return
    message = approve_message(r.entity_id, a.height, a.round, a.frame_hash)
    if not approval_valid(r.entity.config, slot, message, a.signature):
        s.note(index, f"invalid approval signature from {a.signer.hex()[:16]}; not counted")
        return
    approvals = tuple(sorted((*p.approvals, (slot, a.signature))))
    s.r = replace(r, pending=replace(p, approvals=approvals))


def _try_polka(s: Step) -> None:
    """Once the approvals of the frame in flight hold the threshold: the polka, sent to
    every other member, and this signer's own pre-commit asked for."""
    r = s.r
    p = r.pending
    if p is None or p.polka is not None:
        return
    config = r.entity.config
    if config.shares_of([config.ids[i] for i, _ in p.approvals]) < config.threshold:
        return
    polka, bad = aggregate_approvals(config, p.frame, p.round, dict(p.approvals))
    for i in bad:
        s.note(-1, f"invalid approval signature from {config.ids[i].hex()[:16]}; not counted")
    if bad:
        p = replace(p, approvals=tuple((i, a) for i, a in p.approvals if i not in bad))
    if polka is not None:
        p = replace(p, polka=polka)
        notice = Tx.of(PolkaNotice(p.frame.height, p.frame.hash, polka))
        for member in config.ids:
            if member != r.signer:
                s.effects.append(Send(member, notice))
        s.effects.append(PrecommitDue(p.frame.height, p.frame.hash, polka, r.signer))
    s.r = replace(r, pending=p)


def _on_polka(s: Step, index: int, n: PolkaNotice) -> None:
    """A member's side of a polka: checked, it asks this signer's agent to pre-commit
    (the agent does so only if it approved that frame at that round). A polka at a
    later round than ours also moves this replica there: members holding the
    threshold reached it."""
    r = s.r
    if n.height != r.next_height or n.round < r.round:
        return  # another height, or a round this replica has left: harmless
    config = r.entity.config
    reason = verify_polka(config, r.entity_id, n.height, n.frame_hash, n.polka)
    if reason is not None:
        s.note(index, f"polka refused: {reason}")
        return
    if n.round > r.round:
        enter_round(s, n.round)
    s.effects.append(PrecommitDue(n.height, n.frame_hash, n.polka, config.proposer_at(n.round)))


def _on_precommit(s: Step, index: int, pc: Precommit) -> None:
    r = s.r
    p = r.pending
    slot = _vote_slot(s, index, "precommit", pc, p.sigs if p is not None else ())
    if p is None or slot is None:
        return
    signed = Signatures(pc.signature, pc.outbox)
    if not precommit_valid(r.entity.config, slot, p.frame, p.round, signed):
        # Checked before it takes the slot: a forged pre-commit that came first would
        # otherwise keep the member's genuine one out as a duplicate.
        s.note(index, f"invalid precommit signature from {pc.signer.hex()[:16]}; not counted")
        return
    sigs = tuple(sorted((*p.sigs, (slot, signed))))
    s.r = replace(r, pending=replace(p, sigs=sigs))


def _try_commit(s: Step) -> None:
    r = s.r
    p = r.pending
    if p is None:
        return
    config = r.entity.config
    if config.shares_of([config.ids[i] for i, _ in p.sigs]) < config.threshold:
        return
    cert, bad = aggregate_precommits(config, p.frame, p.round, dict(p.sigs))
    for i in bad:
        s.note(-1, f"invalid precommit signature from {config.ids[i].hex()[:16]}; not counted")
    if bad:
        p = replace(p, sigs=tuple((i, sig) for i, sig in p.sigs if i not in bad))
        s.r = replace(r, pending=p)
    if cert is None:
        return
    _, events = s.execute(r.entity, p.frame, verify=False)
    _apply_committed(s, p.frame, cert, p.post, events, transmit=True)
    for member in r.entity.config.ids:
        if member != r.signer:
            s.effects.append(Send(member, Tx.of(Commit(p.frame, cert))))


def _on_commit(s: Step, index: int, frame: Frame, cert: Certificate) -> None:
    r = s.r
    if frame.entity_id != r.entity_id:
        s.note(index, "commit for another entity")
        return
    if frame.height <= r.entity.height:
        return  # already applied: idempotent
    if frame.height != r.next_height:
        s.note(index, f"commit at height {frame.height}, expected {r.next_height}; catch up first")
        return
    if frame.prev_hash != r.head:
        s.note(index, "commit does not extend this replica's head")
        return
    reason = verify_certificate(r.entity.config, frame, cert)
    if reason is not None:
        s.note(index, f"commit refused: {reason}")
        return
    try:
        post, events = s.execute(r.entity, frame, verify=True)
    except FrameInvalid as exc:
        s.note(index, f"certified frame does not execute here: {exc}")
        return
    if post.hash != frame.state_hash:
        s.note(index, "certified frame's state hash differs from this replica's")
        return
    if tuple(events.outbox) != frame.outbox:
        s.note(index, "certified frame's outgoing messages differ from this replica's")
        return
    _apply_committed(s, frame, cert, post, events, transmit=False)


def _apply_committed(
    s: Step,
    frame: Frame,
    cert: Certificate,
    post: EntityState,
    events: ent.FrameEvents,
    *,
    transmit: bool,
) -> None:
    """Apply a certified frame. ``transmit``: this replica made the certificate (it is
    the round's proposer), so it sends the frame's channel messages; the other
    replicas keep them, and resend them if they wait too long (``resend``)."""
    r = s.r
    included = {b.raw for b in frame.batches}
    pool = tuple(b for b in r.pool if b.raw not in included and b.nonce > post.nonce_of(b.signer))
    applied = {input_key(i) for i in frame.inputs}
    inbox = tuple(
        i
        for i in r.inbox
        if input_key(i) not in applied and not accounts.is_stale(post.channels, i)
    )
    fresh = signed_messages(r.entity, post, frame, cert)
    mailbox = r.mailbox.after(post, events.channels, fresh)
    s.r = replace(
        r,
        entity=post,
        head=frame.hash,
        cert=cert,
        round=0,
        pool=pool,
        pending=None,
        lock=None,
        changes=(),
        ahead=(),
        inbox=inbox,
        mailbox=mailbox,
    )
    s.effects.append(Committed(frame, cert, events, post))
    if transmit:
        s.effects.extend(transmissions(post, fresh))
    new = s.r
    joined = [m for m in post.config.ids if m not in r.entity.config.index]
    s.effects.extend(Invite(m, r.genesis) for m in joined)
    if pool and new.proposer != new.signer:
        # The proposer may have changed, or missed some: make sure it has them.
        s.effects.extend(Send(new.proposer, Tx.of(SubmitBatch(b))) for b in pool)
