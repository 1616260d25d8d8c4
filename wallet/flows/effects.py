"""What a frame would do to an entity, in plain words: its transactions and its effects.

``analyze(state, frame)`` re-executes the frame on the replica's state with the
node's own transition (``node.machines.entity.execute``, signatures verified)
and compares the state before and after, with the frame's events. The
approval view shows the result; the accountant (``accountant.py``) judges it by
its effects, never by transaction names.

Effect kinds: ``counter`` (the frame's counter delta), ``proposal`` (a new
proposal), ``vote``, ``expired``, ``voided`` (a proposal that reached its
threshold but whose action no longer applied, closed without effect) and, for
each proposal that executes in the frame, its governance kind (``add_signer``,
``remove_signer``, ``set_shares``, ``set_threshold``, ``set_proposer``). Only the
executed governance kinds are ``governance=True``: a vote that makes a proposal
execute is routine itself, and the execution is listed as its own effect.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from node.machines import governance
from node.machines.entity import (
    EntityState,
    FrameEvents,
    Increment,
    Proposal,
    Propose,
    Vote,
    execute,
)
from node.machines.frames import Frame
from node.machines.governance import (
    ACTION_NAMES,
    Action,
    AddSigner,
    Config,
    RemoveSigner,
    SetProposer,
    SetShares,
    SetThreshold,
)

COUNTER = "counter"
PROPOSAL = "proposal"
VOTE = "vote"
EXPIRED = "expired"
VOIDED = "voided"
ROUTINE_KINDS: frozenset[str] = frozenset({COUNTER, PROPOSAL, VOTE, EXPIRED, VOIDED})
GOVERNANCE_KINDS: frozenset[str] = frozenset(ACTION_NAMES.values())
EFFECT_KINDS: frozenset[str] = ROUTINE_KINDS | GOVERNANCE_KINDS

type Names = Mapping[bytes, str]


@dataclass(frozen=True, slots=True)
class DecodedTx:
    """One transaction of the frame, in the order the frame applies them."""

    signer: bytes  # the batch's signer id
    nonce: int  # the batch's nonce
    name: str  # the transaction's name: increment, propose, vote
    text: str  # what it asks for, in plain words
    raw_hex: str  # its canonical bytes


@dataclass(frozen=True, slots=True)
class Effect:
    kind: str  # one of EFFECT_KINDS
    governance: bool  # True for an executed governance action
    text: str
    proposal_id: int | None = None
    # The effect's size where it has one (the counter delta). Rules read it
    # (``max_counter``); payment effects will carry their amount here.
    amount: int | None = None


@dataclass(frozen=True)
class FrameAnalysis:
    frame_hash: bytes
    entity_id: bytes
    height: int
    txs: list[DecodedTx]
    effects: list[Effect]
    error: str | None  # why the frame does not apply here; then no effects
    new_state: EntityState | None
    events: FrameEvents | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def governance(self) -> bool:
        """Whether any effect changes the entity's config."""
        return any(e.governance for e in self.effects)

    @property
    def counter_delta(self) -> int:
        return sum(e.amount or 0 for e in self.effects if e.kind == COUNTER)


def short(sid: bytes) -> str:
    """A signer id as the first 8 hex digits."""
    return sid.hex()[:8]


def name_of(sid: bytes, names: Names | None = None) -> str:
    """A label for a signer id: its name if known, else short hex."""
    if names and sid in names:
        return names[sid]
    return short(sid)


def describe_action(action: Action, names: Names | None = None) -> str:
    """An action in words, as proposed (before it runs)."""
    match action:
        case AddSigner(pubkey=pubkey, shares=shares):
            who = name_of(governance.signer_id(pubkey), names)
            return f"add signer {who} with {_shares(shares)}"
        case RemoveSigner(signer=sid):
            return f"remove signer {name_of(sid, names)}"
        case SetShares(signer=sid, shares=shares):
            return f"set the shares of {name_of(sid, names)} to {shares}"
        case SetThreshold(threshold=threshold):
            return f"set the threshold to {threshold}"
        case SetProposer(signer=sid):
            return f"make {name_of(sid, names)} the proposer"


def describe_change(action: Action, before: Config, after: Config, names: Names | None) -> str:
    """An executed action as a before -> after change, e.g. ``threshold 67 -> 75``."""
    total = f"total shares {before.total_shares} -> {after.total_shares}"
    match action:
        case AddSigner(pubkey=pubkey, shares=shares):
            who = name_of(governance.signer_id(pubkey), names)
            return (
                f"signer {who} added with {_shares(shares)}: signers "
                f"{len(before.members)} -> {len(after.members)}, {total}"
            )
        case RemoveSigner(signer=sid):
            held = before.members[before.index[sid]].shares
            return (
                f"signer {name_of(sid, names)} removed ({_shares(held)}): signers "
                f"{len(before.members)} -> {len(after.members)}, {total}"
            )
        case SetShares(signer=sid, shares=shares):
            old = before.members[before.index[sid]].shares
            return f"shares of {name_of(sid, names)} {old} -> {shares}, {total}"
        case SetThreshold():
            return f"threshold {before.threshold} -> {after.threshold}"
        case SetProposer():
            was, now = name_of(before.proposer, names), name_of(after.proposer, names)
            return f"proposer {was} -> {now}"


