"""One signer's replica of an entity, and the consensus that moves it (pure).

The replica holds the agreed :class:`EntityState` (identical on every replica)
and this signer's local consensus state: the pool of signed batches not yet
committed, the current round, the proposer's frame in flight with the
pre-commits gathered for it, and the highest-round pre-committed frame seen at
the next height (the lock a new proposer must re-propose).

``step(replica, inputs) -> (replica, effects)`` is the transition. Its inputs
are the entity-level entries of the server's mempool, so a replay re-derives
every decision. Effects are sent only after the block is durable.

Inputs:

``submit_batch``  a signed batch: pooled, and forwarded to the round's proposer
``precommit``     a member's signature over the proposer's frame in flight
``commit``        a frame with its certificate: verified, re-executed, applied
``timeout``       from this node's own clock only: the round moves on
``seen_lock``     a member's pre-commit on a frame at the next height, with the
                  frame: remembered if it is the highest round seen
``round_change``  a member moved to a later round (with its lock): counted by
                  that round's proposer
``deliver``       a counterparty entity's signed channel message: kept in the
                  inbox until a frame applies it (every member gets its own copy)

**Rounds.** A proposer at round 0 proposes at once. The proposer of a later
round waits until members holding the threshold of shares (itself included)
have reported the round change, then re-proposes the highest-round locked
frame among those reports (and any lock it saw itself), or else a fresh frame.
Any two sets of members that each hold the threshold share a member, so if a
frame might have been certified, the new proposer hears of it.

The proposer builds a frame at the end of a step when it has none in flight
and has batches or inputs to apply, a channel with queued transactions that may
propose, or a lock to re-propose. It commits at the end of a step once
the slots it has verified hold the threshold: aggregate first, single
signatures only if the aggregate fails, so a bad one is found and dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar, Self

from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    DecodeError,
    Limits,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_list,
    encode_tree,
    int_bytes,
    keccak,
    scan,
)
from node.crypto import bls
from node.machines import accounts
from node.machines import entity as ent
from node.machines.accounts import FrameInput, Message
from node.machines.entity import Batch, EntityState, FrameInvalid
from node.machines.frames import (
    MAX_OUTBOX,
    MAX_ROUND,
    Certificate,
    Frame,
    Signatures,
    aggregate_precommits,
    verify_certificate,
)
from node.machines.governance import Config
from node.machines.mailbox import NO_MAIL, Kept, Mailbox, addressees, signed_messages
from node.machines.outcomes import Key, Outcome, Outcomes
from node.merkle_map import MerkleMap
from node.txs import REGISTRIES, Level, Tx

STATE_VERSION = 1
MAX_POOL = 10_000
# A frame must fit, with its certificate, in one commit input (MAX_ENTITY_INPUT_BYTES).
MAX_FRAME_BATCH_BYTES = 256 * 1024
MAX_INBOX = 10_000
MAX_FRAME_INPUTS = 256
# Inputs (mostly channel frames, each at most ch.MAX_FRAME_TX_BYTES of transactions)
# beside MAX_FRAME_BATCH_BYTES of batches: the frame still fits one commit input.
MAX_FRAME_INPUT_BYTES = 192 * 1024
# RLP items, counted as the network counts them (node.net.limits): a proposal or
# commit carrying the frame, its outbox and certificate stays within the peer
# link's item cap. A batch or input alone above its budget is refused on intake.
MAX_FRAME_BATCH_ITEMS = 24_576
MAX_FRAME_INPUT_ITEMS = 24_576
_COUNTING = Limits(max_bytes=2**40, max_depth=2**16, max_items=2**40)  # our own bytes

ENTITY_INPUTS = REGISTRIES[Level.ENTITY]


# Inputs -------------------------------------------------------------------------


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class SubmitBatch:
    TYPE: ClassVar[int] = 1
    NAME: ClassVar[str] = "submit_batch"
    batch: Batch

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError("submit_batch: expected [batch]")
        return cls(Batch.decode(encode_tree(fields[0])))

    def to_fields(self) -> list[RlpItem]:
        return [decode(self.batch.raw)]

    def encoded_fields(self) -> list[bytes]:
        return [self.batch.raw]


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class Precommit:
    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "precommit"
    height: int
    round: int
    frame_hash: bytes
    signer: bytes
    signature: bytes
    outbox: tuple[bytes, ...] = ()  # the signer's signature over each outgoing hash

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 6:
            raise DecodeError(
                "precommit: expected [height, round, frame_hash, signer, sig, [outbox sig...]]"
            )
        return cls(
            as_int(fields[0], "height", min_value=1),
            as_int(fields[1], "round", max_value=MAX_ROUND),
            as_bytes(fields[2], "frame hash", size=HASH_LEN),
            as_bytes(fields[3], "signer", size=HASH_LEN),
            as_bytes(fields[4], "signature", size=ent.SIG_LEN),
            tuple(
                as_bytes(x, "outbox signature", size=ent.SIG_LEN)
                for x in as_list(fields[5], "outbox signatures", max_len=MAX_OUTBOX)
            ),
        )

    def to_fields(self) -> list[RlpItem]:
        return [
            int_bytes(self.height),
            int_bytes(self.round),
            self.frame_hash,
            self.signer,
            self.signature,
            list(self.outbox),
        ]


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class Commit:
    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "commit"
    frame: Frame
    cert: Certificate

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError("commit: expected [frame, certificate]")
        return cls(Frame.decode(encode_tree(fields[0])), Certificate.from_item(fields[1]))

    def to_fields(self) -> list[RlpItem]:
        return [decode(self.frame.raw), self.cert.to_tree()]

    def encoded_fields(self) -> list[bytes]:
        return [self.frame.raw, encode_tree(self.cert.to_tree())]


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class Timeout:
    """Only the node's own clock makes this; the network layer refuses it from outside."""

    TYPE: ClassVar[int] = 4
    NAME: ClassVar[str] = "timeout"
    height: int
    round: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError("timeout: expected [height, round]")
        return cls(
            as_int(fields[0], "height", min_value=1),
            as_int(fields[1], "round", max_value=MAX_ROUND - 1),
        )

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.height), int_bytes(self.round)]


