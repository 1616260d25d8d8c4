"""An entity's accounts: reserves per asset, its channels, payments and hub forwarding (pure).

This is the part of the entity's frame transition (``node/machines/entity.py``)
that drives the channel machine (``node/machines/channel.py``): one
:class:`ChannelRecord` per counterparty, holding our :class:`ChannelSide` and
the counterparty's signer set as we know it. ``docs/CHANNELS.md`` explains the
rules; in short:

- **Reserves** come from the simulation faucet: the entity transaction
  ``faucet(asset, amount)``, in a member's signed batch, refused outside
  simulation. Opening or funding a channel moves reserve into it.
- **Entity transactions**: ``pay(route, asset, amount)`` queues a ``forward`` on
  the channel to ``route[0]``; the receiver passes it on along the route.
  **Actions** (run by an executed proposal): ``open_channel``, ``set_credit``,
  ``add_collateral``.
- **Frame inputs** are what the counterparties send: signed channel frames,
  acks and signer-set announcements (a :class:`Message`, verified against the
  sender's signer set).
- At the end of a frame the ``ready`` channels with queued transactions
  propose (at most ``MAX_PROPOSING``), and the frame's **outbox** lists the
  hashes of what the entity's signers must sign with their pre-commits: the acks
  and channel frames it produced, and an announcement of its new signer set if
  it changed.
- A hub forwards a payment when it applies the incoming frame; if the next hop
  is missing or lacks capacity, it refunds the payment to where it came from,
  with the reason. Value is conserved: a payment moves a channel's delta only.

The rules on ``pay`` and the channel actions are stated once here, as pure
functions that the decoders and the transition call and that a client calls before
it signs (the wallet's ``wallet/flows/compose.py``), so the two cannot disagree:
the bounds of each number (:class:`IntField`: ``ASSET``, ``PAY_AMOUNT``, ...),
``read_route`` / ``check_route``, ``check_action_fields``, and on an entity's
accounts as they stand (:class:`AccountsView`: a frame's :class:`Ledger` or an
``EntityState``) ``check_pay`` and ``check_action_applies``. They raise the node's
own words; :class:`Refused` also names the field at fault.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Protocol, Self

from node.codec import (
    HASH_LEN,
    UINT64_MAX,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    check_int,
    decode,
    encode_list,
    encode_tree,
    int_bytes,
    keccak,
)
from node.machines import channel as ch
from node.machines.channel import (
    MAX_AMOUNT,
    MAX_HOPS,
    Ack,
    AddCollateral,
    ChannelSide,
    Forward,
    Refund,
    amount_paid,
)
from node.machines.governance import Config, ConfigError
from node.machines.overlay import Base, Overlay
from node.machines.quorum import verify_quorum
from node.txs import Tx

# Channels that propose a channel frame in one entity frame (the lowest counterparty
# ids first; the others wait for the next frames). An entity's channels are not
# capped: this bounds a frame's outbox instead (frames.MAX_OUTBOX).
MAX_PROPOSING = 1024
MAX_ANNOUNCED = 8  # signer-set announcements a sender keeps for counterparties that missed some
ANNOUNCE_DOMAIN = b"XLN/entity-signers/v1"
PAYMENT_ID_DOMAIN = b"XLN/payment-id/v1"

# Kinds of signed channel message.
FRAME = 1
ACK = 2
ANNOUNCE = 3
KIND_NAMES = {FRAME: "frame", ACK: "ack", ANNOUNCE: "signers"}


class FutureInput(ConfigError):
    """An input that may apply later (signed by a signer set not announced to us yet)."""


class Refused(ConfigError):
    """A payment or channel action the node refuses: the reason in the node's words,
    and ``field``, the field of the ``pay`` or action it is about (``"route"``,
    ``"amount"``, ``"peer"``, ``"collateral"``; a form shows it there)."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.field = field


# The numbers of pay, faucet and the channel actions ---------------------------------------


@dataclass(frozen=True, slots=True)
class IntField:
    """A whole-number field of ``pay``, ``faucet`` or a channel action: its name in the
    node's errors and its bounds. The decoders read it with ``read``; a client checks
    a number it was given with ``check``: the same bounds, the same DecodeError."""

    name: str
    least: int
    most: int

    def read(self, item: RlpItem) -> int:
        return as_int(item, self.name, min_value=self.least, max_value=self.most)

    def check(self, value: int) -> int:
        return check_int(value, self.name, min_value=self.least, max_value=self.most)


