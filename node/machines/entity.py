"""The entity machine: counter, proposals, per-signer nonces, config; and its frames' rules.

An entity's state is identical on every replica: the same frames give the same
state and state hash. ``execute(state, batches)`` is the whole
transition for one frame; it is pure and strict (any rejected transaction makes
the whole frame invalid, so an honest signer never pre-commits it).

**Signed batches.** Signers submit transactions as ``[signer_id, nonce, [tx...],
signature]``. The signature is BLS over ``batch_message`` (see
``docs/PROTOCOL.md``); ``nonce`` must be the signer's last nonce + 1, so a batch
replayed is refused. Only the signer's own key can make its votes.

**Public transactions.** ``increment(n)``, ``propose(action, expires_at)``,
``vote(proposal_id)``; ``pay`` and, on a simulation chain only, ``faucet`` are
``accounts``'.

**Proposal rules** (the same on every replica; ``docs/ENTITIES.md`` explains them):

1. ``propose`` counts as the proposer's vote. Proposal ids are the entity's
   proposal counter, from 1.
2. ``expires_at`` is an entity height, at least the height of the frame that
   holds the proposal. A proposal may still be voted on, and still execute, in
   the frame at height ``expires_at``.
3. At the end of every frame, open proposals are evaluated once each in
   ascending id; each is counted with the config as it stands at that moment
   (so after the executions of lower ids in the same frame). One whose voting
   shares reach the threshold executes (``executeProposal``) and closes. If its
   action is no longer valid (say, its signer was removed meanwhile), it closes
   without effect and the frame's events say why.
4. Then proposals whose ``expires_at`` is this frame's height are dropped.
   Crossing the threshold wins over expiry in the same frame.
5. A change of signer set or shares keeps open proposals open. Votes are kept
   as signer ids and always counted with the current config: a removed
   signer's vote stops counting, a new share weight counts at once.
6. One vote per signer per proposal; a second one is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar, Self

from node.codec import (
    HASH_LEN,
    UINT64_MAX,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    decode_with_raw,
    encode_list,
    encode_tree,
    int_bytes,
    keccak,
)
from node.crypto import bls
from node.machines import accounts, governance
from node.machines.accounts import (
    ChannelAction,
    ChannelRecord,
    Forwarded,
    FrameInput,
    Ledger,
    Outgoing,
    Pay,
)
from node.machines.counter import Increment as Increment
from node.machines.governance import Action, Config, ConfigError
from node.machines.overlay import Overlay
from node.merkle_map import MerkleMap
from node.txs import Level, Tx, TxRegistry

STATE_VERSION = 2
MAX_PROPOSAL_TTL = 1_000_000  # frames
MAX_OPEN_PROPOSALS = 1024
MAX_BATCH_TXS = 256
SIG_LEN = 96

BATCH_DOMAIN = b"XLN/entity-batch/v1"
ENTITY_ID_DOMAIN = b"XLN/entity-id/v1"

# Transactions inside a signed batch.
ENTITY_TXS = TxRegistry(Level.ENTITY)


class FrameInvalid(ValueError):
    """A frame (or one batch in it) that the entity's rules reject."""


ENTITY_TXS.register(Increment)
ENTITY_TXS.register(Pay)
ENTITY_TXS.register(accounts.Faucet)

# Governance actions change the config; channel actions the entity's accounts.
type EntityAction = Action | ChannelAction
ACTION_NAMES: dict[type, str] = {**governance.ACTION_NAMES, **accounts.CHANNEL_ACTION_NAMES}


def action_tree(action: EntityAction) -> RlpItem:
    return [int_bytes(action.KIND), *action.fields()]


def action_from_item(item: RlpItem) -> EntityAction:
    fields = as_list(item, "action", max_len=6)
    if fields:
        found = accounts.channel_action_from(
            as_int(fields[0], "action kind", max_value=255), fields[1:]
        )
        if found is not None:
            return found
    return governance.action_from_item(item)


