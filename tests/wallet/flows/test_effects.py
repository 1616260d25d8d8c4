"""What a frame does (wallet/flows/effects.py): real frames of real BLS-signed batches,
re-executed by the node's entity machine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.codec import ZERO_HASH
from node.machines.entity import (
    Batch,
    EntityState,
    Increment,
    Propose,
    Vote,
    execute,
    sign_batch,
)
from node.machines.frames import Frame
from node.machines.governance import (
    Action,
    AddSigner,
    RemoveSigner,
    SetProposer,
    SetShares,
    SetThreshold,
)
from node.txs import Tx
from tests.node.machines.test_entity import IDS, PKS, POPS, SKS, A, B, C, D, Entity, add
from wallet.flows.effects import EFFECT_KINDS, FrameAnalysis, analyze, short


def make_frame(state: EntityState, *batches: Batch) -> Frame:
    """The frame a proposer would make: the batches and the state hash they give."""
    after, events = execute(state, batches)
    return Frame.make(
        state.entity_id, state.height + 1, ZERO_HASH, batches, after.hash, outbox=events.outbox
    )


def commit(e: Entity, *batches: Batch) -> FrameAnalysis:
    """Analyze the frame, then apply it to the test replica."""
    analysis = analyze(e.state, make_frame(e.state, *batches))
    assert analysis.error is None
    assert analysis.new_state is not None
    e.state = analysis.new_state
    return analysis


def kinds(a: FrameAnalysis) -> list[str]:
    return [e.kind for e in a.effects]


def test_increments_sum_to_one_counter_effect_and_txs_are_decoded() -> None:
    e = Entity([1, 1, 1], 2)
    b1, b2 = e.batch(B, Increment(3)), e.batch(C, Increment(2), Increment(1))
    frame = make_frame(e.state, b1, b2)
    a = analyze(e.state, frame)
    assert a.error is None
    assert (a.frame_hash, a.entity_id, a.height) == (frame.hash, e.state.entity_id, 1)
    assert a.new_state is not None
    assert a.new_state.counter == 6
    (effect,) = a.effects
    assert (effect.kind, effect.governance, effect.amount) == ("counter", False, 6)
    assert effect.text == "counter +6 (0 -> 6)"
    assert a.counter_delta == 6
    assert not a.governance
    assert [(t.signer, t.nonce, t.name) for t in a.txs] == [
        (IDS[B], 1, "increment"),
        (IDS[C], 1, "increment"),
        (IDS[C], 1, "increment"),
    ]
    assert a.txs[0].text == "increment the counter by 3"
    assert a.txs[0].raw_hex == Tx.of(Increment(3)).raw.hex()


def test_new_proposal_is_routine_and_says_what_and_when() -> None:
    e = Entity([1, 1, 1], 2)
    a = commit(e, e.propose(A, SetThreshold(3), expires_at=40))
    (effect,) = a.effects
    assert (effect.kind, effect.governance, effect.proposal_id) == ("proposal", False, 1)
    assert "set the threshold to 3" in effect.text
    assert "expires at height 40" in effect.text
    assert a.txs[0].name == "propose"
    assert "set the threshold to 3" in a.txs[0].text


def test_vote_that_executes_a_threshold_change_is_routine_and_the_change_governance() -> None:
    e = Entity([33, 33, 34], 67)
    commit(e, e.propose(A, SetThreshold(75)))
    frame = make_frame(e.state, e.vote(C, 1))
    a = analyze(e.state, frame, names={IDS[C]: "carol"})
    assert kinds(a) == ["vote", "set_threshold"]
    vote, change = a.effects
    assert not vote.governance
    assert vote.proposal_id == 1
    assert vote.text.startswith("carol votes for proposal #1")
    assert "executes in this frame" in vote.text
    assert change.governance
    assert change.proposal_id == 1
    assert change.text.endswith("threshold 67 -> 75")
    assert a.governance
    assert a.new_state is not None
    assert a.new_state.config.threshold == 75


def test_vote_that_does_not_execute_says_nothing_of_execution() -> None:
    e = Entity([1, 1, 1, 1], 4)
    commit(e, e.propose(A, SetThreshold(3)))
    a = commit(e, e.vote(B, 1))
    (vote,) = a.effects
    assert vote.kind == "vote"
    assert "executes" not in vote.text


@pytest.mark.parametrize(
    ("action", "kind", "text"),
    [
        (add(C, 1), "add_signer", "signers 2 -> 3, total shares 4 -> 5"),
        (
            AddSigner(PKS[C], POPS[C], 1, threshold=4),
            "add_signer",
            "signers 2 -> 3, total shares 4 -> 5, threshold 3 -> 4",
        ),
        (RemoveSigner(IDS[B]), "remove_signer", "removed (1 share): signers 2 -> 1"),
        (SetShares(IDS[B], 2), "set_shares", "1 -> 2, total shares 4 -> 5"),
        (SetThreshold(4), "set_threshold", "threshold 3 -> 4"),
        (SetProposer(IDS[B]), "set_proposer", f"proposer {short(IDS[A])} -> bob"),
    ],
)
def test_each_executed_action_is_its_governance_kind(action: Action, kind: str, text: str) -> None:
    e = Entity([3, 1], 3)  # A alone reaches the threshold: its proposal executes at once
    a = analyze(e.state, make_frame(e.state, e.propose(A, action)), names={IDS[B]: "bob"})
    assert a.error is None
    assert kinds(a) == ["proposal", kind]
    assert [x.governance for x in a.effects] == [False, True]
    assert text in a.effects[1].text
    assert set(kinds(a)) <= EFFECT_KINDS


def test_proposal_made_invalid_by_an_earlier_one_is_voided() -> None:
    e = Entity([3, 1], 3)
    b = e.batch(A, Propose(RemoveSigner(IDS[B]), 10), Propose(SetShares(IDS[B], 2), 10))
    a = commit(e, b)
    assert kinds(a) == ["proposal", "proposal", "remove_signer", "voided"]
    voided = a.effects[3]
    assert not voided.governance
    assert voided.proposal_id == 2
    assert "not a signer" in voided.text


def test_expiry_with_the_shares_it_had() -> None:
    e = Entity([1, 1, 1, 1], 4)
    commit(e, e.propose(A, SetThreshold(3), expires_at=2))
    a = commit(e, e.vote(B, 1))  # voted on in the frame it expires in, still short
    assert kinds(a) == ["vote", "expired"]
    assert "2 of 4 shares" in a.effects[1].text
    assert a.effects[1].proposal_id == 1
    assert commit(e).effects == []  # nothing left to expire: an empty frame does nothing


def test_frame_with_a_rejected_tx_gives_an_error_and_no_effects() -> None:
    e = Entity([1, 1, 1], 2)
    bad = e.vote(B, 9)
    frame = Frame.make(e.state.entity_id, 1, ZERO_HASH, (bad,), e.state.hash)
    a = analyze(e.state, frame)
    assert a.error is not None
    assert "no open proposal 9" in a.error
    assert a.effects == []
    assert a.new_state is None
    assert [t.name for t in a.txs] == ["vote"]  # still shown to the user


def test_batch_signed_with_another_key_is_an_error() -> None:
    e = Entity([1, 1, 1], 2)
    forged = sign_batch(e.state.entity_id, SKS[A], IDS[B], 1, [Tx.of(Vote(1))])
    frame = Frame.make(e.state.entity_id, 1, ZERO_HASH, (forged,), e.state.hash)
    a = analyze(e.state, frame)
    assert a.error is not None
    assert "bad batch signature" in a.error


def test_wrong_state_hash_is_an_error() -> None:
    e = Entity([1, 1, 1], 2)
    frame = make_frame(e.state, e.batch(A, Increment(1)))
    lying = Frame.make(frame.entity_id, frame.height, frame.prev_hash, frame.batches, b"\1" * 32)
    a = analyze(e.state, lying)
    assert a.error is not None
    assert "state hash" in a.error
    assert a.effects == []
    assert a.new_state is None


def test_wrong_height_or_entity_is_an_error() -> None:
    e = Entity([1, 1, 1], 2)
    frame = make_frame(e.state, e.batch(A, Increment(1)))
    later = replace(e.state, height=5)
    a = analyze(later, frame)
    assert a.error == "frame height 1, expected 6"
    other = Entity([1, 1, 1, 1], 3)
    a = analyze(other.state, frame)
    assert a.error is not None
    assert a.error.startswith("frame is for entity")


def test_a_member_who_is_not_a_signer_cannot_batch() -> None:
    e = Entity([1, 1, 1], 2)
    outsider = e.batch(D, Increment(1))
    frame = Frame.make(e.state.entity_id, 1, ZERO_HASH, (outsider,), e.state.hash)
    a = analyze(e.state, frame)
    assert a.error is not None
    assert "not a signer" in a.error