@dataclass(frozen=True, slots=True)
class Lock:
    """A frame some member pre-committed at ``round``, with the pre-commit of that
    round's proposer (``signer``), which every proposal carries. Later proposers at
    that height must re-propose it. Requiring the round proposer's signature means
    a member cannot make up a lock on a frame nobody proposed."""

    round: int
    frame: Frame
    signer: bytes
    signature: bytes

    def to_tree(self) -> list[RlpItem]:
        return [int_bytes(self.round), decode(self.frame.raw), self.signer, self.signature]

    @property
    def encoded(self) -> bytes:
        return encode_list(
            [
                encode_tree(int_bytes(self.round)),
                self.frame.raw,
                encode_tree(self.signer),
                encode_tree(self.signature),
            ]
        )

    @classmethod
    def from_item(cls, item: RlpItem) -> Lock:
        f = as_list(item, "lock", size=4)
        return cls(
            as_int(f[0], "lock round", max_value=MAX_ROUND),
            Frame.decode(encode_tree(f[1])),
            as_bytes(f[2], "lock signer", size=HASH_LEN),
            as_bytes(f[3], "lock signature", size=ent.SIG_LEN),
        )


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class SeenLock:
    TYPE: ClassVar[int] = 5
    NAME: ClassVar[str] = "seen_lock"
    lock: Lock

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError("seen_lock: expected [lock]")
        return cls(Lock.from_item(fields[0]))

    def to_fields(self) -> list[RlpItem]:
        return [self.lock.to_tree()]

    def encoded_fields(self) -> list[bytes]:
        return [self.lock.encoded]


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class RoundChange:
    """A member timed out at ``round - 1`` and moved to ``round``; sent to that round's
    proposer with the member's lock, if it has one."""

    TYPE: ClassVar[int] = 6
    NAME: ClassVar[str] = "round_change"
    height: int
    round: int
    signer: bytes
    lock: Lock | None

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 4:
            raise DecodeError("round_change: expected [height, round, signer, lock or []]")
        return cls(
            as_int(fields[0], "height", min_value=1),
            as_int(fields[1], "round", min_value=1, max_value=MAX_ROUND),
            as_bytes(fields[2], "signer", size=HASH_LEN),
            Lock.from_item(fields[3]) if fields[3] else None,
        )

    def to_fields(self) -> list[RlpItem]:
        return [
            int_bytes(self.height),
            int_bytes(self.round),
            self.signer,
            self.lock.to_tree() if self.lock else [],
        ]