@ENTITY_TXS.register
@dataclass(frozen=True, slots=True)
class Propose:
    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "propose"
    action: EntityAction
    expires_at: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError(f"propose: expected [action, expires_at], got {len(fields)}")
        return cls(action_from_item(fields[0]), as_int(fields[1], "expires_at"))

    def to_fields(self) -> list[RlpItem]:
        return [action_tree(self.action), int_bytes(self.expires_at)]


@ENTITY_TXS.register
@dataclass(frozen=True, slots=True)
class Vote:
    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "vote"
    proposal_id: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError(f"vote: expected [proposal_id], got {len(fields)} fields")
        return cls(as_int(fields[0], "proposal id", min_value=1))

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.proposal_id)]


@ENTITY_TXS.register
@dataclass(frozen=True, slots=True)
class Withdraw:
    """Takes its batch's nonce and does nothing else. A batch of ``withdraw`` alone is a
    **withdrawal**: it replaces the signer's pooled batch at that nonce in every pool
    (``replica.consensus``), so a batch members refused leaves the entity's frames."""

    TYPE: ClassVar[int] = 6
    NAME: ClassVar[str] = "withdraw"

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if fields:
            raise DecodeError(f"withdraw: expected no fields, got {len(fields)}")
        return cls()

    def to_fields(self) -> list[RlpItem]:
        return []


def is_withdrawal(batch: Batch) -> bool:
    """A batch of ``withdraw`` transactions only: it withdraws its signer's batch at its
    nonce."""
    return bool(batch.txs) and all(isinstance(t.body, Withdraw) for t in batch.txs)


# Batches -----------------------------------------------------------------------


def batch_message(entity_id: bytes, signer: bytes, nonce: int, txs_raw: Sequence[bytes]) -> bytes:
    """What a signer signs for a batch: domain, entity, signer, nonce (8 bytes), and
    keccak-256 of the RLP list of the batch's transactions."""
    return (
        BATCH_DOMAIN + entity_id + signer + nonce.to_bytes(8, "big") + keccak(encode_list(txs_raw))
    )


@dataclass(frozen=True, slots=True)
class Batch:
    signer: bytes
    nonce: int
    txs: tuple[Tx, ...]
    signature: bytes
    raw: bytes

    @classmethod
    def make(cls, signer: bytes, nonce: int, txs: Sequence[Tx], signature: bytes) -> Batch:
        raw = encode_list(
            [
                encode_tree(signer),
                encode_tree(int_bytes(nonce)),
                encode_list(t.raw for t in txs),
                encode_tree(signature),
            ]
        )
        return cls(signer, nonce, tuple(txs), signature, raw)

    @classmethod
    def decode(cls, raw: bytes) -> Batch:
        item, per_item = decode_with_raw(raw)
        fields = as_list(item, "batch", size=4)
        tx_items = as_list(fields[2], "batch txs", max_len=MAX_BATCH_TXS)
        if not tx_items:
            raise DecodeError("batch: no transactions")
        txs_raw = per_item[3]
        txs = tuple(ENTITY_TXS.decode(t, txs_raw[i + 1][0]) for i, t in enumerate(tx_items))
        return cls(
            as_bytes(fields[0], "batch signer", size=HASH_LEN),
            as_int(fields[1], "batch nonce", min_value=1),
            txs,
            as_bytes(fields[3], "batch signature", size=SIG_LEN),
            raw,
        )

    def message(self, entity_id: bytes) -> bytes:
        return batch_message(entity_id, self.signer, self.nonce, [t.raw for t in self.txs])


def sign_batch(entity_id: bytes, sk: int, signer: bytes, nonce: int, txs: Sequence[Tx]) -> Batch:
    """Sign a batch (clients, agents and tests; the node never holds ``sk``)."""
    sig = bls.sign(sk, batch_message(entity_id, signer, nonce, [t.raw for t in txs]))
    return Batch.make(signer, nonce, txs, sig)