ASSET = IntField("asset", 0, ch.MAX_ASSET)
PAY_AMOUNT = IntField("pay amount", 1, MAX_AMOUNT)
FAUCET_AMOUNT = IntField("faucet amount", 1, MAX_AMOUNT)
PEER_CONFIG_HEIGHT = IntField("peer config height", 0, UINT64_MAX)
COLLATERAL = IntField("collateral", 0, MAX_AMOUNT)  # open_channel's (0: none)
CREDIT_LIMIT = IntField("limit", 0, MAX_AMOUNT)  # set_credit's
FUND_AMOUNT = IntField("amount", 1, MAX_AMOUNT)  # add_collateral's


def _peer(item: RlpItem) -> bytes:
    return as_bytes(item, "counterparty", size=HASH_LEN)


def read_route(item: RlpItem) -> tuple[bytes, ...]:
    """A payment's route as the node takes it: 1 .. ``MAX_HOPS + 1`` distinct entity
    ids, the first hop first and the payee last; DecodeError in the node's words."""
    route = tuple(
        as_bytes(h, "route hop", size=HASH_LEN)
        for h in as_list(item, "route", max_len=MAX_HOPS + 1)
    )
    if not route:
        raise DecodeError("pay: the route is empty")
    if len(set(route)) != len(route):
        raise DecodeError("pay: the route visits an entity twice")
    return route


def check_route(route: Sequence[bytes]) -> tuple[bytes, ...]:
    """``read_route`` of a route a client built."""
    items: list[RlpItem] = list(route)
    return read_route(items)


# State ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRecord:
    """Our side of the channel with ``peer``, and the peer's signer set as we know it:
    the config it had from entity height ``peer_config_height`` on."""

    peer: bytes
    peer_config: Config
    peer_config_height: int
    side: ChannelSide

    def to_tree(self) -> RlpTree:
        return [
            self.peer,
            self.peer_config.to_tree(),
            int_bytes(self.peer_config_height),
            decode(self.side.encoded),
        ]

    @cached_property
    def encoded(self) -> bytes:
        return encode_list(
            [
                encode_tree(self.peer),
                encode_tree(self.peer_config.to_tree()),
                encode_tree(int_bytes(self.peer_config_height)),
                self.side.encoded,
            ]
        )

    @classmethod
    def from_item(cls, item: RlpItem) -> ChannelRecord:
        f = as_list(item, "channel record", size=4)
        side = ChannelSide.decode(encode_tree(f[3]))
        peer = _peer(f[0])
        if side.peer != peer:
            raise DecodeError("channel record: the side is for another counterparty")
        return cls(peer, Config.from_item(f[1]), as_int(f[2], "peer config height"), side)


def payment_id_for(entity_id: bytes, signer: bytes, nonce: int, index: int) -> bytes:
    """keccak-256 of domain, payer entity, batch signer, nonce (8 bytes), tx index (2)."""
    return keccak(
        PAYMENT_ID_DOMAIN + entity_id + signer + nonce.to_bytes(8, "big") + index.to_bytes(2, "big")
    )


# Entity transaction: pay ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pay:
    """Pay ``amount`` of ``asset`` along ``route``: ``route[0]`` is our channel's
    counterparty, ``route[-1]`` the payee (the same entity for a direct payment)."""

    TYPE: ClassVar[int] = 4
    NAME: ClassVar[str] = "pay"
    route: tuple[bytes, ...]
    asset: int
    amount: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 3:
            raise DecodeError(f"pay: expected [route, asset, amount], got {len(fields)} fields")
        return cls(read_route(fields[0]), ASSET.read(fields[1]), PAY_AMOUNT.read(fields[2]))

    def to_fields(self) -> list[RlpItem]:
        return [list(self.route), int_bytes(self.asset), int_bytes(self.amount)]


# Entity transaction: faucet (simulation) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Faucet:
    """Simulation only: credit ``amount`` of ``asset`` to the entity's reserve. It is a
    member's signed transaction, so the member's signature authorises it and the
    batch nonce makes it apply once; every replica re-executes it, and one whose
    server is not a simulation chain refuses it."""

    TYPE: ClassVar[int] = 5
    NAME: ClassVar[str] = "faucet"
    asset: int
    amount: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError(f"faucet: expected [asset, amount], got {len(fields)} fields")
        return cls(ASSET.read(fields[0]), FAUCET_AMOUNT.read(fields[1]))

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.asset), int_bytes(self.amount)]