def _one_input(fields: list[RlpItem], name: str, what: str) -> Message:
    if len(fields) != 1:
        raise DecodeError(f"{name}: expected one field, {what}")
    return accounts.input_from_item(fields[0])


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class Deliver:
    """A counterparty entity's signed channel message (``accounts.Message``)."""

    TYPE: ClassVar[int] = 7
    NAME: ClassVar[str] = "deliver"
    message: Message

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        return cls(_one_input(fields, "deliver", "a channel message"))

    def to_fields(self) -> list[RlpItem]:
        return [decode(self.message.raw)]

    def encoded_fields(self) -> list[bytes]:
        return [self.message.raw]


INTERNAL_INPUTS = frozenset({Timeout.TYPE})


# Effects --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``tx`` to signer ``to``'s replica of this entity (on whichever server hosts it)."""

    to: bytes
    tx: Tx


@dataclass(frozen=True, slots=True)
class ProposeFrame:
    """Ask this signer's agent to pre-commit, then send the proposal to ``members``."""

    frame: Frame
    round: int
    members: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Transmit:
    """Deliver ``tx`` to signer ``to``'s replica of another entity, ``entity``."""

    entity: bytes
    to: bytes
    tx: Tx


@dataclass(frozen=True, slots=True)
class Committed:
    frame: Frame
    cert: Certificate
    events: ent.FrameEvents


@dataclass(frozen=True, slots=True)
class Invite:
    """Signer ``to`` became a member: it should make a replica from ``genesis``."""

    to: bytes
    genesis: Genesis


@dataclass(frozen=True, slots=True)
class Note:
    """Something refused or noteworthy, for the log and the input's receipt."""

    index: int  # the input's index in this step, or -1
    message: str


type Effect = Send | Transmit | ProposeFrame | Committed | Invite | Note


# State --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    frame: Frame
    round: int
    post: EntityState
    sigs: tuple[tuple[int, Signatures], ...] = ()  # ascending slot

    def to_tree(self) -> RlpTree:
        return [
            decode(self.frame.raw),
            int_bytes(self.round),
            self.post.to_tree(),
            [[int_bytes(i), s.precommit, list(s.outbox)] for i, s in self.sigs],
        ]

    @property
    def encoded(self) -> bytes:
        return self._encode(self.post.encoded)

    @property
    def header(self) -> bytes:
        """What the replica's hash commits to: the state after the frame by its hash."""
        return self._encode(encode_tree(self.post.hash))

    def _encode(self, post: bytes) -> bytes:
        return encode_list(
            [
                self.frame.raw,
                encode_tree(int_bytes(self.round)),
                post,
                encode_tree([[int_bytes(i), s.precommit, list(s.outbox)] for i, s in self.sigs]),
            ]
        )


@dataclass(frozen=True)
class Genesis:
    """How the entity was created: enough for a new member to rebuild it from frame 1."""

    config: Config
    salt: bytes
    pops: tuple[bytes, ...]

    def to_tree(self) -> RlpTree:
        return [self.config.to_tree(), self.salt, list(self.pops)]

    @classmethod
    def from_item(cls, item: RlpItem) -> Genesis:
        f = as_list(item, "genesis", size=3)
        return cls(
            Config.from_item(f[0]),
            as_bytes(f[1], "salt", size=HASH_LEN),
            tuple(as_bytes(p, "pop", size=ent.SIG_LEN) for p in as_list(f[2], "pops")),
        )


