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

Channels add, from the frame's payment events (``FrameEvents.payments``):
``payment`` (one of ours leaves: queued on its first channel; the accountant's
payment rules judge it), ``paid`` (the first channel agreed it), ``received``
(we are the payee), ``forward`` (as a hub: a payment in passed on, value in =
value out), ``forwarded`` (agreed downstream), ``refunded`` and ``rejected``
(ours came back or never left, with why), ``minted`` (the simulation faucet),
``channel_note``; and the executed channel actions ``open_channel``,
``set_credit``, ``add_collateral``. Payment effects carry ``amount``, ``asset``
and ``counterparty`` (the payee of ours, the peer otherwise).

The frame is re-executed with its inputs (the counterparties' channel
messages) and ``allow_mint=True``: a wallet cannot
know the server's simulation flag, and a node outside simulation refuses a
``faucet`` transaction itself.
The outbox the signers would sign must be exactly what the re-execution
produced, or the frame is refused.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from node.machines import accounts, governance
from node.machines.accounts import (
    ExtendCredit,
    FundChannel,
    OpenChannel,
    Pay,
    PaymentEvent,
)
from node.machines.channel import Forward
from node.machines.channel import Frame as ChannelFrame
from node.machines.entity import (
    EntityAction,
    EntityState,
    FrameEvents,
    Increment,
    Proposal,
    Propose,
    Vote,
    Withdraw,
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

# Payments (channels).
PAYMENT = "payment"  # ours leaves: what payment rules judge
PAID = "paid"
RECEIVED = "received"
FORWARD = "forward"  # as a hub: in and out in this frame, value in = value out
FORWARDED = "forwarded"
REFUNDED = "refunded"
REJECTED = "rejected"
MINTED = "minted"
CHANNEL_NOTE = "channel_note"
UNBALANCED_FORWARD = "unbalanced_forward"  # a hub's out differs from its in: never routine
# Routine: nothing of ours leaves (or it comes back, or a hub passes value through).
PAYMENT_ROUTINE_KINDS: frozenset[str] = frozenset(
    {PAID, RECEIVED, FORWARD, FORWARDED, REFUNDED, REJECTED, MINTED, CHANNEL_NOTE}
)
PAYMENT_KINDS: frozenset[str] = PAYMENT_ROUTINE_KINDS | {PAYMENT, UNBALANCED_FORWARD}
CHANNEL_ACTION_KINDS: frozenset[str] = frozenset(accounts.CHANNEL_ACTION_NAMES.values())
EFFECT_KINDS: frozenset[str] = (
    ROUTINE_KINDS | GOVERNANCE_KINDS | PAYMENT_KINDS | CHANNEL_ACTION_KINDS
)
_EVENT_KINDS = {
    "paid": PAID,
    "received": RECEIVED,
    "forwarded": FORWARDED,
    "refunded": REFUNDED,
    "rejected": REJECTED,
    "minted": MINTED,
    "note": CHANNEL_NOTE,
}

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
    # The effect's size where it has one (the counter delta, a payment's amount).
    # Rules read it (``max_counter``, the payment limits).
    amount: int | None = None
    asset: int | None = None  # payments: the asset
    counterparty: bytes | None = None  # payments: our payee, else the channel's peer
    route: tuple[bytes, ...] = ()  # ``payment``: the whole route (first hop .. payee)
    payment_id: bytes = b""

    @property
    def is_payment(self) -> bool:
        return self.kind in PAYMENT_KINDS


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
    config: Config | None = field(default=None, compare=False)  # kept by without_state
    # The config the frame was proposed and signed under (the state before it): who
    # proposed which round, and whose shares count, stay as they were once it applies.
    config_before: Config | None = field(default=None, compare=False)

    def without_state(self) -> FrameAnalysis:
        """This analysis as the approvals list keeps an older one: what the frame does,
        without the state after it and the execution's events (a hub's frame makes tens
        of thousands of objects, and each state pins its own version of the maps)."""
        if self.new_state is None and self.events is None:
            return self
        return replace(self, new_state=None, events=None, config=self.config_after)

    @property
    def config_after(self) -> Config | None:
        """The entity's config after the frame, if the frame applies."""
        return self.new_state.config if self.new_state is not None else self.config

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

    @property
    def payments_out(self) -> list[Effect]:
        """Our payments leaving in this frame (what payment limits count)."""
        return [e for e in self.effects if e.kind == PAYMENT]


def short(data: bytes) -> str:
    """An id or hash as the wallet shows it everywhere, ``0x9f3c12…e1ab``: enough to
    recognise, the whole value one copy away (one form, for entities and signers)."""
    h = data.hex()
    if len(h) <= 11:
        return "0x" + h
    return f"0x{h[:6]}\u2026{h[-4:]}"


def name_of(sid: bytes, names: Names | None = None) -> str:
    """A label for a signer id: its name if known, else short hex."""
    if names and sid in names:
        return names[sid]
    return short(sid)


def describe_action(action: EntityAction, names: Names | None = None) -> str:
    """An action in words, as proposed (before it runs)."""
    match action:
        case OpenChannel(peer=peer, asset=asset, collateral=collateral):
            funds = f", with {collateral} of asset {asset} as collateral" if collateral else ""
            return f"open a channel with {short(peer)}{funds}"
        case ExtendCredit(peer=peer, asset=asset, limit=limit):
            return f"extend credit of {limit} in asset {asset} to {short(peer)}"
        case FundChannel(peer=peer, asset=asset, amount=amount):
            return f"add {amount} of asset {asset} as collateral with {short(peer)}"
        case AddSigner(pubkey=pubkey, shares=shares, threshold=threshold):
            who = name_of(governance.signer_id(pubkey), names)
            also = "" if threshold is None else f" and set the threshold to {threshold}"
            return f"add signer {who} with {_shares(shares)}{also}"
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
            threshold = (
                ""
                if before.threshold == after.threshold
                else f", threshold {before.threshold} -> {after.threshold}"
            )
            return (
                f"signer {who} added with {_shares(shares)}: signers "
                f"{len(before.members)} -> {len(after.members)}, {total}{threshold}"
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
        case Pay(route=route, asset=asset, amount=amount):
            return f"pay {amount} of asset {asset} to {describe_route(route)}"
        case accounts.Faucet(asset=asset, amount=amount):
            return f"faucet: {amount} of asset {asset} to the reserve (simulation)"
        case Withdraw():
            return "withdraw the batch at this nonce (nothing else happens)"
    return "unknown transaction"  # the entity registry decodes no other type


def describe_route(route: tuple[bytes, ...]) -> str:
    """``payee`` for a direct payment, ``payee via hub, ...`` otherwise."""
    payee = short(route[-1])
    if len(route) == 1:
        return payee
    return f"{payee} via {', '.join(short(h) for h in route[:-1])}"


def analyze(state: EntityState, frame: Frame, names: Names | None = None) -> FrameAnalysis:
    """What ``frame`` does on top of ``state`` (the replica's state before it)."""
    txs = [
        DecodedTx(b.signer, b.nonce, t.body.NAME, describe_tx(t.body, names), t.raw.hex())
        for b in frame.batches
        for t in b.txs
    ]

    def refused(reason: str) -> FrameAnalysis:
        return FrameAnalysis(
            frame.hash,
            frame.entity_id,
            frame.height,
            txs,
            [],
            reason,
            None,
            config_before=state.config,
        )

    if frame.entity_id != state.entity_id:
        return refused(
            f"frame is for entity {short(frame.entity_id)}, not {short(state.entity_id)}"
        )
    if frame.height != state.height + 1:
        return refused(f"frame height {frame.height}, expected {state.height + 1}")
    try:
        new, events = execute(
            state, frame.batches, verify=True, inputs=frame.inputs, allow_mint=True
        )
    except ValueError as exc:  # FrameInvalid, or a malformed key or signature
        return refused(f"frame does not apply: {exc}")
    if new.hash != frame.state_hash:
        return refused(
            f"frame claims state hash {frame.state_hash.hex()}, "
            f"re-executing it gives {new.hash.hex()}"
        )
    if list(frame.outbox) != events.outbox:
        # The signers sign these hashes with their pre-commit: only what the frame makes.
        return refused(
            f"the frame's outbox ({len(frame.outbox)} messages) is not what re-executing "
            f"it produces ({len(events.outbox)})"
        )
    effects = _effects(state, new, frame, events, names)
    return FrameAnalysis(
        frame.hash,
        frame.entity_id,
        frame.height,
        txs,
        effects,
        None,
        new,
        events,
        config_before=state.config,
    )


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
        if isinstance(action, OpenChannel | ExtendCredit | FundChannel):
            text = f"proposal #{pid} executes: {describe_action(action, names)}"
            amount = action.limit if isinstance(action, ExtendCredit) else None
            if isinstance(action, OpenChannel | FundChannel):
                amount = action.collateral if isinstance(action, OpenChannel) else action.amount
            closed.append(
                (
                    pid,
                    Effect(
                        kind,
                        False,
                        text,
                        pid,
                        amount=amount,
                        asset=action.asset,
                        counterparty=action.peer,
                    ),
                )
            )
            continue
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
    out.extend(payment_effects(old.entity_id, frame, events.payments))
    return out


def payment_effects(entity: bytes, frame: Frame, payments: list[PaymentEvent]) -> list[Effect]:
    """The frame's payment events as effects, and the hub's forwards (in and out here):
    read from the frame and its events alone, never by comparing states."""
    routes = _pay_routes(entity, frame)
    out: list[Effect] = []
    for ev in payments:
        if ev.kind == "queued":
            route = routes.get(ev.payment_id, (ev.peer,))
            payee = route[-1]
            out.append(
                Effect(
                    PAYMENT,
                    False,
                    f"pay {ev.amount} of asset {ev.asset} to {describe_route(route)}",
                    amount=ev.amount,
                    asset=ev.asset,
                    counterparty=payee,
                    route=route,
                    payment_id=ev.payment_id,
                )
            )
            continue
        kind = _EVENT_KINDS.get(ev.kind)
        if kind is None:
            continue
        out.append(
            Effect(
                kind,
                False,
                _event_text(ev),
                amount=ev.amount,
                asset=ev.asset,
                counterparty=ev.peer or None,
                payment_id=ev.payment_id,
            )
        )
    out.extend(_forwards(frame, payments))
    return out


def _event_text(ev: PaymentEvent) -> str:
    what = f"{ev.amount} of asset {ev.asset}"
    peer = short(ev.peer) if ev.peer else ""
    match ev.kind:
        case "paid":
            return f"payment of {what} agreed by {peer}"
        case "received":
            return f"received {what} from {peer}"
        case "forwarded":
            return f"forwarded {what} to {peer} (agreed)"
        case "refunded":
            return f"payment of {what} refunded by {peer}: {ev.detail}"
        case "rejected":
            return f"payment of {what} to {peer} did not leave: {ev.detail}"
        case "minted":
            return f"faucet: {what} to the reserve"
    return f"channel with {peer}: {ev.detail} ({what})"


def _pay_routes(entity: bytes, frame: Frame) -> dict[bytes, tuple[bytes, ...]]:
    """Payment id -> route of each pay transaction in the frame (ids as the node makes them)."""
    routes: dict[bytes, tuple[bytes, ...]] = {}
    for batch in frame.batches:
        for index, tx in enumerate(batch.txs):
            if isinstance(tx.body, Pay):
                pid = accounts.payment_id_for(entity, batch.signer, batch.nonce, index)
                routes[pid] = tx.body.route
    return routes


def _forwards(frame: Frame, payments: list[PaymentEvent]) -> list[Effect]:
    """Payments this entity passes on as a hub in this frame (its ``forward`` events:
    from whom, to which next hop, what was queued there), each matched with the
    Forward that came in (in a channel frame among the frame's inputs). Value in
    must equal value out (the node's rules make it so; checked anyway)."""
    incoming_of = _incoming_forwards(frame)
    out: list[Effect] = []
    for ev in payments:
        if ev.kind != "forward":
            continue
        upstream, nxt, pid = ev.peer, ev.to, ev.payment_id
        incoming = incoming_of.get((upstream, pid))
        if incoming is None:
            continue
        asset, amount = ev.out
        if (incoming.asset, incoming.amount) == (asset, amount):
            text = (
                f"forward {amount} of asset {asset} from {short(upstream)} "
                f"to {short(nxt)} (value in = value out)"
            )
            kind = FORWARD
        else:
            text = (
                f"forward from {short(upstream)} to {short(nxt)}: {incoming.amount} of asset "
                f"{incoming.asset} in, {amount} of asset {asset} out"
            )
            kind = UNBALANCED_FORWARD
        out.append(
            Effect(
                kind,
                False,
                text,
                amount=amount,
                asset=asset,
                counterparty=nxt,
                payment_id=pid,
            )
        )
    return out


def _incoming_forwards(frame: Frame) -> dict[tuple[bytes, bytes], Forward]:
    """(sender, payment id) -> each Forward that came in, in the frame's channel frames
    (one pass: a hub's frame holds thousands)."""
    found: dict[tuple[bytes, bytes], Forward] = {}
    for inp in frame.inputs:
        if isinstance(inp, accounts.Message) and isinstance(inp.body, ChannelFrame):
            for tx in inp.body.txs:
                if isinstance(tx.body, Forward):
                    found.setdefault((inp.sender, tx.body.payment_id), tx.body)
    return found


def _shares(n: int) -> str:
    return f"{n} share" if n == 1 else f"{n} shares"