FAUCET_DISABLED = (
    "the faucet is disabled outside simulation (start a new chain with --faucet-chain)"
)


def faucet(ledger: Ledger, tx: Faucet, tx_id: bytes, *, allow_mint: bool) -> None:
    """Credit the reserve; ``tx_id`` names the transaction in the frame's events."""
    if not allow_mint:
        raise ConfigError(FAUCET_DISABLED)
    ledger.add_reserve(tx.asset, tx.amount)
    ledger.events.append(PaymentEvent("minted", b"", tx.asset, tx.amount, tx_id))


# Actions (run by an executed proposal) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenChannel:
    """Open a channel with ``peer``, whose signer set is ``peer_config`` (as of its
    entity height ``peer_config_height``), moving ``collateral`` of ``asset`` from
    reserve into it (0: none)."""

    KIND: ClassVar[int] = 6
    peer: bytes
    peer_config: Config
    peer_config_height: int
    asset: int
    collateral: int

    def fields(self) -> list[RlpItem]:
        return [
            self.peer,
            self.peer_config.to_tree(),  # type: ignore[list-item]
            int_bytes(self.peer_config_height),
            int_bytes(self.asset),
            int_bytes(self.collateral),
        ]


@dataclass(frozen=True, slots=True)
class ExtendCredit:
    """Set the credit we extend to ``peer`` in ``asset`` (what it may owe us)."""

    KIND: ClassVar[int] = 7
    peer: bytes
    asset: int
    limit: int

    def fields(self) -> list[RlpItem]:
        return [self.peer, int_bytes(self.asset), int_bytes(self.limit)]


@dataclass(frozen=True, slots=True)
class FundChannel:
    """Move ``amount`` of ``asset`` from reserve into our collateral with ``peer``."""

    KIND: ClassVar[int] = 8
    peer: bytes
    asset: int
    amount: int

    def fields(self) -> list[RlpItem]:
        return [self.peer, int_bytes(self.asset), int_bytes(self.amount)]


type ChannelAction = OpenChannel | ExtendCredit | FundChannel

CHANNEL_ACTIONS = (OpenChannel, ExtendCredit, FundChannel)
CHANNEL_ACTION_NAMES: dict[type[ChannelAction], str] = {
    OpenChannel: "open_channel",
    ExtendCredit: "set_credit",
    FundChannel: "add_collateral",
}


def channel_action_from(kind: int, args: list[RlpItem]) -> ChannelAction | None:
    """The channel action of ``kind`` (None if ``kind`` is not one)."""

    def want(n: int) -> None:
        if len(args) != n:
            raise DecodeError(f"action {kind}: expected {n} fields, got {len(args)}")

    match kind:
        case OpenChannel.KIND:
            want(5)
            return OpenChannel(
                _peer(args[0]),
                Config.from_item(args[1]),
                PEER_CONFIG_HEIGHT.read(args[2]),
                ASSET.read(args[3]),
                COLLATERAL.read(args[4]),
            )
        case ExtendCredit.KIND:
            want(3)
            return ExtendCredit(_peer(args[0]), ASSET.read(args[1]), CREDIT_LIMIT.read(args[2]))
        case FundChannel.KIND:
            want(3)
            return FundChannel(_peer(args[0]), ASSET.read(args[1]), FUND_AMOUNT.read(args[2]))
    return None


def check_action_fields(action: ChannelAction) -> None:
    """DecodeError, in the decoder's words, unless the node reads ``action`` back from
    its bytes: ``channel_action_from`` itself judges its counterparty, config and
    numbers (ValueError for a negative number, which has no encoding)."""
    channel_action_from(action.KIND, as_list(decode(encode_tree(action.fields())), "action"))


# Frame inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Announce:
    """``[entity_id, config_height, config]``: from its height ``config_height`` on,
    the entity's signer set is ``config``. Signed by the set before it."""

    entity_id: bytes
    config_height: int
    config: Config

    @cached_property
    def raw(self) -> bytes:
        return encode_tree([self.entity_id, int_bytes(self.config_height), self.config.to_tree()])

    @cached_property
    def hash(self) -> bytes:
        return keccak(ANNOUNCE_DOMAIN + self.raw)

    @classmethod
    def from_item(cls, item: RlpItem) -> Announce:
        f = as_list(item, "announcement", size=3)
        return cls(
            as_bytes(f[0], "announced entity", size=HASH_LEN),
            as_int(f[1], "announced config height", min_value=1),
            Config.from_item(f[2]),
        )