@dataclass(frozen=True)
class Replica:
    signer: bytes
    genesis: Genesis
    entity: EntityState
    head: bytes = ZERO_HASH
    cert: Certificate | None = None
    round: int = 0
    pool: tuple[Batch, ...] = ()
    pending: Pending | None = None
    lock: Lock | None = None
    changes: tuple[bytes, ...] = ()  # members that reported moving to ``round``
    ahead: tuple[tuple[bytes, int], ...] = ()  # (member, round) reports above ``round``
    inbox: tuple[FrameInput, ...] = ()  # channel messages not yet applied
    # Our signed channel messages still to be delivered (or resent).
    mailbox: Mailbox = NO_MAIL

    @property
    def entity_id(self) -> bytes:
        return self.entity.entity_id

    @property
    def next_height(self) -> int:
        return self.entity.height + 1

    @property
    def proposer(self) -> bytes:
        return self.entity.config.proposer_at(self.round)

    def to_tree(self) -> RlpTree:
        return [
            int_bytes(STATE_VERSION),
            self.signer,
            self.genesis.to_tree(),
            self.entity.to_tree(),
            self.head,
            self.cert.to_tree() if self.cert else [],
            int_bytes(self.round),
            [decode(b.raw) for b in self.pool],
            self.pending.to_tree() if self.pending else [],
            self.lock.to_tree() if self.lock else [],
            list(self.changes),
            [[m, int_bytes(rd)] for m, rd in self.ahead],
            [i.to_tree() for i in self.inbox],
            self.mailbox.to_tree(),
        ]

    @cached_property
    def encoded(self) -> bytes:
        """The same bytes as ``encode_tree(self.to_tree())``, built from the parts'
        own encodings: the replica holds whole frames (pool, pending, lock, inbox,
        signed messages, channel frames)."""
        return self._encode(
            self.entity.encoded,
            self.pending.encoded if self.pending else encode_tree([]),
            self.mailbox.encoded(),
        )

    @cached_property
    def header(self) -> bytes:
        """What the hash is of: the encoding with the entity state, the state after the
        frame in flight and the kept messages each by its hash or root (their headers),
        so a block hashes what changed, not every channel and kept message."""
        return self._encode(
            self.entity.header,
            self.pending.header if self.pending else encode_tree([]),
            self.mailbox.header(),
        )

    def _encode(self, entity: bytes, pending: bytes, mailbox: bytes) -> bytes:
        return encode_list(
            [
                encode_tree(int_bytes(STATE_VERSION)),
                encode_tree(self.signer),
                encode_tree(self.genesis.to_tree()),
                entity,
                encode_tree(self.head),
                encode_tree(self.cert.to_tree() if self.cert else []),
                encode_tree(int_bytes(self.round)),
                encode_list(b.raw for b in self.pool),
                pending,
                self.lock.encoded if self.lock else encode_tree([]),
                encode_tree(list(self.changes)),
                encode_tree([[m, int_bytes(rd)] for m, rd in self.ahead]),
                encode_list(i.raw for i in self.inbox),
                mailbox,
            ]
        )

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.header)

    @classmethod
    def decode_agreed(cls, raw: bytes) -> Replica:
        """The agreed part only: signer, genesis, entity state, head, certificate and
        round; this signer's consensus state (pool, frame in flight, lock, round-change
        reports, inbox, signed messages) is left empty. For readers such as a wallet,
        which need the entity and not thousands of payments in flight."""
        f = as_list(decode(raw), "replica", size=14)
        if as_int(f[0], "replica version") != STATE_VERSION:
            raise DecodeError("replica: unknown version")
        return cls(
            as_bytes(f[1], "replica signer", size=HASH_LEN),
            Genesis.from_item(f[2]),
            EntityState.from_item(f[3]),
            as_bytes(f[4], "head", size=HASH_LEN),
            Certificate.from_item(f[5]) if f[5] else None,
            as_int(f[6], "round", max_value=MAX_ROUND),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Replica:
        """The whole encoding (``encoded``: what READ_STATE returns)."""
        f = as_list(decode(raw), "replica", size=14)
        entity = EntityState.from_item(f[3])

        def post(p: list[RlpItem], frame: Frame) -> EntityState:
            return EntityState.from_item(p[2])

        return cls._of(f, entity, post, Mailbox.from_item(f[13]))

    @classmethod
    def load(
        cls,
        raw: bytes,
        channels: ent.Channels,
        forwards: ent.Forwards,
        kept: MerkleMap[Kept],
        *,
        simulation: bool,
        outcomes: Outcomes | None = None,
    ) -> Replica:
        """The replica whose ``header`` is ``raw``, with its channels, forwards and kept
        messages read apart (as storage keeps them), each checked against its root. The state
        after a frame in flight is computed again from the frame, and checked against
        its hash (remembered in ``outcomes``, if given, for the commit that follows)."""
        f = as_list(decode(raw), "replica header", size=14)
        entity = EntityState.from_header(f[3], channels, forwards)

        def post(p: list[RlpItem], frame: Frame) -> EntityState:
            expected = as_bytes(p[2], "pending post hash", size=HASH_LEN)
            state, _ = execute_frame(
                entity, frame, verify=False, simulation=simulation, outcomes=outcomes
            )
            if state.hash != expected:
                raise DecodeError("replica: the frame in flight does not give its state")
            return state

        return cls._of(f, entity, post, Mailbox.from_header(f[13], kept))

    @classmethod
    def _of(
        cls,
        f: list[RlpItem],
        entity: EntityState,
        post: Callable[[list[RlpItem], Frame], EntityState],
        mailbox: Mailbox,
    ) -> Replica:
        if as_int(f[0], "replica version") != STATE_VERSION:
            raise DecodeError("replica: unknown version")
        pending = None
        if f[8]:
            p = as_list(f[8], "pending", size=4)
            frame = Frame.decode(encode_tree(p[0]))
            pending = Pending(
                frame,
                as_int(p[1], "pending round"),
                post(p, frame),
                tuple(
                    (
                        as_int(s[0], "slot"),
                        Signatures(
                            as_bytes(s[1], "sig", size=ent.SIG_LEN),
                            tuple(
                                as_bytes(o, "outbox sig", size=ent.SIG_LEN)
                                for o in as_list(s[2], "outbox sigs", max_len=MAX_OUTBOX)
                            ),
                        ),
                    )
                    for s in (as_list(x, "slot sigs", size=3) for x in as_list(p[3], "sigs"))
                ),
            )
        return cls(
            as_bytes(f[1], "replica signer", size=HASH_LEN),
            Genesis.from_item(f[2]),
            entity,
            as_bytes(f[4], "head", size=HASH_LEN),
            Certificate.from_item(f[5]) if f[5] else None,
            as_int(f[6], "round", max_value=MAX_ROUND),
            tuple(Batch.decode(encode_tree(b)) for b in as_list(f[7], "pool", max_len=MAX_POOL)),
            pending,
            Lock.from_item(f[9]) if f[9] else None,
            tuple(as_bytes(x, "change", size=HASH_LEN) for x in as_list(f[10], "changes")),
            tuple(
                (as_bytes(a[0], "ahead member", size=HASH_LEN), as_int(a[1], "ahead round"))
                for a in (as_list(x, "ahead", size=2) for x in as_list(f[11], "ahead"))
            ),
            tuple(accounts.input_from_item(x) for x in as_list(f[12], "inbox", max_len=MAX_INBOX)),
            mailbox,
        )


def create(signer: bytes, genesis: Genesis) -> Replica:
    return Replica(signer, genesis, ent.genesis(genesis.config, genesis.salt))


# The transition ---------------------------------------------------------------------------


@dataclass
class _Step:
    r: Replica
    simulation: bool = False  # the server's: may frames apply faucet mints?
    outcomes: Outcomes | None = None  # the owner's cache of frame outcomes, if any
    effects: list[Effect] = field(default_factory=list)

    def note(self, index: int, message: str) -> None:
        self.effects.append(Note(index, message))


def step(
    replica: Replica,
    inputs: Sequence[Tx],
    *,
    simulation: bool = False,
    outcomes: Outcomes | None = None,
) -> tuple[Replica, list[Effect]]:
    """The transition. ``outcomes``: the caller's cache of frame outcomes (see
    ``node.machines.outcomes``); None executes every frame. It changes only the time."""
    s = _Step(replica, simulation, outcomes)
    for index, tx in enumerate(inputs):
        match tx.body:
            case SubmitBatch(batch=batch):
                _on_batch(s, index, batch, tx)
            case Precommit() as pc:
                _on_precommit(s, index, pc)
            case Commit(frame=frame, cert=cert):
                _on_commit(s, index, frame, cert)
            case Timeout(height=height, round=round_):
                _on_timeout(s, index, height, round_)
            case SeenLock(lock=lock):
                _on_lock(s, index, lock)
            case RoundChange() as rc:
                _on_round_change(s, index, rc)
            case Deliver(message=message):
                _on_inbound(s, index, message)
            case _:
                s.note(index, f"{tx.body.NAME} is not an entity input")
    _try_commit(s)
    _try_propose(s)
    return s.r, s.effects


def _on_batch(s: _Step, index: int, batch: Batch, tx: Tx) -> None:
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
    if len(r.pool) >= MAX_POOL:
        s.note(index, "entity pool full; retry later")
        return
    s.r = replace(r, pool=(*r.pool, batch))
    if r.proposer != r.signer:
        s.effects.append(Send(r.proposer, tx))


def _input_key(inp: FrameInput) -> tuple[bytes, ...]:
    return (inp.sender, inp.hash, inp.bits, inp.signature)


def _on_inbound(s: _Step, index: int, inp: FrameInput) -> None:
    r = s.r
    if accounts.is_stale(r.entity.channels, inp):
        # Applied already. If it is the frame we acked last, our ack was lost: again.
        if inp.kind == accounts.FRAME:
            ack = r.mailbox.ack_for(inp.sender, inp.hash)
            if ack is not None:
                s.effects.extend(transmissions(r.entity, [(inp.sender, ack)]))
        return
    key = _input_key(inp)
    if any(_input_key(i) == key for i in r.inbox):
        return  # another copy: idempotent
    if len(r.inbox) >= MAX_INBOX:
        s.note(index, "entity inbox full; the sender will resend")
        return
    s.r = replace(r, inbox=(*r.inbox, inp))


def _execute(
    s: _Step, entity: EntityState, frame: Frame, *, verify: bool
) -> tuple[EntityState, ent.FrameEvents]:
    return execute_frame(entity, frame, verify=verify, simulation=s.simulation, outcomes=s.outcomes)


def execute_frame(
    entity: EntityState,
    frame: Frame,
    *,
    verify: bool,
    simulation: bool,
    outcomes: Outcomes | None = None,
) -> tuple[EntityState, ent.FrameEvents]:
    """``ent.execute`` of a frame's batches and inputs, remembered in ``outcomes`` (if
    given). The same frame is executed by the proposer when it builds it and when it
    commits, and by a member when it checks the proposal and when the commit arrives.
    An outcome whose signatures were checked serves every caller; one executed with
    ``verify=False`` serves only callers that also skip the checks."""
    if outcomes is None:
        return _run(entity, frame, verify=verify, simulation=simulation)
    checked = Key(entity.hash, frame.hash, simulation, True)
    found = outcomes.get(checked)
    if found is None and not verify:
        found = outcomes.get(checked._replace(verified=False))
    if found is not None:
        return found
    outcome = _run(entity, frame, verify=verify, simulation=simulation)
    outcomes.put(checked._replace(verified=verify), outcome)
    return outcome


def _run(entity: EntityState, frame: Frame, *, verify: bool, simulation: bool) -> Outcome:
    return ent.execute(
        entity, frame.batches, verify=verify, inputs=frame.inputs, allow_mint=simulation
    )


def _on_precommit(s: _Step, index: int, pc: Precommit) -> None:
    r = s.r
    p = r.pending
    slot = r.entity.config.index.get(pc.signer)
    if pc.height <= r.entity.height:
        return  # late: that frame is committed already
    if p is None or pc.height != p.frame.height or pc.round != p.round:
        s.note(index, f"precommit at {pc.height}/{pc.round}: no frame in flight there")
    elif pc.frame_hash != p.frame.hash:
        s.note(index, f"precommit from {pc.signer.hex()[:16]} for a different frame")
    elif slot is None:
        s.note(index, f"precommit from {pc.signer.hex()[:16]}, not a signer")
    elif any(i == slot for i, _ in p.sigs):
        s.note(index, f"duplicate precommit from {pc.signer.hex()[:16]}")
    else:
        sigs = tuple(sorted((*p.sigs, (slot, Signatures(pc.signature, pc.outbox)))))
        s.r = replace(r, pending=replace(p, sigs=sigs))


def _try_commit(s: _Step) -> None:
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
    _, events = _execute(s, r.entity, p.frame, verify=False)
    _apply_committed(s, p.frame, cert, p.post, events, transmit=True)
    for member in r.entity.config.ids:
        if member != r.signer:
            s.effects.append(Send(member, Tx.of(Commit(p.frame, cert))))


def _on_commit(s: _Step, index: int, frame: Frame, cert: Certificate) -> None:
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
        post, events = _execute(s, r.entity, frame, verify=True)
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
    s: _Step,
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
    applied = {_input_key(i) for i in frame.inputs}
    inbox = tuple(
        i
        for i in r.inbox
        if _input_key(i) not in applied and not accounts.is_stale(post.channels, i)
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
    s.effects.append(Committed(frame, cert, events))
    if transmit:
        s.effects.extend(transmissions(post, fresh))
    new = s.r
    joined = [m for m in post.config.ids if m not in r.entity.config.index]
    s.effects.extend(Invite(m, r.genesis) for m in joined)
    if pool and new.proposer != new.signer:
        # The proposer may have changed, or missed some: make sure it has them.
        s.effects.extend(Send(new.proposer, Tx.of(SubmitBatch(b))) for b in pool)


def transmissions(entity: EntityState, messages: Sequence[tuple[bytes, Message]]) -> list[Effect]:
    """Deliver each message to every member of its counterparty (an announcement: of
    every counterparty), as we know their signer sets (``mailbox.addressees``)."""
    out: list[Effect] = []
    for peer, message in messages:
        tx = Tx.of(Deliver(message))
        out.extend(Transmit(counterparty, m, tx) for counterparty, m in addressees(entity, peer))
    return out


def resend(replica: Replica) -> list[Effect]:
    """Our pending channel frames again, after the announcements of our signer set
    (after a reconnect, a restart or a timeout; every message is idempotent): the
    mailbox's ``to_resend``. Acks go again when the frame they ack comes again
    (``_on_inbound``)."""
    return transmissions(replica.entity, replica.mailbox.to_resend())


def _on_timeout(s: _Step, index: int, height: int, round_: int) -> None:
    r = s.r
    if height != r.next_height or round_ != r.round:
        s.note(index, f"stale timeout {height}/{round_}")
        return
    _enter_round(s, r.round + 1)


def _enter_round(s: _Step, round_: int) -> None:
    r = s.r
    joined = [m for m, rd in r.ahead if rd == round_]
    s.r = r = replace(
        r,
        round=round_,
        pending=None,
        changes=tuple(sorted({r.signer, *joined})),
        ahead=tuple((m, rd) for m, rd in r.ahead if rd > round_),
    )
    if r.proposer != r.signer:
        report = RoundChange(r.next_height, r.round, r.signer, r.lock)
        s.effects.append(Send(r.proposer, Tx.of(report)))
        s.effects.extend(Send(r.proposer, Tx.of(SubmitBatch(b))) for b in r.pool)


def _catch_up(s: _Step) -> None:
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
            _enter_round(s, round_)
            return


def _on_round_change(s: _Step, index: int, rc: RoundChange) -> None:
    r = s.r
    if rc.height != r.next_height or rc.round < r.round:
        return  # stale: harmless
    if rc.signer not in r.entity.config.index:
        s.note(index, "round change from a non-signer")
        return
    if rc.lock is not None:
        _on_lock(s, index, rc.lock)
        r = s.r
    if rc.round > r.round:
        best = dict(r.ahead)
        best[rc.signer] = max(rc.round, best.get(rc.signer, 0))
        s.r = replace(r, ahead=tuple(sorted(best.items())))
        _catch_up(s)
        return
    if rc.signer not in r.changes:
        s.r = replace(r, changes=tuple(sorted((*r.changes, rc.signer))))


def _on_lock(s: _Step, index: int, lock: Lock) -> None:
    """Remember the highest-round lock at the next height, once its signature is
    checked: a lock with a bad one must not displace a genuine lower-round lock."""
    r = s.r
    if lock.frame.entity_id != r.entity_id or lock.frame.height != r.next_height:
        return  # about another height: harmless, ignored
    config = r.entity.config
    if lock.round > r.round or lock.signer != config.proposer_at(lock.round):
        s.note(index, "lock not signed by its round's proposer, or from a future round")
        return
    if r.lock is not None and lock.round <= r.lock.round:
        return
    key = bls.load_public_key(config.members[config.index[lock.signer]].pubkey)
    if not bls.fast_aggregate_verify_keys([key], lock.frame.message(lock.round), lock.signature):
        s.note(index, f"lock from {lock.signer.hex()[:16]} has an invalid signature; ignored")
        return
    s.r = replace(r, lock=lock)


def _locked_frame(s: _Step) -> tuple[Frame, EntityState] | None:
    """The lock's frame, if its pre-commit is genuine and the frame still applies here."""
    r = s.r
    lock = r.lock
    if lock is None or lock.frame.prev_hash != r.head:
        return None
    config = r.entity.config
    key = bls.load_public_key(config.members[config.index[lock.signer]].pubkey)
    if not bls.fast_aggregate_verify_keys([key], lock.frame.message(lock.round), lock.signature):
        s.note(-1, f"lock from {lock.signer.hex()[:16]} has an invalid signature; ignored")
        s.r = replace(r, lock=None)
        return None
    try:
        post, events = _execute(s, r.entity, lock.frame, verify=True)
    except FrameInvalid:
        return None
    if post.hash != lock.frame.state_hash or tuple(events.outbox) != lock.frame.outbox:
        return None
    return lock.frame, post


def _try_propose(s: _Step) -> None:
    r = s.r
    if r.pending is not None or r.proposer != r.signer:
        return
    config = r.entity.config
    if r.round > 0 and config.shares_of(r.changes) < config.threshold:
        return  # wait for the round-change reports that could name a lock
    frame: Frame | None = None
    post: EntityState | None = None
    locked = _locked_frame(s) if r.round > 0 else None
    if locked is not None:
        frame, post = locked
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
            gone = {_input_key(i) for i, _ in built.refused_inputs}
            s.r = r = replace(r, inbox=tuple(i for i in r.inbox if _input_key(i) not in gone))
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
    s.effects.append(ProposeFrame(frame, r.round, r.entity.config.ids))


def _inputs_sized(inbox: Sequence[FrameInput]) -> list[FrameInput]:
    """The oldest inputs of the inbox that fit one frame (at least one)."""
    out: list[FrameInput] = []
    size = items = 0
    for inp in inbox[:MAX_FRAME_INPUTS]:
        size += len(inp.raw)
        items += scan(inp.raw, _COUNTING)
        if (size > MAX_FRAME_INPUT_BYTES or items > MAX_FRAME_INPUT_ITEMS) and out:
            break
        out.append(inp)
    return out


def _channels_waiting(entity: EntityState) -> bool:
    """A ready channel with queued transactions: a frame would send them."""
    return bool(entity.waiting)


def over_frame_budget(body: object) -> str | None:
    """Why an input can never fit a frame (its items alone pass the frame's budget),
    or None. The node refuses such inputs on intake, so the proposer's "at least
    one" never builds a frame that a peer link would refuse."""
    if isinstance(body, SubmitBatch):
        raw, cap, what = body.batch.raw, MAX_FRAME_BATCH_ITEMS, "batch"
    elif isinstance(body, Deliver):
        raw, cap, what = body.message.raw, MAX_FRAME_INPUT_ITEMS, "channel message"
    else:
        return None
    items = scan(raw, _COUNTING)
    if items > cap:
        return f"a {what} of {items} RLP items exceeds a frame's budget of {cap}"
    return None


def _frame_sized(pool: Sequence[Batch]) -> list[Batch]:
    """The oldest batches of the pool that fit one frame."""
    out: list[Batch] = []
    size = items = 0
    for batch in pool:
        size += len(batch.raw)
        items += scan(batch.raw, _COUNTING)
        if (size > MAX_FRAME_BATCH_BYTES or items > MAX_FRAME_BATCH_ITEMS) and out:
            break
        out.append(batch)
    return out


# Checks the runtime makes outside a block ------------------------------------------------


def check_batch(r: Replica, batch: Batch) -> str | None:
    """None if ``batch`` is signed by a member of the entity as this replica knows it:
    what a peer's forwarded batch must prove before it is queued (a batch, a faucet's
    among them, speaks for its member alone)."""
    config = r.entity.config
    slot = config.index.get(batch.signer)
    if slot is None:
        return f"batch from {batch.signer.hex()[:16]}, not a member of the entity"
    if not bls.verify(config.members[slot].pubkey, batch.message(r.entity_id), batch.signature):
        return f"batch signature does not verify under member {batch.signer.hex()[:16]}'s key"
    return None


def check_proposal(
    r: Replica,
    frame: Frame,
    round_: int,
    proposer_sig: bytes,
    *,
    simulation: bool = False,
    outcomes: Outcomes | None = None,
) -> str | None:
    """None if this replica's signer should pre-commit ``frame`` at ``round_``: the
    round's proposer pre-committed it (``proposer_sig``), it extends our head, its
    round is not behind ours, and re-executing it on our replica gives the
    frame's state hash. Locking is the agent's to enforce. ``outcomes``: as ``step``'s."""
    if frame.entity_id != r.entity_id:
        return "proposal for another entity"
    if frame.height != r.next_height:
        return f"proposal at height {frame.height}, this replica is at {r.entity.height}"
    if frame.prev_hash != r.head:
        return "proposal does not extend this replica's head"
    if round_ < r.round:
        return f"proposal at round {round_}, this replica is at round {r.round}"
    config = r.entity.config
    proposer = config.members[config.index[config.proposer_at(round_)]]
    if not bls.verify(proposer.pubkey, frame.message(round_), proposer_sig):
        return "proposal not signed by the round's proposer"
    try:
        post, events = execute_frame(
            r.entity, frame, verify=True, simulation=simulation, outcomes=outcomes
        )
    except FrameInvalid as exc:
        return f"proposal rejected by the entity rules: {exc}"
    if post.hash != frame.state_hash:
        return "proposal's state hash differs from re-execution"
    if tuple(events.outbox) != frame.outbox:
        return "proposal's outgoing messages differ from re-execution"
    return None
