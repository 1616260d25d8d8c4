"""Replay-verification of a stored chain."""

from __future__ import annotations

from node.block import Block
from node.chain_verify import verify_chain
from node.codec import encode_tree, int_bytes, keccak
from node.machines.server import Increment, ServerState, apply_block
from node.mempool import Mempool
from node.txs import Tx


def chain(n: int) -> tuple[list[bytes], ServerState]:
    state = ServerState()
    raws = []
    for i in range(n):
        step = apply_block(state, Mempool.build(txs=[Tx.of(Increment(i + 1))]), i)
        raws.append(step.block.raw)
        state = step.state
    return raws, state


def test_a_good_chain_verifies() -> None:
    raws, state = chain(50)
    seen: list[int] = []
    report = verify_chain(
        raws, expected_head=(50, state.head), progress=seen.append, progress_every=20
    )
    assert report.ok
    assert report.blocks == 50
    assert report.state == state
    assert seen == [20, 40, 50]


def test_tampered_state_hash_is_caught() -> None:
    raws, _ = chain(10)
    b = Block.decode(raws[4])
    forged = Block.make(b.height, b.prev_hash, b.timestamp, b.mempool, keccak(b"lie"))
    raws[4] = forged.raw
    report = verify_chain(raws)
    assert not report.ok
    assert report.blocks == 4
    assert report.error is not None
    assert "block 5: state hash" in report.error


def test_broken_link_and_gap_are_caught() -> None:
    raws, _ = chain(10)
    assert "does not link" in (
        verify_chain(raws[:3] + raws[4:]).error or ""
    ) or "claims height" in (verify_chain(raws[:3] + raws[4:]).error or "")
    raws2, _ = chain(3)
    other = apply_block(ServerState(), Mempool.build(txs=[Tx.of(Increment(99))]), 0).block.raw
    assert "block 1" in (verify_chain([other, *raws2[1:]]).error or "")


def test_non_canonical_block_is_caught() -> None:
    raws, _ = chain(2)
    b = Block.decode(raws[1])
    # Same fields, but the height written with a leading zero byte.
    bad = encode_tree(
        [
            b"\x00" + int_bytes(b.height),
            b.prev_hash,
            int_bytes(b.timestamp),
            b.mempool,
            b.state_hash,
        ]
    )
    report = verify_chain([raws[0], bad])
    assert not report.ok
    assert "block 2" in (report.error or "")


def test_chain_must_end_at_the_root() -> None:
    raws, state = chain(5)
    report = verify_chain(raws[:4], expected_head=(5, state.head))
    assert not report.ok
    assert "root is at height 5" in (report.error or "")
