"""The channel machine: a bilateral account between two entities, one chain of frames (pure).

Each of the two entities keeps a :class:`ChannelSide`: the **agreed** state (the
same on both sides once a frame is acked: balances per asset at a height) and
its own **local** state (``ready`` or ``sent`` with its pending frame, the queue
of transactions waiting, and the ack it sent for the last frame it received).

``step(side, input) -> (side, outputs)`` is the whole transition. It is pure
and deterministic: no clock, no randomness, no I/O, no unordered iteration.
Signatures are not done here: the entity layer signs :attr:`Frame.hash` and
:attr:`Ack.hash` with its quorum, verifies the counterparty's before it hands a
frame or an ack to :func:`step`, and persists the new side before it sends the
outputs (every message is idempotent, so a resend after a crash is harmless).

Rules (``docs/CHANNELS.md`` explains them):

1. A side proposes only when ``ready``; its frame holds the transactions of its
   queue that apply, in order, on the agreed state (others are ``Rejected``
   with the reason). It is then ``sent`` until the counterparty's ack.
2. A received frame applies only at agreed height + 1, on the agreed head,
   when every transaction applies and the post-state hash matches; otherwise
   nothing changes. A duplicate of the last frame received gets the same ack.
3. Both sides proposing at the same height: the left side's frame wins. Left
   ignores right's frame; right drops its pending frame, puts its
   transactions back at the front of its queue, applies left's and acks it.
   An agreed frame never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import cached_property
from itertools import pairwise
from typing import ClassVar, Literal, Self

from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    as_text,
    decode,
    decode_with_raw,
    encode_bytes,
    encode_list,
    encode_tree,
    encode_uint,
    int_bytes,
    keccak,
)
from node.txs import Level, Tx, TxRegistry

STATE_VERSION = 1
CHANNEL_ID_DOMAIN = b"XLN/channel-id/v1"
FRAME_DOMAIN = b"XLN/channel-frame/v1"
ACK_DOMAIN = b"XLN/channel-ack/v1"

MAX_AMOUNT = 2**128 - 1  # one side's collateral, one credit limit, one payment
MAX_ASSET = 2**32 - 1
MAX_ASSETS = 256  # per channel
MAX_FRAME_TXS = 2048
# A frame's transactions, encoded: a frame travels inside one entity input (512 KiB)
# and is applied inside an entity frame beside other inputs (see replica/proposing.py).
MAX_FRAME_TX_BYTES = 160 * 1024
MAX_QUEUE = 8192  # queued plus pending transactions, per side
# |delta| <= collateral + credit <= 2 * MAX_AMOUNT, zigzag-encoded below 2**131.
_MAX_DELTA_CODE = 2**131

# Transactions inside a channel frame. Not the route registry of Level.CHANNEL in
# node.txs: these are never submitted from outside, the entity layer queues them.
CHANNEL_TXS = TxRegistry(Level.CHANNEL)


class Side(IntEnum):
    """Left is the lower entity id."""

    LEFT = 0
    RIGHT = 1

    @property
    def other(self) -> Side:
        return Side.RIGHT if self is Side.LEFT else Side.LEFT


class TxRefused(ValueError):
    """A channel transaction that does not apply on the state it meets."""


def ordered(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    """(left, right) of two distinct entity ids."""
    if len(a) != HASH_LEN or len(b) != HASH_LEN:
        raise ValueError("entity ids are 32 bytes")
    if a == b:
        raise ValueError("a channel joins two different entities")
    return (a, b) if a < b else (b, a)


def channel_id_for(a: bytes, b: bytes) -> bytes:
    """keccak-256 of RLP ``[b"XLN/channel-id/v1", left, right]``; the same for (a, b) and (b, a)."""
    left, right = ordered(a, b)
    return keccak(encode_tree([CHANNEL_ID_DOMAIN, left, right]))


def side_of(me: bytes, peer: bytes) -> Side:
    return Side.LEFT if ordered(me, peer)[0] == me else Side.RIGHT


# Transactions (the actor is always the side whose frame holds them) ---------------------


def _asset(item: RlpItem) -> int:
    return as_int(item, "asset", max_value=MAX_ASSET)


@CHANNEL_TXS.register
@dataclass(frozen=True, slots=True)
class Payment:
    """The frame's proposer pays ``amount`` of ``asset`` to the counterparty."""

    TYPE: ClassVar[int] = 1
    NAME: ClassVar[str] = "payment"
    asset: int
    amount: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError(f"payment: expected [asset, amount], got {len(fields)} fields")
        amount = as_int(fields[1], "payment amount", min_value=1, max_value=MAX_AMOUNT)
        return cls(_asset(fields[0]), amount)

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.asset), int_bytes(self.amount)]


