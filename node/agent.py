"""The signer's agent: the only holder of a signer's secret key.

Voting has two steps (``docs/CONSENSUS.md``). The node asks the agent first to
**approve** (pre-vote) a frame, sending the whole frame (the egg-agent protocol,
``docs/PROTOCOL.md``): the agent decodes it, recomputes the frame hash and the
domain-separated message itself, and never signs a hash it was handed. Once
approvals of members holding the threshold exist (a **polka**), the node asks it
to **pre-commit** the frame it approved at that (height, round): the agent signs
the frame hash and outgoing hashes it recorded when it approved. With its
pre-commit it signs each outgoing hash the frame lists (its channel frames, acks
and signer-set announcement, ``node/machines/accounts.py``): those hashes are
part of the frame it pre-commits, and its node re-executed the frame before
asking. A 32-byte message is never anything else: every other message the key
signs is longer.

A person or an accountant decides at the approval (the wallet, ``wallet/agent.py``);
the pre-commit that follows a polka needs no one.

**Double-sign guard.** Before a signature leaves the agent, it is written with
``sync=True`` to the agent's own LevelDB (never the node's data folder):

- ``V`` + entity + height + round -> ``[frame_hash, signature, [outgoing_hash...]]``:
  at most one approval per (height, round); asked again for that frame, the same
  signature. The frame's hash and outgoing hashes, computed here from the whole
  frame, are what a pre-commit at that (height, round) signs: the pre-commit
  request names the frame by its hash only to select this record.
- ``S`` + entity + height + round -> ``[frame_hash, signature]``: at most one
  pre-commit per (height, round), only on a polka for that frame at that round,
  and only of a frame this agent approved there.
- ``L`` + entity + height -> ``[round, frame_hash]``: the lock, the last pre-commit.
  Locked on ``F`` since round ``lr``, the agent signs nothing at a lower round, and
  approves another frame at round ``r`` only with a polka for that frame at a round
  ``vr``, ``lr < vr < r`` (the unlock; the proposal carries it).

The polkas are checked against the entity's config its node hands it. A node that
lies about the config can make its own agent unlock, and that member then counts
as faulty (``docs/THREATS.md``).

**Server binding.** The agent also binds its signer to the identity key of the
server that hosts it (``node/machines/binding.py``): that server then signs the
signer's round changes to other servers with its own key, so a locked wallet
never holds up a round change. ``B`` -> ``[serial, server_key, signature]`` holds
the last binding, written with ``sync=True`` before it leaves: asked to bind the
same key, the agent returns that binding again; asked for another key, it signs
the next serial, which replaces (revokes) the one before wherever it is seen.
:meth:`Agent.revoke_server` binds no server (48 zero bytes) at the next serial.

**Restored without a signing record.** A guard made anew after the data folder
was lost (:meth:`Agent.mark_restored`, ``R`` -> ``b""``) knows nothing of what the
signer signed before. It then signs nothing for an entity until it holds a
floor for it: ``F`` + entity -> ``height``, the highest height the entity's
peers showed in flight when the node found the entity (``FLOOR``,
``docs/PROTOCOL.md`` § 12.7). It refuses every frame at or below the floor: a
frame there may be one the lost folder's signer signed, and the height is
certified without this signer. A floor only rises (the max is kept). A floor
also carries the highest serial of the signer's server binding the peers have
seen, so the next binding outranks the lost folder's.

The wallet reuses this class; the built-in agent (tests, simulation, headless
hubs) loads its key from an EIP-2335 keystore with :func:`Agent.from_keystore`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import plyvel_next as plyvel

from node.codec import as_bytes, as_int, as_list, decode, encode
from node.crypto import bls, keystore
from node.machines.binding import NO_SERVER, ServerBinding, sign_binding
from node.machines.entity import Batch, sign_batch
from node.machines.frames import Frame, Polka, Signatures, precommit_message, verify_polka
from node.machines.governance import Config, signer_id
from node.machines.refusal import Refusal, sign_refusal
from node.txs import Tx

APPROVAL = b"V"  # + entity + height + round -> [frame_hash, signature, [outgoing hash...]]
PRECOMMIT = b"S"  # + entity + height + round -> [frame_hash, signature]: one pre-commit
LOCK = b"L"  # + entity + height -> [round, frame_hash]: the last pre-commit there
BINDING = b"B"  # the guard's record of the last server binding
RESTORED = b"R"  # this guard was made anew after a restore: sign only above a floor
FLOOR = b"F"  # + entity -> height: sign nothing at or below it (after a restore)
BINDING_FLOOR = b"b"  # the highest binding serial the peers have seen for this signer


class Refused(Exception):
    """The agent will not sign this (double sign, lock, or a malformed frame; or its
    person or accountant said no, and then ``refusal`` is the member's signed refusal
    with the reason, which the node passes on: ``node/machines/refusal.py``)."""

    def __init__(self, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal


class Agent:
    def __init__(
        self,
        secret_key: int,
        guard_dir: Path,
        *,
        after_record: Callable[[], None] | None = None,
    ) -> None:
        if not bls.secret_key_valid(secret_key):
            raise ValueError("invalid BLS secret key")
        self._sk = secret_key
        self.pubkey = bls.sk_to_pk(secret_key)
        self.signer_id = signer_id(self.pubkey)
        guard_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db: Any = plyvel.DB(str(guard_dir), create_if_missing=True)
        self._lock = threading.Lock()
        self._closed = False
        self._after_record = after_record  # tests: crash between record and reply
        self.signed = 0  # pre-commits made
        self.approved = 0  # approvals made

    @classmethod
    def from_keystore(cls, path: Path, password: str, guard_root: Path) -> Agent:
        """Load the key; its guard records go in ``guard_root/<signer id hex>``."""
        sk = int.from_bytes(keystore.decrypt(keystore.load(path), password), "big")
        return cls(sk, guard_root / signer_id(bls.sk_to_pk(sk)).hex())

    def close(self) -> None:
        """Close the guard records; a signing thread still running finishes first (a
        LevelDB closed under a write crashes the process), and later requests are
        refused."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def proof_of_possession(self) -> bytes:
        return bls.pop_prove(self._sk)

    def approve(
        self, frame_raw: bytes, round_: int, config: Config, valid: Polka | None = None
    ) -> bytes:
        """Approve (pre-vote) ``frame_raw`` at ``round_``: this signer's approval, recorded
        first; raises Refused. Locked on another frame at round ``lr``, it approves
        only with ``valid``, a polka for this frame at a round between ``lr`` and
        ``round_`` (the unlock), checked against ``config`` (the entity's, from the node).
        The person's or accountant's decision comes before this call. Thread-safe."""
        frame = _frame_at(frame_raw, round_)
        at = frame.entity_id + frame.height.to_bytes(8, "big")
        slot = APPROVAL + at + round_.to_bytes(4, "big")
        with self._lock:
            if self._closed:
                raise Refused("the agent is closed")
            previous = self._db.get(slot)
            if previous is not None:
                return self._same_hash(previous, frame.hash, frame.height, round_, "approved")
            refusal = self._floor_refusal(frame.entity_id, frame.height)
            if refusal is not None:
                raise Refused(refusal)
            lock = self._db.get(LOCK + at)
            if lock is not None:
                fields = as_list(decode(lock), "lock record", size=2)
                locked_round = as_int(fields[0], "lock round")
                if round_ < locked_round:
                    raise Refused(f"already pre-committed at round {locked_round} of this height")
                if as_bytes(fields[1], "lock frame") != frame.hash:
                    self._unlock(frame, round_, locked_round, config, valid)
            signature = bls.sign(self._sk, frame.approval_message(round_))
            outbox = [o.hash for o in frame.outbox]
            self._db.put(slot, encode([frame.hash, signature, outbox]), sync=True)
            self.approved += 1
            return signature

    def _unlock(
        self, frame: Frame, round_: int, locked_round: int, config: Config, valid: Polka | None
    ) -> None:
        """Refused unless ``valid`` lets this agent, locked at ``locked_round`` on another
        frame, approve ``frame`` at ``round_`` (called under the lock)."""
        locked = f"locked on another frame at height {frame.height} since round {locked_round}"
        if valid is None:
            raise Refused(f"{locked}, and the proposal shows no polka for this frame")
        if not locked_round < valid.round < round_:
            raise Refused(
                f"{locked}; a polka at round {valid.round} does not unlock it for round {round_}"
            )
        reason = verify_polka(config, frame.entity_id, frame.height, frame.hash, valid)
        if reason is not None:
            raise Refused(f"{locked}; the proposal's polka does not verify: {reason}")

    def sign_precommit(
        self,
        entity: bytes,
        height: int,
        round_: int,
        frame_hash: bytes,
        polka: Polka,
        config: Config,
    ) -> Signatures:
        """Pre-commit the frame this agent approved at (``entity``, ``height``, ``round_``)
        and sign its outgoing hashes, on ``polka``, a polka for it at that round
        (checked against ``config``); raises Refused. The frame is the one the agent's
        own approval record names (its hash and outgoing hashes, computed from the
        whole frame when it approved): ``frame_hash`` only selects it, and a hash that
        is not that record's is refused. Thread-safe."""
        precommit, outbox = self._precommit(entity, height, round_, frame_hash, polka, config)
        return Signatures(precommit, tuple(bls.sign(self._sk, o) for o in outbox))

    def _precommit(
        self,
        entity: bytes,
        height: int,
        round_: int,
        frame_hash: bytes,
        polka: Polka,
        config: Config,
    ) -> tuple[bytes, list[bytes]]:
        if len(entity) != 32 or len(frame_hash) != 32 or not 1 <= height < 2**64:
            raise Refused("a pre-commit names an entity, a height and a frame hash")
        if not 0 <= round_ < 2**32:
            raise Refused("round out of range")
        at = entity + height.to_bytes(8, "big")
        slot = PRECOMMIT + at + round_.to_bytes(4, "big")
        with self._lock:
            if self._closed:
                raise Refused("the agent is closed")
            approved = self._db.get(APPROVAL + at + round_.to_bytes(4, "big"))
            fields = None if approved is None else as_list(decode(approved), "approval", size=3)
            if fields is None or as_bytes(fields[0], "frame hash") != frame_hash:
                raise Refused(f"did not approve this frame at height {height} round {round_}")
            outbox = [as_bytes(o, "outgoing hash", size=32) for o in as_list(fields[2], "outbox")]
            previous = self._db.get(slot)
            if previous is not None:
                return self._same_hash(previous, frame_hash, height, round_, "signed"), outbox
            refusal = self._floor_refusal(entity, height)
            if refusal is not None:
                raise Refused(refusal)
            if polka.round != round_:
                raise Refused(f"a polka of round {polka.round} for a pre-commit at {round_}")
            reason = verify_polka(config, entity, height, frame_hash, polka)
            if reason is not None:
                raise Refused(f"no polka for this frame: {reason}")
            lock = self._db.get(LOCK + at)
            if lock is not None:
                locked_round = as_int(as_list(decode(lock), "lock record", size=2)[0], "round")
                if round_ < locked_round:
                    raise Refused(f"already pre-committed at round {locked_round} of this height")
            signature = bls.sign(self._sk, precommit_message(entity, height, round_, frame_hash))
            with self._db.write_batch(transaction=True, sync=True) as wb:
                wb.put(slot, encode([frame_hash, signature]))
                wb.put(LOCK + at, encode([round_, frame_hash]))
            if self._after_record is not None:
                self._after_record()
            self.signed += 1
            return signature, outbox

    @staticmethod
    def _same_hash(record: bytes, frame_hash: bytes, height: int, round_: int, what: str) -> bytes:
        """The signature a record holds if it is of ``frame_hash``; else Refused."""
        fields = as_list(decode(record), "guard record")
        if as_bytes(fields[0], "frame hash") != frame_hash:
            raise Refused(f"already {what} a different frame at height {height} round {round_}")
        return as_bytes(fields[1], "signature")

    def sign_refusal(self, frame_raw: bytes, round_: int, reason: str) -> Refusal:
        """This member's signed refusal of ``frame_raw`` at ``round_``, with ``reason``.
        No guard record: a refusal counts toward nothing (a polka counts approvals
        only), so refusing and later approving the same round is harmless."""
        frame = _frame_at(frame_raw, round_)
        return sign_refusal(
            self._sk, self.signer_id, frame.entity_id, frame.height, round_, frame.hash, reason
        )

    def _floor_refusal(self, entity: bytes, height: int) -> str | None:
        """Why a restored guard may not sign at ``height`` of ``entity``, or None
        (called under the lock)."""
        floor = self._db.get(FLOOR + entity)
        if floor is not None:
            at_most = int.from_bytes(floor, "big")
            if height <= at_most:
                return (
                    f"restored without a signing record: height {height} is at or below"
                    f" {at_most}, the highest height this entity's peers showed in flight;"
                    " it may have been signed before the restore"
                )
            return None
        if self._db.get(RESTORED) is not None:
            return (
                "restored without a signing record: the entity's peers have not yet told"
                " which heights are in flight (find the signer's entities first)"
            )
        return None

    def mark_restored(self) -> None:
        """Record that this guard was made anew after a restore (durably): from now on
        it signs for an entity only above the floor :meth:`set_floor` gave it."""
        with self._lock:
            if self._closed:
                raise Refused("the agent is closed")
            self._db.put(RESTORED, b"", sync=True)

    @property
    def restored(self) -> bool:
        with self._lock:
            return not self._closed and self._db.get(RESTORED) is not None

    def set_floor(self, entity: bytes, height: int, binding_serial: int = 0) -> int:
        """Sign nothing for ``entity`` at or below ``height`` (kept durably; a lower
        floor than the one held changes nothing), and bind servers only above
        ``binding_serial``. Returns the floor now held."""
        if len(entity) != 32 or not 0 <= height < 2**64 or not 0 <= binding_serial < 2**64:
            raise Refused("a floor is an entity id, a height and a binding serial")
        with self._lock:
            if self._closed:
                raise Refused("the agent is closed")
            held = self._db.get(FLOOR + entity)
            floor = max(height, int.from_bytes(held, "big") if held is not None else 0)
            seen = self._db.get(BINDING_FLOOR)
            serial = max(binding_serial, int.from_bytes(seen, "big") if seen is not None else 0)
            with self._db.write_batch(transaction=True, sync=True) as wb:
                wb.put(FLOOR + entity, floor.to_bytes(8, "big"))
                wb.put(BINDING_FLOOR, serial.to_bytes(8, "big"))
            return floor

    def floor(self, entity: bytes) -> int | None:
        """The floor held for ``entity``, or None."""
        with self._lock:
            held = None if self._closed else self._db.get(FLOOR + entity)
        return None if held is None else int.from_bytes(held, "big")

    def bind_server(self, server_key: bytes) -> ServerBinding:
        """This signer's binding of ``server_key`` (48 bytes): the last one again if it
        bound that key, else a new one at the next serial, recorded durably first.
        Raises Refused. Thread-safe."""
        if len(server_key) != len(NO_SERVER):
            raise Refused("a server identity key is 48 bytes")
        with self._lock:
            if self._closed:
                raise Refused("the agent is closed")
            previous = self._db.get(BINDING)
            seen = self._db.get(BINDING_FLOOR)
            above = int.from_bytes(seen, "big") if seen is not None else 0
            serial = above + 1
            if previous is not None:
                fields = as_list(decode(previous), "binding record", size=3)
                last = as_int(fields[0], "binding serial")
                if as_bytes(fields[1], "bound key") == server_key and last > above:
                    return ServerBinding(
                        self.signer_id, server_key, last, as_bytes(fields[2], "signature")
                    )
                serial = max(last, above) + 1
            binding = sign_binding(self._sk, self.signer_id, server_key, serial)
            self._db.put(BINDING, encode([serial, server_key, binding.signature]), sync=True)
            return binding

    def revoke_server(self) -> ServerBinding:
        """Bind no server, at the next serial: once replicas see it, no server's round
        changes count for this signer until it binds one again."""
        return self.bind_server(NO_SERVER)

    def sign_batch(self, entity_id: bytes, nonce: int, txs: Sequence[Tx]) -> Batch:
        return sign_batch(entity_id, self._sk, self.signer_id, nonce, txs)

    def signing_record(self) -> dict[bytes, SignedAt]:
        """What this guard voted for, per entity: the highest (height, round) with an
        approval (``V``) or a pre-commit (``S``) record, and the frame hash signed there
        (a read: the signing-record interchange of a backup, docs/WALLET.md)."""
        with self._lock:
            if self._closed:
                raise Refused("the agent is closed")
            approvals = _highest_per_entity(self._db, APPROVAL)
            precommits = _highest_per_entity(self._db, PRECOMMIT)
        last = dict(approvals)
        for entity, (rest, value) in precommits.items():
            if entity not in last or rest[:12] >= last[entity][0][:12]:
                last[entity] = (rest, value)
        record: dict[bytes, SignedAt] = {}
        for entity, (rest, value) in last.items():
            fields = as_list(decode(value), "guard record")
            record[entity] = SignedAt(
                int.from_bytes(rest[:8], "big"),
                int.from_bytes(rest[8:12], "big"),
                as_bytes(fields[0], "frame hash"),
            )
        return record


class SignedAt(NamedTuple):
    """The highest vote a guard holds for an entity (:meth:`Agent.signing_record`)."""

    height: int
    round: int
    frame_hash: bytes


def _highest_per_entity(db: Any, prefix: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    """For records keyed ``prefix`` + entity (32 bytes) + big-endian height + ..., the
    last one per entity in key order (its highest height): entity -> (the key after
    the entity, the value)."""
    last: dict[bytes, tuple[bytes, bytes]] = {}
    start = len(prefix)
    for key, value in db.iterator(prefix=prefix):
        last[key[start : start + 32]] = (key[start + 32 :], value)
    return last


def _frame_at(frame_raw: bytes, round_: int) -> Frame:
    """The frame asked about (its header and outbox), or Refused: not a frame, or a
    round out of range."""
    try:
        frame = Frame.decode_shallow(frame_raw)
    except ValueError as exc:
        raise Refused(f"not a frame: {exc}") from None
    if not 0 <= round_ < 2**32:
        raise Refused("round out of range")
    return frame
