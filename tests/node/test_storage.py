"""LevelDB layout, atomic synced batches, restart from the root."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel_next as plyvel
import pytest

from node.block import Block
from node.codec import ZERO_HASH, encode
from node.machines.server import Increment, ServerState, Step, Write, apply_block
from node.mempool import Mempool
from node.storage import (
    BLOCK,
    FORMAT_VERSION,
    HEIGHT,
    META,
    ROOT,
    Store,
    StoreError,
    StoreLocked,
    height_key,
)
from node.txs import Tx


def steps(n: int, start: ServerState | None = None) -> Iterator[Step]:
    state = start or ServerState()
    for i in range(n):
        step = apply_block(state, Mempool.build(txs=[Tx.of(Increment(i + 1))]), 1000 + i)
        state = step.state
        yield step


def test_new_store_starts_at_genesis(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        state, block = store.load()
    assert state == ServerState()
    assert block is None


def test_blocks_and_root_survive_reopen(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        written = list(steps(10))
        for step in written:
            store.write_block(step)
    with Store(tmp_path / "db") as store:
        state, block = store.load()
        assert state == written[-1].state
        assert block == written[-1].block
        assert store.block(written[3].block.hash) == written[3].block.raw
        assert store.block_hash_at(4) == written[3].block.hash
        assert list(store.blocks()) == [s.block.raw for s in written]
        assert list(store.blocks(8)) == [s.block.raw for s in written[7:]]


def test_layout_keys(tmp_path: Path) -> None:
    """Blocks under their hash, the root under the server id (0 by default)."""
    with Store(tmp_path / "db") as store:
        step = next(steps(1))
        store.write_block(step)
        db = store._db
        assert db.get(BLOCK + step.block.hash) == step.block.raw
        assert db.get(height_key(1)) == step.block.hash
        assert db.get(ROOT + ZERO_HASH) is not None
        assert height_key(1).startswith(HEIGHT)


def test_second_process_is_locked_out(tmp_path: Path) -> None:
    with Store(tmp_path / "db"), pytest.raises(StoreLocked):
        Store(tmp_path / "db")


def test_store_of_another_server_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "db").close()
    with pytest.raises(StoreError, match="belongs to server"):
        Store(tmp_path / "db", server_id=b"\x01" * 32)


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (1, "commits to its channels by a Merkle root"),
        (2, "commit to their signers and replicas by Merkle roots"),
        (3, "replicas vote in two steps"),
        (4, "replicas vote in two steps"),
    ],
)
def test_a_folder_of_an_older_format_is_refused_with_the_reason(
    tmp_path: Path, version: int, reason: str
) -> None:
    """Format 1 hashed entity states without a Merkle root, format 2 the server's and
    signers' states with lists of their sub-machines: their chains do not replay under
    this node's state hashes, so the folder is refused (untouched), saying what to do."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(META, encode([version, bytes(32)]))
    db.close()
    with pytest.raises(
        StoreError, match=rf"older node.*format {version}.*{reason}.*new data folder"
    ):
        Store(tmp_path / "db")
    db = plyvel.DB(str(tmp_path / "db"))
    assert db.get(META) == encode([version, bytes(32)])
    db.close()
    assert FORMAT_VERSION == 5


class Exploding(tuple[Write, ...]):
    """Sub-machine states whose iteration fails half way through the batch."""

    def __iter__(self) -> Any:
        yield Write((b"\x01" * 32,), b"state", records=((b"C", b"\x02" * 32, b"record"),))
        raise RuntimeError("disk on fire")


def test_a_failed_batch_writes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        first, second = steps(2)
        store.write_block(first)
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.write_block(dataclasses.replace(second, changed=Exploding()))
        # Neither the block, its height, the sub state nor the root moved.
        assert store.block(second.block.hash) is None
        assert store.block_hash_at(2) is None
        assert store.load()[0] == first.state
        assert list(store._db.iterator(prefix=b"S")) == []
        assert list(store._db.iterator(prefix=b"C")) == []


class RecordingDB:
    """Wraps the real plyvel DB and records how each batch was opened (a spy, not a mock)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.batches: list[dict[str, Any]] = []

    def write_batch(self, **kwargs: Any) -> Any:
        self.batches.append(kwargs)
        return self._db.write_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_every_block_write_is_one_synced_transaction(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        spy = RecordingDB(store._db)
        store._db = spy
        for step in steps(5):
            store.write_block(step)
        store._db = spy._db
    assert spy.batches == [{"transaction": True, "sync": True}] * 5


def test_corrupt_root_is_reported(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        store._db.put(ROOT + ZERO_HASH, b"\x01\x02")
    with Store(tmp_path / "db") as store, pytest.raises(StoreError, match="unreadable root"):
        store.load()


def test_block_decode_roundtrip() -> None:
    step = next(steps(1))
    assert Block.decode(step.block.raw) == step.block