@CHANNEL_TXS.register
@dataclass(frozen=True, slots=True)
class SetCredit:
    """The frame's proposer sets the credit it extends to the counterparty in ``asset``."""

    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "set_credit"
    asset: int
    limit: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError(f"set_credit: expected [asset, limit], got {len(fields)} fields")
        return cls(_asset(fields[0]), as_int(fields[1], "credit limit", max_value=MAX_AMOUNT))

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.asset), int_bytes(self.limit)]


@CHANNEL_TXS.register
@dataclass(frozen=True, slots=True)
class AddCollateral:
    """The frame's proposer adds ``amount`` to its own collateral (the entity layer
    takes it from the proposer's reserve)."""

    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "add_collateral"
    asset: int
    amount: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError(f"add_collateral: expected [asset, amount], got {len(fields)} fields")
        amount = as_int(fields[1], "collateral amount", min_value=1, max_value=MAX_AMOUNT)
        return cls(_asset(fields[0]), amount)

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.asset), int_bytes(self.amount)]


MAX_HOPS = 8  # entities a routed payment may still pass after its receiver
MAX_REASON = 200  # bytes of a refund's reason


@CHANNEL_TXS.register
@dataclass(frozen=True, slots=True)
class Forward:
    """A routed payment: like ``payment``, and the receiver passes it on to ``hops[0]``
    (with ``hops[1:]``), or keeps it if ``hops`` is empty. ``payment_id`` names it
    end to end, so a refund can find its way back."""

    TYPE: ClassVar[int] = 4
    NAME: ClassVar[str] = "forward"
    asset: int
    amount: int
    hops: tuple[bytes, ...]
    payment_id: bytes

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 4:
            raise DecodeError(
                f"forward: expected [asset, amount, hops, payment_id], got {len(fields)} fields"
            )
        amount = as_int(fields[1], "forward amount", min_value=1, max_value=MAX_AMOUNT)
        hops = tuple(
            as_bytes(h, "hop", size=HASH_LEN)
            for h in as_list(fields[2], "forward hops", max_len=MAX_HOPS)
        )
        return cls(
            _asset(fields[0]), amount, hops, as_bytes(fields[3], "payment id", size=HASH_LEN)
        )

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.asset), int_bytes(self.amount), list(self.hops), self.payment_id]

    def encoded_fields(self) -> list[bytes]:
        # Hubs make one per payment: this skips the generic encoder's type checks.
        return [
            encode_uint(self.asset),
            encode_uint(self.amount),
            encode_list(encode_bytes(h) for h in self.hops),
            encode_bytes(self.payment_id),
        ]


@CHANNEL_TXS.register
@dataclass(frozen=True, slots=True)
class Refund:
    """A routed payment coming back: like ``payment``, with the id of the payment it
    returns and why it could not go on."""

    TYPE: ClassVar[int] = 5
    NAME: ClassVar[str] = "refund"
    asset: int
    amount: int
    payment_id: bytes
    reason: str

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 4:
            raise DecodeError(
                f"refund: expected [asset, amount, payment_id, reason], got {len(fields)} fields"
            )
        amount = as_int(fields[1], "refund amount", min_value=1, max_value=MAX_AMOUNT)
        return cls(
            _asset(fields[0]),
            amount,
            as_bytes(fields[2], "payment id", size=HASH_LEN),
            as_text(fields[3], "refund reason", max_len=MAX_REASON),
        )

    def to_fields(self) -> list[RlpItem]:
        return [
            int_bytes(self.asset),
            int_bytes(self.amount),
            self.payment_id,
            self.reason.encode(),
        ]


