"""Entity frames, the pre-commit message, and quorum certificates.

A frame is the RLP list ``[entity_id, height, prev_frame_hash, [batch...],
[input...], [outgoing...], state_hash]``; its hash is keccak-256 of those bytes.
``state_hash`` is the entity's state hash after the frame. ``input`` are the
counterparties' signed channel messages and faucet mints the frame applies;
``outgoing`` are ``[kind, peer, hash]`` of the channel messages it produces,
whose hashes the signers sign together with their pre-commit
(``node/machines/accounts.py``).

A pre-commit is a BLS signature over ``precommit_message`` (byte layout in
``docs/PROTOCOL.md``): a domain tag, the entity id, the height (8 bytes), the
round (4 bytes) and the frame hash. Agents rebuild it from the whole frame;
they never sign a hash they were handed.

A certificate is ``[round, bitfield, aggregate_signature, [outbox_signature...]]``.
Bit ``i`` (byte ``i // 8``, bit ``i % 8``, least significant first, as
Ethereum's aggregation bits) is set when member ``i`` of the config signed. It
is valid when the set bits' shares reach the threshold and the aggregate
verifies against those members' keys for the message at the certificate's
round. The same members' aggregate over each outgoing hash of the frame is
``outbox_signature`` (one per outgoing message, in order): that is the quorum
signature the message travels with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    decode_with_raw,
    encode_list,
    encode_tree,
    int_bytes,
    keccak,
)
from node.crypto import bls
from node.machines import accounts
from node.machines.accounts import FrameInput, Outgoing
from node.machines.entity import SIG_LEN, Batch
from node.machines.governance import Config
from node.machines.quorum import bitfield, bitfield_indexes, verify_quorum

__all__ = ["bitfield", "bitfield_indexes"]  # re-exported: older callers import them here

PRECOMMIT_DOMAIN = b"XLN/entity-precommit/v1"
APPROVE_DOMAIN = b"XLN/approve/v1"
MAX_ROUND = 2**32 - 1
MAX_FRAME_BATCHES = 4096
MAX_FRAME_INPUTS = 4096
# An honest frame's outbox: one announcement, at most one ack per input (a proposer
# takes at most replica.MAX_FRAME_INPUTS = 256 of them) and at most
# accounts.MAX_PROPOSING channel frames: 1,281. The cap leaves room above that.
MAX_OUTBOX = 2049


@dataclass(frozen=True)
class Frame:
    entity_id: bytes
    height: int
    prev_hash: bytes
    batches: tuple[Batch, ...]
    state_hash: bytes
    raw: bytes
    inputs: tuple[FrameInput, ...] = ()
    outbox: tuple[Outgoing, ...] = ()

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.raw)

    @classmethod
    def make(
        cls,
        entity_id: bytes,
        height: int,
        prev_hash: bytes,
        batches: Sequence[Batch],
        state_hash: bytes,
        inputs: Sequence[FrameInput] = (),
        outbox: Sequence[Outgoing] = (),
    ) -> Frame:
        raw = encode_list(
            [
                encode_tree(entity_id),
                encode_tree(int_bytes(height)),
                encode_tree(prev_hash),
                encode_list(b.raw for b in batches),
                encode_list(i.raw for i in inputs),
                encode_tree([o.to_tree() for o in outbox]),
                encode_tree(state_hash),
            ]
        )
        return cls(
            entity_id,
            height,
            prev_hash,
            tuple(batches),
            state_hash,
            raw,
            tuple(inputs),
            tuple(outbox),
        )

    @classmethod
    def decode_shallow(cls, raw: bytes) -> Frame:
        """The frame's header and outbox, checking that batches and inputs are lists but
        not decoding them (``batches`` and ``inputs`` are left empty). For the agent,
        which signs the frame's hash and outgoing hashes: its node checked the content
        (``replica.check_proposal``), and decoding thousands of payments again would
        cost the agent more than signing."""
        item = decode(raw)
        f = as_list(item, "frame", size=7)
        for x in as_list(f[3], "frame batches", max_len=MAX_FRAME_BATCHES):
            as_list(x, "batch", size=4)
        for x in as_list(f[4], "frame inputs", max_len=MAX_FRAME_INPUTS):
            if not as_list(x, "frame input"):
                raise DecodeError("frame input: empty list")
        outbox = tuple(
            Outgoing.from_item(x) for x in as_list(f[5], "frame outbox", max_len=MAX_OUTBOX)
        )
        return cls(
            as_bytes(f[0], "frame entity", size=HASH_LEN),
            as_int(f[1], "frame height", min_value=1),
            as_bytes(f[2], "frame prev hash", size=HASH_LEN),
            (),
            as_bytes(f[6], "frame state hash", size=HASH_LEN),
            raw,
            (),
            outbox,
        )

    @classmethod
    def decode(cls, raw: bytes) -> Frame:
        """Strict decode; a frame decoded lately is returned again (a member gets the
        same frame in a proposal and in its commit; frames are immutable)."""
        frame = _DECODED.get(raw)
        if frame is not None:
            _DECODED.move_to_end(raw)
            return frame
        frame = cls._decode(raw)
        _DECODED[raw] = frame
        while len(_DECODED) > _DECODED_MAX:
            _DECODED.popitem(last=False)
        return frame

    @classmethod
    def _decode(cls, raw: bytes) -> Frame:
        item, per_item = decode_with_raw(raw)
        f = as_list(item, "frame", size=7)
        batch_items = as_list(f[3], "frame batches", max_len=MAX_FRAME_BATCHES)
        batch_raws = per_item[4]
        batches = tuple(Batch.decode(batch_raws[i + 1][0]) for i in range(len(batch_items)))
        inputs = tuple(
            accounts.input_from_item(x)
            for x in as_list(f[4], "frame inputs", max_len=MAX_FRAME_INPUTS)
        )
        outbox = tuple(
            Outgoing.from_item(x) for x in as_list(f[5], "frame outbox", max_len=MAX_OUTBOX)
        )
        return cls(
            as_bytes(f[0], "frame entity", size=HASH_LEN),
            as_int(f[1], "frame height", min_value=1),
            as_bytes(f[2], "frame prev hash", size=HASH_LEN),
            batches,
            as_bytes(f[6], "frame state hash", size=HASH_LEN),
            raw,
            inputs,
            outbox,
        )

    def message(self, round_: int) -> bytes:
        return precommit_message(self.entity_id, self.height, round_, self.hash)

    def approval_message(self, round_: int) -> bytes:
        return approve_message(self.entity_id, self.height, round_, self.hash)


_DECODED: OrderedDict[bytes, Frame] = OrderedDict()
_DECODED_MAX = 16


def precommit_message(entity_id: bytes, height: int, round_: int, frame_hash: bytes) -> bytes:
    return (
        PRECOMMIT_DOMAIN
        + entity_id
        + height.to_bytes(8, "big")
        + round_.to_bytes(4, "big")
        + frame_hash
    )


def approve_message(entity_id: bytes, height: int, round_: int, frame_hash: bytes) -> bytes:
    """The 90 bytes a member's key signs to approve (pre-vote) ``frame_hash`` at
    (height, round): the same layout as a pre-commit under another domain tag."""
    return (
        APPROVE_DOMAIN
        + entity_id
        + height.to_bytes(8, "big")
        + round_.to_bytes(4, "big")
        + frame_hash
    )


@dataclass(frozen=True, slots=True)
class Polka:
    """Approvals of one frame at ``round`` by members holding the threshold: their
    bitfield and the aggregate of their approvals. A member pre-commits (locks) only
    on a polka, and unlocks only on a polka of a later round."""

    round: int
    bits: bytes
    signature: bytes

    def to_tree(self) -> list[RlpItem]:
        return [int_bytes(self.round), self.bits, self.signature]

    @property
    def raw(self) -> bytes:
        return encode_tree(self.to_tree())

    @classmethod
    def from_item(cls, item: RlpItem) -> Polka:
        f = as_list(item, "polka", size=3)
        return cls(
            as_int(f[0], "polka round", max_value=MAX_ROUND),
            as_bytes(f[1], "polka bitfield", max_len=128),
            as_bytes(f[2], "polka signature", size=SIG_LEN),
        )


def verify_polka(
    config: Config, entity_id: bytes, height: int, frame_hash: bytes, polka: Polka
) -> str | None:
    """None if ``polka`` holds approvals of ``frame_hash`` at (height, its round) from
    members of ``config`` holding the threshold; else the reason."""
    message = approve_message(entity_id, height, polka.round, frame_hash)
    return verify_quorum(config, polka.bits, message, polka.signature, "polka")


def aggregate_approvals(
    config: Config, frame: Frame, round_: int, sigs: dict[int, bytes]
) -> tuple[Polka | None, list[int]]:
    """The polka of the slots' approvals (None below the threshold) and the slots
    found bad: the aggregate is verified first, each approval only if it fails."""
    message = frame.approval_message(round_)
    indexes = sorted(sigs)
    keys = [bls.load_public_key(config.members[i].pubkey) for i in indexes]
    agg = _try_aggregate([sigs[i] for i in indexes])
    bad: list[int] = []
    if agg is None or not bls.fast_aggregate_verify_keys(keys, message, agg):
        good = [i for i in indexes if approval_valid(config, i, message, sigs[i])]
        bad = [i for i in indexes if i not in good]
        indexes = good
        agg = _try_aggregate([sigs[i] for i in indexes])
    if (
        agg is None
        or not indexes
        or sum(config.members[i].shares for i in indexes) < config.threshold
    ):
        return None, bad
    return Polka(round_, bitfield(indexes, len(config.members)), agg), bad


def approval_valid(config: Config, slot: int, message: bytes, signature: bytes) -> bool:
    key = bls.load_public_key(config.members[slot].pubkey)
    return bls.fast_aggregate_verify_keys([key], message, signature)


@dataclass(frozen=True, slots=True)
class Certificate:
    round: int
    bits: bytes
    signature: bytes
    outbox: tuple[bytes, ...] = ()  # the same members' aggregate over each outgoing hash

    def to_tree(self) -> list[RlpItem]:
        return [int_bytes(self.round), self.bits, self.signature, list(self.outbox)]

    @property
    def raw(self) -> bytes:
        return encode_tree(self.to_tree())

    @classmethod
    def from_item(cls, item: RlpItem) -> Certificate:
        f = as_list(item, "certificate", size=4)
        return cls(
            as_int(f[0], "certificate round", max_value=MAX_ROUND),
            as_bytes(f[1], "certificate bitfield", max_len=128),
            as_bytes(f[2], "certificate signature", size=SIG_LEN),
            tuple(
                as_bytes(x, "outbox signature", size=SIG_LEN)
                for x in as_list(f[3], "outbox signatures", max_len=MAX_OUTBOX)
            ),
        )


def signers_of(config: Config, cert: Certificate) -> list[int]:
    return bitfield_indexes(cert.bits, len(config.members))


def verify_certificate(config: Config, frame: Frame, cert: Certificate) -> str | None:
    """None if ``cert`` certifies ``frame`` under ``config``, with a valid quorum
    signature over each outgoing hash; else the reason it does not."""
    reason = verify_certificate_of(config, frame.entity_id, frame.height, frame.hash, cert)
    if reason is not None:
        return reason
    if len(cert.outbox) != len(frame.outbox):
        return f"{len(cert.outbox)} outbox signatures for {len(frame.outbox)} outgoing messages"
    for out, sig in zip(frame.outbox, cert.outbox, strict=True):
        reason = verify_quorum(config, cert.bits, out.hash, sig)
        if reason is not None:
            return f"outgoing {accounts.KIND_NAMES[out.kind]}: {reason}"
    return None


def verify_certificate_of(
    config: Config, entity_id: bytes, height: int, frame_hash: bytes, cert: Certificate
) -> str | None:
    """The same, for a frame known by its hash (a FRAME_EVENT names it so): the
    pre-commit message needs no more than the entity, the height and the hash."""
    message = precommit_message(entity_id, height, cert.round, frame_hash)
    return verify_quorum(config, cert.bits, message, cert.signature, "certificate")


@dataclass(frozen=True, slots=True)
class Signatures:
    """One member's answer to a proposal: its pre-commit and one signature per
    outgoing hash of the frame, in order."""

    precommit: bytes
    outbox: tuple[bytes, ...] = ()


def precommit_valid(config: Config, slot: int, frame: Frame, round_: int, sigs: Signatures) -> bool:
    """Whether slot ``slot``'s pre-commit signs ``frame`` at ``round_`` and each of its
    outgoing messages, with that member's key."""
    if len(sigs.outbox) != len(frame.outbox):
        return False
    key = bls.load_public_key(config.members[slot].pubkey)
    messages = [frame.message(round_), *(o.hash for o in frame.outbox)]
    return all(
        bls.fast_aggregate_verify_keys([key], msg, sig)
        for msg, sig in zip(messages, [sigs.precommit, *sigs.outbox], strict=True)
    )