# State --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    action: EntityAction
    expires_at: int
    proposer: bytes
    votes: tuple[bytes, ...]  # signer ids, ascending

    def to_tree(self) -> RlpTree:
        return [
            int_bytes(self.id),
            action_tree(self.action),
            int_bytes(self.expires_at),
            self.proposer,
            list(self.votes),
        ]

    @classmethod
    def from_item(cls, item: RlpItem) -> Proposal:
        f = as_list(item, "proposal", size=5)
        return cls(
            as_int(f[0], "proposal id", min_value=1),
            action_from_item(f[1]),
            as_int(f[2], "expires_at"),
            as_bytes(f[3], "proposer", size=HASH_LEN),
            tuple(
                as_bytes(v, "vote", size=HASH_LEN)
                # Votes of removed signers stay recorded, so this may exceed MAX_SIGNERS.
                for v in as_list(f[4], "votes")
            ),
        )


type Channels = MerkleMap[ChannelRecord]
NO_CHANNELS: Channels = MerkleMap.empty()
type Forwards = MerkleMap[Forwarded]
NO_FORWARDS: Forwards = MerkleMap.empty()
CHANNELS_INDEX = 10  # where the channels go in the state's encoding
FORWARDS_INDEX = 11  # and the forwards


@dataclass(frozen=True)
class EntityState:
    """An entity's state. Its **hash** is keccak-256 of the RLP list of its fields with
    the channels replaced by the root of their Merkle map (``node/merkle_map.py``), so
    a frame re-hashes only the channels it changed, and one channel can be proven
    against a certified state hash. Its **encoding** (a replica's snapshot, and what
    READ_STATE returns) holds the channel records themselves at the same place."""

    entity_id: bytes
    config: Config
    height: int = 0
    counter: int = 0
    proposals: tuple[Proposal, ...] = ()  # ascending id
    next_proposal_id: int = 1
    nonces: tuple[tuple[bytes, int], ...] = ()  # ascending signer id; kept after removal
    config_height: int = 0  # the height of the frame that set ``config`` (0: genesis)
    reserves: tuple[tuple[int, int], ...] = ()  # (asset, amount > 0), ascending asset
    channels: Channels = NO_CHANNELS  # by counterparty id
    forwards: Forwards = NO_FORWARDS  # by payment id

    def to_tree(self) -> RlpTree:
        tree = self._small_fields()
        return [
            *tree[:CHANNELS_INDEX],
            [c.to_tree() for c in self.channels.values()],
            self._forwards_tree(),
            *tree[CHANNELS_INDEX:],
        ]

    @cached_property
    def encoded(self) -> bytes:
        """The same bytes as ``encode_tree(self.to_tree())``, from the channels' own
        encodings (they hold whole channel frames: no decoding to encode again)."""
        return self._encode(
            encode_list(c.encoded for c in self.channels.values()),
            encode_tree(self._forwards_tree()),
        )

    @cached_property
    def header(self) -> bytes:
        """What the hash is of: the encoding with the Merkle roots of the channels and
        of the forwards in their places."""
        return self._encode(encode_tree(self.channels.root), encode_tree(self.forwards.root))

    def _forwards_tree(self) -> list[RlpTree]:
        return [[pid, f.peer] for pid, f in self.forwards.items()]

    def _encode(self, channels: bytes, forwards: bytes) -> bytes:
        tree = self._small_fields()
        return encode_list(
            [
                *(encode_tree(x) for x in tree[:CHANNELS_INDEX]),
                channels,
                forwards,
                *(encode_tree(x) for x in tree[CHANNELS_INDEX:]),
            ]
        )

    def _small_fields(self) -> list[RlpTree]:
        """Every field but the channels and the forwards (which go last, at
        ``CHANNELS_INDEX`` and ``FORWARDS_INDEX``)."""
        return [
            int_bytes(STATE_VERSION),
            self.entity_id,
            self.config.to_tree(),
            int_bytes(self.height),
            int_bytes(self.counter),
            [p.to_tree() for p in self.proposals],
            int_bytes(self.next_proposal_id),
            [[sid, int_bytes(n)] for sid, n in self.nonces],
            int_bytes(self.config_height),
            [[int_bytes(a), int_bytes(n)] for a, n in self.reserves],
        ]

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.header)

    @cached_property
    def waiting(self) -> frozenset[bytes]:
        """Channels that are ready with queued transactions (the next frame proposes on
        them). A frame's ``_close`` sets it from the channels it touched; a decoded
        state finds it by looking at every channel once."""
        return frozenset(c.peer for c in self.channels.values() if accounts.is_waiting(c))

    @classmethod
    def from_item(cls, item: RlpItem) -> EntityState:
        f = as_list(item, "entity state", size=12)
        records = [ChannelRecord.from_item(c) for c in as_list(f[CHANNELS_INDEX], "channels")]
        if any(a.peer >= b.peer for a, b in itertools.pairwise(records)):
            raise DecodeError("entity state: channels not in ascending counterparty order")
        forwards = [
            (
                as_bytes(as_list(x, "forward", size=2)[0], "payment id", size=HASH_LEN),
                Forwarded(
                    as_bytes(as_list(x, "forward", size=2)[1], "forward peer", size=HASH_LEN)
                ),
            )
            for x in as_list(f[FORWARDS_INDEX], "forwards")
        ]
        if any(a[0] >= b[0] for a, b in itertools.pairwise(forwards)):
            raise DecodeError("entity state: forwards not in ascending payment id order")
        return cls._of(
            f, MerkleMap.from_items((c.peer, c) for c in records), MerkleMap.from_items(forwards)
        )

    @classmethod
    def from_header(cls, item: RlpItem, channels: Channels, forwards: Forwards) -> EntityState:
        """The state whose ``header`` is ``item``, with its channels and forwards (read
        apart, as storage keeps them); DecodeError unless they have the header's roots."""
        f = as_list(item, "entity header", size=12)
        if as_bytes(f[CHANNELS_INDEX], "channels root", size=HASH_LEN) != channels.root:
            raise DecodeError("entity state: the channels do not match the header's root")
        if as_bytes(f[FORWARDS_INDEX], "forwards root", size=HASH_LEN) != forwards.root:
            raise DecodeError("entity state: the forwards do not match the header's root")
        return cls._of(f, channels, forwards)

    @classmethod
    def header_fields(cls, item: RlpItem) -> tuple[EntityState, bytes, bytes]:
        """The state of the header ``item`` with its channels and forwards left empty,
        and their two roots: for a reader that fetches records by part
        (``node/entity_reads.py``)."""
        f = as_list(item, "entity header", size=12)
        channels_root = as_bytes(f[CHANNELS_INDEX], "channels root", size=HASH_LEN)
        forwards_root = as_bytes(f[FORWARDS_INDEX], "forwards root", size=HASH_LEN)
        return cls._of(f, NO_CHANNELS, NO_FORWARDS), channels_root, forwards_root

    @classmethod
    def _of(cls, f: list[RlpItem], channels: Channels, forwards: Forwards) -> EntityState:
        if as_int(f[0], "entity state version") != STATE_VERSION:
            raise DecodeError("entity state: unknown version")
        return cls(
            as_bytes(f[1], "entity id", size=HASH_LEN),
            Config.from_item(f[2]),
            as_int(f[3], "entity height"),
            as_int(f[4], "entity counter"),
            tuple(Proposal.from_item(p) for p in as_list(f[5], "proposals")),
            as_int(f[6], "next proposal id", min_value=1),
            tuple(
                (
                    as_bytes(as_list(n, "nonce", size=2)[0], "nonce signer", size=HASH_LEN),
                    as_int(as_list(n, "nonce", size=2)[1], "nonce"),
                )
                for n in as_list(f[7], "nonces")
            ),
            as_int(f[8], "config height"),
            tuple(
                (
                    as_int(as_list(r, "reserve", size=2)[0], "reserve asset"),
                    as_int(as_list(r, "reserve", size=2)[1], "reserve amount", min_value=1),
                )
                for r in as_list(f[9], "reserves")
            ),
            channels,
            forwards,
        )

    def nonce_of(self, signer: bytes) -> int:
        for sid, n in self.nonces:
            if sid == signer:
                return n
        return 0

    def channel(self, peer: bytes) -> ChannelRecord | None:
        return self.channels.get(peer) if len(peer) == HASH_LEN else None

    def reserve(self, asset: int) -> int:
        return dict(self.reserves).get(asset, 0)

    def available(self, peer: bytes, asset: int) -> int:
        """What our channel with ``peer`` can still queue to pay in ``asset``
        (``accounts.available`` of our side); KeyError if there is no such channel.
        With ``channel`` and ``reserve``, what ``accounts.check_pay`` and
        ``accounts.check_action_applies`` read (``accounts.AccountsView``)."""
        rec = self.channel(peer)
        if rec is None:
            raise KeyError(peer)
        return accounts.available(rec.side, asset)