def amount_paid(tx: Tx) -> int:
    """What ``tx`` moves from its actor to the other side (0 for credit and collateral)."""
    body = tx.body
    if isinstance(body, Payment | Forward | Refund):
        return body.amount
    return 0


def decode_tx(raw: bytes) -> Tx:
    return CHANNEL_TXS.decode(decode(raw), raw)


# Agreed state ---------------------------------------------------------------------------


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(code: int) -> int:
    return code // 2 if code % 2 == 0 else -(code + 1) // 2


@dataclass(frozen=True, slots=True)
class AssetBalance:
    """One asset of a channel. ``credit_left`` is the credit left extends to right;
    ``delta`` is the net amount paid from left to right (negative: right paid more)."""

    asset: int
    collateral_left: int = 0
    collateral_right: int = 0
    credit_left: int = 0
    credit_right: int = 0
    delta: int = 0

    def balance(self, side: Side) -> int:
        """May be negative, down to minus the credit the other side extends."""
        if side is Side.LEFT:
            return self.collateral_left - self.delta
        return self.collateral_right + self.delta

    def credit_extended_by(self, side: Side) -> int:
        return self.credit_left if side is Side.LEFT else self.credit_right

    def capacity(self, side: Side) -> int:
        """What ``side`` can pay now: its balance plus the credit the other side extends to it."""
        return self.balance(side) + self.credit_extended_by(side.other)

    @property
    def collateral(self) -> int:
        return self.collateral_left + self.collateral_right

    def to_tree(self) -> RlpTree:
        return [
            int_bytes(self.asset),
            int_bytes(self.collateral_left),
            int_bytes(self.collateral_right),
            int_bytes(self.credit_left),
            int_bytes(self.credit_right),
            int_bytes(_zigzag(self.delta)),
        ]

    @classmethod
    def from_item(cls, item: RlpItem) -> AssetBalance:
        f = as_list(item, "asset balance", size=6)
        out = cls(
            _asset(f[0]),
            as_int(f[1], "collateral left", max_value=MAX_AMOUNT),
            as_int(f[2], "collateral right", max_value=MAX_AMOUNT),
            as_int(f[3], "credit left", max_value=MAX_AMOUNT),
            as_int(f[4], "credit right", max_value=MAX_AMOUNT),
            _unzigzag(as_int(f[5], "delta", max_value=_MAX_DELTA_CODE)),
        )
        for side in Side:
            if out.capacity(side) < 0:
                raise DecodeError(f"asset {out.asset}: {side.name.lower()} is beyond its credit")
        return out


def apply_tx(balance: AssetBalance, tx: Tx, actor: Side) -> AssetBalance:
    """The asset's balance after ``actor``'s ``tx``; raises TxRefused (nothing changes)."""
    match tx.body:
        case Payment(amount=amount) | Forward(amount=amount) | Refund(amount=amount):
            if amount > balance.capacity(actor):
                raise TxRefused(
                    f"payment of {amount} exceeds the capacity {balance.capacity(actor)}"
                )
            delta = balance.delta + amount if actor is Side.LEFT else balance.delta - amount
            # Not dataclasses.replace: this runs once per payment, and replace is slow.
            b = balance
            return AssetBalance(
                b.asset, b.collateral_left, b.collateral_right, b.credit_left, b.credit_right, delta
            )
        case SetCredit(limit=limit):
            drawn = max(0, -balance.balance(actor.other))
            if limit < drawn:
                raise TxRefused(f"credit limit {limit} is below the {drawn} already drawn")
            if actor is Side.LEFT:
                return replace(balance, credit_left=limit)
            return replace(balance, credit_right=limit)
        case AddCollateral(amount=amount):
            if actor is Side.LEFT:
                if balance.collateral_left + amount > MAX_AMOUNT:
                    raise TxRefused("collateral would exceed the maximum")
                return replace(balance, collateral_left=balance.collateral_left + amount)
            if balance.collateral_right + amount > MAX_AMOUNT:
                raise TxRefused("collateral would exceed the maximum")
            return replace(balance, collateral_right=balance.collateral_right + amount)
        case _:
            raise TxRefused(f"{tx.body.NAME} is not a channel transaction")


