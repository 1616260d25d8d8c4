"""The new-proposal dialog: one editor per governance action, compose's errors shown
under their fields, a valid proposal sent with its expiry; the vote dialog."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from node.machines.governance import AddSigner, SetThreshold
from wallet.flows.compose import SignerCard
from wallet.qt import QWidget
from wallet.views.compose import EDITORS, NewProposalDialog, VoteDialog

from .content_helpers import (
    IDS,
    ME,
    PKS,
    POPS,
    RecordingActions,
    Replica,
    entity,
    model_with,
    run_qt,
)


def dialog_for(qtbot: QtBot) -> tuple[NewProposalDialog, RecordingActions, Replica]:
    replica = Replica(entity((50, 30, 20), 67))
    model = model_with(replica.state)
    actions = RecordingActions()
    dialog = NewProposalDialog(model, actions, model.entities[(IDS[ME], replica.state.entity_id)])
    qtbot.addWidget(dialog)
    return dialog, actions, replica


def test_one_editor_per_action(qtbot: QtBot) -> None:
    dialog, _, _ = dialog_for(qtbot)
    assert dialog.kind.count() == len(EDITORS) == 8  # 5 governance, 3 channel actions
    assert set(dialog.editors) == {
        "add_signer",
        "remove_signer",
        "set_shares",
        "set_threshold",
        "set_proposer",
        "open_channel",
        "set_credit",
        "add_collateral",
    }
    # The proposer cannot be removed: it is not offered.
    remove = dialog.set_kind("remove_signer")
    assert remove.member.count() == 2  # type: ignore[attr-defined]


def test_the_keyboard_goes_from_the_action_through_its_fields(qtbot: QtBot) -> None:
    """Opened, the dialog's focus is on the action (not on OK, before the form); Tab
    goes on to the action's fields in order, then the expiry."""
    dialog, _, _ = dialog_for(qtbot)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.focusWidget() is dialog.kind
    editor = dialog.editors["add_signer"]
    order = []
    for _ in range(4):
        dialog.focusNextChild()
        order.append(dialog.focusWidget())
    assert order == [editor.card, editor.shares, editor.threshold, dialog.expires]  # type: ignore[attr-defined]


def test_errors_are_shown_under_their_fields(qtbot: QtBot) -> None:
    dialog, actions, _ = dialog_for(qtbot)
    editor = dialog.set_kind("set_threshold")
    editor.threshold.setText("40")  # type: ignore[attr-defined]
    dialog.ok_button.click()
    assert "51 .. 100" in editor.errors["threshold"].text()
    assert not editor.errors["threshold"].isHidden()
    assert dialog.status.error is not None
    add = dialog.set_kind("add_signer")
    add.card.setText("xln-signer:zz:11")  # type: ignore[attr-defined]
    dialog.ok_button.click()
    assert "hexadecimal" in add.errors["card"].text()
    assert actions.calls == []
    dialog.grab().save("/tmp/compose_dialog.png")


def test_valid_proposal_is_sent_and_expiry_checked(qtbot: QtBot) -> None:
    dialog, actions, replica = dialog_for(qtbot)
    add = dialog.set_kind("add_signer")
    add.card.setText(SignerCard(PKS[3], POPS[3]).encode())  # type: ignore[attr-defined]
    add.shares.setText("10")  # type: ignore[attr-defined]
    dialog.expires.setText("0")
    dialog.ok_button.click()
    assert "expiry height" in dialog.errors["expires_at"].text()
    dialog.expires.setText("40")

    async def scenario() -> None:
        dialog.ok_button.click()
        await dialog.runner.wait_idle()

    run_qt(scenario())
    assert actions.calls == [
        ("propose", IDS[ME], replica.state.entity_id, AddSigner(PKS[3], POPS[3], 10), 40)
    ]


def test_vote_dialog_refuses_a_second_vote(qtbot: QtBot) -> None:
    replica = Replica(entity((50, 30, 20), 67))
    replica.propose(ME, SetThreshold(75))
    model = model_with(replica.state)
    actions = RecordingActions()
    dialog = VoteDialog(model, actions, model.entities[(IDS[ME], replica.state.entity_id)], 1)
    qtbot.addWidget(dialog)
    dialog.ok_button.click()
    assert "already voted" in dialog.errors["proposal_id"].text()
    assert actions.calls == []


class Window(QWidget):
    """The main window's part here: its ``unlock``, counted."""

    def __init__(self) -> None:
        super().__init__()
        self.unlocks = 0

    def unlock(self) -> None:
        self.unlocks += 1


def test_a_locked_wallet_offers_unlock_beside_the_error(qtbot: QtBot) -> None:
    window = Window()
    qtbot.addWidget(window)
    replica = Replica(entity((50, 30, 20), 67))
    model = model_with(replica.state)
    actions = RecordingActions(locked=True)
    entry = model.entities[(IDS[ME], replica.state.entity_id)]
    dialog = NewProposalDialog(model, actions, entry, window)
    editor = dialog.set_kind("set_threshold")
    editor.threshold.setText("75")  # type: ignore[attr-defined]
    assert dialog.unlock_button.isHidden()

    async def submit() -> None:
        dialog.ok_button.click()
        await dialog.runner.wait_idle()

    run_qt(submit())
    assert dialog.status.error == "the wallet is locked: unlock it to sign"
    assert not dialog.unlock_button.isHidden()
    dialog.unlock_button.click()
    assert window.unlocks == 1
    actions.locked = False  # the person unlocked; OK again
    run_qt(submit())
    assert dialog.unlock_button.isHidden()
    assert actions.calls[-1] == (
        "propose",
        IDS[ME],
        replica.state.entity_id,
        SetThreshold(75),
        dialog_expiry(dialog),
    )


def dialog_expiry(dialog: NewProposalDialog) -> int:
    return int(dialog.expires.text())