type MessageBody = ch.Frame | Ack | Announce


@dataclass(frozen=True)
class Message:
    """A signed channel message from entity ``sender``: ``[1, kind, sender, body,
    config_height, bits, signature]``. ``bits`` name the members of the sender's
    signer set of height ``config_height`` whose aggregate ``signature`` covers the
    body's hash (the channel frame's or ack's domain hash, or the announcement's)."""

    TAG: ClassVar[int] = 1
    kind: int
    sender: bytes
    body: MessageBody
    config_height: int
    bits: bytes
    signature: bytes

    @property
    def hash(self) -> bytes:
        return self.body.hash

    @cached_property
    def raw(self) -> bytes:
        return encode_list(
            [
                encode_tree(int_bytes(self.TAG)),
                encode_tree(int_bytes(self.kind)),
                encode_tree(self.sender),
                self.body.raw,
                encode_tree(int_bytes(self.config_height)),
                encode_tree(self.bits),
                encode_tree(self.signature),
            ]
        )

    def to_tree(self) -> RlpTree:
        return [
            int_bytes(self.TAG),
            int_bytes(self.kind),
            self.sender,
            decode(self.body.raw),
            int_bytes(self.config_height),
            self.bits,
            self.signature,
        ]

    def describe(self) -> str:
        body = self.body
        what = KIND_NAMES[self.kind]
        if isinstance(body, ch.Frame | Ack):
            return f"channel {what} at height {body.height} from {self.sender.hex()[:12]}"
        return f"signer set of {self.sender.hex()[:12]} from height {body.config_height}"


type FrameInput = Message  # what a frame applies beside its batches


# Channel frames decoded lately, by their bytes: one frame arrives as a DELIVER, then
# inside the proposal that applies it, then inside its commit (thousands of payments,
# tens of milliseconds to decode each time). Frames are immutable: sharing is safe.
_DECODED: OrderedDict[bytes, ch.Frame] = OrderedDict()
_DECODED_MAX = 32


def _channel_frame(raw: bytes) -> ch.Frame:
    frame = _DECODED.get(raw)
    if frame is None:
        frame = ch.Frame.decode(raw)
        _DECODED[raw] = frame
        while len(_DECODED) > _DECODED_MAX:
            _DECODED.popitem(last=False)
    else:
        _DECODED.move_to_end(raw)
    return frame


def input_from_item(item: RlpItem) -> FrameInput:
    f = as_list(item, "frame input", max_len=7)
    if not f:
        raise DecodeError("frame input: empty list")
    tag = as_int(f[0], "frame input tag", max_value=255)
    if tag != Message.TAG:
        raise DecodeError(f"unknown frame input tag {tag}")
    if len(f) != 7:
        raise DecodeError("channel message: expected [1, kind, sender, body, height, bits, sig]")
    kind = as_int(f[1], "message kind", max_value=255)
    body: MessageBody
    match kind:
        case 1:
            body = _channel_frame(encode_tree(f[3]))
        case 2:
            body = Ack.from_item(f[3])
        case 3:
            body = Announce.from_item(f[3])
        case _:
            raise DecodeError(f"unknown channel message kind {kind}")
    return Message(
        kind,
        as_bytes(f[2], "message sender", size=HASH_LEN),
        body,
        as_int(f[4], "signer config height"),
        as_bytes(f[5], "message bitfield", max_len=128),
        as_bytes(f[6], "message signature", size=96),
    )


