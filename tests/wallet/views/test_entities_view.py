"""EntitiesView: the user's signers and entities (members bar, threshold, proposer,
height, counter, id to copy), Increment, Create entity from signer cards, Join."""

from __future__ import annotations

import asyncio
import dataclasses

from pytestqt.qtbot import QtBot

from node.crypto import bls
from node.evidence import Evidence, Signed
from node.machines.frames import precommit_message
from wallet.flows.compose import SignerCard
from wallet.model import EntityEntry, WalletModel
from wallet.qt import QGuiApplication, Qt, QWidget
from wallet.views.compose import IncrementDialog
from wallet.views.entities import EntitiesView, NameSignerDialog
from wallet.views.widgets import plural

from .content_helpers import (
    IDS,
    ME,
    PKS,
    POPS,
    SKS,
    Clock,
    RecordingActions,
    Replica,
    entity,
    model_with,
    queue_with,
    run_qt,
)


def test_entity_card_shows_config_and_numbers(qtbot: QtBot) -> None:
    replica = Replica(entity((50, 30, 20), 67))
    replica.increment(1, 4)
    model = model_with()
    model.set_entity(EntityEntry(IDS[ME], replica.state, (IDS[0], IDS[1])))
    view = EntitiesView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    view.resize(760, 420)
    (card,) = view.cards
    assert "3 signers" in card.summary.text()
    assert "threshold 67 of 100 shares" in card.summary.text()
    assert "proposer you" in card.summary.text()
    assert "height 1" in card.numbers.text()
    assert "counter 4" in card.numbers.text()
    assert [s.shares for s in card.bar.segments] == [50, 30, 20]
    assert [s.filled for s in card.bar.segments] == [True, True, False]
    card.entity_id.copy()
    assert QGuiApplication.clipboard().text() == "0x" + replica.state.entity_id.hex()
    view.show()
    view.grab().save("/tmp/entities_view.png")


def test_a_one_signer_entity_reads_in_the_singular(qtbot: QtBot) -> None:
    """Onboarding's default entity: one signer with one share ("1 signers" and "1
    shares" were seen by a person)."""
    model = model_with(entity((1,), 1))
    view = EntitiesView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    (card,) = view.cards
    text = card.summary.text()
    assert text.startswith("1 signer  ·  threshold 1 of 1 share  ·  proposer")
    assert plural(1_024, "share") == "1,024 shares"
    assert plural(0, "channel") == "0 channels"


def test_increment_runs_and_closes(qtbot: QtBot) -> None:
    replica = Replica(entity())
    actions = RecordingActions()
    view = EntitiesView(model_with(replica.state), actions, queue_with(Clock()))
    qtbot.addWidget(view)

    async def scenario() -> None:
        view.cards[0].increment_button.click()
        dialog = view.dialog
        assert dialog is not None
        dialog.n.setText("0")  # type: ignore[union-attr]
        dialog.ok_button.click()
        assert "increment" in dialog.errors["n"].text()
        assert actions.calls == []
        dialog.n.setText("5")  # type: ignore[union-attr]
        actions.hold = asyncio.Event()
        dialog.ok_button.click()
        assert not dialog.ok_button.isEnabled()
        actions.hold.set()
        await dialog.runner.wait_idle()
        assert not dialog.isVisible()

    run_qt(scenario())
    assert actions.calls == [("increment", IDS[ME], replica.state.entity_id, 5)]


def test_create_entity_from_cards(qtbot: QtBot) -> None:
    actions = RecordingActions()
    view = EntitiesView(WalletModel(), actions, queue_with(Clock()))
    qtbot.addWidget(view)
    view.set_own_cards([SignerCard(PKS[0], POPS[0])])

    async def scenario() -> None:
        dialog = view.open_create()
        assert len(dialog.rows) == 1
        assert dialog.rows[0].card.text() == SignerCard(PKS[0], POPS[0]).encode()
        dialog.rows[0].shares.setText("2")
        bad = dialog.add_member("xln-signer:00:11", 1)
        dialog.threshold.setText("2")
        dialog.ok_button.click()
        assert "public key" in bad.error.text(), bad.error.text()
        assert not bad.error.isHidden()
        assert actions.calls == []
        bad.card.setText(SignerCard(PKS[1], POPS[1]).encode())
        dialog.ok_button.click()  # 2 of 3 shares is fine; 1 would not be
        await dialog.runner.wait_idle()
        assert dialog.created == actions.created

    run_qt(scenario())
    ((_, signer, members, threshold, proposer),) = actions.calls
    assert signer == IDS[0]
    assert [(m.pubkey, m.shares) for m in members] == [(PKS[0], 2), (PKS[1], 1)]
    assert (threshold, proposer) == (2, 0)
    assert actions.created.hex() in view.status.text


