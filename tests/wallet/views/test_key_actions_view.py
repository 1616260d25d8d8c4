"""Settings' key actions as a person uses them (Qt offscreen, a real vault): the
password typed in the dialogs, Enter to confirm, the phrase shown, the file written."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from node.crypto import keystore
from wallet.keys.backends import choose_backend
from wallet.keys.vault import Vault
from wallet.qt import QLabel, Qt, QWidget
from wallet.views.key_actions import KeyActionsBox, PhraseDialog
from wallet.views.unlock import UnlockDialog

PASSWORD = "correct horse battery"  # noqa: S105 - test data
WORDS = " ".join(["abandon"] * 23 + ["art"])


pytestmark = pytest.mark.usefixtures("app_outlives_dialogs")


@pytest.fixture
def box(tmp_path: Path, qtbot: QtBot) -> KeyActionsBox:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    backend = choose_backend(data, prefer="file", service=f"xln-test-{secrets.token_hex(6)}")
    vault = Vault(data, backend, fast_kdf=True)
    vault.add_mnemonic(WORDS, PASSWORD, "main key")
    box = KeyActionsBox(vault, QLabel())
    qtbot.addWidget(box)
    box.show()
    return box


def type_into(qtbot: QtBot, widget: QWidget, text: str) -> None:
    qtbot.keyClicks(widget, text)  # type: ignore[no-untyped-call]


async def confirm(qtbot: QtBot, dialog: UnlockDialog, password: str, *extras: str) -> None:
    type_into(qtbot, dialog.password, password)
    for field, text in zip(dialog.extra_fields, extras, strict=True):
        type_into(qtbot, field, text)
    qtbot.keyClick(dialog.password, Qt.Key.Key_Return)  # type: ignore[no-untyped-call]
    await asyncio.wait_for(dialog.settled(), 30)


async def test_change_the_password(qtbot: QtBot, box: KeyActionsBox) -> None:
    dialog = box.change_password()
    assert len(dialog.extra_fields) == 2
    await confirm(qtbot, dialog, PASSWORD, "brand new pw", "brand new pX")
    assert "differ" in dialog.error.text()
    assert dialog.isVisible()
    for field in (dialog.password, *dialog.extra_fields):
        field.clear()
    await confirm(qtbot, dialog, PASSWORD, "brand new pw", "brand new pw")
    assert box.result.text() == "Password changed."
    assert not dialog.isVisible()
    box.vault.unlock("brand new pw")


async def test_show_the_phrase(qtbot: QtBot, box: KeyActionsBox) -> None:
    dialog = box.show_phrase()
    await confirm(qtbot, dialog, "wrong password")
    assert "Wrong password" in dialog.error.text()
    dialog.password.clear()
    await confirm(qtbot, dialog, PASSWORD)
    shown = box.dialog
    assert isinstance(shown, PhraseDialog)
    assert [w.text() for w in shown.words] == [
        f"{i + 1}. {word}" for i, word in enumerate(WORDS.split())
    ]
    shown.close()


async def test_export_the_key(qtbot: QtBot, box: KeyActionsBox, tmp_path: Path) -> None:
    path = tmp_path / "exported.json"
    dialog = box.export_to(path)
    await confirm(qtbot, dialog, PASSWORD, "file password", "file password")
    assert box.result.text() == f"Exported main key to {path}."
    info = box.vault.keys()[0]
    stored = keystore.load(path)
    assert stored["pubkey"] == info.pubkey.hex()
    assert len(keystore.decrypt(stored, "file password")) == 32
