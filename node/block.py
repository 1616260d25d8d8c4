"""The server block: ``[height, prev_hash, timestamp_ms, mempool, state_hash]``.

``mempool`` is the block's whole input as one RLP byte string (see
:mod:`node.mempool`); ``state_hash`` is keccak-256 of the server state after the
block. The block hash is keccak-256 of the block's RLP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.codec import (
    HASH_LEN,
    UINT64_MAX,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_tree,
    int_bytes,
    keccak,
)
from node.mempool import MAX_MEMPOOL_BYTES

MAX_BLOCK_BYTES = MAX_MEMPOOL_BYTES + 256


@dataclass(frozen=True, slots=True)
class Block:
    height: int
    prev_hash: bytes
    timestamp: int
    mempool: bytes
    state_hash: bytes
    raw: bytes = field(default=b"", compare=False, repr=False)
    hash: bytes = field(default=b"", compare=False, repr=False)

    @classmethod
    def make(
        cls, height: int, prev_hash: bytes, timestamp: int, mempool: bytes, state_hash: bytes
    ) -> Block:
        raw = encode_tree([int_bytes(height), prev_hash, int_bytes(timestamp), mempool, state_hash])
        return cls(height, prev_hash, timestamp, mempool, state_hash, raw, keccak(raw))

    @classmethod
    def decode(cls, raw: bytes, *, hashed: bool = True) -> Block:
        """Strictly decode; ``hashed=False`` leaves ``hash`` empty, for callers that
        check the raw bytes against a block they make themselves."""
        items = as_list(decode(raw, max_size=MAX_BLOCK_BYTES), "block", size=5)
        block = cls(
            height=as_int(items[0], "block height", min_value=1),
            prev_hash=as_bytes(items[1], "block prev_hash", size=HASH_LEN),
            timestamp=as_int(items[2], "block timestamp", max_value=UINT64_MAX),
            mempool=as_bytes(items[3], "block mempool", max_len=MAX_MEMPOOL_BYTES),
            state_hash=as_bytes(items[4], "block state_hash", size=HASH_LEN),
            raw=raw,
            hash=keccak(raw) if hashed else b"",
        )
        return block