def test_create_entity_threshold_error_shown(qtbot: QtBot) -> None:
    view = EntitiesView(WalletModel(), RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    view.set_own_cards([SignerCard(PKS[0], POPS[0])])
    dialog = view.open_create()
    dialog.add_member(SignerCard(PKS[1], POPS[1]).encode(), 1)
    dialog.threshold.setText("1")
    assert dialog.validate() is None
    assert "exceed half" in dialog.errors["threshold"].text()


def test_add_member_puts_the_cursor_in_the_new_card_and_tab_reads_the_form(
    qtbot: QtBot,
) -> None:
    """Add member: the new member's card takes the cursor (a person pastes at once);
    Tab then goes through the form as it reads, the threshold after the members
    (rows added later came after the proposer; seen by the GUI suite)."""
    view = EntitiesView(WalletModel(), RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    view.set_own_cards([SignerCard(PKS[0], POPS[0])])
    dialog = view.open_create()
    qtbot.waitExposed(dialog)
    dialog.activateWindow()
    qtbot.waitUntil(dialog.isActiveWindow)
    dialog.add_button.click()
    second = dialog.rows[1]
    qtbot.waitUntil(second.card.hasFocus)
    order: list[QWidget] = [second.card]
    for _ in range(4):
        nxt = order[-1].nextInFocusChain()
        while nxt is not None and nxt.focusPolicy() == Qt.FocusPolicy.NoFocus:
            nxt = nxt.nextInFocusChain()
        assert nxt is not None
        order.append(nxt)
    assert order == [
        second.card,
        second.shares,
        second.remove,
        dialog.add_button,
        dialog.threshold,
    ]
    first = dialog.rows[0]
    assert dialog.signer.nextInFocusChain() is first.card


def test_join_by_id(qtbot: QtBot) -> None:
    actions = RecordingActions()
    view = EntitiesView(model_with(entity()), actions, queue_with(Clock()))
    qtbot.addWidget(view)

    async def scenario() -> None:
        dialog = view.open_join()
        dialog.entity.setText("0x1234")
        dialog.ok_button.click()
        assert "32 bytes" in dialog.errors["entity"].text()
        dialog.entity.setText("0x" + "ab" * 32)
        dialog.ok_button.click()
        await dialog.runner.wait_idle()

    run_qt(scenario())
    assert actions.calls == [("join_entity", IDS[ME], b"\xab" * 32)]


def test_copy_own_signer_card(qtbot: QtBot) -> None:
    view = EntitiesView(WalletModel(), RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    card = SignerCard(PKS[0], POPS[0])
    view.set_own_cards([card])
    button = view.card_buttons[card.signer_id]
    button.click()
    copied = QGuiApplication.clipboard().text()
    assert copied == card.encode()
    assert SignerCard.decode(copied) == card
    assert "copied" in view.status.text


def test_a_new_frame_updates_the_card_in_place(qtbot: QtBot) -> None:
    replica = Replica(entity((50, 30, 20), 67))
    model = model_with(replica.state)
    view = EntitiesView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    (card,) = view.cards
    replica.increment(1, 4)
    model.set_entity(EntityEntry(IDS[ME], replica.state, (IDS[0], IDS[1])))
    assert view.cards == [card], "the same card, updated"
    assert "counter 4" in card.numbers.text()
    assert [s.filled for s in card.bar.segments] == [True, True, False]
    card.increment_button.click()
    assert isinstance(view.dialog, IncrementDialog)
    assert view.dialog.entry.state.counter == 4, "the dialog works on the entity as it is now"
    # Typed at once, the amount replaces the default 1 (the field has the focus, all selected).
    assert view.dialog.n.hasSelectedText()
    assert view.dialog.n.selectedText() == "1"
    assert view.dialog.focusWidget() is view.dialog.n
    other = Replica(entity((1,), 1))
    model.set_entity(EntityEntry(IDS[ME], other.state))
    assert len(view.cards) == 2, "a new entity rebuilds the page"


def test_co_signers_named_show_by_name(qtbot: QtBot) -> None:
    replica = Replica(entity((50, 30, 20), 67))
    model = model_with()
    model.set_entity(EntityEntry(IDS[ME], replica.state, (IDS[0], IDS[1])))
    actions = RecordingActions()
    view = EntitiesView(model, actions, queue_with(Clock()))
    qtbot.addWidget(view)

    async def scenario() -> None:
        view.cards[0].name_button.click()
        dialog = view.dialog
        assert isinstance(dialog, NameSignerDialog)
        others = [dialog.signer.itemData(i) for i in range(dialog.signer.count())]
        assert others == [IDS[1], IDS[2]]  # the members but this wallet's own signer
        dialog.signer.setCurrentIndex(1)
        dialog.name.setText("bad\u0007name")
        dialog.ok_button.click()
        assert "control characters" in dialog.errors["name"].text()
        dialog.name.setText("  Carol  ")
        dialog.ok_button.click()
        await dialog.runner.wait_idle()
        assert not dialog.isVisible()

    run_qt(scenario())
    assert actions.calls == [("name_signer", IDS[2], "Carol")]
    model.set_contacts({IDS[2]: "Carol"})  # what the service does once it is saved
    (card,) = view.cards
    assert "Carol 20" in card.members.text()
    assert [s.label for s in card.bar.segments][2] == "Carol"


def test_an_equivocating_member_gets_a_badge_and_a_line(qtbot: QtBot) -> None:
    """The node's evidence (read by the service into the model) shows on the card in
    place: a badge on the member, one line naming the height, round and frames."""
    state = entity((50, 30, 20), 67)
    model = model_with(state)
    view = EntitiesView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    (card,) = view.cards
    assert card.evidence.isHidden()
    assert "equivocated" not in card.members.text()
    pair = [
        Signed(h, bls.sign(SKS[1], precommit_message(state.entity_id, 4, 1, h)))
        for h in (b"\xaa" * 32, b"\xbb" * 32)
    ]
    evidence = Evidence.of(state.entity_id, 4, 1, PKS[1], pair[0], pair[1])
    model.set_evidence(state.entity_id, [evidence])
    assert view.cards == [card], "the same card, updated"
    assert not card.evidence.isHidden()
    members = card.members.text()
    assert members.count("equivocated") == 1
    assert "equivocated \u00d71" in members.split("  ")[1]
    assert "height 4, round 1: 0xaaaaaa\u2026aaaa and 0xbbbbbb\u2026bbbb" in card.evidence.text()
    model.set_evidence(state.entity_id, [])
    assert card.evidence.isHidden()


def test_an_entity_only_this_computer_holds_with_funds_has_a_warning(qtbot: QtBot) -> None:
    """Every member hosted on the wallet's node, and reserves: losing the folder loses
    them (wallet.flows.backup.only_here)."""
    replica = Replica(entity((50, 30, 20), 67))
    model = model_with()
    model.set_entity(EntityEntry(IDS[ME], replica.state, ()))
    view = EntitiesView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    (card,) = view.cards
    assert card.only_here.isHidden()
    model.set_hosted(frozenset(IDS[:3]))  # all three members on this node, no funds yet
    assert card.only_here.isHidden()
    funded = dataclasses.replace(replica.state, reserves=((1, 500),))
    model.set_entity(EntityEntry(IDS[ME], funded, ()))
    view.refresh()
    (card,) = view.cards
    assert not card.only_here.isHidden()
    assert "Only this computer holds entity" in card.only_here.text()
    assert "back it up" in card.only_here.text()
    model.set_hosted(frozenset(IDS[:2]))  # a member hosted elsewhere holds it too
    view.refresh()
    assert view.cards[0].only_here.isHidden()