def _tx_asset(tx: Tx) -> int:
    body = tx.body
    if isinstance(body, Payment | SetCredit | AddCollateral | Forward | Refund):
        return body.asset
    raise TxRefused(f"{body.NAME} is not a channel transaction")


@dataclass(frozen=True)
class ChannelState:
    """The agreed state: identical on both sides at the same height."""

    channel_id: bytes
    left: bytes
    right: bytes
    height: int = 0
    assets: tuple[AssetBalance, ...] = ()  # ascending asset id

    def to_tree(self) -> RlpTree:
        return [
            int_bytes(STATE_VERSION),
            self.channel_id,
            self.left,
            self.right,
            int_bytes(self.height),
            [a.to_tree() for a in self.assets],
        ]

    @cached_property
    def encoded(self) -> bytes:
        return encode_tree(self.to_tree())

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.encoded)

    def asset(self, asset: int) -> AssetBalance:
        for a in self.assets:
            if a.asset == asset:
                return a
        return AssetBalance(asset)

    def entity(self, side: Side) -> bytes:
        return self.left if side is Side.LEFT else self.right

    @classmethod
    def from_item(cls, item: RlpItem) -> ChannelState:
        f = as_list(item, "channel state", size=6)
        if as_int(f[0], "channel state version") != STATE_VERSION:
            raise DecodeError("channel state: unknown version")
        cid = as_bytes(f[1], "channel id", size=HASH_LEN)
        left = as_bytes(f[2], "left entity", size=HASH_LEN)
        right = as_bytes(f[3], "right entity", size=HASH_LEN)
        if not left < right:
            raise DecodeError("channel state: left entity id must be below the right one")
        if cid != channel_id_for(left, right):
            raise DecodeError("channel state: channel id does not match its entities")
        assets = tuple(
            AssetBalance.from_item(a) for a in as_list(f[5], "assets", max_len=MAX_ASSETS)
        )
        if any(a.asset >= b.asset for a, b in pairwise(assets)):
            raise DecodeError("channel state: assets must be in strictly ascending order")
        return cls(cid, left, right, as_int(f[4], "channel height"), assets)

    @classmethod
    def decode(cls, raw: bytes) -> ChannelState:
        return cls.from_item(decode(raw))


def genesis(a: bytes, b: bytes) -> ChannelState:
    left, right = ordered(a, b)
    return ChannelState(channel_id_for(left, right), left, right)


_PAYMENTS = (Payment, Forward, Refund)