def entity_id_for(config: Config, salt: bytes) -> bytes:
    """keccak-256 of RLP ``[b"XLN/entity-id/v1", config, salt]`` (salt: 32 bytes)."""
    return keccak(encode_tree([ENTITY_ID_DOMAIN, config.to_tree(), salt]))


def genesis(config: Config, salt: bytes) -> EntityState:
    return EntityState(entity_id_for(config, salt), config)


# The transition -------------------------------------------------------------------


@dataclass
class FrameEvents:
    """What a frame did, for receipts, logs and the wallet (not part of the state)."""

    executed: list[tuple[int, str]] = field(default_factory=list)  # (proposal id, action)
    voided: list[tuple[int, str]] = field(default_factory=list)  # (proposal id, reason)
    expired: list[int] = field(default_factory=list)
    payments: list[accounts.PaymentEvent] = field(default_factory=list)
    outbox: list[Outgoing] = field(default_factory=list)  # hashes the signers sign
    # The counterparties whose channel records the frame changed (or closed).
    channels: frozenset[bytes] = frozenset()


@dataclass
class _Work:
    """The mutable scratch copy one frame works on; frozen again at the end."""

    config: Config
    counter: int
    proposals: dict[int, Proposal]
    next_proposal_id: int
    nonces: dict[bytes, int]
    ledger: Ledger

    @classmethod
    def of(cls, state: EntityState) -> _Work:
        return cls(
            state.config,
            state.counter,
            {p.id: p for p in state.proposals},
            state.next_proposal_id,
            dict(state.nonces),
            Ledger(
                state.entity_id,
                dict(state.reserves),
                Overlay(state.channels),
                Overlay(state.forwards),
            ),
        )

    def copy(self) -> _Work:
        return _Work(
            self.config,
            self.counter,
            dict(self.proposals),
            self.next_proposal_id,
            dict(self.nonces),
            self.ledger.copy(),
        )


