"""The replica's wire inputs: the entity-level transactions and their strict decoding.

Each is registered in the entity level's registry (``node.txs.REGISTRIES``), so a
mempool or a peer's message decodes to these bodies. What each one does to a
replica is ``consensus.step``'s to say:

``submit_batch``  a signed batch: pooled, and forwarded to the round's proposer
``approve``       a member's approval (pre-vote) of the proposer's frame in flight
``polka``         the proposer's notice that approvals holding the threshold were
                  gathered (a polka): members that approved now pre-commit
``precommit``     a member's signature over the proposer's frame in flight
``commit``        a frame with its certificate: verified, re-executed, applied
``timeout``       from this node's own clock only: the round moves on
``seen_lock``     a frame at the next height with its polka (this signer's agent
                  pre-committed it): remembered if it is the highest round seen
``round_change``  a member moved to a later round (with its lock): counted by
                  that round's proposer; from this node's own replicas only
``signed_round_change``  a round change from another server: the round change,
                  the member's binding of that server's identity key, and that
                  server's signature over it (``node.machines.binding``); counted
                  only once both verify
``server_binding`` a member's binding of its server's key: recorded if it is the
                  highest serial seen (a higher one revokes the lower)
``deliver``       a counterparty entity's signed channel message: kept in the
                  inbox until a frame applies it (every member gets its own copy)
``refusal``       a member's signed refusal of a frame (``node.machines.refusal``):
                  the node keeps it beside the replicas; it is never queued

:class:`Lock` is no input of its own: ``seen_lock`` and ``round_change`` carry one,
and the replica keeps the highest it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_list,
    encode_tree,
    int_bytes,
)
from node.machines import accounts
from node.machines import entity as ent
from node.machines.accounts import Message
from node.machines.binding import ServerBinding, lock_hash, round_change_message
from node.machines.entity import Batch
from node.machines.frames import MAX_OUTBOX, MAX_ROUND, Certificate, Frame, Polka
from node.machines.refusal import Refusal
from node.txs import REGISTRIES, Level

ENTITY_INPUTS = REGISTRIES[Level.ENTITY]


def _vote_fields(fields: list[RlpItem]) -> tuple[int, int, bytes, bytes, bytes]:
    """A vote's first five fields: height, round, frame hash, signer, signature."""
    return (
        as_int(fields[0], "height", min_value=1),
        as_int(fields[1], "round", max_value=MAX_ROUND),
        as_bytes(fields[2], "frame hash", size=HASH_LEN),
        as_bytes(fields[3], "signer", size=HASH_LEN),
        as_bytes(fields[4], "signature", size=ent.SIG_LEN),
    )


