"""Rounds, timeouts, round changes, catch-up and locks: how a height moves on (pure).

A proposer at round 0 proposes at once. On a timeout (from this node's own clock
only) a replica moves to the next round and reports it, with its lock (a frame
with its polka), to that round's proposer and to the other members (so that one
with nothing to do catches up on reports). The proposer of a later round waits
until members holding the threshold of shares (itself included) have reported the
round change, then re-proposes the highest-round locked frame among those reports
(and any lock it saw itself) with its polka, or else a fresh frame. Any two sets
of members that each hold the threshold share a member, so if a frame might have
been certified, the new proposer hears of it. A replica catches up to a later
round on reports (or on a polka of that round), never on one member's word alone.

A report from another server is a ``signed_round_change``: it counts only under
:func:`round_change_refusal`, the one rule the transition and the node's intake
(``checks``) both apply: the member's binding of the sending server's identity key
verifies under the member's key in the config and no higher serial replaced it,
and that server signed this round change, for this entity. A report from this
server's own replicas (``round_change``) is the node's own, like its timeouts.
"""

from __future__ import annotations

from dataclasses import replace

from node.crypto import bls
from node.machines.binding import Bound, ServerBinding, binding_refusal
from node.machines.entity import EntityState, FrameInvalid
from node.machines.frames import verify_polka
from node.machines.replica.effects import Send
from node.machines.replica.inputs import Lock, RoundChange, SignedRoundChange, SubmitBatch
from node.machines.replica.state import Replica
from node.machines.replica.stepping import Step
from node.txs import Tx


def on_timeout(s: Step, index: int, height: int, round_: int) -> None:
    r = s.r
    if height != r.next_height or round_ != r.round:
        s.note(index, f"stale timeout {height}/{round_}")
        return
    enter_round(s, r.round + 1)


def enter_round(s: Step, round_: int) -> None:
    """Move to ``round_`` and report it, with this replica's lock, to every member."""
    r = s.r
    joined = [m for m, rd in r.ahead if rd == round_]
    s.r = r = replace(
        r,
        round=round_,
        pending=None,
        changes=tuple(sorted({r.signer, *joined})),
        ahead=tuple((m, rd) for m, rd in r.ahead if rd > round_),
    )
    # The report, and the batches waiting here, go to every other member, the round's
    # proposer first: the proposer counts the report and proposes the batches, and a
    # member that had nothing to do (no batch reached it: the silent proposer was the
    # only one sent them, so it had no timer of its own) now times out with the rest
    # and catches up on the reports (``_catch_up``). A silent proposer is so replaced
    # at the next round, not after the timeouts of several.
    report = Tx.of(RoundChange(r.next_height, r.round, r.signer, r.lock))
    others = sorted(
        (m for m in r.entity.config.ids if m != r.signer), key=lambda m: m != r.proposer
    )
    for member in others:
        s.effects.append(Send(member, report))
    for member in others:
        s.effects.extend(Send(member, Tx.of(SubmitBatch(b))) for b in r.pool)


def _catch_up(s: Step) -> None:
    """Move to a later round R on reports, never on one member's word alone: when
    members holding more than ``total - threshold`` shares reached R or later (one
    of them, at least, is not faulty), or when this replica leads R and the members
    that reported R hold, with it, the threshold (it can propose at once)."""
    r = s.r
    config = r.entity.config
    for round_ in sorted({rd for _, rd in r.ahead}, reverse=True):
        later = [m for m, rd in r.ahead if rd >= round_]
        at = [r.signer, *(m for m, rd in r.ahead if rd == round_)]
        if config.shares_of(later) > config.total_shares - config.threshold or (
            config.proposer_at(round_) == r.signer and config.shares_of(at) >= config.threshold
        ):
            enter_round(s, round_)
            return


def on_round_change(s: Step, index: int, rc: RoundChange) -> None:
    r = s.r
    if rc.height != r.next_height or rc.round < r.round:
        return  # stale: harmless
    if rc.signer not in r.entity.config.index:
        s.note(index, "round change from a non-signer")
        return
    if rc.lock is not None:
        on_lock(s, index, rc.lock)
        r = s.r
    if rc.round > r.round:
        best = dict(r.ahead)
        best[rc.signer] = max(rc.round, best.get(rc.signer, 0))
        s.r = replace(r, ahead=tuple(sorted(best.items())))
        _catch_up(s)
        return
    if rc.signer not in r.changes:
        s.r = replace(r, changes=tuple(sorted((*r.changes, rc.signer))))


