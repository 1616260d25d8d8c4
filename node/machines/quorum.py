"""Quorum signatures: a bitfield of an entity's members and their aggregate BLS signature.

Bit ``i`` (byte ``i // 8``, bit ``i % 8``, least significant first, as Ethereum's
aggregation bits) is set when member ``i`` of the config signed. A quorum
signature is valid when the set bits' shares reach the threshold and the
aggregate verifies against those members' keys. Entity certificates
(``frames.py``) and signed channel messages (``accounts.py``) both use it.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.codec import DecodeError
from node.crypto import bls
from node.machines.governance import Config


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


def verify_quorum(
    config: Config, bits: bytes, message: bytes, signature: bytes, label: str = "signature"
) -> str | None:
    """None if the members named by ``bits`` hold the threshold and their aggregate
    ``signature`` verifies for ``message``; else the reason."""
    try:
        indexes = bitfield_indexes(bits, len(config.members))
    except DecodeError as exc:
        return str(exc)
    shares = sum(config.members[i].shares for i in indexes)
    if shares < config.threshold:
        return f"{label} holds {shares} shares, below the threshold {config.threshold}"
    try:
        keys = [bls.load_public_key(config.members[i].pubkey) for i in indexes]
    except bls.BLSError as exc:
        return f"bad signer key: {exc}"
    if not bls.fast_aggregate_verify_keys(keys, message, signature):
        return "aggregate signature does not verify"
    return None
