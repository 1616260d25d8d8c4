"""LevelDB layout for one server's chain (plyvel-next).

Keys, each behind a one-byte prefix:

==================  =====================================================
``M``               meta: ``[format_version, server_id]``
``B`` + hash        block RLP, under its keccak-256 hash
``H`` + height      block hash at that height (8-byte big-endian height)
``R`` + server_id   root: ``[block_rlp, state_rlp]`` of the latest block
``S`` + route       a sub-machine's state, written only when it changes
==================  =====================================================

Every block's writes go in one ``write_batch(transaction=True, sync=True)``:
all-or-nothing, and durable when :meth:`Store.write_block` returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import plyvel_next as plyvel

from node.block import Block
from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    DecodeError,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode,
)
from node.machines.server import ServerState, Step

FORMAT_VERSION = 1

META = b"M"
BLOCK = b"B"
HEIGHT = b"H"
ROOT = b"R"
SUB = b"S"
HEIGHT_END = bytes([HEIGHT[0] + 1])


class StoreError(Exception):
    """The data folder cannot be used as a chain store."""


class StoreLocked(StoreError):
    """Another process (usually a running node) holds the LevelDB lock."""


def height_key(height: int) -> bytes:
    return HEIGHT + height.to_bytes(8, "big")


def sub_key(route: tuple[bytes, ...]) -> bytes:
    return SUB + b"".join(route)


class Store:
    """The chain of one server in one LevelDB database."""

    def __init__(self, path: Path, server_id: bytes = ZERO_HASH) -> None:
        if len(server_id) != HASH_LEN:
            raise ValueError("server id must be 32 bytes")
        self.path = path
        self.server_id = server_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db: Any = plyvel.DB(str(path), create_if_missing=True)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{path} is in use by another process (is the node running?)"
                ) from exc
            raise StoreError(f"cannot open {path}: {exc}") from exc
        except plyvel.CorruptionError as exc:
            raise StoreError(f"{path} is corrupt: {exc}") from exc
        self._check_meta()

    def _check_meta(self) -> None:
        raw = self._db.get(META)
        if raw is None:
            self._db.put(META, encode([FORMAT_VERSION, self.server_id]), sync=True)
            return
        try:
            items = as_list(decode(raw), "meta", size=2)
            version = as_int(items[0], "format version")
            server_id = as_bytes(items[1], "server id", size=HASH_LEN)
        except DecodeError as exc:
            raise StoreError(f"unreadable meta record: {exc}") from exc
        if version != FORMAT_VERSION:
            raise StoreError(f"store format {version}, this node reads {FORMAT_VERSION}")
        if server_id != self.server_id:
            raise StoreError(f"store belongs to server {server_id.hex()}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def load(self) -> tuple[ServerState, Block | None]:
        """The state and block at the root, or genesis for a new store."""
        raw = self._db.get(ROOT + self.server_id)
        if raw is None:
            return ServerState(), None
        try:
            items = as_list(decode(raw), "root", size=2)
            block = Block.decode(as_bytes(items[0], "root block"))
            state_raw = as_bytes(items[1], "root state")
            state = ServerState.decode(state_raw, head=block.hash)
        except DecodeError as exc:
            raise StoreError(f"unreadable root: {exc}") from exc
        if state.hash() != block.state_hash or state.height != block.height:
            raise StoreError("root state does not match its block's state hash")
        return state, block

    def write_block(
        self, step: Step, subs: Mapping[tuple[bytes, ...], bytes] | None = None
    ) -> None:
        """Persist a block, its height index, changed sub-machine states and the root.

        Returns only once the batch is synced to disk.
        """
        block = step.block
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.put(BLOCK + block.hash, block.raw)
            batch.put(height_key(block.height), block.hash)
            if subs is not None:
                for route, state_raw in subs.items():
                    batch.put(sub_key(route), state_raw)
            batch.put(ROOT + self.server_id, encode([block.raw, step.state.encode()]))

    def block(self, block_hash: bytes) -> bytes | None:
        raw: bytes | None = self._db.get(BLOCK + block_hash)
        return raw

    def block_hash_at(self, height: int) -> bytes | None:
        raw: bytes | None = self._db.get(height_key(height))
        return raw

    def blocks(self, start_height: int = 1) -> Iterator[bytes]:
        """Raw blocks in height order, from ``start_height`` to the last one written."""
        with self._db.snapshot() as snap:
            for _key, block_hash in snap.iterator(start=height_key(start_height), stop=HEIGHT_END):
                raw = snap.get(BLOCK + block_hash)
                if raw is None:
                    raise StoreError(f"height index names missing block {block_hash.hex()}")
                yield raw

    def block_count(self) -> int:
        state, _ = self.load()
        return state.height