class _Work:
    """A frame's per-asset balances while its transactions apply. Payments, thousands
    to a frame, only move ``delta``: they run on plain integers, and the asset's
    :class:`AssetBalance` is rebuilt once (``apply_tx`` would make one per payment).
    Same rules, same results, same messages as ``apply_tx``."""

    __slots__ = ("actor", "balances", "deltas")

    def __init__(self, state: ChannelState, actor: Side) -> None:
        self.actor = actor
        self.balances = {a.asset: a for a in state.assets}
        self.deltas: dict[int, int] = {}  # asset -> delta, where payments moved it

    def apply(self, tx: Tx) -> None:
        """Raises TxRefused; nothing changes then."""
        body = tx.body
        if type(body) in _PAYMENTS:
            asset = body.asset  # type: ignore[attr-defined]
            amount: int = body.amount  # type: ignore[attr-defined]
            b = self.balances.get(asset)
            if b is None:
                if len(self.balances) == MAX_ASSETS:
                    raise TxRefused(f"more than {MAX_ASSETS} assets")
                b = self.balances[asset] = AssetBalance(asset)
            delta = self.deltas.get(asset, b.delta)
            if self.actor is Side.LEFT:
                capacity = b.collateral_left - delta + b.credit_right
                delta += amount
            else:
                capacity = b.collateral_right + delta + b.credit_left
                delta -= amount
            if amount > capacity:
                raise TxRefused(f"payment of {amount} exceeds the capacity {capacity}")
            self.deltas[asset] = delta
            return
        asset = _tx_asset(tx)
        if asset not in self.balances and len(self.balances) == MAX_ASSETS:
            raise TxRefused(f"more than {MAX_ASSETS} assets")
        self.balances[asset] = apply_tx(self.balance(asset), tx, self.actor)
        self.deltas.pop(asset, None)

    def balance(self, asset: int) -> AssetBalance:
        b = self.balances.get(asset) or AssetBalance(asset)
        delta = self.deltas.get(asset)
        if delta is None or delta == b.delta:
            return b
        return AssetBalance(
            b.asset, b.collateral_left, b.collateral_right, b.credit_left, b.credit_right, delta
        )

    def assets(self) -> tuple[AssetBalance, ...]:
        return tuple(self.balance(k) for k in sorted(self.balances))


def apply_txs(state: ChannelState, txs: Sequence[Tx], actor: Side) -> ChannelState:
    """Strict: the state one frame of ``actor``'s later; any refused tx raises TxRefused."""
    work = _Work(state, actor)
    for i, tx in enumerate(txs):
        try:
            work.apply(tx)
        except TxRefused as exc:
            raise TxRefused(f"tx {i} ({tx.body.NAME}): {exc}") from None
    return ChannelState(state.channel_id, state.left, state.right, state.height + 1, work.assets())


def select_txs(
    state: ChannelState, queue: Sequence[Tx], actor: Side
) -> tuple[list[Tx], list[tuple[Tx, str]], list[Tx]]:
    """The proposer's builder: (kept, rejected with reasons, left waiting for a later
    frame). Keeps in order the txs that apply on top of the ones kept so far."""
    work = _Work(state, actor)
    kept: list[Tx] = []
    rejected: list[tuple[Tx, str]] = []
    size = 0
    for i, tx in enumerate(queue):
        if len(kept) == MAX_FRAME_TXS or size + len(tx.raw) > MAX_FRAME_TX_BYTES:
            return kept, rejected, list(queue[i:])
        try:
            work.apply(tx)
        except TxRefused as exc:
            rejected.append((tx, f"{tx.body.NAME}: {exc}"))
            continue
        kept.append(tx)
        size += len(tx.raw)
    return kept, rejected, []


# Frames and acks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """``[channel_id, height, prev_hash, from_side, [tx...], state_hash]``; ``state_hash`` is
    the agreed state's hash after the frame, ``prev_hash`` the hash of the frame before."""

    channel_id: bytes
    height: int
    prev_hash: bytes
    from_side: Side
    txs: tuple[Tx, ...]
    state_hash: bytes
    raw: bytes

    @cached_property
    def hash(self) -> bytes:
        """What the sending entity's quorum signs: keccak-256(FRAME_DOMAIN || raw)."""
        return keccak(FRAME_DOMAIN + self.raw)

    @classmethod
    def make(
        cls,
        channel_id: bytes,
        height: int,
        prev_hash: bytes,
        from_side: Side,
        txs: Sequence[Tx],
        state_hash: bytes,
    ) -> Frame:
        raw = encode_list(
            [
                encode_tree(channel_id),
                encode_tree(int_bytes(height)),
                encode_tree(prev_hash),
                encode_tree(int_bytes(from_side)),
                encode_list(t.raw for t in txs),
                encode_tree(state_hash),
            ]
        )
        return cls(channel_id, height, prev_hash, from_side, tuple(txs), state_hash, raw)

    @classmethod
    def decode(cls, raw: bytes) -> Frame:
        item, per_item = decode_with_raw(raw)
        return cls._from(item, per_item, raw)

    @classmethod
    def _from(cls, item: RlpItem, per_item: list[object], raw: bytes) -> Frame:
        f = as_list(item, "channel frame", size=6)
        tx_items = as_list(f[4], "channel frame txs", max_len=MAX_FRAME_TXS)
        if not tx_items:
            raise DecodeError("channel frame: no transactions")
        tx_raws = per_item[5]
        assert isinstance(tx_raws, list)
        txs = tuple(CHANNEL_TXS.decode(t, tx_raws[i + 1][0]) for i, t in enumerate(tx_items))
        return cls(
            as_bytes(f[0], "channel frame id", size=HASH_LEN),
            as_int(f[1], "channel frame height", min_value=1),
            as_bytes(f[2], "channel frame prev hash", size=HASH_LEN),
            Side(as_int(f[3], "channel frame side", max_value=1)),
            txs,
            as_bytes(f[5], "channel frame state hash", size=HASH_LEN),
            raw,
        )


