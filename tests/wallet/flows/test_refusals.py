"""wallet/flows/refusals.py: which of a refused frame's batches this wallet may withdraw."""

from __future__ import annotations

from node.crypto import bls
from node.machines import entity as ent
from node.machines.entity import sign_batch
from node.machines.frames import Frame
from node.machines.governance import Config, Member, signer_id
from node.machines.refusal import sign_refusal
from node.txs import Tx
from wallet.flows.refusals import withdrawable

SKS = [bls.keygen(bytes([i + 41]) * 32) for i in range(3)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
CONFIG = Config(tuple(Member(pk, 1) for pk in PKS), 2, IDS[0])


def test_withdrawable_names_the_signers_batches_of_a_refused_uncertified_frame() -> None:
    state = ent.genesis(CONFIG, b"\x05" * 32)
    mine = [sign_batch(state.entity_id, SKS[0], IDS[0], 1, [Tx.of(ent.Increment(1))])]
    theirs = [sign_batch(state.entity_id, SKS[1], IDS[1], 1, [Tx.of(ent.Increment(2))])]
    post, _ = ent.execute(state, [*mine, *theirs])
    frame = Frame.make(state.entity_id, 1, b"\x00" * 32, [*mine, *theirs], post.hash)
    refused = [sign_refusal(SKS[1], IDS[1], state.entity_id, 1, 0, frame.hash, "no")]
    assert withdrawable(frame, IDS[0], refused, certified=False) == (1,)
    assert withdrawable(frame, IDS[0], refused, certified=True) == ()  # too late
    assert withdrawable(frame, IDS[0], [], certified=False) == ()  # nobody refused it
    assert withdrawable(frame, IDS[2], refused, certified=False) == ()  # none of its batches
