"""Equivocation evidence: two signed votes of one kind (two approvals, or two
pre-commits) of one member for different frames at one entity, height and round.

A member votes twice per round (``docs/CONSENSUS.md``): an approval, the BLS
signature of ``approve_message(entity, height, round, frame_hash)``, and a
pre-commit, of ``precommit_message(...)`` (PROTOCOL.md § 11.5), under its key. A
member's ``approve`` and a proposal (the proposer's approval) carry the first, a
``precommit`` the second. An honest agent signs at most one frame of each kind at
one (height, round) (``node/agent.py``), so two valid votes of one kind of one
member for two frames at one (entity, height, round) prove that member byzantine,
or its key stolen. The pair is :class:`Evidence`: anyone holding it can check both
signatures against the member's key, and the key against the member's id (its
keccak-256), with nothing else.

This is the node's own record, beside the replicas and outside the agreed state
(CONSENSUS.md, "Equivocation evidence", says why). :class:`EvidenceLog` watches the
signed messages that reach the node (every entity input it queues, and every
proposal), remembers the first signed message per (entity, member, height, round)
in a bounded memo, and when a second one for another frame comes, checks both
signatures before it keeps anything: a forged message is never kept, and a forged
first one is replaced by the genuine one that follows. Evidence is counted once
per (entity, member, height, round, kind), at most :data:`MAX_EVIDENCE_PER_MEMBER` per
member of an entity and :data:`MAX_EVIDENCE` in all, the oldest dropped, and
written to the node's store (``E`` keys, docs/STORAGE.md) so that it survives a
restart. The memo is not kept: a restart forgets first messages, never evidence.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Self

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode,
    int_bytes,
)
from node.crypto import bls
from node.machines.entity import SIG_LEN
from node.machines.frames import MAX_ROUND, Frame, approve_message, precommit_message
from node.machines.governance import PUBKEY_LEN, Config, signer_id
from node.machines.replica.inputs import Approve, Precommit
from node.txs import Tx

log = logging.getLogger(__name__)

MAX_EVIDENCE = 1024  # records a node keeps, in memory and on disk; the oldest dropped
MAX_EVIDENCE_PER_MEMBER = 16  # per (entity, member): one byzantine member cannot flush the rest
MAX_WATCHED = 16_384  # first signed messages remembered, per (entity, member, height, round)
MAX_EVIDENCE_READ = 256  # records of one entity a read returns, the newest

PRECOMMIT_VOTE = 0
APPROVE_VOTE = 1
VOTE_NAMES = {PRECOMMIT_VOTE: "pre-committed", APPROVE_VOTE: "approved"}

type Key = tuple[bytes, bytes, int, int, int]  # (entity, member, height, round, kind)


def vote_message(kind: int, entity_id: bytes, height: int, round_: int, frame_hash: bytes) -> bytes:
    """What a member signs for a vote of ``kind`` on ``frame_hash`` at (height, round)."""
    make = approve_message if kind == APPROVE_VOTE else precommit_message
    return make(entity_id, height, round_, frame_hash)


@dataclass(frozen=True, slots=True)
class Signed:
    """One signed vote: the frame's hash and the member's signature."""

    frame_hash: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Evidence:
    """Member ``pubkey`` voted (``kind``) for two frames at ``(entity_id, height, round)``.

    Encoded ``[entity_id, height, round, pubkey, [frame_hash_a, signature_a],
    [frame_hash_b, signature_b]]`` for two pre-commits, with a 7th item ``1`` for two
    approvals, and ``frame_hash_a < frame_hash_b`` (PROTOCOL.md § 11.9), so one
    equivocation has one encoding whichever message came first."""

    entity_id: bytes
    height: int
    round: int
    pubkey: bytes
    a: Signed
    b: Signed
    kind: int = PRECOMMIT_VOTE

    @classmethod
    def of(
        cls,
        entity_id: bytes,
        height: int,
        round_: int,
        pubkey: bytes,
        x: Signed,
        y: Signed,
        kind: int = PRECOMMIT_VOTE,
    ) -> Evidence:
        a, b = (x, y) if x.frame_hash < y.frame_hash else (y, x)
        return cls(entity_id, height, round_, pubkey, a, b, kind)

    @property
    def member(self) -> bytes:
        return signer_id(self.pubkey)

    @property
    def key(self) -> Key:
        return (self.entity_id, self.member, self.height, self.round, self.kind)

    def message(self, signed: Signed) -> bytes:
        return vote_message(self.kind, self.entity_id, self.height, self.round, signed.frame_hash)

    def problem(self) -> str | None:
        """Why this is not evidence (None: it is): the two frames must differ, in
        order, and each signature verify under ``pubkey``."""
        if self.a.frame_hash >= self.b.frame_hash:
            return "the two frame hashes are equal or out of order"
        for signed in (self.a, self.b):
            if not bls.verify(self.pubkey, self.message(signed), signed.signature):
                return f"the signature for frame {signed.frame_hash.hex()[:16]} does not verify"
        return None

    def to_tree(self) -> list[RlpItem]:
        return [
            self.entity_id,
            int_bytes(self.height),
            int_bytes(self.round),
            self.pubkey,
            [self.a.frame_hash, self.a.signature],
            [self.b.frame_hash, self.b.signature],
            *([int_bytes(self.kind)] if self.kind != PRECOMMIT_VOTE else []),
        ]

    def encode(self) -> bytes:
        return encode(self.to_tree())

    @classmethod
    def from_item(cls, item: RlpItem) -> Self:
        """Strict decoding; the signatures are not checked here (:meth:`problem`)."""
        f = as_list(item, "evidence")
        if len(f) not in (6, 7):
            raise DecodeError(f"evidence: expected 6 or 7 items, got {len(f)}")
        kind = PRECOMMIT_VOTE
        if len(f) == 7:
            kind = as_int(f[6], "evidence kind")
            if kind != APPROVE_VOTE:
                raise DecodeError(f"evidence: kind {kind} (1: approvals; none: pre-commits)")

        def signed(x: RlpItem, what: str) -> Signed:
            g = as_list(x, what, size=2)
            return Signed(
                as_bytes(g[0], f"{what} frame hash", size=HASH_LEN),
                as_bytes(g[1], f"{what} signature", size=SIG_LEN),
            )

        evidence = cls(
            as_bytes(f[0], "evidence entity", size=HASH_LEN),
            as_int(f[1], "evidence height", min_value=1),
            as_int(f[2], "evidence round", max_value=MAX_ROUND),
            as_bytes(f[3], "evidence pubkey", size=PUBKEY_LEN),
            signed(f[4], "first"),
            signed(f[5], "second"),
            kind,
        )
        if evidence.a.frame_hash >= evidence.b.frame_hash:
            raise DecodeError("evidence: the frame hashes must differ, in ascending order")
        return evidence

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        return cls.from_item(decode(raw))


def signed_in(body: object) -> tuple[bytes, int, int, int, Signed] | None:
    """The vote an entity input carries, as ``(member, height, round, kind, signed)``,
    or None: an ``approve``'s or a ``precommit``'s."""
    match body:
        case Precommit(height=height, round=round_, frame_hash=h, signer=member, signature=sig):
            return member, height, round_, PRECOMMIT_VOTE, Signed(h, sig)
        case Approve(height=height, round=round_, frame_hash=h, signer=member, signature=sig):
            return member, height, round_, APPROVE_VOTE, Signed(h, sig)
    return None


_WATCHED_INPUTS = (Precommit, Approve)


@dataclass(slots=True)
class _First:
    signed: Signed
    checked: bool  # its signature verified


class EvidenceLog:
    """The node's equivocation evidence, and the memo of first signed messages.

    ``records``: evidence kept before (from the store, oldest first); ``persist``:
    called with the store writes of each change, ``(seq, raw)`` to put and
    ``(seq, None)`` to delete (the node runs them on its writer thread)."""

    def __init__(
        self,
        records: Iterable[tuple[int, Evidence]] = (),
        persist: Callable[[list[tuple[int, bytes | None]]], object] | None = None,
        *,
        max_records: int = MAX_EVIDENCE,
        per_member: int = MAX_EVIDENCE_PER_MEMBER,
        max_watched: int = MAX_WATCHED,
    ) -> None:
        self._persist = persist
        self.max_records = max_records
        self.per_member = per_member
        self.max_watched = max_watched
        self._records: OrderedDict[Key, tuple[int, Evidence]] = OrderedDict()
        self._seq = 0
        for seq, evidence in sorted(records, key=lambda r: r[0]):
            self._records[evidence.key] = (seq, evidence)
            self._seq = max(self._seq, seq)
        self._first: OrderedDict[Key, _First] = OrderedDict()
        self.forged = 0  # conflicting messages whose signature did not verify

    def __len__(self) -> int:
        return len(self._records)

    def all(self) -> list[Evidence]:
        """Every record, oldest first."""
        return [e for _, e in self._records.values()]

    def of_entity(self, entity_id: bytes, limit: int = MAX_EVIDENCE_READ) -> list[Evidence]:
        """The entity's records, oldest first; at most the newest ``limit``."""
        found = [e for _, e in self._records.values() if e.entity_id == entity_id]
        return found[-limit:]

    def observe_inputs(
        self, entity_id: bytes, txs: Sequence[Tx], config: Callable[[], Config | None]
    ) -> list[Evidence]:
        """Watch the votes that entity inputs for ``entity_id`` carry; ``config`` gives
        the entity's config (members' keys), read only if one does."""
        found: list[Evidence] = []
        current: Config | None = None
        for tx in txs:
            body = tx.body
            if not isinstance(body, _WATCHED_INPUTS):
                continue
            seen = signed_in(body)
            if seen is None:
                continue
            if current is None:
                current = config()
                if current is None:
                    return found
            member, height, round_, kind, signed = seen
            evidence = self.observe(current, entity_id, member, height, round_, signed, kind)
            if evidence is not None:
                found.append(evidence)
        return found

    def observe_proposal(self, config: Config, frame: Frame, round_: int, sig: bytes) -> None:
        """A proposal: the approval of the round's proposer (as ``config`` names it)."""
        self.observe(
            config,
            frame.entity_id,
            config.proposer_at(round_),
            frame.height,
            round_,
            Signed(frame.hash, sig),
            APPROVE_VOTE,
        )

    def observe(
        self,
        config: Config,
        entity_id: bytes,
        member: bytes,
        height: int,
        round_: int,
        signed: Signed,
        kind: int = PRECOMMIT_VOTE,
    ) -> Evidence | None:
        """One signed vote of ``kind`` by ``member`` (its key from ``config``); the
        evidence it completes, if it is new. Signatures are checked only when two
        votes for one (entity, member, height, round, kind) differ, each at most once."""
        key = (entity_id, member, height, round_, kind)
        if key in self._records:
            return None  # counted once
        slot = config.index.get(member)
        if slot is None:
            return None
        pubkey = config.members[slot].pubkey
        first = self._first.get(key)
        if first is None:
            self._first[key] = _First(signed, checked=False)
            if len(self._first) > self.max_watched:
                self._first.popitem(last=False)
            return None
        self._first.move_to_end(key)
        if first.signed == signed:
            return None

        def valid(x: Signed) -> bool:
            message = vote_message(kind, entity_id, height, round_, x.frame_hash)
            return bls.verify(pubkey, message, x.signature)

        if first.signed.frame_hash == signed.frame_hash:
            # Two signatures of one message: at most one is the member's (BLS
            # signatures are unique). Keep the genuine one.
            if not first.checked and not valid(first.signed):
                self._first[key] = _First(signed, checked=False)
            else:
                first.checked = True
            return None
        what = VOTE_NAMES[kind]
        if not valid(signed):
            self.forged += 1
            log.info(
                "entity %s: a vote (%s) of %s at %d/%d with a bad signature; not kept",
                entity_id.hex()[:12],
                what,
                member.hex()[:12],
                height,
                round_,
            )
            return None
        if not first.checked:
            if not valid(first.signed):
                self.forged += 1
                self._first[key] = _First(signed, checked=True)  # the first was forged
                return None
            first.checked = True
        evidence = Evidence.of(entity_id, height, round_, pubkey, first.signed, signed, kind)
        del self._first[key]
        self._keep(evidence)
        log.warning(
            "entity %s: member %s %s two frames at height %d round %d (%s and %s): evidence kept",
            entity_id.hex()[:12],
            member.hex()[:12],
            what,
            height,
            round_,
            evidence.a.frame_hash.hex()[:12],
            evidence.b.frame_hash.hex()[:12],
        )
        return evidence

    def add(self, evidence: Evidence) -> bool:
        """Keep ``evidence`` from elsewhere once it checks (False: a forgery, or
        counted already)."""
        if evidence.key in self._records or evidence.problem() is not None:
            return False
        self._keep(evidence)
        return True

    def _keep(self, evidence: Evidence) -> None:
        self._seq += 1
        writes: list[tuple[int, bytes | None]] = [(self._seq, evidence.encode())]
        self._records[evidence.key] = (self._seq, evidence)
        entity, member = evidence.entity_id, evidence.member
        same = [k for k in self._records if k[0] == entity and k[1] == member]
        for k in same[: max(0, len(same) - self.per_member)]:
            writes.append((self._records.pop(k)[0], None))
        while len(self._records) > self.max_records:
            _, (seq, _) = self._records.popitem(last=False)
            writes.append((seq, None))
        if self._persist is not None:
            self._persist(writes)