@dataclass(frozen=True)
class Ack:
    """``[channel_id, height, frame_hash]``: the receiver applied that frame."""

    channel_id: bytes
    height: int
    frame_hash: bytes

    @cached_property
    def raw(self) -> bytes:
        return encode_tree([self.channel_id, int_bytes(self.height), self.frame_hash])

    @cached_property
    def hash(self) -> bytes:
        """What the acking entity's quorum signs: keccak-256(ACK_DOMAIN || raw)."""
        return keccak(ACK_DOMAIN + self.raw)

    @classmethod
    def from_item(cls, item: RlpItem) -> Ack:
        f = as_list(item, "channel ack", size=3)
        return cls(
            as_bytes(f[0], "channel ack id", size=HASH_LEN),
            as_int(f[1], "channel ack height", min_value=1),
            as_bytes(f[2], "channel ack frame hash", size=HASH_LEN),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Ack:
        return cls.from_item(decode(raw))


# One side's whole state -----------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSide:
    """What one entity keeps for one channel: persisted, and hashed into its entity state."""

    me: Side
    agreed: ChannelState
    head: bytes = ZERO_HASH  # hash of the last agreed frame (ZERO_HASH at height 0)
    pending: Frame | None = None  # our frame at agreed.height + 1, while `sent`
    queue: tuple[Tx, ...] = ()
    last_ack: Ack | None = None  # the ack we sent for the last frame we received

    @property
    def status(self) -> Literal["ready", "sent"]:
        return "ready" if self.pending is None else "sent"

    @property
    def channel_id(self) -> bytes:
        return self.agreed.channel_id

    @property
    def entity(self) -> bytes:
        return self.agreed.entity(self.me)

    @property
    def peer(self) -> bytes:
        return self.agreed.entity(self.me.other)

    @cached_property
    def encoded(self) -> bytes:
        return encode_list(
            [
                encode_tree(int_bytes(STATE_VERSION)),
                encode_tree(int_bytes(self.me)),
                self.agreed.encoded,
                encode_tree(self.head),
                encode_list([self.pending.raw] if self.pending else []),
                encode_list(t.raw for t in self.queue),
                encode_list([self.last_ack.raw] if self.last_ack else []),
            ]
        )

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.encoded)

    @classmethod
    def decode(cls, raw: bytes) -> ChannelSide:
        item, per_item = decode_with_raw(raw)
        f = as_list(item, "channel side", size=7)
        if as_int(f[0], "channel side version") != STATE_VERSION:
            raise DecodeError("channel side: unknown version")
        me = Side(as_int(f[1], "channel side", max_value=1))
        agreed = ChannelState.from_item(f[2])
        head = as_bytes(f[3], "channel head", size=HASH_LEN)
        if (agreed.height == 0) != (head == ZERO_HASH):
            raise DecodeError("channel side: head must be zero exactly at height 0")
        pending_items = as_list(f[4], "pending frame", max_len=1)
        pending = None
        if pending_items:
            pending = Frame._from(pending_items[0], per_item[5][1], per_item[5][1][0])
            if (
                pending.channel_id != agreed.channel_id
                or pending.height != agreed.height + 1
                or pending.prev_hash != head
                or pending.from_side != me
            ):
                raise DecodeError("channel side: pending frame does not extend the agreed state")
        queue_items = as_list(f[5], "channel queue", max_len=MAX_QUEUE)
        queue = tuple(
            CHANNEL_TXS.decode(t, per_item[6][i + 1][0]) for i, t in enumerate(queue_items)
        )
        if len(queue) + (len(pending.txs) if pending else 0) > MAX_QUEUE:
            raise DecodeError(f"channel side: more than {MAX_QUEUE} transactions waiting")
        ack_items = as_list(f[6], "last ack", max_len=1)
        last_ack = Ack.from_item(ack_items[0]) if ack_items else None
        if last_ack is not None and (
            last_ack.channel_id != agreed.channel_id or last_ack.height > agreed.height
        ):
            raise DecodeError("channel side: last ack is not for an agreed frame")
        return cls(me, agreed, head, pending, queue, last_ack)


