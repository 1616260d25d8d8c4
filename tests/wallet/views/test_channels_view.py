"""ChannelsView and the channel parts of the other views, offscreen: reserves and
channels per entity (status, heights, pending frame, queue, per-asset balance,
capacity, collateral and credit), updated in place; the pay form with its inline
capacity check; Copy channel card; the channel action editors; payments in
history and, with their amounts, in approvals."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from pytestqt.qtbot import QtBot

from node.machines import channel as ch
from node.machines.accounts import OpenChannel
from node.machines.entity import EntityState
from node.txs import Tx
from wallet.flows.compose import ChannelCard
from wallet.flows.effects import Effect
from wallet.model import EntityEntry, HistoryItem
from wallet.qt import QGuiApplication
from wallet.views.approvals import effect_html
from wallet.views.channels import ChannelsView, channel_rows, entity_summary
from wallet.views.compose import NewProposalDialog, OpenChannelEditor
from wallet.views.entities import EntitiesView
from wallet.views.history import HistoryView

from .content_helpers import (
    IDS,
    ME,
    Clock,
    RecordingActions,
    entity,
    model_with,
    queue_with,
    run_qt,
    with_channel,
)


def two() -> tuple[EntityState, EntityState, EntityState]:
    me = entity((50, 30, 20), 67)
    hub = entity((1, 1), 2)
    shop = entity((2, 1), 2)
    return me, hub, shop


def funded() -> tuple[EntityState, EntityState, EntityState]:
    me, hub, shop = two()
    state = with_channel(me, hub, 500, 200, credit_given=50, paid=120, reserve=900)
    state = with_channel(state, shop, 10, 0)
    return state, hub, shop


def test_rows_hold_the_numbers() -> None:
    state, hub, _ = funded()
    rows = {r.peer: r for r in channel_rows(state)}
    row = rows[hub.entity_id]
    assert (row.status, row.pending, row.queued) == ("ready", None, 0)
    assert row.height == 4  # two collaterals, the credit, the payment
    (a,) = row.assets
    assert (a.balance, a.collateral, a.credit_given, a.credit_received) == (380, 500, 50, 0)
    assert a.capacity == 380
    assert a.available == 380
    assert entity_summary(state) == "Reserves: 900 of asset 1  ·  2 channels"


def test_view_shows_channels_and_updates_in_place(qtbot: QtBot) -> None:
    state, hub, _shop = funded()
    model = model_with(state)
    view = ChannelsView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    view.resize(900, 560)
    (card,) = view.cards
    assert "900 of asset 1" in card.summary.text()
    box = next(b for b in card.boxes if b.row.peer == hub.entity_id)
    assert box.status.text() == "ready"
    assert "height 4" in box.line.text()
    assert "0 queued" in box.line.text()
    assert [c.text() for c in box.cells[0]] == ["1", "380", "380", "500", "50", "0"]
    view.show()
    view.grab().save("/tmp/channels_view.png")

    # A payment queued and proposed: the same card and box show "sent" and the pending frame.
    rec = state.channel(hub.entity_id)
    assert rec is not None
    side, _ = ch.step(rec.side, ch.Enqueue(Tx.of(ch.Payment(1, 30))))
    side, _ = ch.step(side, ch.Propose())
    side, _ = ch.step(side, ch.Enqueue(Tx.of(ch.Payment(1, 5))))
    moved = replace(
        state,
        height=state.height + 1,
        channels=state.channels.set(hub.entity_id, replace(rec, side=side)),
    )
    model.set_entity(EntityEntry(IDS[ME], moved))
    assert view.cards == [card]
    assert box in card.boxes
    assert box.status.text() == "sent"
    assert "pending frame #5 (1 tx)" in box.line.text()
    assert "1 queued" in box.line.text()


def test_pay_form_shows_the_capacity_error_inline_then_pays(qtbot: QtBot) -> None:
    state, hub, shop = funded()
    actions = RecordingActions()
    view = ChannelsView(model_with(state), actions, queue_with(Clock()))
    qtbot.addWidget(view)

    async def scenario() -> None:
        view.cards[0].pay_button.click()
        dialog = view.dialog
        assert dialog is not None
        dialog.to.setCurrentText(f"0x{hub.entity_id.hex()}")
        assert "380 of asset 1 available" in dialog.available.text()
        dialog.amount.setText("381")
        dialog.ok_button.click()
        assert dialog.errors["amount"].text().startswith("insufficient capacity: 380 of asset 1")
        assert not dialog.errors["amount"].isHidden()
        assert actions.calls == []
        dialog.to.setCurrentText(f"0x{hub.entity_id.hex()}, 0x{shop.entity_id.hex()}")
        dialog.amount.setText("100")
        actions.hold = asyncio.Event()
        dialog.ok_button.click()
        assert not dialog.ok_button.isEnabled()
        actions.hold.set()
        await dialog.runner.wait_idle()
        assert not dialog.isVisible()

    run_qt(scenario())
    assert actions.calls == [
        ("pay", IDS[ME], state.entity_id, (hub.entity_id, shop.entity_id), 1, 100)
    ]
    assert view.status.text == "Payment submitted"


def test_no_channel_means_no_pay_and_a_hint(qtbot: QtBot) -> None:
    me, _, _ = two()
    view = ChannelsView(model_with(me), RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    assert not view.cards[0].pay_button.isEnabled()
    assert "Reserves: none" in view.cards[0].summary.text()


def test_copy_channel_card_from_the_entities_view(qtbot: QtBot) -> None:
    me, _, _ = two()
    view = EntitiesView(model_with(me), RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    view.cards[0].channel_card_button.click()
    card = ChannelCard.decode(QGuiApplication.clipboard().text())
    assert card == ChannelCard.of(me)
    assert "Channel card copied" in view.status.text


def test_open_channel_editor_fetches_the_card_and_proposes(qtbot: QtBot) -> None:
    me, hub, _ = two()
    me = replace(me, reserves=((1, 1000),))
    actions = RecordingActions(cards={hub.entity_id: ChannelCard.of(hub).encode()})
    model = model_with(me)
    dialog = NewProposalDialog(model, actions, model.entities[(IDS[ME], me.entity_id)])
    qtbot.addWidget(dialog)

    async def scenario() -> None:
        editor = dialog.set_kind("open_channel")
        assert isinstance(editor, OpenChannelEditor)
        editor.peer.setText("nothex")
        editor.fetch_button.click()
        assert "hexadecimal" in editor.errors["peer"].text()
        editor.peer.setText(hub.entity_id.hex())
        editor.fetch_button.click()
        await dialog.runner.wait_idle()
        assert ChannelCard.decode(editor.card.text()) == ChannelCard.of(hub)
        editor.collateral.setText("2000")
        dialog.ok_button.click()
        assert "reserve of asset 1 is 1000, 2000 needed" in editor.errors["collateral"].text()
        editor.collateral.setText("300")
        dialog.ok_button.click()
        await dialog.runner.wait_idle()

    run_qt(scenario())
    assert ("channel_card", hub.entity_id) in actions.calls
    action = actions.calls[-1]
    assert action[0] == "propose"
    assert action[3] == OpenChannel(hub.entity_id, hub.config, 0, 1, 300)


def test_payments_appear_in_history_with_their_own_filter(qtbot: QtBot) -> None:
    me, hub, _ = two()
    model = model_with(me)
    view = HistoryView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    model.add_history(
        HistoryItem("frame", 3, b"\x01" * 32, 1_700_000_000_000, "frame 3", entity_id=me.entity_id)
    )
    model.add_history(
        HistoryItem(
            "payment",
            3,
            b"\x01" * 32,
            1_700_000_000_000,
            "payment of 5 of asset 1 refunded by 0a0b: no channel from hub to shop",
            entity_id=me.entity_id,
            payment="refunded",
            amount=5,
            asset=1,
            counterparty=hub.entity_id,
        )
    )
    view.set_filter(kind="payment")
    (shown,) = view.shown()
    assert shown.payment == "refunded"
    assert view.table.data(view.table.index(0, 1)) == "refunded"
    view.select_row(0)
    assert "Payment (refunded)" in view.cert_title.text()
    assert "no channel from hub to shop" in view.cert_title.text()
    assert "5 of asset 1" in view.cert_signers.text()


def test_approvals_show_payment_amounts() -> None:
    out = effect_html(Effect("payment", False, "pay 100 of asset 1 to 9f3c", amount=100, asset=1))
    assert "\u2212100" in out
    assert "#c0392b" in out
    came = effect_html(Effect("received", False, "received 7", amount=7, asset=2))
    assert "+7" in came
    assert "asset 2" in came
    opened = effect_html(Effect("open_channel", False, "open a channel", amount=3, asset=1))
    assert "channel</span>" in opened