def apply_batch(
    state: EntityState,
    work: _Work,
    batch: Batch,
    height: int,
    verify: bool,
    allow_mint: bool = False,
) -> None:
    if batch.signer not in work.config.index:
        raise FrameInvalid(f"batch from {batch.signer.hex()[:16]}, not a signer")
    expected = work.nonces.get(batch.signer, 0) + 1
    if batch.nonce != expected:
        raise FrameInvalid(f"batch nonce {batch.nonce}, expected {expected}")
    if verify:
        pubkey = work.config.members[work.config.index[batch.signer]].pubkey
        if not bls.verify(pubkey, batch.message(state.entity_id), batch.signature):
            raise FrameInvalid("bad batch signature")
    for i, tx in enumerate(batch.txs):
        try:
            _apply_tx(work, tx, batch, i, height, allow_mint)
        except ConfigError as exc:
            raise FrameInvalid(f"tx {i} ({tx.body.NAME}): {exc}") from None
    work.nonces[batch.signer] = batch.nonce


def _apply_tx(work: _Work, tx: Tx, batch: Batch, index: int, height: int, allow_mint: bool) -> None:
    signer = batch.signer
    match tx.body:
        case Increment(n=n):
            if work.counter + n > UINT64_MAX:
                raise ConfigError("counter overflow")
            work.counter += n
        case Withdraw():
            pass  # the nonce is taken: the withdrawn batch can never apply
        case Propose(action=action, expires_at=expires_at):
            if not height <= expires_at <= height + MAX_PROPOSAL_TTL:
                latest = height + MAX_PROPOSAL_TTL
                raise ConfigError(f"expires_at {expires_at} must be within {height} .. {latest}")
            if len(work.proposals) >= MAX_OPEN_PROPOSALS:
                raise ConfigError("too many open proposals")
            if isinstance(action, accounts.CHANNEL_ACTIONS):
                accounts.check_channel_action(work.ledger.entity_id, action)
            else:
                action.apply(work.config)  # would the result be a valid config now?
                governance.check_action(action)
            pid = work.next_proposal_id
            work.next_proposal_id += 1
            work.proposals[pid] = Proposal(pid, action, expires_at, signer, (signer,))
        case Vote(proposal_id=pid):
            proposal = work.proposals.get(pid)
            if proposal is None:
                raise ConfigError(f"no open proposal {pid}")
            if signer in proposal.votes:
                raise ConfigError(f"already voted on proposal {pid}")
            work.proposals[pid] = replace(proposal, votes=tuple(sorted((*proposal.votes, signer))))
        case Pay() as body:
            payment_id = accounts.payment_id_for(work.ledger.entity_id, signer, batch.nonce, index)
            accounts.pay(work.ledger, body, payment_id)
        case accounts.Faucet() as body:
            tx_id = accounts.payment_id_for(work.ledger.entity_id, signer, batch.nonce, index)
            accounts.faucet(work.ledger, body, tx_id, allow_mint=allow_mint)
        case _:
            raise ConfigError(f"{tx.body.NAME} is not an entity transaction")