def round_change_refusal(r: Replica, src: SignedRoundChange) -> str | None:
    """Why a round change from another server does not count at replica ``r``, or None:
    its binding must be its member's (a member of the entity), verify under that
    member's key in the config, and be the highest serial seen for that member (a
    higher one, a revocation among them, replaces it); and the server the binding
    names must have signed this round change for this entity (so a report replayed at
    another entity, height, round or with another lock does not verify)."""
    rc, binding = src.report, src.binding
    who = rc.signer.hex()[:16]
    if binding.signer != rc.signer:
        return f"round change of {who} under another member's binding"
    config = r.entity.config
    slot = config.index.get(rc.signer)
    member = None if slot is None else config.members[slot].pubkey
    reason = binding_refusal(binding, member, r.bound(rc.signer))
    if reason is not None:
        return reason
    if binding.revokes:
        return f"member {who} binds no server (revoked at serial {binding.serial})"
    if not bls.verify(
        binding.server_key, SignedRoundChange.message(r.entity_id, rc), src.signature
    ):
        return (
            f"round change of {who} not signed by the server its binding names"
            " (or signed for another entity, height, round or lock)"
        )
    return None


def on_signed_round_change(s: Step, index: int, src: SignedRoundChange) -> None:
    r = s.r
    rc = src.report
    if rc.height != r.next_height or rc.round < r.round:
        return  # stale: harmless, whoever sent it
    reason = round_change_refusal(r, src)
    if reason is not None:
        s.note(index, f"round change refused: {reason}")
        return
    _remember(s, src.binding)
    on_round_change(s, index, rc)


def on_binding(s: Step, index: int, binding: ServerBinding) -> None:
    """Record a member's binding if it is the highest serial seen for that member."""
    r = s.r
    recorded = r.bound(binding.signer)
    if recorded is not None and binding.serial <= recorded.serial and recorded.same(binding):
        return  # seen: idempotent
    config = r.entity.config
    slot = config.index.get(binding.signer)
    member = None if slot is None else config.members[slot].pubkey
    reason = binding_refusal(binding, member, recorded)
    if reason is not None:
        s.note(index, f"server binding refused: {reason}")
        return
    _remember(s, binding)


def _remember(s: Step, binding: ServerBinding) -> None:
    r = s.r
    recorded = r.bound(binding.signer)
    if recorded is not None and recorded.serial >= binding.serial:
        return
    others = (b for b in r.bindings if b.signer != binding.signer)
    bindings = tuple(sorted((*others, Bound.of(binding)), key=lambda b: b.signer))
    s.r = replace(r, bindings=bindings)


def on_lock(s: Step, index: int, lock: Lock) -> None:
    """Remember the highest-round lock at the next height, once its polka is checked:
    a lock with a bad one must not displace a genuine lower-round lock."""
    r = s.r
    if lock.frame.entity_id != r.entity_id or lock.frame.height != r.next_height:
        return  # about another height: harmless, ignored
    if r.lock is not None and lock.round <= r.lock.round:
        return
    if lock.frame.prev_hash != r.head:
        s.note(index, "lock on a frame that does not extend this replica's head; ignored")
        return
    reason = verify_polka(
        r.entity.config, r.entity_id, lock.frame.height, lock.frame.hash, lock.polka
    )
    if reason is not None:
        s.note(index, f"lock refused: {reason}")
        return
    s.r = replace(r, lock=lock)


def locked_frame(s: Step) -> tuple[Lock, EntityState] | None:
    """The lock, if its frame still applies here (its polka was checked on intake)."""
    r = s.r
    lock = r.lock
    if lock is None or lock.frame.prev_hash != r.head:
        return None
    try:
        post, events = s.execute(r.entity, lock.frame, verify=True)
    except FrameInvalid:
        return None
    if post.hash != lock.frame.state_hash or tuple(events.outbox) != lock.frame.outbox:
        return None
    return lock, post
