"""Channels in the wallet's flows: the accountant's payment rules (known payees, limits
per payment, per payee and per period, the spend ledger), the channel effects of
real frames (faucet mints, channel actions, the outbox check), and the pay and
channel-action forms with their pre-checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.codec import ZERO_HASH, keccak
from node.machines.accounts import ExtendCredit, Faucet, OpenChannel, Pay
from node.machines.entity import EntityState, Propose, execute
from node.machines.frames import Frame
from tests.node.machines.test_entity import A, B, Entity
from wallet.flows import compose
from wallet.flows.accountant import Rules, RulesError, Verdict
from wallet.flows.compose import (
    ChannelCard,
    ComposeError,
    ExtendCreditForm,
    FundChannelForm,
    OpenChannelForm,
)
from wallet.flows.effects import PAYMENT, Effect, FrameAnalysis, analyze, short
from wallet.flows.payments import DAY_S, HOUR_S, SpendLedger

ROOT = Path(__file__).resolve().parents[3]
ME = b"\xe1" * 32
SHOP = b"\x5a" * 32
LANDLORD = b"\x1d" * 32
STRANGER = b"\x99" * 32


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def paying(*payments: tuple[bytes, int], asset: int = 1, frame: int = 1) -> FrameAnalysis:
    """A frame whose effects are these payments of ours (payee, amount)."""
    effects = [
        Effect(
            PAYMENT,
            False,
            f"pay {n} of asset {asset} to {short(payee)}",
            amount=n,
            asset=asset,
            counterparty=payee,
            route=(payee,),
            payment_id=bytes([i]) * 32,
        )
        for i, (payee, n) in enumerate(payments)
    ]
    return FrameAnalysis(keccak(bytes([frame])), ME, frame, [], effects, None, None)


KNOWN = f"""
[counterparties]
shop = "0x{SHOP.hex()}"
landlord = "0x{LANDLORD.hex()}"
"""


def rules(body: str) -> Rules:
    return Rules.parse(KNOWN + body)


# Known counterparties ------------------------------------------------------------------


def test_payments_to_unknown_payees_are_asked() -> None:
    r = rules('[[rule]]\nname = "known"\napprove = ["payment"]\npayees = "known"\n')
    assert r.judge(paying((SHOP, 5), (LANDLORD, 7))).verdict is Verdict.APPROVE
    d = r.judge(paying((SHOP, 5), (STRANGER, 1)))
    assert d.verdict is Verdict.ASK
    assert "rule 'known' does not hold: payees landlord, shop" in d.reason


def test_default_rules_ask_for_every_payment_and_pass_channel_traffic() -> None:
    d = Rules.default().judge(paying((SHOP, 1)))
    assert d.verdict is Verdict.ASK
    received = FrameAnalysis(
        b"\1" * 32,
        ME,
        1,
        [],
        [Effect("received", False, "received 5", amount=5, asset=1, counterparty=SHOP)],
        None,
        None,
    )
    assert Rules.default().judge(received).verdict is Verdict.APPROVE
    forward = replace(received, effects=[Effect("forward", False, "forward 5", amount=5)])
    assert Rules.default().judge(forward).rule == "channel routine"
    odd = replace(received, effects=[Effect("unbalanced_forward", False, "5 in, 6 out")])
    assert Rules.default().judge(odd).verdict is Verdict.ASK


def test_payees_by_name_and_id() -> None:
    r = rules(
        f'[[rule]]\nname = "n"\napprove = ["payment"]\npayees = ["shop", "0x{STRANGER.hex()}"]\n'
    )
    assert r.judge(paying((SHOP, 1), (STRANGER, 2))).verdict is Verdict.APPROVE
    assert r.judge(paying((LANDLORD, 1))).verdict is Verdict.ASK


def test_assets_and_max_payment() -> None:
    r = rules('[[rule]]\nname = "small"\napprove = ["payment"]\nassets = [1]\nmax_payment = 10\n')
    assert r.judge(paying((STRANGER, 10))).verdict is Verdict.APPROVE
    assert r.judge(paying((STRANGER, 11))).verdict is Verdict.ASK
    assert r.judge(paying((STRANGER, 1), asset=2)).verdict is Verdict.ASK


# Period limits and the ledger ------------------------------------------------------------


def test_per_payee_daily_limit_counts_the_ledger_and_the_frame(tmp_path: Path) -> None:
    clock = Clock()
    ledger = SpendLedger(tmp_path / "spend.json", clock)
    r = rules(
        '[[rule]]\nname = "shop"\napprove = ["payment"]\npayees = ["shop"]\n'
        "max_per_payee_per_day = 100\n"
    )
    first = paying((SHOP, 60), frame=1)
    d = r.judge(first, ledger)
    assert d.verdict is Verdict.APPROVE
    assert "0 + 60 of 100 in the last day" in d.reason
    ledger.record(first)
    ledger.record(first)  # signed again at a later round: counted once
    assert ledger.spent(ME, SHOP, 1, DAY_S) == 60
    d = r.judge(paying((SHOP, 41), frame=2), ledger)
    assert d.verdict is Verdict.ASK
    assert "60 + 41 of 100 in the last day" in d.reason
    assert r.judge(paying((SHOP, 40), frame=2), ledger).verdict is Verdict.APPROVE
    clock.now += DAY_S + 1  # a day later the first spend no longer counts
    assert r.judge(paying((SHOP, 100), frame=3), ledger).verdict is Verdict.APPROVE


def test_two_payments_to_one_payee_in_one_frame_add_up() -> None:
    r = rules('[[rule]]\nname = "h"\napprove = ["payment"]\nmax_per_payee_per_hour = 10\n')
    assert r.judge(paying((SHOP, 5), (SHOP, 5))).verdict is Verdict.APPROVE
    assert r.judge(paying((SHOP, 5), (SHOP, 6))).verdict is Verdict.ASK
    assert r.judge(paying((SHOP, 6), (LANDLORD, 6))).verdict is Verdict.APPROVE


def test_total_hourly_limit_spans_payees(tmp_path: Path) -> None:
    clock = Clock()
    ledger = SpendLedger(tmp_path / "spend.json", clock)
    r = rules('[[rule]]\nname = "t"\napprove = ["payment"]\nmax_total_per_hour = 50\n')
    ledger.record(paying((SHOP, 30), frame=1))
    assert r.judge(paying((LANDLORD, 20), frame=2), ledger).verdict is Verdict.APPROVE
    assert r.judge(paying((LANDLORD, 21), frame=2), ledger).verdict is Verdict.ASK
    clock.now += HOUR_S + 1
    assert r.judge(paying((LANDLORD, 50), frame=2), ledger).verdict is Verdict.APPROVE


def test_the_ledger_persists_prunes_and_survives_a_bad_file(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "spend.json"
    ledger = SpendLedger(path, clock)
    ledger.record(paying((SHOP, 7), frame=1))
    assert path.stat().st_mode & 0o077 == 0
    again = SpendLedger(path, clock)
    assert again.spent(ME, SHOP, 1, HOUR_S) == 7
    assert again.spent(ME, None, 1, HOUR_S) == 7
    assert again.spent(ME, SHOP, 2, HOUR_S) == 0
    again.record(paying((SHOP, 7), frame=1))  # the same frame: not twice, across restarts
    assert again.spent(ME, SHOP, 1, HOUR_S) == 7
    clock.now += DAY_S + 1
    again.record(paying((LANDLORD, 1), frame=2))
    assert len(json.loads(path.read_text())["spends"]) == 1  # the old one pruned
    path.write_text("{broken")
    assert SpendLedger(path, clock).spends == []


@given(st.lists(st.tuples(st.sampled_from([SHOP, LANDLORD]), st.integers(1, 60)), max_size=8))
@settings(max_examples=60, deadline=None)
def test_approved_frames_never_exceed_the_daily_limit(steps: list[tuple[bytes, int]]) -> None:
    """Whatever comes, what the accountant approved (and so recorded) stays in bounds."""
    ledger = SpendLedger(None, Clock())
    r = rules('[[rule]]\nname = "d"\napprove = ["payment"]\nmax_per_payee_per_day = 100\n')
    for i, (payee, amount) in enumerate(steps):
        a = paying((payee, amount), frame=i + 1)
        if r.judge(a, ledger).verdict is Verdict.APPROVE:
            ledger.record(a)
    for payee in (SHOP, LANDLORD):
        assert ledger.spent(ME, payee, 1, DAY_S) <= 100


# Parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[counterparties]\nshop = "0x12"\n', "counterparty 'shop'.*1 bytes"),
        ("[counterparties]\nshop = 5\n", "entity id string"),
        (f'[counterparties]\nknown = "0x{SHOP.hex()}"\n', "reserved"),
        ('[[rule]]\nname = "x"\napprove = ["payment"]\npayees = "known"\n', "needs a"),
        ('[[rule]]\nname = "x"\napprove = ["payment"]\npayees = ["bob"]\n', "not hex"),
        ('[[rule]]\nname = "x"\napprove = ["payment"]\nmax_payment = -1\n', "max_payment"),
        ('[[rule]]\nname = "x"\napprove = ["payment"]\nassets = []\n', "assets"),
        ('[[rule]]\nname = "x"\napprove = ["payment"]\nmax_total_per_day = "a"\n', "per_day"),
        ("[limits]\n", "unknown top-level key 'limits'"),
    ],
)
def test_bad_payment_rules_are_refused(text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        Rules.parse(text)


def test_the_documented_examples_parse() -> None:
    doc = (ROOT / "docs" / "ACCOUNTANT.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        Rules.parse(block)


# Channel effects of real frames ------------------------------------------------------------


def frame_of(state: EntityState, batches: list, inputs: list) -> Frame:  # type: ignore[type-arg]
    after, events = execute(state, batches, inputs=inputs, allow_mint=True)
    return Frame.make(
        state.entity_id,
        state.height + 1,
        ZERO_HASH,
        batches,
        after.hash,
        inputs=inputs,
        outbox=events.outbox,
    )


def test_a_faucet_and_an_open_channel_are_effects_with_amounts() -> None:
    e, peer = Entity([1], 1), Entity([1, 1], 2)
    a = analyze(e.state, frame_of(e.state, [e.batch(A, Faucet(1, 1000))], []))
    assert [x.text for x in a.txs] == ["faucet: 1000 of asset 1 to the reserve (simulation)"]
    assert [(x.kind, x.amount, x.asset) for x in a.effects] == [("minted", 1000, 1)]
    assert a.new_state is not None
    e.state = a.new_state
    card = ChannelCard.of(peer.state)
    action = OpenChannelForm(card.encode(), 1, 300).to_action(e.state)
    assert action == OpenChannel(peer.state.entity_id, peer.state.config, 0, 1, 300)
    batch = e.batch(A, Propose(action, e.next_height))
    a = analyze(e.state, frame_of(e.state, [batch], []))
    assert a.error is None, a.error
    opened = [x for x in a.effects if x.kind == "open_channel"]
    assert [(x.amount, x.asset, x.counterparty) for x in opened] == [(300, 1, peer.state.entity_id)]
    assert "open a channel with" in opened[0].text
    assert "300 of asset 1" in opened[0].text
    assert len(a.events.outbox if a.events else []) == 1  # the channel frame to sign
    assert a.new_state is not None
    assert a.new_state.reserve(1) == 700


def test_a_frame_whose_outbox_is_not_what_it_makes_is_refused() -> None:
    e, peer = Entity([1], 1), Entity([1, 1], 2)
    e.state = analyze(e.state, frame_of(e.state, [e.batch(A, Faucet(1, 10))], [])).new_state  # type: ignore[assignment]
    action = OpenChannel(peer.state.entity_id, peer.state.config, 0, 1, 5)
    good = frame_of(e.state, [e.batch(A, Propose(action, e.next_height))], [])
    forged = Frame.make(
        good.entity_id,
        good.height,
        good.prev_hash,
        good.batches,
        good.state_hash,
        inputs=good.inputs,
        outbox=(replace(good.outbox[0], hash=b"\x66" * 32),),
    )
    a = analyze(e.state, forged)
    assert a.error is not None
    assert "outbox" in a.error
    assert a.effects == []


# Forms --------------------------------------------------------------------------------------


def test_pay_needs_a_channel_and_the_capacity() -> None:
    e, peer = Entity([1], 1), Entity([1, 1], 2)
    pid = peer.state.entity_id
    with pytest.raises(ComposeError) as no_channel:
        compose.pay((pid,), 1, 5, e.state)
    assert "no channel with" in no_channel.value.errors["route"]
    e.state = analyze(e.state, frame_of(e.state, [e.batch(A, Faucet(1, 10))], [])).new_state  # type: ignore[assignment]
    action = OpenChannel(pid, peer.state.config, 0, 1, 5)
    e.state = analyze(  # type: ignore[assignment]
        e.state, frame_of(e.state, [e.batch(A, Propose(action, e.next_height))], [])
    ).new_state
    # The collateral is not agreed until the peer acks: nothing to pay with yet.
    with pytest.raises(ComposeError) as short:
        compose.pay(f"0x{pid.hex()}", "1", "5", e.state)
    assert short.value.errors["amount"] == (
        f"insufficient capacity: 0 of asset 1 available towards {pid.hex()[:16]}, 5 asked"
    )
    assert compose.pay(f"{B:064x} -> 0x{pid.hex()}", 1, 5) == Pay(
        (B.to_bytes(32, "big"), pid), 1, 5
    )
    with pytest.raises(ComposeError) as bad:
        compose.pay("xyz", "-1", "0")
    assert set(bad.value.errors) == {"route", "asset", "amount"}
    with pytest.raises(ComposeError, match="passes through this entity"):
        compose.pay((pid, e.state.entity_id), 1, 1, e.state)


def test_channel_action_forms_check_against_the_entity() -> None:
    e, peer = Entity([1], 1), Entity([1, 1], 2)
    pid = peer.state.entity_id.hex()
    with pytest.raises(ComposeError) as no_reserve:
        OpenChannelForm(ChannelCard.of(peer.state), 1, 5).to_action(e.state)
    assert "reserve of asset 1 is 0, 5 needed" in no_reserve.value.errors["collateral"]
    with pytest.raises(ComposeError) as own:
        OpenChannelForm(ChannelCard.of(e.state), 1, 0).to_action(e.state)
    assert "two different entities" in own.value.errors["card"]
    with pytest.raises(ComposeError) as no_channel:
        ExtendCreditForm(pid, 1, 10).to_action(e.state)
    assert "no channel" in no_channel.value.errors["peer"]
    with pytest.raises(ComposeError) as bad:
        FundChannelForm("zz", "x", "0").to_action(e.state)
    assert set(bad.value.errors) == {"peer", "asset", "amount"}
    action = OpenChannelForm(ChannelCard.of(peer.state), 1, 0).to_action(e.state)
    e.state = analyze(  # type: ignore[assignment]
        e.state, frame_of(e.state, [e.batch(A, Propose(action, e.next_height))], [])
    ).new_state
    assert ExtendCreditForm(pid, 1, 10).to_action(e.state) == ExtendCredit(
        peer.state.entity_id, 1, 10
    )
    with pytest.raises(ComposeError, match="reserve of asset 1 is 0"):
        FundChannelForm(pid, 1, 3).to_action(e.state)
    with pytest.raises(ComposeError, match="open already"):
        OpenChannelForm(ChannelCard.of(peer.state)).to_action(e.state)


def test_channel_cards_round_trip_and_refuse_garbage() -> None:
    peer = Entity([1, 2], 2)
    card = ChannelCard.of(peer.state)
    assert ChannelCard.decode(card.encode()) == card
    for text, message in (
        ("nope", "JSON"),
        ("[]", "object"),
        ('{"entity": "00"}', "32 bytes"),
        (json.dumps({"entity": "11" * 32, "config_height": -1}), "peer config height: -1 is below"),
        (json.dumps({"entity": "11" * 32, "config_height": 0, "config": "c0"}), "config"),
    ):
        with pytest.raises(ValueError, match=message):
            ChannelCard.decode(text)