# Outbox -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """``[kind, peer, hash]``: a message this frame produced, whose ``hash`` the signers
    sign with their pre-commit. ``peer`` is empty for an announcement (to every peer)."""

    kind: int
    peer: bytes
    hash: bytes

    def to_tree(self) -> RlpTree:
        return [int_bytes(self.kind), self.peer, self.hash]

    @classmethod
    def from_item(cls, item: RlpItem) -> Outgoing:
        f = as_list(item, "outgoing", size=3)
        kind = as_int(f[0], "outgoing kind", min_value=1, max_value=3)
        peer = as_bytes(f[1], "outgoing peer", size=0 if kind == ANNOUNCE else HASH_LEN)
        return cls(kind, peer, as_bytes(f[2], "outgoing hash", size=HASH_LEN))


# Events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """What a frame did to a payment, for receipts, history and the accountant.

    ``kind``: ``queued`` (our pay, on its first channel), ``paid`` (the first
    channel agreed it), ``received`` (we are the payee), ``forward`` (as a hub: a
    payment from ``peer`` queued on towards ``to``, ``out`` being what was queued
    there), ``forwarded`` (as a hub: passed on and agreed downstream),
    ``refunded`` (ours came back; ``detail`` says why), ``rejected`` (ours never
    left; why), ``minted`` (faucet), ``note``.
    """

    kind: str
    peer: bytes
    asset: int
    amount: int
    payment_id: bytes = b""
    detail: str = ""
    to: bytes = b""  # ``forward``: the next hop
    out: tuple[int, int] = (0, 0)  # ``forward``: (asset, amount) queued towards ``to``


# The mutable scratch of one frame ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A payment this entity passes on as a hub, while in flight: the counterparty it
    came from (keyed by payment id in the state's ``forwards``)."""

    peer: bytes

    @property
    def encoded(self) -> bytes:
        return b"\xa0" + self.peer  # the RLP string of 32 bytes (as encode_tree writes it)

    @classmethod
    def decode(cls, raw: bytes) -> Forwarded:
        """From ``encoded`` (as storage keeps it)."""
        return cls(as_bytes(decode(raw), "forward peer", size=HASH_LEN))


@dataclass
class Ledger:
    """One frame's scratch over the entity's accounts. ``channels`` is an overlay on
    the state's channel map: copying a ledger (to try one input) copies only the
    channels this frame changed, never all of them."""

    entity_id: bytes
    reserves: dict[int, int]
    channels: Overlay[bytes, ChannelRecord]
    forwards: Overlay[bytes, Forwarded]  # by payment id, while in flight
    events: list[PaymentEvent] = field(default_factory=list)
    # (peer, asset) -> (the side it was computed on, what is still available): a frame
    # of many payments on one channel would otherwise sum its queue once per payment.
    free: dict[tuple[bytes, int], tuple[ChannelSide, int]] = field(default_factory=dict)

    def copy(self) -> Ledger:
        return Ledger(
            self.entity_id,
            dict(self.reserves),
            self.channels.copy(),
            self.forwards.copy(),
            list(self.events),
            dict(self.free),
        )

    def channel(self, peer: bytes) -> ChannelRecord | None:
        return self.channels.get(peer)

    def reserve(self, asset: int) -> int:
        return self.reserves.get(asset, 0)

    def available(self, peer: bytes, asset: int) -> int:
        side = self.channels[peer].side
        cached = self.free.get((peer, asset))
        if cached is not None and cached[0] is side:
            return cached[1]
        return available(side, asset)

    def record(self, peer: bytes) -> ChannelRecord:
        rec = self.channels.get(peer)
        if rec is None:
            raise ConfigError(_no_channel(peer))
        return rec

    def set_side(self, peer: bytes, side: ChannelSide) -> None:
        rec = self.channels[peer]
        self.channels[peer] = ChannelRecord(rec.peer, rec.peer_config, rec.peer_config_height, side)

    def take_reserve(self, asset: int, amount: int) -> None:
        have = self.reserves.get(asset, 0)
        if amount > have:
            raise ConfigError(_short_reserve(asset, have, amount))
        if have == amount:
            del self.reserves[asset]
        else:
            self.reserves[asset] = have - amount

    def add_reserve(self, asset: int, amount: int) -> None:
        total = self.reserves.get(asset, 0) + amount
        if total > MAX_AMOUNT:
            raise ConfigError(f"reserve of asset {asset} would exceed the maximum")
        self.reserves[asset] = total


def available(side: ChannelSide, asset: int) -> int:
    """What this side can still queue to pay in ``asset``: its capacity on the agreed
    state, less what its pending frame and queue already pay (incoming not counted)."""
    spent = sum(
        amount_paid(tx)
        for tx in (*(side.pending.txs if side.pending else ()), *side.queue)
        if getattr(tx.body, "asset", None) == asset
    )
    return side.agreed.asset(asset).capacity(side.me) - spent


# Checks (the transition's; a client's before it signs) ------------------------------------


class AccountsView(Protocol):
    """What the checks read of an entity's accounts: a frame's :class:`Ledger`, or an
    entity's state as it stands (``EntityState``, what a client checks against)."""

    @property
    def entity_id(self) -> bytes: ...

    def channel(self, peer: bytes) -> ChannelRecord | None: ...

    def reserve(self, asset: int) -> int: ...

    def available(self, peer: bytes, asset: int) -> int:
        """``available`` of our side of the channel with ``peer`` (which exists)."""
        ...


