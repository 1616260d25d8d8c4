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
from tests.wallet.partial_states import partial_of
from wallet.flows.compose import ChannelCard
from wallet.flows.effects import Effect
from wallet.model import EntityEntry, HistoryItem
from wallet.qt import QGuiApplication
from wallet.views.approvals import effect_html
from wallet.views.channels import ChannelsView, channel_row, entity_summary
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
    rows = {r.peer: r for r in map(channel_row, state.channels.values())}
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
    assert view.cards[0].pay_button.toolTip().startswith("No channel to pay through yet")
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


def many() -> tuple[EntityState, list[bytes], dict[bytes, int]]:
    """The user's entity with five funded channels; their counterparties, ascending,
    and the collateral we put in each."""
    me, _, _ = two()
    state = me
    collateral: dict[bytes, int] = {}
    for i in range(5):
        peer = entity((i + 1, 1), i + 2)
        state = with_channel(state, peer, 100 + i, 0, reserve=900)
        collateral[peer.entity_id] = 100 + i
    return state, sorted(collateral), collateral


def shown(view: ChannelsView) -> list[bytes]:
    (card,) = view.cards
    return [b.row.peer for b in card.boxes]


def test_channels_show_a_page_at_a_time(qtbot: QtBot) -> None:
    state, peers, _ = many()
    view = ChannelsView(model_with(state), RecordingActions(), queue_with(Clock()), page_size=2)
    qtbot.addWidget(view)
    (card,) = view.cards
    assert shown(view) == peers[:2]
    assert card.page_caption.text() == "Channels 1\u20132 of 5"
    assert not card.previous_button.isEnabled()
    card.next_button.click()
    card.next_button.click()
    assert shown(view) == peers[4:]
    assert card.page_caption.text() == "Channels 5\u20135 of 5"
    assert not card.next_button.isEnabled()
    card.previous_button.click()
    assert shown(view) == peers[2:4]
    assert "5 channels" in card.summary.text()


def test_a_large_entity_pages_from_the_node_and_is_never_walked(qtbot: QtBot) -> None:
    """The wallet holds a large entity partially: the card reads each page through the
    service (proven there), never walking the state on the GUI thread (a walk fails
    this test), and a new state of the entity reads the page shown again."""
    whole, peers, collateral = many()
    actions = RecordingActions(held={whole.entity_id: whole})
    model = model_with(partial_of(whole))

    async def scenario() -> None:
        view = ChannelsView(model, actions, queue_with(Clock()), page_size=2)
        qtbot.addWidget(view)
        (card,) = view.cards
        await card.runner.wait_idle()
        assert shown(view) == peers[:2]
        assert card.page_caption.text() == "Channels 1\u20132 of 5"
        card.next_button.click()
        await card.runner.wait_idle()
        assert shown(view) == peers[2:4]
        box = card.boxes[0]
        n = f"{collateral[peers[2]]}"
        assert [c.text() for c in box.cells[0]] == ["1", n, n, n, "0", "0"]

        # A frame moved one channel on the page shown: the page is read again.
        rec = whole.channel(peers[2])
        assert rec is not None
        side, _ = ch.step(rec.side, ch.Enqueue(Tx.of(ch.Payment(1, 30))))
        moved = replace(
            whole,
            height=whole.height + 1,
            channels=whole.channels.set(peers[2], replace(rec, side=side)),
        )
        actions.held[whole.entity_id] = moved
        model.set_entity(EntityEntry(IDS[ME], partial_of(moved)))
        await card.runner.wait_idle()
        assert card.boxes[0] is box
        assert "1 queued" in box.line.text()

    run_qt(scenario())
    reads = [c for c in actions.calls if c[0] == "channel_page"]
    assert reads == [
        ("channel_page", IDS[ME], whole.entity_id, b"", 2),
        ("channel_page", IDS[ME], whole.entity_id, peers[1], 2),
        ("channel_page", IDS[ME], whole.entity_id, peers[1], 2),
    ]


def test_paying_from_a_large_entity_checks_what_is_at_hand(qtbot: QtBot) -> None:
    """The pay form of a partial entity checks the capacity of a channel on the page
    shown inline; one off it is left to the service (which reads it, proven)."""
    whole, peers, collateral = many()
    actions = RecordingActions(held={whole.entity_id: whole})

    async def scenario() -> None:
        model = model_with(partial_of(whole))
        view = ChannelsView(model, actions, queue_with(Clock()), page_size=2)
        qtbot.addWidget(view)
        await view.cards[0].runner.wait_idle()
        view.cards[0].pay_button.click()
        dialog = view.dialog
        assert dialog is not None
        assert [dialog.to.itemData(i) for i in range(dialog.to.count())] == [
            p.hex() for p in peers[:2]
        ]
        dialog.to.setCurrentText(f"0x{peers[0].hex()}")
        n = collateral[peers[0]]
        assert f"{n} of asset 1 available" in dialog.available.text()
        dialog.amount.setText(str(n + 1))
        dialog.ok_button.click()
        assert dialog.errors["amount"].text().startswith(f"insufficient capacity: {n} of asset")
        dialog.to.setCurrentText(f"0x{peers[4].hex()}")
        assert "is checked when you pay" in dialog.available.text()
        dialog.ok_button.click()
        await dialog.runner.wait_idle()
        assert not dialog.isVisible()

    run_qt(scenario())
    paid = collateral[peers[0]] + 1
    assert actions.calls[-1] == ("pay", IDS[ME], whole.entity_id, (peers[4],), 1, paid)
