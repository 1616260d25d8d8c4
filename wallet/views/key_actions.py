"""Settings' key actions: change the wallet password, show a key's recovery
phrase, export a key as an EIP-2335 keystore. Each asks for the password in an
:class:`~wallet.views.unlock.UnlockDialog` (progress shown while the KDF runs);
the rules and the vault calls are in :mod:`wallet.flows.key_actions`.
"""

from __future__ import annotations

from pathlib import Path

from wallet.flows import key_actions
from wallet.flows.effects import short
from wallet.keys.vault import Vault
from wallet.qt import (
    QComboBox,
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    Qt,
    QVBoxLayout,
    QWidget,
)
from wallet.views.unlock import UnlockDialog


class PhraseDialog(QDialog):
    """A key's recovery phrase, numbered, until the person closes it."""

    def __init__(self, label: str, phrase: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"XLN Signer · Recovery phrase of {label}")
        self.setObjectName("Page")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setMinimumWidth(440)
        warn = QLabel(
            "Anyone who sees these words can sign as this key. Write them down, "
            "keep them offline, and close this window."
        )
        warn.setWordWrap(True)
        warn.setProperty("role", "warning")
        grid = QGridLayout()
        self.words: list[QLabel] = []
        for i, word in enumerate(phrase.split()):
            cell = QLabel(f"{i + 1}. {word}")
            cell.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(cell, i // 4, i % 4)
            self.words.append(cell)
        close = QPushButton("Close")
        close.setDefault(True)
        close.clicked.connect(self.accept)
        col = QVBoxLayout(self)
        col.addWidget(warn)
        col.addLayout(grid)
        col.addWidget(close, 0, Qt.AlignmentFlag.AlignRight)


class KeyActionsBox(QWidget):
    """A key chooser and the three actions; ``result`` shows what was done."""

    def __init__(self, vault: Vault, result: QLabel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vault = vault
        self.result = result
        self.dialog: QDialog | None = None  # the one open now
        self.key = QComboBox()
        infos = vault.keys()
        self._labels = {info.signer_id: info.label for info in infos}
        for info in infos:
            self.key.addItem(f"{info.label} ({short(info.signer_id)})", info.signer_id)
        self.change_button = QPushButton("Change password…")
        self.change_button.clicked.connect(self.change_password)
        self.phrase_button = QPushButton("Show recovery phrase…")
        self.phrase_button.clicked.connect(self.show_phrase)
        self.export_button = QPushButton("Export key…")
        self.export_button.clicked.connect(self.choose_export_file)
        has_keys = self.key.count() > 0
        self.phrase_button.setEnabled(has_keys)
        self.export_button.setEnabled(has_keys)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        password_row = QHBoxLayout()
        password_row.addWidget(self.change_button)
        password_row.addStretch(1)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.phrase_button)
        key_row.addWidget(self.export_button)
        col.addLayout(password_row)
        col.addLayout(key_row)

    def _selected(self) -> tuple[bytes, str]:
        signer_id: bytes = self.key.currentData()
        return signer_id, self._labels[signer_id]

    def _open(self, dialog: UnlockDialog, done: str) -> UnlockDialog:
        dialog.unlocked.connect(lambda: self.result.setText(done))
        self.dialog = dialog
        dialog.open()
        return dialog

    def change_password(self) -> UnlockDialog:
        async def attempt(old: str, new: str, again: str) -> None:
            await key_actions.change_password(self.vault, old, new, again)

        return self._open(
            UnlockDialog(
                attempt,
                title="Change the wallet password",
                text="Enter the current password, then the new one twice.",
                action="Change",
                quit_label="Cancel",
                extras=("New password", "New password again"),
                busy_text="Checking and re-encrypting…",
                parent=self,
            ),
            "Password changed.",
        )

    def show_phrase(self) -> UnlockDialog:
        signer_id, label = self._selected()
        shown: list[str] = []

        async def attempt(password: str) -> None:
            shown.append(await key_actions.recovery_phrase(self.vault, signer_id, password))

        def reveal() -> None:
            self.dialog = PhraseDialog(label, shown.pop(), self)
            self.dialog.open()

        dialog = UnlockDialog(
            attempt,
            title="Show the recovery phrase",
            text=f"Enter your wallet password to see the phrase of {label}.",
            action="Show",
            quit_label="Cancel",
            busy_text="Decrypting…",
            parent=self,
        )
        dialog.unlocked.connect(reveal)
        return self._open(dialog, "")

    def choose_export_file(self) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self, "Export the key as an EIP-2335 keystore", "", "Keystore (*.json)"
        )
        if name:
            self.export_to(Path(name))

    def export_to(self, path: Path) -> UnlockDialog:
        signer_id, label = self._selected()

        async def attempt(password: str, file_password: str, again: str) -> None:
            await key_actions.export_key(
                self.vault, signer_id, password, file_password, again, path
            )

        return self._open(
            UnlockDialog(
                attempt,
                title="Export the key",
                text=(
                    f"Enter your wallet password, then a password for the file {path.name} "
                    "(it opens in any EIP-2335 tool), twice."
                ),
                action="Export",
                quit_label="Cancel",
                extras=("Password for the file", "Password for the file again"),
                busy_text="Encrypting the file…",
                parent=self,
            ),
            f"Exported {label} to {path}.",
        )