def _no_channel(peer: bytes) -> str:
    return f"no channel with {peer.hex()[:16]}"


def _short_reserve(asset: int, have: int, amount: int) -> str:
    return f"reserve of asset {asset} is {have}, {amount} needed"


def check_pay(accounts: AccountsView, body: Pay) -> int:
    """Refused, in the node's words, unless ``pay`` queues ``body`` on ``accounts`` as
    they stand: the route does not pass through this entity, and its first hop is a
    channel of ours with the capacity in the asset and room in its queue. Returns what
    that channel has available in the asset before the payment."""
    if accounts.entity_id in body.route:
        raise Refused("the route passes through this entity", "route")
    first = body.route[0]
    rec = accounts.channel(first)
    if rec is None:
        raise Refused(_no_channel(first), "route")
    free = accounts.available(first, body.asset)
    if body.amount > free:
        raise Refused(
            f"insufficient capacity: {max(free, 0)} of asset {body.asset} available "
            f"towards {first.hex()[:16]}, {body.amount} asked",
            "amount",
        )
    full = ch.queue_full(rec.side)
    if full is not None:
        raise Refused(full, "route")
    return free


def check_channel_action(entity_id: bytes, action: ChannelAction) -> None:
    """Checks made when the action is proposed (the rest happen when it executes)."""
    if action.peer == entity_id:
        raise Refused("a channel joins two different entities", "peer")


def check_action_applies(accounts: AccountsView, action: ChannelAction) -> None:
    """Refused, in the node's words, if ``action`` would be void were it executed on
    ``accounts`` now: every check ``apply_action`` makes before it changes anything."""
    check_channel_action(accounts.entity_id, action)
    match action:
        case OpenChannel(peer=peer, asset=asset, collateral=collateral):
            if accounts.channel(peer) is not None:
                raise Refused(f"a channel with {peer.hex()[:16]} is open already", "peer")
            have = accounts.reserve(asset)
            if collateral > have:
                raise Refused(_short_reserve(asset, have, collateral), "collateral")
        case ExtendCredit(peer=peer):
            if accounts.channel(peer) is None:
                raise Refused(_no_channel(peer), "peer")
        case FundChannel(peer=peer, asset=asset, amount=amount):
            if accounts.channel(peer) is None:
                raise Refused(_no_channel(peer), "peer")
            have = accounts.reserve(asset)
            if amount > have:
                raise Refused(_short_reserve(asset, have, amount), "amount")


# Transactions and actions -----------------------------------------------------------------


def pay(ledger: Ledger, body: Pay, payment_id: bytes) -> None:
    free = check_pay(ledger, body)
    first = body.route[0]
    tx = Tx.of(Forward(body.asset, body.amount, body.route[1:], payment_id))
    side, out = ch.step(ledger.channels[first].side, ch.Enqueue(tx))
    for o in out:
        if isinstance(o, ch.Rejected):  # none: check_pay asked the channel's queue
            raise ConfigError(o.reason)
    ledger.set_side(first, side)
    ledger.free[(first, body.asset)] = (side, free - body.amount)
    ledger.events.append(
        PaymentEvent("queued", first, body.asset, body.amount, payment_id, body.route[-1].hex())
    )


def apply_action(ledger: Ledger, action: ChannelAction) -> None:
    """Run an executed proposal's channel action; ConfigError voids it (nothing changes)."""
    check_action_applies(ledger, action)
    match action:
        case OpenChannel(peer=peer, asset=asset, collateral=collateral):
            if collateral:
                ledger.take_reserve(asset, collateral)
            side = ch.open_side(ledger.entity_id, peer)
            ledger.channels[peer] = ChannelRecord(
                peer, action.peer_config, action.peer_config_height, side
            )
            if collateral:
                _enqueue(ledger, peer, Tx.of(AddCollateral(asset, collateral)))
        case ExtendCredit(peer=peer, asset=asset, limit=limit):
            _enqueue(ledger, peer, Tx.of(ch.SetCredit(asset, limit)))
        case FundChannel(peer=peer, asset=asset, amount=amount):
            ledger.take_reserve(asset, amount)
            _enqueue(ledger, peer, Tx.of(AddCollateral(asset, amount)))


def _enqueue(ledger: Ledger, peer: bytes, tx: Tx) -> None:
    side, out = ch.step(ledger.channels[peer].side, ch.Enqueue(tx))
    ledger.set_side(peer, side)
    _outputs(ledger, peer, out)


