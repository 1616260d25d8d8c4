"""The accountant's rules (wallet/flows/accountant.py), judging analyses of real frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from node.codec import ZERO_HASH
from node.machines.entity import Increment, Propose, Vote, execute, select_batches
from node.machines.frames import Frame
from node.machines.governance import Action, RemoveSigner, SetProposer, SetShares, SetThreshold
from node.txs import TxBody
from tests.node.machines.test_entity import IDS, A, B, C, Entity
from tests.wallet.flows.test_effects import make_frame
from wallet.flows.accountant import DEFAULT_RULES, Rules, RulesError, Verdict
from wallet.flows.effects import FrameAnalysis, analyze

ROOT = Path(__file__).resolve().parents[3]


def routine(n: int = 5) -> FrameAnalysis:
    """A counter increment and a new proposal that does not execute."""
    e = Entity([1, 1, 1, 1], 3)
    return analyze(
        e.state, make_frame(e.state, e.batch(B, Increment(n)), e.propose(A, SetThreshold(4)))
    )


def executes(action: Action) -> FrameAnalysis:
    """A proposal that executes in the frame that makes it (A alone holds the threshold)."""
    e = Entity([3, 1], 3)
    return analyze(e.state, make_frame(e.state, e.batch(B, Increment(1)), e.propose(A, action)))


def test_default_approves_routine_frames() -> None:
    a = routine()
    assert [x.kind for x in a.effects] == ["counter", "proposal"]
    d = Rules.default().judge(a)
    assert d.verdict is Verdict.APPROVE
    assert d.rule == "routine"
    assert d.reason == "routine: counter, proposal"


def test_default_asks_for_governance_and_names_the_uncovered_effect() -> None:
    d = Rules.default().judge(executes(SetThreshold(4)))
    assert d.verdict is Verdict.ASK
    assert d.rule == ""
    assert "set_threshold (proposal #1 executes: threshold 3 -> 4)" in d.reason
    assert "counter" not in d.reason  # covered effects are not listed


def test_an_empty_frame_is_routine() -> None:
    e = Entity([1, 1, 1], 2)
    a = analyze(e.state, make_frame(e.state))
    assert a.effects == []
    d = Rules.parse("").judge(a)
    assert d.verdict is Verdict.APPROVE


def test_a_frame_that_does_not_apply_is_rejected_whatever_the_rules() -> None:
    e = Entity([1, 1, 1], 2)
    frame = Frame.make(e.state.entity_id, 1, ZERO_HASH, (e.vote(B, 1),), e.state.hash)
    a = analyze(e.state, frame)
    everything = '[[rule]]\nname = "all"\napprove = ["counter", "vote", "set_threshold"]\n'
    d = Rules.parse(everything).judge(a)
    assert d.verdict is Verdict.REJECT
    assert d.rule == "invalid frame"
    assert "no open proposal 1" in d.reason


def test_an_explicit_rule_approves_governance_on_its_entities_only() -> None:
    a = executes(SetThreshold(4))
    text = (
        DEFAULT_RULES
        + '[[rule]]\nname = "treasury"\napprove = ["set_threshold"]\n'
        + f'entities = ["0x{a.entity_id.hex()}"]\n'
    )
    d = Rules.parse(text).judge(a)
    assert d.verdict is Verdict.APPROVE
    assert d.rule == "routine, treasury"
    assert d.reason == "routine: counter, proposal; treasury: set_threshold"
    other = text.replace(a.entity_id.hex(), IDS[A].hex())
    assert Rules.parse(other).judge(a).verdict is Verdict.ASK


def test_max_counter_limits_what_a_rule_covers() -> None:
    rules = Rules.parse(DEFAULT_RULES + "max_counter = 10\n")
    assert rules.judge(routine(10)).verdict is Verdict.APPROVE
    d = rules.judge(routine(11))
    assert d.verdict is Verdict.ASK
    assert "counter +11" in d.reason
    assert "proposal" in d.reason  # the rule says nothing about a frame out of its limits


def test_a_reject_rule_wins_over_an_approve_rule_before_it() -> None:
    text = (
        '[[rule]]\nname = "anything"\n'
        'approve = ["counter", "proposal", "remove_signer", "set_threshold"]\n'
        '[[rule]]\nname = "never remove signers"\nreject = ["remove_signer"]\n'
    )
    rules = Rules.parse(text)
    d = rules.judge(executes(RemoveSigner(IDS[B])))
    assert d.verdict is Verdict.REJECT
    assert d.rule == "never remove signers"
    assert "remove_signer" in d.reason
    assert rules.judge(executes(SetThreshold(4))).verdict is Verdict.APPROVE


def test_the_first_covering_rule_in_file_order_is_named() -> None:
    text = (
        '[[rule]]\nname = "first"\napprove = ["counter"]\n'
        '[[rule]]\nname = "second"\napprove = ["counter", "proposal"]\n'
    )
    d = Rules.parse(text).judge(routine())
    assert d.rule == "first, second"
    assert d.reason == "first: counter; second: proposal"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rule]]\nname = "x"\napprove = ["counter"]\nlimit = 3\n',
            "line 1: rule 1: unknown key 'limit'",
        ),
        ('[[rule]]\nname = "x"\napprove = ["increment"]\n', "unknown effect kind 'increment'"),
        ('[[rule]]\nname = "x"\napprove = "counter"\n', "approve must be a list of strings"),
        ('[[rule]]\nname = "x"\nreject = [1]\n', "reject must be a list of strings"),
        ('[[rule]]\nname = "x"\napprove = ["counter"]\nmax_counter = "5"\n', "max_counter"),
        ('[[rule]]\nname = "x"\napprove = ["counter"]\nmax_counter = true\n', "max_counter"),
        ('[[rule]]\nname = "x"\napprove = ["counter"]\nmax_counter = -1\n', "max_counter"),
        ('[[rule]]\nname = "x"\napprove = ["counter"]\nentities = ["0xzz"]\n', "not hex"),
        ('[[rule]]\nname = "x"\napprove = ["counter"]\nentities = ["0x01"]\n', "is 1 bytes"),
        ('[[rule]]\napprove = ["counter"]\n', "needs a name"),
        ('[[rule]]\nname = "x"\n', "approves and rejects nothing"),
        ('[[rule]]\nname = "x"\napprove = []\n', "approves and rejects nothing"),
        (
            '[[rule]]\nname = "x"\napprove = ["counter"]\n\n'
            '[[rule]]\nname = "x"\nreject = ["vote"]\n',
            "line 5: rule 2: a rule named 'x' already exists",
        ),
        ("version = 1\n", "unknown top-level key 'version'"),
        ("rule = 5\n", "array of tables"),
        ('[[rule]]\nname = "x\n', "not valid TOML"),
    ],
)
def test_bad_rule_files_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        Rules.parse(text)
    assert message in str(info.value)


def test_a_rule_error_knows_its_line() -> None:
    text = '# comment\n\n[[rule]]\nname = "ok"\napprove = ["vote"]\n\n[[ rule ]]\nname = 3\n'
    with pytest.raises(RulesError) as info:
        Rules.parse(text)
    assert info.value.line == 7
    with pytest.raises(RulesError) as info:
        Rules.parse('[[rule]]\nname = "ok"\napprove = ["vote"]\nmax = = 1\n')
    assert info.value.line == 4
    assert str(info.value).startswith(f"line {info.value.line}: not valid TOML")


def test_load_reads_a_file_and_refuses_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(DEFAULT_RULES, encoding="utf-8")
    assert Rules.load(path) == Rules.default()
    with pytest.raises(RulesError, match="cannot read rules file"):
        Rules.load(tmp_path / "missing.toml")


def test_the_example_file_parses_and_judges() -> None:
    rules = Rules.load(ROOT / "resources" / "rules.example.toml")
    assert [r.name for r in rules.rules] == [
        "routine",
        "treasury may change its threshold",
        "never remove signers",
        "channel routine",
        "never an unbalanced forward",
        "pay the shop",
    ]
    assert [n for n, _ in rules.counterparties] == ["shop"]
    assert rules.judge(routine()).verdict is Verdict.APPROVE
    assert rules.judge(routine(1001)).verdict is Verdict.ASK
    assert rules.judge(executes(SetThreshold(4))).verdict is Verdict.ASK  # not the treasury
    assert rules.judge(executes(RemoveSigner(IDS[B]))).verdict is Verdict.REJECT


def test_the_documented_default_is_the_built_in_one() -> None:
    doc = (ROOT / "docs" / "ACCOUNTANT.md").read_text(encoding="utf-8")
    assert DEFAULT_RULES in doc


# Any frame the proposer could make: the default approves exactly the non-governance ones.

OPS = st.lists(
    st.lists(st.tuples(st.sampled_from([A, B, C]), st.integers(0, 5)), max_size=3), max_size=6
)


@given(OPS)
@settings(max_examples=40)
def test_default_rules_approve_exactly_the_frames_that_change_no_config(
    steps: list[list[tuple[int, int]]],
) -> None:
    e = Entity([1, 1, 1], 2)  # one vote beside the proposer's executes
    rules = Rules.default()
    for ops in steps:
        h = e.next_height
        newest, oldest = e.state.next_proposal_id - 1, min(e.open_ids(), default=1)
        bodies: list[TxBody] = [
            Increment(1),
            Propose(SetThreshold(3), h + 1),
            Propose(SetShares(IDS[B], 2), h),
            Propose(SetProposer(IDS[C]), h + 2),
            Vote(max(newest, 1)),
            Vote(oldest),
        ]
        candidates = [e.batch(who, bodies[op]) for who, op in ops]
        kept, _ = select_batches(e.state, candidates)
        a = analyze(e.state, make_frame(e.state, *kept))
        assert a.error is None
        new, events = execute(e.state, kept)
        assert a.new_state == new
        assert [x.kind for x in a.effects if x.governance] == [n for _, n in events.executed]
        d = rules.judge(a)
        assert d.verdict is (Verdict.ASK if a.governance else Verdict.APPROVE)
        event(f"governance: {a.governance}")
        e.state = new
        for who in (A, B, C):
            e.nonces[who] = new.nonce_of(IDS[who])