def open_side(me: bytes, peer: bytes) -> ChannelSide:
    """A new channel at height 0, seen from ``me``."""
    return ChannelSide(side_of(me, peer), genesis(me, peer))


# Inputs and outputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueue:
    tx: Tx


@dataclass(frozen=True, slots=True)
class Propose:
    pass


@dataclass(frozen=True, slots=True)
class ReceiveFrame:
    frame: Frame  # already authenticated as the counterparty's


@dataclass(frozen=True, slots=True)
class ReceiveAck:
    ack: Ack  # already authenticated as the counterparty's


@dataclass(frozen=True, slots=True)
class Resend:
    """After a reconnect or a timeout: the pending frame and the last ack go out again."""


type Input = Enqueue | Propose | ReceiveFrame | ReceiveAck | Resend


@dataclass(frozen=True, slots=True)
class SendFrame:
    frame: Frame


@dataclass(frozen=True, slots=True)
class SendAck:
    ack: Ack


@dataclass(frozen=True, slots=True)
class Rejected:
    """A transaction of ours that will never apply; it has left the queue."""

    tx: Tx
    reason: str


@dataclass(frozen=True, slots=True)
class Applied:
    """A frame became agreed (ours on its ack, the counterparty's on receipt)."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message that changed nothing, and why (stale, future, invalid, lost tie-break)."""

    reason: str


type Output = SendFrame | SendAck | Rejected | Applied | Ignored


def step(side: ChannelSide, event: Input) -> tuple[ChannelSide, list[Output]]:
    match event:
        case Enqueue(tx=tx):
            return _enqueue(side, tx)
        case Propose():
            return _propose(side)
        case ReceiveFrame(frame=frame):
            return _receive_frame(side, frame)
        case ReceiveAck(ack=ack):
            return _receive_ack(side, ack)
        case Resend():
            out: list[Output] = []
            if side.last_ack is not None:
                out.append(SendAck(side.last_ack))
            if side.pending is not None:
                out.append(SendFrame(side.pending))
            return side, out
    raise TypeError(f"not a channel input: {event!r}")


def _waiting(side: ChannelSide) -> int:
    return len(side.queue) + (len(side.pending.txs) if side.pending else 0)


QUEUE_FULL = f"queue full ({MAX_QUEUE} transactions waiting)"


def queue_full(side: ChannelSide) -> str | None:
    """Why ``side`` takes no more transactions now (``Enqueue`` would reject one), or
    None: the one statement of the queue's cap, for ``step`` and for the entity's
    checks before it queues (``accounts.check_pay``)."""
    return QUEUE_FULL if _waiting(side) >= MAX_QUEUE else None


