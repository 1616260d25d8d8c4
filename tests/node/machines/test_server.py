"""The server machine's pure transition."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.codec import UINT64_MAX, ZERO_HASH, DecodeError, as_list, decode, encode_tree, keccak
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
from node.machines.subs import Subs, refs_root
from node.mempool import Mempool
from node.txs import Tx
from tests.conftest import run_python
from tests.node.hosting import host, touch_entity, touch_signer


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
    signer = SignerState(bls.sk_to_pk(7))
    with_sub = ServerState(height=1, counter=1, hosted=Subs.of([(signer.id, signer)]))
    assert plain.hash() != with_sub.hash()
    stored: dict[tuple[bytes, ...], bytes] = {(s.id,): s.encoded for s in with_sub.signers}
    back = ServerState.decode(with_sub.encode(), get=stored.__getitem__, routes=stored)
    assert back == with_sub


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


# Many signers and entities: a block costs what it touches ------------------------------


def test_a_block_rehashes_only_the_signers_and_replicas_it_touches() -> None:
    hosted = host(6, signers=3)
    state = hosted.state
    assert len(state.signers) == 3
    assert sorted(len(s.replicas) for s in state.signers) == [2, 2, 2]

    empty = apply_block(state, Mempool.empty(), 3000)
    assert empty.changed == ()
    assert empty.state.hosted.root == state.hosted.root
    assert empty.state.hosted == state.hosted

    signer, entity = hosted.routes[4]
    step = apply_block(state, touch_entity(hosted, 4), 3000)
    after = step.state
    # Only the touched signer changed, and in it only the touched replica.
    assert [k for k in after.hosted if after.hosted[k] is not state.hosted[k]] == [signer]
    assert after.hosted._map.diff(state.hosted._map).keys() == {signer}
    old, new = state.hosted[signer], after.hosted[signer]
    assert [e for e in new.held if new.held[e] is not old.held[e]] == [entity]
    assert new.held.root != old.held.root
    assert after.hosted.root != state.hosted.root
    assert [w.route for w in step.changed] == [(signer, entity), (signer,)]
    # The encodings hold the roots, never the lists.
    assert len(after.encode()) == len(state.encode()) < 100
    assert len(new.encoded) == len(old.encoded) < 150
    # Both maps commit to the sub-machines' hashes: the refs alone give the roots.
    assert refs_root(after.hosted.refs()) == after.hosted.root
    assert refs_root(new.held.refs()) == new.held.root

    touched = apply_block(state, touch_signer(signer), 3000)
    assert [w.route for w in touched.changed] == [(signer,)]
    assert touched.state.hosted[signer].held is state.hosted[signer].held


def test_the_server_state_decodes_from_its_routes_and_checks_the_roots() -> None:
    hosted = host(4, signers=2)
    state = hosted.state
    raws: dict[tuple[bytes, ...], bytes] = {}
    for s in state.signers:
        raws[(s.id,)] = s.encoded
        raws.update(((s.id, r.entity_id), r.encoded) for r in s.replicas)
    back = ServerState.decode(state.encode(), state.head, get=raws.__getitem__, routes=raws)
    assert back == state
    assert back.hash() == state.hash()
    missing = {k: v for k, v in raws.items() if k != hosted.routes[3]}
    with pytest.raises(DecodeError, match="do not match its root"):
        ServerState.decode(state.encode(), get=missing.__getitem__, routes=missing)
    no_signer = {k: v for k, v in raws.items() if k != (hosted.routes[0][0],)}
    with pytest.raises(DecodeError, match="of no stored signer"):
        ServerState.decode(state.encode(), get=no_signer.__getitem__, routes=no_signer)
    with pytest.raises(DecodeError, match="no way to load them"):
        ServerState.decode(state.encode(), routes=raws)
    with pytest.raises(DecodeError, match="do not match the server state's root"):
        ServerState.decode(state.encode())


def test_a_signer_as_read_lists_its_replicas_checked_against_its_root() -> None:
    hosted = host(5, signers=1)
    (signer,) = hosted.state.signers
    pubkey, counter, refs = SignerState.decode_header(signer.readable())
    assert (pubkey, counter) == (signer.pubkey, 0)
    assert refs == list(signer.held.refs())
    assert [e for e, _ in refs] == sorted(e for _, e in hosted.routes)
    items = as_list(decode(signer.readable()), "signer", size=6)
    assert keccak(encode_tree(items[:4])) == signer.hash  # the state, then the list
    # A list that does not give the root is refused; one cut at the cap is not checked.
    forged = encode_tree([*items[:4], items[4][:-1], b""])
    with pytest.raises(DecodeError, match="do not match its root"):
        SignerState.decode_header(forged)
    _, _, first = SignerState.decode_header(signer.readable(cap=2))
    assert first == refs[:2]
    assert as_list(decode(signer.readable(cap=2)), "signer", size=6)[5] == b"\x01"
    assert as_list(decode(signer.readable(cap=5)), "signer", size=6)[5] == b""


HOSTED = host(4, signers=4)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 9)), max_size=12), st.integers(1, 5))
def test_the_signers_root_depends_only_on_the_signers_states(
    increments: list[tuple[int, int]], per_block: int
) -> None:
    """Signer-level increments applied one block each, or grouped ``per_block`` to a
    block (each signer's share in key order), end with the same signers' root, which
    is that of a map built at once from the final signers."""
    ids = [signer for signer, _ in HOSTED.routes]
    one_by_one = HOSTED.state
    for i, n in increments:
        mempool = Mempool.build([ids[i]], [Mempool.build(txs=[Tx.of(Increment(n))])])
        one_by_one = apply_block(one_by_one, mempool, one_by_one.timestamp).state
    grouped = HOSTED.state
    for start in range(0, len(increments), per_block):
        txs: dict[bytes, list[Tx]] = {}
        for i, n in increments[start : start + per_block]:
            txs.setdefault(ids[i], []).append(Tx.of(Increment(n)))
        keys = sorted(txs)
        mempool = Mempool.build(keys, [Mempool.build(txs=txs[k]) for k in keys])
        grouped = apply_block(grouped, mempool, grouped.timestamp).state
    assert one_by_one.hosted.root == grouped.hosted.root
    at_once = Subs.of((s.id, s) for s in reversed(grouped.signers))
    assert at_once.root == grouped.hosted.root
    totals = {ids[i]: 0 for i in range(4)}
    for i, n in increments:
        totals[ids[i]] += n
    assert {s.id: s.counter for s in grouped.signers} == totals