def _vote_tree(vote: Precommit | Approve) -> list[RlpItem]:
    return [
        int_bytes(vote.height),
        int_bytes(vote.round),
        vote.frame_hash,
        vote.signer,
        vote.signature,
    ]


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
            *_vote_fields(fields),
            tuple(
                as_bytes(x, "outbox signature", size=ent.SIG_LEN)
                for x in as_list(fields[5], "outbox signatures", max_len=MAX_OUTBOX)
            ),
        )

    def to_fields(self) -> list[RlpItem]:
        return [*_vote_tree(self), list(self.outbox)]


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class Approve:
    """A member's approval (pre-vote) of the frame in flight at (height, round), for
    the round's proposer, which gathers them into a polka."""

    TYPE: ClassVar[int] = 12
    NAME: ClassVar[str] = "approve"
    height: int
    round: int
    frame_hash: bytes
    signer: bytes
    signature: bytes

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 5:
            raise DecodeError("approve: expected [height, round, frame_hash, signer, signature]")
        return cls(*_vote_fields(fields))

    def to_fields(self) -> list[RlpItem]:
        return _vote_tree(self)


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class PolkaNotice:
    """The round's proposer gathered a polka for the frame ``frame_hash`` at
    (height, polka.round): a member that approved that frame there now pre-commits
    it (its agent checks the polka), without asking its person again."""

    TYPE: ClassVar[int] = 13
    NAME: ClassVar[str] = "polka"
    height: int
    frame_hash: bytes
    polka: Polka

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 3:
            raise DecodeError("polka: expected [height, frame_hash, [round, bits, signature]]")
        return cls(
            as_int(fields[0], "height", min_value=1),
            as_bytes(fields[1], "frame hash", size=HASH_LEN),
            Polka.from_item(fields[2]),
        )

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.height), self.frame_hash, self.polka.to_tree()]

    @property
    def round(self) -> int:
        return self.polka.round


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
    """A frame with its polka at ``round``: members holding the threshold approved it
    there, so some member may have pre-committed (locked on) it. Later proposers at
    that height re-propose the highest-round lock they hear of, with its polka, which
    lets members locked at a lower round on another frame approve it (the unlock).
    The polka means a member cannot make up a lock on a frame the threshold did not
    approve."""

    round: int
    frame: Frame
    polka: Polka

    def to_tree(self) -> list[RlpItem]:
        return [decode(self.frame.raw), self.polka.to_tree()]

    @property
    def encoded(self) -> bytes:
        return encode_list([self.frame.raw, self.polka.raw])

    @classmethod
    def from_item(cls, item: RlpItem) -> Lock:
        f = as_list(item, "lock", size=2)
        polka = Polka.from_item(f[1])
        return cls(polka.round, Frame.decode(encode_tree(f[0])), polka)


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


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class SignedRoundChange:
    """A round change as it travels between servers: ``report`` (a member's
    :class:`RoundChange`), the member's ``binding`` of the sending server's identity
    key, and that server's ``signature`` over :meth:`message`."""

    TYPE: ClassVar[int] = 9  # 8 was version 1's mint: left unassigned
    NAME: ClassVar[str] = "signed_round_change"
    report: RoundChange
    binding: ServerBinding
    signature: bytes

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 6:
            raise DecodeError(
                "signed_round_change: expected [height, round, signer, lock or [],"
                " binding, server signature]"
            )
        return cls(
            RoundChange.from_fields(fields[:4]),
            ServerBinding.from_item(fields[4]),
            as_bytes(fields[5], "server signature", size=ent.SIG_LEN),
        )

    def to_fields(self) -> list[RlpItem]:
        return [*self.report.to_fields(), self.binding.to_tree(), self.signature]

    def encoded_fields(self) -> list[bytes]:
        rc = self.report
        return [
            encode_tree(int_bytes(rc.height)),
            encode_tree(int_bytes(rc.round)),
            encode_tree(rc.signer),
            rc.lock.encoded if rc.lock else encode_tree([]),
            encode_tree(self.binding.to_tree()),
            encode_tree(self.signature),
        ]

    @staticmethod
    def message(entity_id: bytes, rc: RoundChange) -> bytes:
        """What the sending server signs: the round change at ``entity_id``, with its lock
        by hash (``node.machines.binding.round_change_message``)."""
        lock = lock_hash(rc.lock.encoded if rc.lock else None)
        return round_change_message(entity_id, rc.height, rc.round, rc.signer, lock)


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class AnnounceBinding:
    """A member's binding of its server's identity key, sent to the entity's replicas
    when the member's agent signs it, so a newer serial (a revocation) is known before
    any round change needs it."""

    TYPE: ClassVar[int] = 10
    NAME: ClassVar[str] = "server_binding"
    binding: ServerBinding

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError("server_binding: expected [binding]")
        return cls(ServerBinding.from_item(fields[0]))

    def to_fields(self) -> list[RlpItem]:
        return [self.binding.to_tree()]


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


@ENTITY_INPUTS.register
@dataclass(frozen=True, slots=True)
class RefusalInput:
    """A member's signed refusal of a frame (``node.machines.refusal``), as its node sends
    it to the servers of the entity's other members: kept beside the replicas
    (``node/refusals.py``), never queued for one."""

    TYPE: ClassVar[int] = 11
    NAME: ClassVar[str] = "refusal"
    refusal: Refusal

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError("refusal: expected [refusal]")
        return cls(Refusal.from_item(fields[0]))

    def to_fields(self) -> list[RlpItem]:
        return [self.refusal.to_tree()]


# Only the node itself makes these: its clock's timeouts, and the round changes its own
# replicas send each other (a round change from another server is signed_round_change).
INTERNAL_INPUTS = frozenset({Timeout.TYPE, RoundChange.TYPE})
# What a client may not submit either: a refusal comes from a member's agent, through
# its node, and goes to the other members' servers, not into a block.
PEER_ONLY_INPUTS = frozenset({RefusalInput.TYPE})