def enqueue_all(side: ChannelSide, txs: Sequence[Tx]) -> tuple[ChannelSide, list[Output]]:
    """``Enqueue`` of each of ``txs`` in order, with one new side (a hub queues a whole
    incoming frame's forwards at once)."""
    out: list[Output] = []
    room = MAX_QUEUE - _waiting(side)
    queued: list[Tx] = []
    for tx in txs:
        try:
            _tx_asset(tx)
        except TxRefused as exc:
            out.append(Rejected(tx, str(exc)))
            continue
        if len(queued) >= room:
            out.append(Rejected(tx, QUEUE_FULL))
            continue
        queued.append(tx)
    if not queued:
        return side, out
    queue = (*side.queue, *queued)
    return ChannelSide(side.me, side.agreed, side.head, side.pending, queue, side.last_ack), out


def _enqueue(side: ChannelSide, tx: Tx) -> tuple[ChannelSide, list[Output]]:
    try:
        _tx_asset(tx)
    except TxRefused as exc:
        return side, [Rejected(tx, str(exc))]
    full = queue_full(side)
    if full is not None:
        return side, [Rejected(tx, full)]
    queue = (*side.queue, tx)  # once per payment: the constructor, not replace
    return ChannelSide(side.me, side.agreed, side.head, side.pending, queue, side.last_ack), []


def _propose(side: ChannelSide) -> tuple[ChannelSide, list[Output]]:
    if side.pending is not None or not side.queue:
        return side, []
    kept, rejected, rest = select_txs(side.agreed, side.queue, side.me)
    out: list[Output] = [Rejected(tx, reason) for tx, reason in rejected]
    if not kept:
        return replace(side, queue=tuple(rest)), out
    post = apply_txs(side.agreed, kept, side.me)
    frame = Frame.make(side.channel_id, post.height, side.head, side.me, kept, post.hash)
    out.append(SendFrame(frame))
    return replace(side, pending=frame, queue=tuple(rest)), out


def _receive_frame(side: ChannelSide, frame: Frame) -> tuple[ChannelSide, list[Output]]:
    if frame.channel_id != side.channel_id:
        return side, [Ignored("frame of another channel")]
    if frame.from_side == side.me:
        return side, [Ignored("frame from our own side")]
    if side.last_ack is not None and frame.hash == side.last_ack.frame_hash:
        return side, [SendAck(side.last_ack)]  # a duplicate: the same ack again
    height = side.agreed.height + 1
    if frame.height < height:
        return side, [Ignored(f"stale frame at height {frame.height}, agreed is {height - 1}")]
    if frame.height > height:
        return side, [Ignored(f"future frame at height {frame.height}, expected {height}")]
    if frame.prev_hash != side.head:
        return side, [Ignored("frame does not extend the agreed head")]
    if not frame.txs:
        return side, [Ignored("invalid frame: no transactions")]
    if side.pending is not None and side.me is Side.LEFT:
        return side, [Ignored("both sides proposed: left's frame wins, right will re-queue")]
    try:
        post = apply_txs(side.agreed, frame.txs, frame.from_side)
    except TxRefused as exc:
        return side, [Ignored(f"invalid frame: {exc}")]
    if post.hash != frame.state_hash:
        return side, [Ignored("invalid frame: state hash does not match")]
    queue = side.queue
    if side.pending is not None:  # right lost the tie-break: its txs go first next time
        queue = (*side.pending.txs, *queue)
    ack = Ack(side.channel_id, frame.height, frame.hash)
    new = ChannelSide(side.me, post, frame.hash, None, queue, ack)
    return new, [Applied(frame), SendAck(ack)]


def _receive_ack(side: ChannelSide, ack: Ack) -> tuple[ChannelSide, list[Output]]:
    pending = side.pending
    if ack.channel_id != side.channel_id:
        return side, [Ignored("ack of another channel")]
    if pending is None or ack.height != pending.height or ack.frame_hash != pending.hash:
        return side, [Ignored(f"ack at height {ack.height} is not for our pending frame")]
    post = apply_txs(side.agreed, pending.txs, side.me)
    if post.hash != pending.state_hash:  # we built it on this very state
        raise AssertionError("pending frame no longer applies on the agreed state")
    return replace(side, agreed=post, head=pending.hash, pending=None), [Applied(pending)]