# Inputs -----------------------------------------------------------------------------------


def apply_input(ledger: Ledger, inp: FrameInput, *, verify: bool) -> bool:
    """Apply one frame input; raises ConfigError (FutureInput: not yet) if the frame
    may not hold it. Returns False if it changed nothing (a duplicate, say)."""
    rec = ledger.record(inp.sender)
    if inp.config_height < rec.peer_config_height:
        raise ConfigError(f"{inp.describe()}: signed by a stale signer set")
    if inp.config_height > rec.peer_config_height:
        raise FutureInput(f"{inp.describe()}: signed by a signer set not announced yet")
    body = inp.body
    if isinstance(body, Announce) and (
        body.entity_id != inp.sender or body.config_height <= rec.peer_config_height
    ):
        raise ConfigError(f"{inp.describe()}: not a newer signer set of the sender")
    if verify:
        reason = verify_quorum(rec.peer_config, inp.bits, inp.hash, inp.signature)
        if reason is not None:
            raise ConfigError(f"{inp.describe()}: {reason}")
    match body:
        case Announce(config_height=height, config=config):
            ledger.channels[inp.sender] = ChannelRecord(inp.sender, config, height, rec.side)
            return True
        case ch.Frame():
            side, out = ch.step(rec.side, ch.ReceiveFrame(body))
        case Ack():
            side, out = ch.step(rec.side, ch.ReceiveAck(body))
    if side is rec.side:
        return False  # ignored, or a duplicate frame answered with the same ack
    ledger.set_side(inp.sender, side)
    _outputs(ledger, inp.sender, out)
    return True


def _outputs(ledger: Ledger, peer: bytes, outputs: Sequence[ch.Output]) -> None:
    me = ledger.channels[peer].side.me
    for o in outputs:
        match o:
            case ch.Applied(frame=frame) if frame.from_side == me:
                _ours_agreed(ledger, peer, frame)
            case ch.Applied(frame=frame):
                queued: dict[bytes, list[Tx]] = {}  # per channel, in order
                for tx in frame.txs:
                    _incoming(ledger, peer, tx, queued)
                for to, txs in queued.items():
                    side, rejected = ch.enqueue_all(ledger.channels[to].side, txs)
                    ledger.set_side(to, side)
                    _outputs(ledger, to, rejected)
            case ch.Rejected(tx=tx, reason=reason):
                _rejected(ledger, peer, tx, reason)
            case _:
                pass  # SendFrame / SendAck: the outbox is read from the sides at the end


def _ours_agreed(ledger: Ledger, peer: bytes, frame: ch.Frame) -> None:
    for tx in frame.txs:
        body = tx.body
        if isinstance(body, Forward):
            hub = ledger.forwards.pop(body.payment_id, None) is not None
            kind = "forwarded" if hub else "paid"
            ledger.events.append(PaymentEvent(kind, peer, body.asset, body.amount, body.payment_id))


def _incoming(ledger: Ledger, peer: bytes, tx: Tx, queued: dict[bytes, list[Tx]]) -> None:
    """What a transaction the counterparty applied means for us; what we pass on or
    refund goes in ``queued`` (per channel), queued once the frame is read."""
    body = tx.body
    match body:
        case Forward(asset=asset, amount=amount, hops=hops, payment_id=pid) if not hops:
            ledger.events.append(PaymentEvent("received", peer, asset, amount, pid))
        case Forward(asset=asset, amount=amount, hops=hops, payment_id=pid):
            nxt = hops[0]
            here = ledger.entity_id.hex()[:16]
            reason = None
            if nxt == peer:
                reason = f"the route turns back at {here}"
            elif pid in ledger.forwards:
                reason = f"payment {pid.hex()[:16]} is already in flight through {here}"
            elif nxt not in ledger.channels:
                reason = f"no channel from {here} to {nxt.hex()[:16]}"
            if reason is not None:
                queued.setdefault(peer, []).append(Tx.of(Refund(asset, amount, pid, reason)))
                return
            ledger.forwards[pid] = Forwarded(peer)
            onward = Forward(asset, amount, hops[1:], pid)
            queued.setdefault(nxt, []).append(Tx.of(onward))
            ledger.events.append(
                PaymentEvent(
                    "forward", peer, asset, amount, pid, to=nxt, out=(onward.asset, onward.amount)
                )
            )
        case Refund(asset=asset, amount=amount, payment_id=pid, reason=reason):
            came = ledger.forwards.pop(pid, None)
            upstream = None if came is None else came.peer
            if upstream is not None and upstream in ledger.channels:
                queued.setdefault(upstream, []).append(Tx.of(Refund(asset, amount, pid, reason)))
            else:
                ledger.events.append(PaymentEvent("refunded", peer, asset, amount, pid, reason))
        case ch.Payment(asset=asset, amount=amount):
            ledger.events.append(PaymentEvent("received", peer, asset, amount))
        case _:
            pass  # the counterparty's credit or collateral: visible in the channel's state


