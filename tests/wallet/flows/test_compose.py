"""Composing entity transactions (wallet/flows/compose.py): forms checked against a real
config, real BLS keys and proofs, batches the entity machine accepts."""

from __future__ import annotations

import json

import pytest

from node.machines.entity import Batch, Increment, Propose, Vote, execute
from node.machines.governance import (
    AddSigner,
    Config,
    RemoveSigner,
    SetProposer,
    SetShares,
    SetThreshold,
)
from node.machines.replica import SubmitBatch
from node.txs import Tx, TxBody
from tests.node.machines.test_entity import IDS, PKS, POPS, SKS, A, B, C, D, E, Entity, config
from wallet.flows.compose import (
    AddSignerForm,
    ComposeError,
    RemoveSignerForm,
    SetProposerForm,
    SetSharesForm,
    SetThresholdForm,
    SignerCard,
    default_expiry,
    increment,
    propose,
    signed_batch,
    vote,
)

CONFIG = config([33, 33, 34], 67)  # A, B, C; A proposes


def test_increment_checks_its_range() -> None:
    assert increment(3) == Increment(3)
    assert increment(" 7 ") == Increment(7)
    for bad in (0, -1, 2**32, "x", "1.5"):
        with pytest.raises(ComposeError) as info:
            increment(bad)
        assert "n" in info.value.errors


@pytest.mark.parametrize(
    ("value", "ok"),
    [(50, False), (51, True), (67, True), (100, True), (101, False), (0, False), ("75", True)],
)
def test_threshold_form_keeps_the_threshold_rule(value: int | str, ok: bool) -> None:
    form = SetThresholdForm(value)
    if ok:
        assert form.to_action(CONFIG) == SetThreshold(int(value))
        assert form.errors(CONFIG) == {}
    else:
        errors = form.errors(CONFIG)
        assert list(errors) == ["threshold"]
        assert "51 .. 100" in errors["threshold"]
        with pytest.raises(ComposeError):
            form.to_action(CONFIG)


def test_add_signer_form_with_a_valid_key_and_proof() -> None:
    form = AddSignerForm("0x" + PKS[D].hex(), POPS[D].hex(), "1")
    assert form.to_action(CONFIG) == AddSigner(PKS[D], POPS[D], 1)


def test_add_signer_form_refuses_a_bad_proof_of_possession() -> None:
    form = AddSignerForm(PKS[D].hex(), POPS[E].hex(), 1)  # E's proof, not D's
    assert form.errors(CONFIG) == {
        "pop_hex": "the proof of possession does not match the public key"
    }


def test_add_signer_form_errors_per_field() -> None:
    errors = AddSignerForm("zz", "01" * 10, 0).errors(CONFIG)
    assert errors == {
        "pubkey_hex": "the public key must be hexadecimal",
        "pop_hex": "the proof of possession must be 96 bytes (192 hex digits), not 10",
        "shares": "the shares must be 1 .. 4294967295, not 0",
    }
    assert AddSignerForm("ab" * 48, POPS[D].hex()).errors(CONFIG) == {
        "pubkey_hex": "not a valid BLS public key"
    }
    assert AddSignerForm(PKS[B].hex(), POPS[B].hex()).errors(CONFIG) == {
        "pubkey_hex": "already a signer of this entity"
    }
    # 100 more shares: 67 is no longer above half of 200; the threshold field says
    # what would pass.
    errors = AddSignerForm(PKS[D].hex(), POPS[D].hex(), 100).errors(CONFIG)
    assert list(errors) == ["threshold"]
    assert "set a threshold above 100 (at most 200)" in errors["threshold"]
    assert AddSignerForm(PKS[D].hex(), POPS[D].hex(), 1, "x").errors(CONFIG) == {
        "threshold": "the threshold must be a whole number"
    }


def test_a_one_of_one_entity_grows_in_one_proposal() -> None:
    solo = config([1], 1)
    alone = AddSignerForm(PKS[D].hex(), POPS[D].hex(), 1)
    assert "set a threshold above 1 (at most 2)" in alone.errors(solo)["threshold"]
    grow = AddSignerForm(PKS[D].hex(), POPS[D].hex(), 1, "2")
    action = grow.to_action(solo)
    assert action == AddSigner(PKS[D], POPS[D], 1, 2)
    after = action.apply(solo)
    assert (len(after.members), after.total_shares, after.threshold) == (2, 2, 2)