def describe_tx(body: object, names: Names | None = None) -> str:
    match body:
        case Increment(n=n):
            return f"increment the counter by {n}"
        case Propose(action=action, expires_at=expires_at):
            return f"propose: {describe_action(action, names)}, expires at height {expires_at}"
        case Vote(proposal_id=pid):
            return f"vote for proposal #{pid}"
    return "unknown transaction"  # the entity registry decodes no other type


def analyze(state: EntityState, frame: Frame, names: Names | None = None) -> FrameAnalysis:
    """What ``frame`` does on top of ``state`` (the replica's state before it)."""
    txs = [
        DecodedTx(b.signer, b.nonce, t.body.NAME, describe_tx(t.body, names), t.raw.hex())
        for b in frame.batches
        for t in b.txs
    ]

    def refused(reason: str) -> FrameAnalysis:
        return FrameAnalysis(frame.hash, frame.entity_id, frame.height, txs, [], reason, None)

    if frame.entity_id != state.entity_id:
        return refused(
            f"frame is for entity {short(frame.entity_id)}, not {short(state.entity_id)}"
        )
    if frame.height != state.height + 1:
        return refused(f"frame height {frame.height}, expected {state.height + 1}")
    try:
        new, events = execute(state, frame.batches, verify=True)
    except ValueError as exc:  # FrameInvalid, or a malformed key or signature
        return refused(f"frame does not apply: {exc}")
    if new.hash != frame.state_hash:
        return refused(
            f"frame claims state hash {frame.state_hash.hex()}, "
            f"re-executing it gives {new.hash.hex()}"
        )
    effects = _effects(state, new, frame, events, names)
    return FrameAnalysis(frame.hash, frame.entity_id, frame.height, txs, effects, None, new, events)


def _effects(
    old: EntityState, new: EntityState, frame: Frame, events: FrameEvents, names: Names | None
) -> list[Effect]:
    out: list[Effect] = []
    delta = new.counter - old.counter
    if delta:
        out.append(
            Effect(
                COUNTER, False, f"counter +{delta} ({old.counter} -> {new.counter})", amount=delta
            )
        )

    # Proposals known in this frame: the open ones before it, and the new ones
    # (ids are handed out in transaction order, from the old next id).
    proposals: dict[int, Proposal] = {p.id: p for p in old.proposals}
    next_id = old.next_proposal_id
    executed = {pid for pid, _ in events.executed}
    voided = {pid for pid, _ in events.voided}
    for batch in frame.batches:
        for tx in batch.txs:
            match tx.body:
                case Propose(action=action, expires_at=expires_at):
                    pid = next_id
                    next_id += 1
                    proposals[pid] = Proposal(
                        pid, action, expires_at, batch.signer, (batch.signer,)
                    )
                    out.append(
                        Effect(
                            PROPOSAL,
                            False,
                            f"new proposal #{pid} by {name_of(batch.signer, names)}: "
                            f"{describe_action(action, names)}, expires at height {expires_at}",
                            pid,
                        )
                    )
                case Vote(proposal_id=pid):
                    p = proposals[pid]
                    proposals[pid] = replace(p, votes=(*p.votes, batch.signer))
                    what = describe_action(p.action, names)
                    if pid in executed:
                        outcome = "; it executes in this frame"
                    elif pid in voided:
                        outcome = "; it closes in this frame without effect"
                    else:
                        outcome = ""
                    out.append(
                        Effect(
                            VOTE,
                            False,
                            f"{name_of(batch.signer, names)} votes for proposal #{pid} "
                            f"({what}){outcome}",
                            pid,
                        )
                    )

    # Executions run at the end of the frame in ascending id, each on the config
    # the previous ones left; voided ones change nothing.
    config = old.config
    closed: list[tuple[int, Effect]] = []
    for pid, kind in events.executed:
        action = proposals[pid].action
        after = action.apply(config)
        text = f"proposal #{pid} executes: {describe_change(action, config, after, names)}"
        closed.append((pid, Effect(kind, True, text, pid)))
        config = after
    for pid, reason in events.voided:
        text = f"proposal #{pid} closes without effect: {reason}"
        closed.append((pid, Effect(VOIDED, False, text, pid)))
    out.extend(e for _, e in sorted(closed, key=lambda c: c[0]))
    for pid in events.expired:
        p = proposals[pid]
        text = (
            f"proposal #{pid} expired ({describe_action(p.action, names)}) "
            f"with {new.config.shares_of(p.votes)} of {new.config.threshold} shares needed"
        )
        out.append(Effect(EXPIRED, False, text, pid))
    return out


def _shares(n: int) -> str:
    return f"{n} share" if n == 1 else f"{n} shares"