def _rejected(ledger: Ledger, peer: bytes, tx: Tx, reason: str) -> None:
    body = tx.body
    match body:
        case Forward(asset=asset, amount=amount, payment_id=pid) if pid in ledger.forwards:
            came = ledger.forwards.pop(pid)
            assert came is not None
            why = f"hop {ledger.entity_id.hex()[:16]} -> {peer.hex()[:16]}: {reason}"
            _enqueue(ledger, came.peer, Tx.of(Refund(asset, amount, pid, why)))
        case Forward(asset=asset, amount=amount, payment_id=pid):
            ledger.events.append(PaymentEvent("rejected", peer, asset, amount, pid, reason))
        case AddCollateral(asset=asset, amount=amount):
            ledger.add_reserve(asset, amount)  # back where it came from
            ledger.events.append(PaymentEvent("note", peer, asset, amount, b"", reason))
        case _:
            asset = getattr(body, "asset", 0)
            ledger.events.append(
                PaymentEvent("note", peer, asset, amount_paid(tx), b"", f"{reason} (lost)")
            )


# End of frame -----------------------------------------------------------------------------


def finish(ledger: Ledger, waiting: frozenset[bytes], announce: Announce | None) -> list[Outgoing]:
    """Propose on the ready channels with queued transactions (at most
    ``MAX_PROPOSING``, the lowest counterparty ids first), and list the outbox:
    the announcement first, then per counterparty (ascending) its new ack and its new
    frame. Only the channels this frame changed, and those ``waiting`` before it
    (ready, with a queue), can have anything to propose or a new ack: the others are
    not looked at. The acks before the frame are the overlay's base records'."""
    proposed: dict[bytes, bytes] = {}
    # Two passes: a refund queued on an earlier channel by a rejection in the first pass
    # goes out in the second.
    for _ in range(2):
        for peer in sorted({*ledger.channels.touched(), *waiting}):
            if len(proposed) >= MAX_PROPOSING:
                break
            rec = ledger.channels.get(peer)
            if rec is None or rec.side.pending is not None or not rec.side.queue:
                continue
            new, out = ch.step(rec.side, ch.Propose())
            ledger.set_side(peer, new)
            if new.pending is not None:
                proposed[peer] = new.pending.hash
            _outputs(ledger, peer, out)
    outbox = [Outgoing(ANNOUNCE, b"", announce.hash)] if announce is not None else []
    for peer in sorted(ledger.channels.touched()):
        rec = ledger.channels.get(peer)
        if rec is None:
            continue
        ack = rec.side.last_ack.hash if rec.side.last_ack is not None else None
        before = ledger.channels.base.get(peer)
        ack_before = None
        if before is not None and before.side.last_ack is not None:
            ack_before = before.side.last_ack.hash
        if ack is not None and ack_before != ack:
            outbox.append(Outgoing(ACK, peer, ack))
        if peer in proposed:
            outbox.append(Outgoing(FRAME, peer, proposed[peer]))
    return outbox


def is_waiting(rec: ChannelRecord) -> bool:
    """Ready, with queued transactions: the next frame proposes on it."""
    return rec.side.pending is None and bool(rec.side.queue)


def is_stale(channels: Base[bytes, ChannelRecord], inp: FrameInput) -> bool:
    """True if ``inp`` can never matter again here (dropped from the inbox)."""
    rec = channels.get(inp.sender)
    if rec is None:
        return False  # the channel may be opened yet
    if inp.config_height < rec.peer_config_height:
        return True
    body = inp.body
    agreed = rec.side.agreed.height
    match body:
        case Announce(config_height=height):
            return height <= rec.peer_config_height
        case ch.Frame(height=height):
            return height <= agreed  # a lost ack goes again by resend, not by this frame
        case Ack(height=height):
            return rec.side.pending is None or height < rec.side.pending.height
