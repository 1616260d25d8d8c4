"""The node's rules on pay and the channel actions, stated once (node/machines/accounts.py):
the checks a client calls refuse exactly what the decoders and the transition refuse,
in the same words, on an entity's state as on a frame's ledger."""

from __future__ import annotations

import re

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from node.codec import DecodeError, RlpItem, check_int, decode, int_bytes
from node.machines import accounts
from node.machines import channel as ch
from node.machines.accounts import (
    ASSET,
    COLLATERAL,
    CREDIT_LIMIT,
    FAUCET_AMOUNT,
    FUND_AMOUNT,
    PAY_AMOUNT,
    PEER_CONFIG_HEIGHT,
    ChannelAction,
    ExtendCredit,
    FundChannel,
    IntField,
    OpenChannel,
    Pay,
    Refused,
)
from node.machines.entity import ENTITY_TXS, FrameInvalid, Propose, execute
from node.machines.governance import ConfigError
from node.txs import Tx
from tests.node import accounts_cases as cases
from tests.node.machines.test_entity import A

FIELDS = [
    ASSET,
    PAY_AMOUNT,
    FAUCET_AMOUNT,
    PEER_CONFIG_HEIGHT,
    COLLATERAL,
    CREDIT_LIMIT,
    FUND_AMOUNT,
]
E = cases.entity()
ME = E.state.entity_id
PID = b"\x99" * 32  # a payment id (what the batch signer and nonce would make)


def _outcome(f: object, *args: object) -> tuple[bool, object]:
    """(True, what ``f`` returned) or (False, the message of the ValueError it raised)."""
    try:
        return True, f(*args)  # type: ignore[operator]
    except ValueError as exc:
        return False, str(exc)


@settings(max_examples=300)
@given(
    st.sampled_from(FIELDS),
    st.one_of(
        st.integers(0, 2**256 - 1),
        st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**128 - 1, 2**128]),
    ),
)
def test_a_number_is_checked_as_it_is_read(field: IntField, value: int) -> None:
    assert _outcome(field.check, value) == _outcome(field.read, int_bytes(value))


def test_check_int_words_are_as_ints() -> None:
    with pytest.raises(DecodeError, match=r"^pay amount: 0 is below the minimum 1$"):
        PAY_AMOUNT.check(0)
    with pytest.raises(DecodeError, match=r"^asset: -1 is below the minimum 0$"):
        ASSET.check(-1)
    with pytest.raises(DecodeError, match=r"^limit: 5 exceeds the maximum 4$"):
        check_int(5, "limit", max_value=4)
    assert check_int(4, "limit", max_value=4, min_value=4) == 4


@settings(max_examples=300)
@given(cases.routes(ME))
def test_a_route_is_checked_as_pay_is_decoded(route: list[bytes]) -> None:
    items: list[RlpItem] = list(route)
    decoded = _outcome(Pay.from_fields, [items, b"\x01", b"\x01"])
    checked = _outcome(accounts.check_route, route)
    assert checked[0] == decoded[0]
    if decoded[0]:
        assert decoded[1] == Pay(tuple(route), 1, 1)
        assert checked[1] == tuple(route)
    else:
        assert checked[1] == decoded[1]


def _decoded(body: Pay | Propose) -> tuple[bool, object]:
    """The body as the node reads it from the bytes of a transaction, or why not."""
    raw = Tx.of(body).raw
    return _outcome(lambda: ENTITY_TXS.decode(decode(raw), raw).body)


def _pay_on_ledger(body: Pay) -> str | None:
    try:
        accounts.pay(cases.ledger(E.state), body, PID)
    except ConfigError as exc:
        return str(exc)
    return None


def _check_pay(body: Pay) -> str | None:
    try:
        accounts.check_pay(E.state, body)
    except Refused as exc:
        refused = exc
    else:
        return None
    assert refused.field in ("route", "amount")
    return str(refused)


@settings(max_examples=400)
@given(cases.payments(ME))
def test_check_pay_refuses_what_pay_refuses(body: Pay) -> None:
    ok, read = _decoded(body)
    if not ok:
        return  # the transition never meets it (see the route and number tests)
    assert read == body
    reason = _check_pay(body)
    event(f"pay: {'taken' if reason is None else reason[:20]}")
    assert reason == _pay_on_ledger(body)


