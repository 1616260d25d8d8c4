"""The first-run state machine, headless: every step, every refusal, back()."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mnemonic import Mnemonic

from node.crypto import bls
from wallet.flows.onboarding import (
    CHECKED_WORDS,
    BackupChoice,
    CreateEntity,
    JoinEntity,
    NodeChoice,
    Onboarding,
    Step,
    StepRefused,
    parse_card,
    threshold_hint,
)

BIP39 = Mnemonic("english")


def at(flow: Onboarding) -> Step:
    """The current step (a call, so mypy does not narrow it across steps)."""
    return flow.step


def new_flow(seed: int = 7) -> Onboarding:
    return Onboarding(lambda: BIP39.generate(256), BIP39.check, random.Random(seed))


def card(seed: int, *, as_json: bool = True) -> str:
    sk = bls.keygen(bytes([seed]) * 32)
    pubkey, pop = bls.sk_to_pk(sk), bls.pop_prove(sk)
    if as_json:
        return json.dumps({"pubkey": pubkey.hex(), "proof_of_possession": pop.hex()})
    return f"{pubkey.hex()}:{pop.hex()}"


def through_check(flow: Onboarding) -> None:
    flow.create_key("alice")
    flow.backup_done()
    flow.check_words([flow.words[p] for p in flow.check_positions])


def test_create_path_to_a_plan() -> None:
    flow = new_flow()
    assert at(flow) is Step.KEY
    flow.create_key("alice")
    assert at(flow) is Step.BACKUP
    assert len(flow.words) == 24
    assert BIP39.check(flow.mnemonic)
    flow.backup_done()
    assert at(flow) is Step.CHECK
    assert len(set(flow.check_positions)) == CHECKED_WORDS
    flow.check_words([" " + flow.words[p].upper() for p in flow.check_positions])
    assert at(flow) is Step.PASSWORD
    flow.set_password("correct horse", "correct horse")
    flow.use_embedded_node()
    flow.create_entity(50, [(card(1), 30), (card(2, as_json=False), 20)], 67, proposer_index=1)
    plan = flow.plan()
    assert plan.label == "alice"
    assert not plan.imported
    assert plan.password == "correct horse"  # noqa: S105
    assert plan.node == NodeChoice()
    assert isinstance(plan.entity, CreateEntity)
    assert plan.entity.threshold == 67
    assert plan.entity.proposer_index == 1
    assert [m.shares for m in plan.entity.others] == [30, 20]
    # secrets stay out of reprs (logs, tracebacks)
    assert plan.mnemonic not in repr(plan)
    assert "correct horse" not in repr(plan)
    assert flow.words[0] not in repr(flow)


def test_import_skips_backup_and_check() -> None:
    phrase = BIP39.generate(128)
    flow = new_flow()
    flow.import_key("  " + phrase.upper().replace(" ", "   ") + "\n")
    assert at(flow) is Step.PASSWORD
    assert flow.mnemonic == phrase
    assert flow.imported
    flow.back()
    assert at(flow) is Step.KEY


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        ("abandon " * 11, "12 to 24 words"),
        ("abandon " * 12, "checksum"),
        ("", "12 to 24 words"),
    ],
)
def test_import_refuses_bad_phrases(words: str, reason: str) -> None:
    flow = new_flow()
    with pytest.raises(StepRefused, match=reason):
        flow.import_key(words)
    assert at(flow) is Step.KEY
    assert flow.mnemonic == ""


def test_label_is_checked() -> None:
    flow = new_flow()
    with pytest.raises(StepRefused, match="label"):
        flow.create_key("   ")
    assert at(flow) is Step.KEY


def test_wrong_check_words_are_named_and_change_nothing() -> None:
    flow = new_flow()
    flow.create_key()
    flow.backup_done()
    answers = [flow.words[p] for p in flow.check_positions]
    answers[1] = "zzz"
    with pytest.raises(StepRefused, match=f"#{flow.check_positions[1] + 1}"):
        flow.check_words(answers)
    with pytest.raises(StepRefused, match="3 words"):
        flow.check_words(answers[:2])
    assert at(flow) is Step.CHECK


def test_positions_are_random_but_seeded() -> None:
    def positions(seed: int) -> tuple[int, ...]:
        flow = Onboarding(
            lambda: " ".join(["abandon"] * 23 + ["art"]), BIP39.check, random.Random(seed)
        )
        flow.create_key()
        flow.backup_done()
        return flow.check_positions

    assert positions(1) == positions(1)
    assert len({positions(s) for s in range(10)}) > 1


@pytest.mark.parametrize(
    ("pw", "again", "reason"),
    [("short", "short", "at least 8"), ("long enough", "long enougH", "differ")],
)
def test_password_refusals(pw: str, again: str, reason: str) -> None:
    flow = new_flow()
    through_check(flow)
    with pytest.raises(StepRefused, match=reason):
        flow.set_password(pw, again)
    assert at(flow) is Step.PASSWORD


@pytest.mark.parametrize(
    ("url", "token", "reason"),
    [
        ("http://x:1", "t", "ws://"),
        ("ws://", "t", "ws://"),
        ("ws://h:99999", "t", "port"),
        ("ws://hub.example:8765", "t", "wss://"),
        ("wss://node.example", "  ", "token"),
    ],
)
def test_remote_node_refusals(url: str, token: str, reason: str) -> None:
    flow = new_flow()
    through_check(flow)
    flow.set_password("12345678", "12345678")
    with pytest.raises(StepRefused, match=reason):
        flow.use_remote_node(url, token)
    assert at(flow) is Step.NODE
    flow.use_remote_node(" ws://127.0.0.1:8765 ", " tok ")
    assert flow.node == NodeChoice("remote", "ws://127.0.0.1:8765", "tok")
    assert "tok" not in repr(flow.node)


def at_entity() -> Onboarding:
    flow = new_flow()
    through_check(flow)
    flow.set_password("12345678", "12345678")
    flow.use_embedded_node()
    assert at(flow) is Step.ENTITY
    return flow


def test_entity_refusals() -> None:
    flow = at_entity()
    cases: list[tuple[int, list[tuple[str, int]], int, int, str]] = [
        (1, [(card(1), 1)], 1, 0, "exceed half"),
        (1, [(card(1), 1)], 3, 0, "exceed half"),
        (0, [], 1, 0, "shares must be"),
        (1, [(card(1), 1), (card(1), 1)], 2, 0, "twice"),
        (1, [("{}", 1)], 2, 0, "enter the public key"),
        (1, [("nothex:zz", 1)], 2, 0, "must be hexadecimal"),
        (1, [("[1]", 1)], 2, 0, "xln-signer:<public key hex>:<proof hex>"),
        (1, [("", 1)], 2, 0, "empty"),
        (1, [(card(1), 1)], 2, 5, "proposer"),
    ]
    for own, others, threshold, proposer, reason in cases:
        with pytest.raises(StepRefused, match=reason):
            flow.create_entity(own, others, threshold, proposer)
        assert at(flow) is Step.ENTITY
        assert flow.entity is None


def test_card_with_a_wrong_proof_is_refused() -> None:
    a, b = json.loads(card(1)), json.loads(card(2))
    forged = json.dumps({"pubkey": a["pubkey"], "proof_of_possession": b["proof_of_possession"]})
    with pytest.raises(StepRefused, match="proof of possession"):
        parse_card(forged)


def test_join_and_skip() -> None:
    flow = at_entity()
    with pytest.raises(StepRefused, match="64 hex"):
        flow.join_entity("abc")
    flow.join_entity("0x" + "ab" * 32)
    assert flow.plan().entity == JoinEntity(bytes([0xAB]) * 32)
    flow.back()
    flow.skip_entity()
    assert flow.plan().entity is None


def test_steps_out_of_order_are_refused() -> None:
    flow = new_flow()
    with pytest.raises(StepRefused, match="key step"):
        flow.set_password("12345678", "12345678")
    with pytest.raises(StepRefused, match="first step"):
        flow.back()
    with pytest.raises(StepRefused):
        flow.plan()


def test_back_walks_the_whole_way() -> None:
    flow = at_entity()
    seen = [flow.step]
    while flow.step is not Step.KEY:
        flow.back()
        seen.append(flow.step)
    assert seen == [Step.ENTITY, Step.NODE, Step.PASSWORD, Step.CHECK, Step.BACKUP, Step.KEY]


def test_back_then_next_keeps_the_phrase_made() -> None:
    """A person on the backup page goes Back, then Next: the words they may have
    written down stay the same (a new phrase was made silently before). An imported
    phrase is not taken for a made one, nor the other way round."""
    made: list[str] = []

    def generate() -> str:
        made.append(BIP39.generate(256))
        return made[-1]

    flow = Onboarding(generate, BIP39.check, random.Random(3))
    flow.create_key("alice")
    words = flow.words
    flow.back()
    assert at(flow) is Step.KEY
    flow.create_key("alice again")
    assert flow.words == words
    assert flow.label == "alice again"
    assert flow.mnemonic == made[0]
    assert len(made) == 1
    flow.back()
    imported = BIP39.generate(128)
    flow.import_key(imported)
    assert (flow.mnemonic, flow.imported) == (imported, True)
    flow.back()
    flow.create_key()
    assert (flow.mnemonic, flow.imported, len(made)) == (made[0], False, 1)


@given(st.lists(st.sampled_from(["back", "fwd"]), max_size=30))
def test_any_walk_keeps_a_consistent_step(moves: list[str]) -> None:
    flow = new_flow()
    forward = {
        Step.KEY: lambda: flow.create_key(),
        Step.BACKUP: flow.backup_done,
        Step.CHECK: lambda: flow.check_words([flow.words[p] for p in flow.check_positions]),
        Step.PASSWORD: lambda: flow.set_password("12345678", "12345678"),
        Step.NODE: flow.use_embedded_node,
        Step.ENTITY: flow.skip_entity,
    }
    depth = 0
    for move in moves:
        if move == "back" and depth:
            flow.back()
            depth -= 1
        elif move == "fwd" and flow.step is not Step.DONE:
            forward[flow.step]()
            depth += 1
    assert list(Step).index(flow.step) == depth


def test_the_threshold_is_explained_for_the_entity_being_made() -> None:
    ok, text = threshold_hint(1, 1)
    assert ok
    assert "1 of the 1 shares" in text
    assert "Add a signer with a new threshold" in text
    ok, text = threshold_hint(3, 2)
    assert ok
    assert "2 to 3 here" in text
    assert "holding 2 shares can stop a frame" in text
    ok, text = threshold_hint(2, 2)
    assert ok
    assert "Every signer must sign" in text
    for total, threshold in ((2, 1), (4, 2), (3, 4)):
        ok, text = threshold_hint(total, threshold)
        assert not ok
        assert f"{total // 2 + 1} to {total} here" in text


def test_a_restore_may_bring_a_backup_file_with_its_password() -> None:
    phrase = BIP39.generate(128)
    flow = new_flow()
    with pytest.raises(StepRefused, match="password the backup was made under"):
        flow.import_key(phrase, "alice", "/backups/xln-backup.json", "")
    with pytest.raises(StepRefused, match="choose the backup file"):
        flow.import_key(phrase, "alice", "  ", "old password")
    assert at(flow) is Step.KEY
    flow.import_key(phrase, "alice", " /backups/xln-backup.json ", "old password")
    flow.set_password("new password", "new password")
    flow.use_embedded_node()
    flow.skip_entity()
    plan = flow.plan()
    assert plan.backup == BackupChoice("/backups/xln-backup.json", "old password")
    assert not plan.first_backup  # offered on the last page, not made unless asked
    flow.want_first_backup(True)
    assert flow.plan().first_backup
    assert "old password" not in repr(plan)
    # Back to a new key: no backup goes with it.
    while at(flow) is not Step.KEY:
        flow.back()
    flow.create_key("alice")
    assert flow.backup is None