def _end_of_frame(work: _Work, height: int, events: FrameEvents) -> None:
    for pid in sorted(work.proposals):
        proposal = work.proposals[pid]
        if work.config.shares_of(proposal.votes) < work.config.threshold:
            continue
        del work.proposals[pid]
        action = proposal.action
        name = ACTION_NAMES[type(action)]
        try:
            if isinstance(action, accounts.CHANNEL_ACTIONS):
                trial = work.ledger.copy()
                accounts.apply_action(trial, action)
                work.ledger = trial
            else:
                work.config = action.apply(work.config)
        except ConfigError as exc:
            events.voided.append((pid, f"{name}: {exc}"))
            continue
        events.executed.append((pid, name))
    for pid in sorted(work.proposals):
        if work.proposals[pid].expires_at <= height:
            del work.proposals[pid]
            events.expired.append(pid)


def execute(
    state: EntityState,
    batches: Sequence[Batch],
    *,
    verify: bool = True,
    inputs: Sequence[FrameInput] = (),
    allow_mint: bool = False,
) -> tuple[EntityState, FrameEvents]:
    """Apply one frame: its batches, then its inputs (counterparties' channel
    messages), then the proposals, then the channels propose. Raises FrameInvalid
    if any batch or input is rejected. ``events.outbox`` is what the signers sign.
    ``allow_mint``: the replica's server is a simulation chain (``faucet`` applies)."""
    height = state.height + 1
    work = _Work.of(state)
    for batch in batches:
        apply_batch(state, work, batch, height, verify, allow_mint)
    for i, inp in enumerate(inputs):
        try:
            accounts.apply_input(work.ledger, inp, verify=verify)
        except ConfigError as exc:
            raise FrameInvalid(f"input {i}: {exc}") from None
    return _close(state, work, height)


