"""Entity frames, the pre-commit message, and quorum certificates.

A frame is the RLP list ``[entity_id, height, prev_frame_hash, [batch...],
state_hash]``; its hash is keccak-256 of those bytes. ``state_hash`` is the
entity's state hash after the frame.

A pre-commit is a BLS signature over ``precommit_message`` (byte layout in
``docs/PROTOCOL.md``): a domain tag, the entity id, the height (8 bytes), the
round (4 bytes) and the frame hash. Agents rebuild it from the whole frame;
they never sign a hash they were handed.

A certificate is ``[round, bitfield, aggregate_signature]``. Bit ``i`` (byte
``i // 8``, bit ``i % 8``, least significant first, as Ethereum's
aggregation bits) is set when member ``i`` of the config signed. It is valid
when the set bits' shares reach the threshold and the aggregate verifies
against those members' keys for the message at the certificate's round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
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
from node.machines.entity import SIG_LEN, Batch
from node.machines.governance import Config

PRECOMMIT_DOMAIN = b"XLN/entity-precommit/v1"
MAX_ROUND = 2**32 - 1
MAX_FRAME_BATCHES = 4096


@dataclass(frozen=True)
class Frame:
    entity_id: bytes
    height: int
    prev_hash: bytes
    batches: tuple[Batch, ...]
    state_hash: bytes
    raw: bytes

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
    ) -> Frame:
        raw = encode_list(
            [
                encode_tree(entity_id),
                encode_tree(int_bytes(height)),
                encode_tree(prev_hash),
                encode_list(b.raw for b in batches),
                encode_tree(state_hash),
            ]
        )
        return cls(entity_id, height, prev_hash, tuple(batches), state_hash, raw)

    @classmethod
    def decode(cls, raw: bytes) -> Frame:
        item, per_item = decode_with_raw(raw)
        f = as_list(item, "frame", size=5)
        batch_items = as_list(f[3], "frame batches", max_len=MAX_FRAME_BATCHES)
        batch_raws = per_item[4]
        batches = tuple(Batch.decode(batch_raws[i + 1][0]) for i in range(len(batch_items)))
        return cls(
            as_bytes(f[0], "frame entity", size=HASH_LEN),
            as_int(f[1], "frame height", min_value=1),
            as_bytes(f[2], "frame prev hash", size=HASH_LEN),
            batches,
            as_bytes(f[4], "frame state hash", size=HASH_LEN),
            raw,
        )

    def message(self, round_: int) -> bytes:
        return precommit_message(self.entity_id, self.height, round_, self.hash)


def precommit_message(entity_id: bytes, height: int, round_: int, frame_hash: bytes) -> bytes:
    return (
        PRECOMMIT_DOMAIN
        + entity_id
        + height.to_bytes(8, "big")
        + round_.to_bytes(4, "big")
        + frame_hash
    )


def bitfield(indexes: Iterable[int], size: int) -> bytes:
    bits = bytearray((size + 7) // 8)
    for i in indexes:
        bits[i // 8] |= 1 << (i % 8)
    return bytes(bits)


def bitfield_indexes(bits: bytes, size: int) -> list[int]:
    """Set bits, checking the length and that no bit past ``size`` is set."""
    if len(bits) != (size + 7) // 8:
        raise DecodeError(f"bitfield of {len(bits)} bytes for {size} signers")
    out = [i for i in range(size) if bits[i // 8] >> (i % 8) & 1]
    if bits and bits[-1] >> (size % 8 or 8):
        raise DecodeError("bitfield has bits past the last signer")
    return out


@dataclass(frozen=True, slots=True)
class Certificate:
    round: int
    bits: bytes
    signature: bytes

    def to_tree(self) -> list[RlpItem]:
        return [int_bytes(self.round), self.bits, self.signature]

    @property
    def raw(self) -> bytes:
        return encode_tree(self.to_tree())

    @classmethod
    def from_item(cls, item: RlpItem) -> Certificate:
        f = as_list(item, "certificate", size=3)
        return cls(
            as_int(f[0], "certificate round", max_value=MAX_ROUND),
            as_bytes(f[1], "certificate bitfield", max_len=128),
            as_bytes(f[2], "certificate signature", size=SIG_LEN),
        )


def signers_of(config: Config, cert: Certificate) -> list[int]:
    return bitfield_indexes(cert.bits, len(config.members))


def verify_certificate(config: Config, frame: Frame, cert: Certificate) -> str | None:
    """None if ``cert`` certifies ``frame`` under ``config``, else the reason it does not."""
    return verify_certificate_of(config, frame.entity_id, frame.height, frame.hash, cert)


def verify_certificate_of(
    config: Config, entity_id: bytes, height: int, frame_hash: bytes, cert: Certificate
) -> str | None:
    """The same, for a frame known by its hash (a FRAME_EVENT names it so): the
    pre-commit message needs no more than the entity, the height and the hash."""
    try:
        indexes = signers_of(config, cert)
    except DecodeError as exc:
        return str(exc)
    shares = sum(config.members[i].shares for i in indexes)
    if shares < config.threshold:
        return f"certificate holds {shares} shares, below the threshold {config.threshold}"
    try:
        keys = [bls.load_public_key(config.members[i].pubkey) for i in indexes]
    except bls.BLSError as exc:
        return f"bad signer key: {exc}"
    message = precommit_message(entity_id, height, cert.round, frame_hash)
    if not bls.fast_aggregate_verify_keys(keys, message, cert.signature):
        return "aggregate signature does not verify"
    return None


def aggregate_precommits(
    config: Config, frame: Frame, round_: int, sigs: dict[int, bytes]
) -> tuple[Certificate | None, list[int]]:
    """Aggregate the slots' signatures, verifying the aggregate first and single
    signatures only if it fails. Returns the certificate over the valid slots
    (None if they are below the threshold) and the slots found bad."""
    message = frame.message(round_)
    indexes = sorted(sigs)
    bad: list[int] = []
    agg = _try_aggregate([sigs[i] for i in indexes])
    keys = [bls.load_public_key(config.members[i].pubkey) for i in indexes]
    if agg is None or not bls.fast_aggregate_verify_keys(keys, message, agg):
        good = []
        for i, key in zip(indexes, keys, strict=True):
            if bls.fast_aggregate_verify_keys([key], message, sigs[i]):
                good.append(i)
            else:
                bad.append(i)
        indexes = good
        agg = _try_aggregate([sigs[i] for i in indexes]) if indexes else None
    if agg is None or sum(config.members[i].shares for i in indexes) < config.threshold:
        return None, bad
    return Certificate(round_, bitfield(indexes, len(config.members)), agg), bad


def _try_aggregate(sigs: list[bytes]) -> bytes | None:
    try:
        return bls.aggregate(sigs)
    except bls.BLSError:
        return None