def _apply_on_ledger(action: ChannelAction) -> str | None:
    ledger = cases.ledger(E.state)
    try:
        accounts.apply_action(ledger, action)
    except ConfigError as exc:
        assert ledger.channels.changes == {}  # void: nothing changed
        return str(exc)
    return None


def _check_applies(action: ChannelAction) -> str | None:
    try:
        accounts.check_action_applies(E.state, action)
    except Refused as exc:
        refused = exc
    else:
        return None
    assert refused.field in ("peer", "collateral", "amount")
    return str(refused)


@settings(max_examples=400)
@given(cases.actions(ME))
def test_check_action_applies_refuses_what_execution_voids(action: ChannelAction) -> None:
    ok, _ = _decoded(Propose(action, 1))
    if not ok:
        return
    reason = _check_applies(action)
    event(f"{type(action).__name__}: {'executes' if reason is None else reason[:20]}")
    assert reason == _apply_on_ledger(action)


def test_each_refusal_in_the_nodes_words_and_its_field() -> None:
    me, stranger = ME, cases.STRANGER.hex()[:16]
    cases_pay = [
        (Pay((cases.FUNDED, me), 1, 1), "route", "the route passes through this entity"),
        (Pay((cases.STRANGER,), 1, 1), "route", f"no channel with {stranger}"),
        (
            Pay((cases.PENDING,), 1, 51),
            "amount",
            f"insufficient capacity: 50 of asset 1 available towards "
            f"{cases.PENDING.hex()[:16]}, 51 asked",
        ),
        (Pay((cases.FULL,), 1, 1), "route", ch.QUEUE_FULL),
    ]
    for body, field, reason in cases_pay:
        with pytest.raises(Refused, match=f"^{re.escape(reason)}$") as info:
            accounts.check_pay(E.state, body)
        assert info.value.field == field
    assert accounts.check_pay(E.state, Pay((cases.PENDING,), 1, 50)) == 50
    assert accounts.check_pay(E.state, Pay((cases.CREDIT, cases.STRANGER), 2, 50)) == 50
    cases_action: list[tuple[ChannelAction, str, str]] = [
        (FundChannel(me, 1, 1), "peer", "a channel joins two different entities"),
        (
            OpenChannel(cases.FUNDED, cases.PEER_CONFIG, 0, 1, 0),
            "peer",
            f"a channel with {cases.FUNDED.hex()[:16]} is open already",
        ),
        (
            OpenChannel(cases.STRANGER, cases.PEER_CONFIG, 0, 2, 8),
            "collateral",
            "reserve of asset 2 is 7, 8 needed",
        ),
        (ExtendCredit(cases.STRANGER, 1, 5), "peer", f"no channel with {stranger}"),
        (FundChannel(cases.OTHER, 1, 5), "peer", f"no channel with {cases.OTHER.hex()[:16]}"),
        (FundChannel(cases.FUNDED, 1, 501), "amount", "reserve of asset 1 is 500, 501 needed"),
    ]
    for action, field, reason in cases_action:
        with pytest.raises(Refused, match=f"^{re.escape(reason)}$") as info:
            accounts.check_action_applies(E.state, action)
        assert info.value.field == field


def test_a_full_queue_refuses_the_payment_in_the_batch() -> None:
    """The queue's cap comes from the channel machine once (``ch.queue_full``): the
    transition refuses the pay in its batch, before anything is queued."""
    e = cases.entity()
    with pytest.raises(FrameInvalid, match=r"^tx 0 \(pay\): queue full \(8192 transactions"):
        execute(e.state, [e.batch(A, Pay((cases.FULL,), 1, 1))], verify=False)
    side = cases.ledger(e.state).channels[cases.FULL].side
    assert ch.queue_full(side) == ch.QUEUE_FULL
    assert ch.step(side, ch.Enqueue(Tx.of(ch.Payment(1, 1))))[1] == [
        ch.Rejected(Tx.of(ch.Payment(1, 1)), ch.QUEUE_FULL)
    ]
    fewer = ch.ChannelSide(side.me, side.agreed, side.head, None, side.queue[1:])
    assert ch.queue_full(fewer) is None


@settings(max_examples=300)
@given(cases.actions(ME))
def test_an_action_is_checked_as_it_is_decoded(action: ChannelAction) -> None:
    ok, read = _decoded(Propose(action, 1))
    assert _outcome(accounts.check_action_fields, action) == (ok, None if ok else read)
    if ok:
        assert read == Propose(action, 1)
