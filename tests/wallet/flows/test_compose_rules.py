"""The wallet refuses exactly what the node refuses, for the node's reason
(wallet/flows/compose.py calls node/machines/accounts.py; it restates none of it).

Each payment or channel action is put to both: the wallet's ``pay``, its forms and its
``propose``, with the entity's state; and the node, as a real signed batch that the
node decodes from its bytes and executes with its transition (``entity.execute``, the
signature checked). One refuses exactly when the other does: a batch the node cannot
read, a frame it refuses, or a proposal it voids; and the wallet's first error is the
node's reason, under the field it is about.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import event, given, settings
from hypothesis import strategies as st

from node.codec import DecodeError
from node.machines.accounts import (
    ChannelAction,
    ExtendCredit,
    FundChannel,
    OpenChannel,
    Pay,
)
from node.machines.channel import QUEUE_FULL
from node.machines.entity import ACTION_NAMES, Batch, FrameInvalid, Propose, execute
from node.txs import TxBody
from tests.node import accounts_cases as cases
from tests.node.machines.test_entity import A
from wallet.flows import compose
from wallet.flows.compose import (
    ChannelCard,
    ChannelForm,
    ComposeError,
    ExtendCreditForm,
    FundChannelForm,
    OpenChannelForm,
)

E = cases.entity()
ME = E.state.entity_id
EXAMPLES = 150  # each signs a batch and checks its signature: about 3 ms


def node_refuses(body: TxBody) -> str | None:
    """Why the node refuses ``body`` from ``E``'s signer, or None if it takes it: the
    batch as the node reads it, then the frame that holds it (and, for a proposal,
    what becomes of its action: it executes in that frame, or is voided)."""
    batch = E.batch(A, body, nonce=1)
    try:
        read = Batch.decode(batch.raw)
    except DecodeError as exc:
        return str(exc)
    invalid: str | None = None
    try:
        _, events = execute(E.state, [read])
    except FrameInvalid as exc:
        invalid = str(exc)
    if invalid is not None:
        prefix = f"tx 0 ({read.txs[0].body.NAME}): "
        assert invalid.startswith(prefix)
        return invalid.removeprefix(prefix)
    if isinstance(body, Propose):
        name = ACTION_NAMES[type(body.action)]
        if events.voided:
            [(_, reason)] = events.voided
            assert reason.startswith(f"{name}: ")
            return reason.removeprefix(f"{name}: ")
        assert events.executed == [(1, name)]
    return None


def agree(made: TxBody | ComposeError, body: TxBody, first_field: str | None = None) -> str:
    """The wallet's verdict (``made``: what it composed, or its errors) is the node's
    on ``body``: both take it (the wallet made ``body`` itself), or both refuse it and
    the wallet's first error is the node's reason (under ``first_field``, if given)."""
    reason = node_refuses(body)
    if not isinstance(made, ComposeError):
        assert reason is None, f"the wallet takes what the node refuses: {reason}"
        assert made == body
        return "taken"
    assert reason is not None, f"the wallet refuses what the node takes: {made.errors}"
    field, text = next(iter(made.errors.items()))
    assert text == reason
    if first_field is not None:
        assert field == first_field
    return reason


def composed[T](make: Callable[[], T]) -> T | ComposeError:
    """What the wallet made, or its errors."""
    try:
        return make()
    except ComposeError as exc:
        return exc


def typed(n: int, as_text: bool) -> int | str:
    """A number as given to a form: an int, or the text typed."""
    return f" {n:_} " if as_text else n


@settings(max_examples=EXAMPLES)
@given(cases.payments(ME), st.booleans())
def test_pay_refuses_what_the_node_refuses(body: Pay, as_text: bool) -> None:
    made = composed(
        lambda: compose.pay(
            body.route, typed(body.asset, as_text), typed(body.amount, as_text), E.state
        )
    )
    event(agree(made, body)[:24])


@settings(max_examples=EXAMPLES)
@given(cases.payments(ME))
def test_a_typed_route_is_judged_like_the_route(body: Pay) -> None:
    """The route as the user types it (ids with ``0x``, arrows or commas between)."""
    if any(len(hop) != 32 for hop in body.route) or not body.route:
        return  # what a user cannot type: parse_hex wants an entity id of 32 bytes
    text = " -> ".join(f"0x{hop.hex()}" for hop in body.route)
    made = composed(lambda: compose.pay(text, body.asset, body.amount, E.state))
    agree(made, body)


def form_for(action: ChannelAction, as_text: bool) -> ChannelForm:
    """The form a user fills in to make ``action``."""
    match action:
        case OpenChannel(peer=peer, peer_config=config, peer_config_height=height):
            card = ChannelCard(peer, height, config)
            return OpenChannelForm(
                card, typed(action.asset, as_text), typed(action.collateral, as_text)
            )
        case ExtendCredit(peer=peer, asset=asset, limit=limit):
            return ExtendCreditForm(f"0x{peer.hex()}", typed(asset, as_text), typed(limit, as_text))
        case FundChannel(peer=peer, asset=asset, amount=amount):
            return FundChannelForm(peer.hex(), typed(asset, as_text), typed(amount, as_text))


@settings(max_examples=EXAMPLES)
@given(cases.actions(ME), st.booleans())
def test_channel_forms_refuse_what_the_node_refuses(action: ChannelAction, as_text: bool) -> None:
    form = form_for(action, as_text)
    made = composed(lambda: Propose(form.to_action(E.state), 1))
    event(agree(made, Propose(action, 1))[:24])


@settings(max_examples=EXAMPLES)
@given(cases.actions(ME))
def test_propose_refuses_the_channel_actions_the_node_refuses(action: ChannelAction) -> None:
    made = composed(lambda: compose.propose(action, 1, E.state))
    agree(made, Propose(action, 1), "action")


def test_the_fields_the_forms_blame() -> None:
    """The node names the field its reason is about; the forms show it there."""
    stranger, short = cases.STRANGER.hex(), cases.STRANGER.hex()[:16]
    config = cases.PEER_CONFIG
    for make, errors in [
        (
            lambda: compose.pay([cases.FULL], 1, 1, E.state),
            {"route": QUEUE_FULL},
        ),
        (
            lambda: compose.pay(f"0x{cases.PENDING.hex()}", "1", "51", E.state),
            {
                "amount": f"insufficient capacity: 50 of asset 1 available towards "
                f"{cases.PENDING.hex()[:16]}, 51 asked"
            },
        ),
        (
            lambda: compose.pay([], "x", 0, E.state),
            {
                "route": "pay: the route is empty",
                "asset": "the asset must be a whole number",
                "amount": "pay amount: 0 is below the minimum 1",
            },
        ),
        (
            lambda: compose.pay(f"{stranger}, {stranger}", 2**32, 2**128),
            {
                "route": "pay: the route visits an entity twice",
                "asset": "asset: 4294967296 exceeds the maximum 4294967295",
                "amount": f"pay amount: {2**128} exceeds the maximum {2**128 - 1}",
            },
        ),
        (
            lambda: OpenChannelForm(ChannelCard(ME, 0, config), 1, 0).to_action(E.state),
            {"card": "a channel joins two different entities"},
        ),
        (
            lambda: OpenChannelForm(ChannelCard(cases.FUNDED, 0, config)).to_action(E.state),
            {"card": f"a channel with {cases.FUNDED.hex()[:16]} is open already"},
        ),
        (
            lambda: OpenChannelForm(ChannelCard(cases.OTHER, 2**64, config), -1, 9).to_action(
                E.state
            ),
            {
                "card": f"peer config height: {2**64} exceeds the maximum {2**64 - 1}",
                "asset": "asset: -1 is below the minimum 0",
            },
        ),
        (
            lambda: OpenChannelForm(ChannelCard(cases.OTHER, 0, config), 2, 8).to_action(E.state),
            {"collateral": "reserve of asset 2 is 7, 8 needed"},
        ),
        (
            lambda: ExtendCreditForm(stranger, 1, "-5").to_action(E.state),
            {"limit": "limit: -5 is below the minimum 0"},
        ),
        (
            lambda: ExtendCreditForm(stranger, 1, 5).to_action(E.state),
            {"peer": f"no channel with {short}"},
        ),
        (
            lambda: FundChannelForm(cases.FUNDED.hex(), 1, 501).to_action(E.state),
            {"amount": "reserve of asset 1 is 500, 501 needed"},
        ),
        (
            lambda: FundChannelForm("zz", 1, 0).to_action(E.state),
            {
                "peer": "the counterparty must be hexadecimal",
                "amount": ("amount: 0 is below the minimum 1"),
            },
        ),
    ]:
        made = composed(make)
        assert isinstance(made, ComposeError)
        assert made.errors == errors


def test_propose_reads_a_channel_action_as_the_node_does() -> None:
    made = composed(lambda: compose.propose(FundChannel(cases.FUNDED, 1, 0), 5))
    assert isinstance(made, ComposeError)
    assert made.errors == {"action": "amount: 0 is below the minimum 1"}
    assert compose.propose(FundChannel(cases.FUNDED, 1, 5), 5) == Propose(
        FundChannel(cases.FUNDED, 1, 5), 5
    )