def aggregate_precommits(
    config: Config, frame: Frame, round_: int, sigs: dict[int, Signatures]
) -> tuple[Certificate | None, list[int]]:
    """Aggregate the slots' signatures, verifying the aggregates first and each slot's
    signatures only if one fails. Returns the certificate over the valid slots
    (None if they are below the threshold) and the slots found bad."""
    messages = [frame.message(round_), *(o.hash for o in frame.outbox)]
    indexes = sorted(sigs)
    bad: list[int] = [i for i in indexes if len(sigs[i].outbox) != len(frame.outbox)]
    indexes = [i for i in indexes if i not in bad]
    keys = [bls.load_public_key(config.members[i].pubkey) for i in indexes]

    def parts(i: int) -> list[bytes]:
        return [sigs[i].precommit, *sigs[i].outbox]

    aggs = [_try_aggregate([parts(i)[j] for i in indexes]) for j in range(len(messages))]
    if any(
        agg is None or not bls.fast_aggregate_verify_keys(keys, msg, agg)
        for agg, msg in zip(aggs, messages, strict=True)
    ):
        good = [i for i in indexes if precommit_valid(config, i, frame, round_, sigs[i])]
        bad.extend(i for i in indexes if i not in good)
        indexes = good
        aggs = [_try_aggregate([parts(i)[j] for i in indexes]) for j in range(len(messages))]
    if (
        not indexes
        or any(a is None for a in aggs)
        or sum(config.members[i].shares for i in indexes) < config.threshold
    ):
        return None, sorted(bad)
    signature, *outbox = (a for a in aggs if a is not None)
    bits = bitfield(indexes, len(config.members))
    return Certificate(round_, bits, signature, tuple(outbox)), sorted(bad)


def _try_aggregate(sigs: list[bytes]) -> bytes | None:
    try:
        return bls.aggregate(sigs)
    except bls.BLSError:
        return None
