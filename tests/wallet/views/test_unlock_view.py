"""The unlock dialog driven by keys, as a person types: Enter in the password field
tries the password (once), never Quit or Cancel, also while the attempt runs with
the field and the Unlock button disabled; Escape still quits."""

from __future__ import annotations

import asyncio

import pytest
from pytestqt.qtbot import QtBot

from wallet.keys.vault import WrongPassword
from wallet.qt import Qt, QWidget
from wallet.views.unlock import UnlockDialog

pytestmark = pytest.mark.usefixtures("app_outlives_dialogs")


def type_text(qtbot: QtBot, widget: QWidget, text: str) -> None:
    qtbot.keyClicks(widget, text)  # type: ignore[no-untyped-call]


def press(qtbot: QtBot, widget: QWidget, key: Qt.Key) -> None:
    qtbot.keyClick(widget, key)  # type: ignore[no-untyped-call]


class Attempts:
    def __init__(self) -> None:
        self.tried: list[str] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, password: str) -> None:
        self.tried.append(password)
        self.started.set()
        await self.release.wait()
        if password != "right":  # noqa: S105 (a test password)
            raise WrongPassword("wrong")


def dialog_with(
    qtbot: QtBot, attempts: Attempts, quit_label: str
) -> tuple[UnlockDialog, list[str]]:
    dialog = UnlockDialog(attempts, quit_label=quit_label)
    qtbot.addWidget(dialog)
    seen: list[str] = []
    dialog.unlocked.connect(lambda: seen.append("unlocked"))
    dialog.quit_requested.connect(lambda: seen.append("quit"))
    dialog.show()
    dialog.activateWindow()
    dialog.password.setFocus()
    return dialog, seen


async def test_enter_tries_the_password_and_never_quits(qtbot: QtBot) -> None:
    for quit_label in ("Quit", "Cancel"):  # at start-up, and Lock then Unlock
        attempts = Attempts()
        dialog, seen = dialog_with(qtbot, attempts, quit_label)
        type_text(qtbot, dialog.password, "wrong")
        press(qtbot, dialog.password, Qt.Key.Key_Return)
        assert dialog.busy
        await asyncio.wait_for(attempts.started.wait(), 10)
        assert attempts.tried == ["wrong"]
        # Enter again while the attempt runs (the field is disabled): nothing happens.
        focused = dialog.focusWidget() or dialog
        press(qtbot, focused, Qt.Key.Key_Return)
        assert seen == []
        assert dialog.isVisible()
        attempts.release.set()
        await dialog.settled()
        assert "Wrong password" in dialog.error.text()
        assert seen == []

        attempts.release.clear()
        attempts.started.clear()
        dialog.password.clear()
        type_text(qtbot, dialog.password, "right")
        press(qtbot, dialog.password, Qt.Key.Key_Enter)  # the keypad's Enter
        await asyncio.wait_for(attempts.started.wait(), 10)
        assert attempts.tried == ["wrong", "right"]
        attempts.release.set()
        await dialog.settled()
        assert seen == ["unlocked"]
        assert not dialog.isVisible()


async def test_escape_still_quits(qtbot: QtBot) -> None:
    dialog, seen = dialog_with(qtbot, Attempts(), "Quit")
    press(qtbot, dialog.password, Qt.Key.Key_Escape)
    assert seen == ["quit"]
    assert not dialog.isVisible()
