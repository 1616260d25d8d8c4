"""Canonical encoding: keccak-256 and strict RLP.

Everything that is hashed, signed, stored or sent is RLP, through pyrlp. pyrlp
uses its Rust backend (rusty-rlp) when it is installed and pure Python
otherwise; the tests hold both to the same strict behaviour. Decoding is strict:
non-canonical lengths, a prefixed single byte, truncation, trailing bytes and
leading zeros in integers are all rejected with :class:`DecodeError`.

Decoded RLP is a tree of ``bytes`` and ``list``. The ``as_*`` helpers turn one
item into a typed value, or raise :class:`DecodeError` naming the field.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import rlp
from eth_hash.abc import BackendAPI
from rlp.codec import consume_item, decode_raw, encode_raw, length_prefix

from node import tree_cache

type RlpItem = bytes | list[RlpItem]
type RlpTree = bytes | Sequence[RlpTree]  # what encode_tree takes: any nesting of sequences

HASH_LEN = 32
ZERO_HASH = b"\x00" * HASH_LEN
UINT64_MAX = 2**64 - 1


def _keccak_backend() -> BackendAPI:
    # Chosen explicitly: eth_hash.auto would pick whichever backend imports first.
    try:
        from eth_hash.backends import pysha3

        return pysha3.backend
    except ImportError:
        from eth_hash.backends import pycryptodome

        return pycryptodome.backend


_keccak = _keccak_backend().keccak256


class DecodeError(ValueError):
    """Input that is not valid, canonical RLP of the expected shape."""


class LimitExceeded(DecodeError):
    """Input whose structure goes past a :class:`Limits` cap; found before decoding."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on one encoded item from outside the process, checked by :func:`scan`.

    ``max_items`` counts every byte string and every list, the outermost one too;
    ``max_depth`` counts list levels (``[]`` is depth 1, ``[[]]`` depth 2).
    """

    max_bytes: int
    max_depth: int
    max_items: int


def item_header(data: bytes, pos: int) -> tuple[bool, int, int]:
    """``(is_list, payload start, end)`` of the item whose header is at ``pos``.

    Reads the header alone; ``end`` may lie past the data (a prefix that lies),
    and an IndexError means the header itself is cut off.
    """
    b = data[pos]
    if b < 0x80:
        return False, pos, pos + 1
    if b < 0xB8:
        return False, pos + 1, pos + 1 + b - 0x80
    if b < 0xC0:
        start = pos + 1 + b - 0xB7
        return False, start, start + int.from_bytes(data[pos + 1 : start], "big")
    if b < 0xF8:
        return True, pos + 1, pos + 1 + b - 0xC0
    start = pos + 1 + b - 0xF7
    return True, start, start + int.from_bytes(data[pos + 1 : start], "big")


def nested_lists(depth: int) -> bytes:
    """The encoding of ``depth`` lists nested in each other around nothing
    (``[[[...]]]``), built in linear time: the shape of the deepest hostile
    frames, for tests and benchmarks."""
    prefixes = []
    size = 1  # the innermost c0
    for _ in range(depth - 1):
        prefix = length_prefix(size, 0xC0)
        prefixes.append(prefix)
        size += len(prefix)
    return b"".join(reversed(prefixes)) + b"\xc0"


def scan(data: bytes, limits: Limits) -> int:
    """Check ``data``'s size, nesting depth and item count against ``limits``
    without building anything; returns the item count.

    One loop over the item headers, no recursion: the cost is linear in the
    bytes and stops at the first cap crossed, so a hostile frame costs at most
    ``limits.max_items`` steps. A length prefix that points past its enclosing
    list or the input is reported as truncated. Everything else (canonical
    form) is left to the decoder, which only ever sees input that passed here.
    """
    steps = scan_steps(data, limits, step=1 << 62)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            count: int = done.value
            return count


def scan_steps(data: bytes, limits: Limits, step: int = 4096) -> Generator[None, None, int]:
    """:func:`scan`, pausing (``yield``) after every ``step`` items; returns the count.

    A caller that must not hold the event loop for the whole scan of a large
    frame awaits between the steps (``node.net.sliced_decode.scan_sliced``).
    """
    n = len(data)
    if n > limits.max_bytes:
        raise LimitExceeded(f"frame of {n} bytes exceeds the cap of {limits.max_bytes} bytes")
    max_depth = limits.max_depth
    max_items = limits.max_items
    ends: list[int] = []  # the end offset of each open list, innermost last
    end = n  # the end of the innermost open list (or of the input)
    pos = 0
    items = 0
    while pos < n:
        while pos == end:  # leave every list that ends here
            ends.pop()
            end = ends[-1] if ends else n
        if pos >= n:
            break
        items += 1
        if items > max_items:
            raise LimitExceeded(f"more than {max_items} RLP items (the cap)")
        if not items % step:
            yield
        b = data[pos]
        if b < 0x80:
            pos += 1
        elif b < 0xB8:
            pos += 1 + b - 0x80
        elif b < 0xC0:
            size = b - 0xB7
            pos += 1 + size + int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
        else:
            if b < 0xF8:
                start, length = pos + 1, b - 0xC0
            else:
                size = b - 0xF7
                start = pos + 1 + size
                length = int.from_bytes(data[pos + 1 : start], "big")
            if len(ends) >= max_depth:
                raise LimitExceeded(f"lists nested deeper than {max_depth} levels (the cap)")
            pos = start
            end = start + length
            if end > (ends[-1] if ends else n):
                raise DecodeError("invalid RLP: truncated input")
            ends.append(end)
            continue
        if pos > end:
            raise DecodeError("invalid RLP: truncated input")
    if ends and ends[-1] != n:  # pragma: no cover - the loop pops every list that ends at n
        raise DecodeError("invalid RLP: truncated input")
    return items


def keccak(data: bytes) -> bytes:
    """keccak-256 (Ethereum's, not NIST SHA3-256)."""
    return _keccak(data)


def encode(item: Any) -> bytes:
    """RLP-encode a tree of bytes, ints and lists. Ints encode minimal big-endian.

    Same bytes as ``rlp.encode``, without its per-item serializer inference,
    which costs ~8 us per small item and dominated the node's reply path.
    """
    encoded: bytes = encode_raw(_to_tree(item))
    return encoded


def _to_tree(item: Any) -> RlpTree:
    if isinstance(item, bytes):
        return item
    if isinstance(item, bool) or not isinstance(item, int | list | tuple | bytearray):
        raise TypeError(f"{type(item).__name__} has no RLP encoding here")
    if isinstance(item, int):
        return int_bytes(item)
    if isinstance(item, bytearray):
        return bytes(item)
    return [_to_tree(x) for x in item]


def encode_tree(item: RlpTree) -> bytes:
    """RLP-encode a tree of bytes and lists only: the fast path, no type inference."""
    encoded: bytes = encode_raw(item)
    return encoded


def encode_list(encoded_items: Iterable[bytes]) -> bytes:
    """RLP list whose items are already RLP-encoded: avoids re-encoding on hot paths."""
    payload = b"".join(encoded_items)
    prefix: bytes = length_prefix(len(payload), 0xC0)
    return prefix + payload


def encode_bytes(value: bytes) -> bytes:
    """RLP of one byte string, without pyrlp's per-call type inference."""
    if len(value) == 1 and value[0] < 0x80:
        return value
    if len(value) < 56:
        return bytes([0x80 + len(value)]) + value
    length = int_bytes(len(value))
    return bytes([0xB7 + len(length)]) + length + value


def encode_uint(value: int) -> bytes:
    return encode_bytes(int_bytes(value))


def decode(data: bytes, *, max_size: int | None = None, limits: Limits | None = None) -> RlpItem:
    """Strictly decode exactly one RLP item that fills ``data``."""
    return decode_with_raw(data, max_size=max_size, limits=limits)[0]


def decode_with_raw(
    data: bytes, *, max_size: int | None = None, limits: Limits | None = None
) -> tuple[RlpItem, list[Any]]:
    """Decode strictly, also returning each item's own encoding.

    The second value mirrors the item: for bytes ``[raw]``; for a list
    ``[raw, <child 0>, <child 1>, ...]``. It lets callers keep the exact bytes of
    sub-items (transactions) without encoding them again.

    Bytes from outside the process must come with ``limits``: the decoder
    recurses once per nesting level and builds objects for every item, so only
    :func:`scan`'s caps keep its depth and cost bounded. Bytes the node wrote
    itself, or parts of a message already scanned, need none.

    Large lists decoded lately come back from :mod:`node.tree_cache`, shared:
    a decoded tree is read-only.
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if limits is not None:
        scan(data, limits)
    if max_size is not None and len(data) > max_size:
        raise DecodeError(f"input of {len(data)} bytes exceeds the cap of {max_size}")
    if not data:
        raise DecodeError("empty input")
    known = tree_cache.get(data)
    if known is not None:
        return known
    try:
        item, per_item = decode_raw(data, True, True)
    except rlp.DecodingError:
        raise DecodeError(f"invalid RLP: {_describe_invalid(data)}") from None
    # rusty-rlp 0.4 drops a truncated last item inside a list (c3 00 82 61 decodes
    # as [00]). Accepting only input that re-encodes to itself makes "decodes"
    # mean "canonical" whatever the backend does.
    if encode_raw(item) != data:
        raise DecodeError(f"invalid RLP: {_describe_invalid(data)}")
    tree_cache.keep_all(item, per_item)
    return item, per_item


def _describe_invalid(data: bytes) -> str:
    """Why ``data`` is not canonical RLP, in the same words whichever backend decoded it.

    Only called on the error path, so the slow pure-Python walk costs nothing
    on valid input.
    """
    try:
        _, _, end = consume_item(data, 0)
    except IndexError:
        return "truncated input"
    except rlp.DecodingError as exc:
        reason = exc.args[0] if exc.args else type(exc).__name__
        return str(reason)
    if end > len(data):
        return "truncated input"
    if end < len(data):
        return f"{len(data) - end} trailing bytes after the item"
    return "not the canonical encoding of its value"


def as_list(
    item: RlpItem, field: str, *, size: int | None = None, max_len: int | None = None
) -> list[RlpItem]:
    if not isinstance(item, list):
        raise DecodeError(f"{field}: expected a list, got a byte string")
    if size is not None and len(item) != size:
        raise DecodeError(f"{field}: expected {size} items, got {len(item)}")
    if max_len is not None and len(item) > max_len:
        raise DecodeError(f"{field}: {len(item)} items exceed the cap of {max_len}")
    return item


def as_bytes(
    item: RlpItem, field: str, *, size: int | None = None, max_len: int | None = None
) -> bytes:
    if not isinstance(item, bytes):
        raise DecodeError(f"{field}: expected a byte string, got a list")
    if size is not None and len(item) != size:
        raise DecodeError(f"{field}: expected {size} bytes, got {len(item)}")
    if max_len is not None and len(item) > max_len:
        raise DecodeError(f"{field}: {len(item)} bytes exceed the cap of {max_len}")
    return item


def as_int(item: RlpItem, field: str, *, max_value: int = UINT64_MAX, min_value: int = 0) -> int:
    """A canonical unsigned integer: minimal big-endian, zero is the empty string."""
    raw = as_bytes(item, field, max_len=32)
    if raw[:1] == b"\x00":
        raise DecodeError(f"{field}: integer has leading zero bytes")
    value = int.from_bytes(raw, "big")
    if value > max_value or value < min_value:
        check_int(value, field, max_value=max_value, min_value=min_value)
    return value


def check_int(value: int, field: str, *, max_value: int = UINT64_MAX, min_value: int = 0) -> int:
    """``value`` if ``as_int`` with these bounds would take it, else the DecodeError
    ``as_int`` raises: for a number not read from bytes (one a client typed)."""
    if value > max_value:
        raise DecodeError(f"{field}: {value} exceeds the maximum {max_value}")
    if value < min_value:
        raise DecodeError(f"{field}: {value} is below the minimum {min_value}")
    return value


def as_text(item: RlpItem, field: str, *, max_len: int) -> str:
    raw = as_bytes(item, field, max_len=max_len)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{field}: not valid UTF-8") from None


def int_bytes(value: int) -> bytes:
    """Minimal big-endian bytes of a non-negative int, as RLP wants it."""
    if value < 0:
        raise ValueError("negative integers have no RLP encoding")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