def _close(state: EntityState, work: _Work, height: int) -> tuple[EntityState, FrameEvents]:
    """The end of a frame: proposals, then the channels propose; the new state. Costs
    what the frame touched: the channels it changed, and those waiting before it."""
    events = FrameEvents()
    _end_of_frame(work, height, events)
    config_height = state.config_height
    announce = None
    if work.config != state.config:
        config_height = height
        announce = accounts.Announce(state.entity_id, height, work.config)
    ledger = work.ledger
    events.outbox = accounts.finish(ledger, state.waiting, announce)
    # A forward whose next channel refused it went back upstream in the same frame.
    events.payments = [
        e for e in ledger.events if e.kind != "forward" or e.payment_id in ledger.forwards
    ]
    changes = ledger.channels.changes
    events.channels = frozenset(changes)
    new = EntityState(
        state.entity_id,
        work.config,
        height,
        work.counter,
        tuple(work.proposals[pid] for pid in sorted(work.proposals)),
        work.next_proposal_id,
        tuple(sorted(work.nonces.items())),
        config_height,
        tuple(sorted(ledger.reserves.items())),
        state.channels.set_many(changes),
        state.forwards.set_many(ledger.forwards.changes),
    )
    waiting = {p for p in state.waiting if p not in changes}
    waiting.update(p for p, rec in changes.items() if rec is not None and accounts.is_waiting(rec))
    new.__dict__["waiting"] = frozenset(waiting)  # the cached property, without a scan
    return new, events


@dataclass
class Built:
    """A frame the proposer built: what it kept, what it refused and why, the outcome."""

    batches: list[Batch]
    refused_batches: list[tuple[Batch, str]]
    inputs: list[FrameInput]
    refused_inputs: list[tuple[FrameInput, str]]
    post: EntityState
    events: FrameEvents


def build(
    state: EntityState,
    batches: Sequence[Batch],
    inputs: Sequence[FrameInput],
    *,
    allow_mint: bool,
) -> Built:
    """The proposer's frame, in one pass: keep, in order, the batches that apply on top
    of the ones kept so far (``select_batches``' rule), then the inputs that apply and
    change something (those that may apply later, ``FutureInput``, and duplicates are
    neither kept nor refused), then close the frame. The outcome is what ``execute``
    gives for the kept batches and inputs."""
    height = state.height + 1
    work, kept, refused = _select_batches(state, batches, allow_mint)
    kept_inputs, refused_inputs, work.ledger = _select_inputs(work.ledger, inputs)
    post, events = _close(state, work, height)
    return Built(kept, refused, kept_inputs, refused_inputs, post, events)


def _select_inputs(
    ledger: Ledger, candidates: Sequence[FrameInput]
) -> tuple[list[FrameInput], list[tuple[FrameInput, str]], Ledger]:
    kept: list[FrameInput] = []
    rejected: list[tuple[FrameInput, str]] = []
    for inp in candidates:
        trial = ledger.copy()
        try:
            changed = accounts.apply_input(trial, inp, verify=True)
        except accounts.FutureInput:
            continue
        except ConfigError as exc:
            rejected.append((inp, str(exc)))
            continue
        if changed:
            ledger = trial
            kept.append(inp)
    return kept, rejected, ledger


def select_batches(
    state: EntityState, candidates: Sequence[Batch], *, allow_mint: bool = False
) -> tuple[list[Batch], list[tuple[Batch, str]]]:
    """The proposer's filter: keep, in order, the batches that apply cleanly on top of
    the ones kept so far; report the others with the reason. Batches whose nonce is
    still in the future are neither kept nor rejected (returned in neither list)."""
    _, kept, rejected = _select_batches(state, candidates, allow_mint)
    return kept, rejected


def _select_batches(
    state: EntityState, candidates: Sequence[Batch], allow_mint: bool
) -> tuple[_Work, list[Batch], list[tuple[Batch, str]]]:
    height = state.height + 1
    work = _Work.of(state)
    kept: list[Batch] = []
    rejected: list[tuple[Batch, str]] = []
    for batch in candidates:
        if batch.nonce > work.nonces.get(batch.signer, 0) + 1:
            continue
        trial = work.copy()
        try:
            apply_batch(state, trial, batch, height, True, allow_mint)
        except FrameInvalid as exc:
            rejected.append((batch, str(exc)))
            continue
        work = trial
        kept.append(batch)
    return work, kept, rejected