def test_remove_set_shares_and_proposer_forms() -> None:
    c = config([1, 1, 1, 1], 3)
    assert RemoveSignerForm(IDS[B].hex()).to_action(c) == RemoveSigner(IDS[B])
    assert RemoveSignerForm(IDS[A].hex()).errors(c) == {
        "signer_id_hex": "the proposer cannot be removed; change the proposer first"
    }
    assert RemoveSignerForm(IDS[E].hex()).errors(c) == {
        "signer_id_hex": "not a signer of this entity"
    }
    assert (
        "threshold" in RemoveSignerForm(IDS[B].hex()).errors(config([1, 1, 1], 3))["signer_id_hex"]
    )
    assert SetSharesForm(IDS[B].hex(), "2").to_action(c) == SetShares(IDS[B], 2)
    assert list(SetSharesForm(IDS[B].hex(), 5).errors(c)) == ["shares"]  # total 8, 3 too low
    assert list(SetSharesForm("00" * 31, 1).errors(c)) == ["signer_id_hex"]
    assert SetProposerForm(IDS[C].hex()).to_action(c) == SetProposer(IDS[C])
    assert list(SetProposerForm(IDS[E].hex()).errors(c)) == ["signer_id_hex"]


def test_signer_card_round_trip_and_validation() -> None:
    card = SignerCard(PKS[D], POPS[D])
    text = card.encode()
    assert text == f"xln-signer:{PKS[D].hex()}:{POPS[D].hex()}"
    assert SignerCard.decode(f"  {text}\n") == card
    # The other spellings: `xln-node key show`'s JSON, and the bare key:proof.
    shown = json.dumps({"pubkey": PKS[D].hex(), "proof_of_possession": POPS[D].hex()})
    assert SignerCard.decode(shown) == card
    assert SignerCard.decode(f"{PKS[D].hex()}:{POPS[D].hex()}") == card
    assert card.signer_id == IDS[D]
    assert card.member(2).shares == 2
    assert AddSignerForm.from_card(text, 1).to_action(CONFIG) == AddSigner(PKS[D], POPS[D], 1)
    for bad, message in [
        ("xln-other:00:00", "xln-signer:<public key hex>:<proof hex>"),
        ('{"pubkey": "00"', "valid JSON"),
        ("[1, 2]", "xln-signer:<public key hex>:<proof hex>"),
        ("xln-signer:00", "xln-signer:<public key hex>:<proof hex>"),
        (f"xln-signer:{PKS[D].hex()}:{POPS[E].hex()}", "proof of possession does not match"),
        (f"xln-signer:{'ab' * 48}:{POPS[D].hex()}", "not a valid BLS public key"),
    ]:
        with pytest.raises(ValueError, match=message):
            SignerCard.decode(bad)


def test_propose_checks_expiry_and_action_against_the_state() -> None:
    e = Entity([1, 1, 1], 2)
    state = e.state
    assert default_expiry(state) == state.height + 100
    assert propose(SetThreshold(3), default_expiry(state), state) == Propose(SetThreshold(3), 100)
    with pytest.raises(ComposeError) as info:
        propose(SetThreshold(1), 0, state)
    assert set(info.value.errors) == {"expires_at", "action"}
    with pytest.raises(ComposeError, match="proof of possession"):
        propose(AddSigner(PKS[D], POPS[E], 1), 10)


def test_vote_checks_the_proposal_is_open() -> None:
    e = Entity([1, 1, 1], 3)
    e.frame(e.propose(A, SetThreshold(2)))
    assert vote(1, e.state) == Vote(1)
    with pytest.raises(ComposeError, match="no open proposal 2"):
        vote(2, e.state)
    with pytest.raises(ComposeError, match="already voted"):
        vote("1", e.state, IDS[A])
    with pytest.raises(ComposeError):
        vote(0)


def test_signed_batch_is_what_the_entity_accepts() -> None:
    e = Entity([1, 1, 1], 2)
    action = SetThresholdForm(3).to_action(e.state.config)
    bodies: list[TxBody] = [increment(2), propose(action, default_expiry(e.state), e.state)]
    submit = signed_batch(e.state.entity_id, SKS[B], IDS[B], 1, bodies)
    assert isinstance(submit, SubmitBatch)
    again = Batch.decode(submit.batch.raw)  # what the node receives
    assert [t.body for t in again.txs] == bodies
    new, _ = execute(e.state, [again])
    assert new.counter == 2
    assert new.proposals[0].action == SetThreshold(3)
    assert Tx.of(bodies[0]).raw == again.txs[0].raw


def test_signed_batch_refuses_bad_input() -> None:
    e = Entity([1, 1, 1], 2)
    eid = e.state.entity_id
    cases = [
        ((eid, SKS[B], IDS[B], 1, []), "txs"),
        ((eid, SKS[B], IDS[B], 0, [Increment(1)]), "nonce"),
        ((eid, SKS[A], IDS[B], 1, [Increment(1)]), "signer_id"),
        ((eid[:5], SKS[B], IDS[B], 1, [Increment(1)]), "entity_id"),
    ]
    for args, field in cases:
        with pytest.raises(ComposeError) as info:
            signed_batch(*args)
        assert list(info.value.errors) == [field]


def test_forms_do_not_change_the_config() -> None:
    c: Config = config([1, 1, 1], 2)
    before = c.to_tree()
    SetThresholdForm(3).to_action(c)
    AddSignerForm(PKS[D].hex(), POPS[D].hex()).errors(c)
    assert c.to_tree() == before
