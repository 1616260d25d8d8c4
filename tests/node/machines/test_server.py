"""The server machine's pure transition."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.codec import UINT64_MAX, ZERO_HASH, keccak
from node.crypto import bls
from node.machines.counter import MAX_INCREMENT
from node.machines.governance import signer_id
from node.machines.server import (
    CreateSigner,
    Increment,
    InvalidBlock,
    ServerState,
    Write,
    apply_block,
)
from node.machines.signer import SignerState
from node.mempool import Mempool
from node.txs import Tx
from tests.conftest import run_python


def mp(*ns: int) -> Mempool:
    return Mempool.build(txs=[Tx.of(Increment(n)) for n in ns])


def test_genesis_and_first_block() -> None:
    step = apply_block(ServerState(), mp(5, 6, 7), 1_000)
    assert step.state.counter == 18
    assert step.state.height == 1
    assert step.block.prev_hash == ZERO_HASH
    assert step.block.state_hash == keccak(step.state.encode())
    assert step.block.hash == keccak(step.block.raw)
    assert step.state.head == step.block.hash
    assert [r.error for r in step.receipts] == [None, None, None]
    assert [r.index for r in step.receipts] == [0, 1, 2]
    assert step.effects == ()


def test_blocks_chain_by_hash() -> None:
    first = apply_block(ServerState(), mp(1), 10)
    second = apply_block(first.state, mp(2), 20)
    assert second.block.prev_hash == first.block.hash
    assert second.state.height == 2


def test_state_hash_covers_sub_machine_map() -> None:
    plain = ServerState(height=1, counter=1)
    with_sub = ServerState(height=1, counter=1, signers=(SignerState(bls.sk_to_pk(7)),))
    assert plain.hash() != with_sub.hash()
    stored: dict[tuple[bytes, ...], bytes] = {(s.id,): s.encoded for s in with_sub.signers}
    assert ServerState.decode(with_sub.encode(), get=stored.__getitem__) == with_sub


def test_create_signer_needs_a_proof_of_possession() -> None:
    sk = 11
    good = Tx.of(CreateSigner(bls.sk_to_pk(sk), bls.pop_prove(sk)))
    forged = Tx.of(CreateSigner(bls.sk_to_pk(12), bls.pop_prove(sk)))
    step = apply_block(ServerState(), Mempool.build(txs=[good, forged, good]), 0)
    errors = [r.error for r in step.receipts]
    assert errors[0] is None
    assert "proof of possession" in (errors[1] or "")
    assert "already exists" in (errors[2] or "")
    assert [s.id for s in step.state.signers] == [signer_id(bls.sk_to_pk(sk))]
    assert step.changed == (Write((signer_id(bls.sk_to_pk(sk)),), step.state.signers[0].encoded),)


def test_overflow_gets_an_error_receipt_and_changes_nothing() -> None:
    near = ServerState(counter=UINT64_MAX - 1)
    step = apply_block(near, mp(1, 1, MAX_INCREMENT), 0)
    assert [r.error is None for r in step.receipts] == [True, False, False]
    assert "overflow" in (step.receipts[1].error or "")
    assert step.state.counter == UINT64_MAX


def test_empty_block_is_allowed() -> None:
    step = apply_block(ServerState(), Mempool.empty(), 5)
    assert step.state.counter == 0
    assert step.state.height == 1


def test_timestamp_may_not_go_back() -> None:
    step = apply_block(ServerState(), mp(1), 100)
    with pytest.raises(InvalidBlock, match="before the previous"):
        apply_block(step.state, mp(1), 99)


def test_unknown_signer_in_mempool_is_invalid() -> None:
    sub = Mempool.build(txs=[Tx.of(Increment(1))])
    with pytest.raises(InvalidBlock, match="unknown signer"):
        apply_block(ServerState(), Mempool.build([b"\x01" * 32], [sub]), 0)


@given(st.lists(st.lists(st.integers(1, MAX_INCREMENT), max_size=5), max_size=20))
def test_same_inputs_same_bytes(blocks: list[list[int]]) -> None:
    def run() -> bytes:
        state = ServerState()
        for i, ns in enumerate(blocks):
            state = apply_block(state, mp(*ns), i).state
        return state.head

    assert run() == run()


CHAIN_SCRIPT = """
import json, random
from node.machines.server import Increment, ServerState, apply_block
from node.machines.signer import SignerState
from node.mempool import Mempool
from node.txs import Tx
rng = random.Random(1234)
state = ServerState()
heads = []
for height in range(300):
    ns = [rng.randint(1, 2**32 - 1) for _ in range(rng.randint(0, 20))]
    mempool = Mempool.build(txs=[Tx.of(Increment(n)) for n in ns])
    state = apply_block(state, mempool, height * 100).state
    heads.append(state.head.hex())
print(json.dumps({"heads": heads, "state": state.encode().hex()}))
"""


def test_determinism_across_processes() -> None:
    """Two interpreters with different hash seeds produce byte-identical chains."""
    outputs = []
    for seed in ("1", "98765"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = run_python("-c", CHAIN_SCRIPT, env=env)
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]["heads"]) == 300
