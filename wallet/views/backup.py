"""Settings' backups: Back up now, Restore from a backup, the schedule, the last
backup's time, and the entities only this computer holds (thin Qt over
:mod:`wallet.flows.backup`; the service does the work). Each action asks for the
wallet password in an :class:`~wallet.views.unlock.UnlockDialog`, whose progress
bar shows while the KDF runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

from wallet import backup as backup_fmt
from wallet.flows.backup import RestoreReport
from wallet.flows.effects import short
from wallet.qt import (
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from wallet.settings import BACKUP_SCHEDULES, Settings
from wallet.views.unlock import UnlockDialog


class BackupActions(Protocol):
    """What the box asks of the wallet (``WalletService``)."""

    settings: Settings

    async def back_up(self, path: Path | None = None, password: str | None = None) -> Path: ...

    async def restore_backup(self, raw: bytes, password: str) -> RestoreReport: ...

    def backup_folder(self) -> Path: ...

    def only_here(self) -> dict[bytes, str]: ...


def last_backup_text(last: int) -> str:
    if not last:
        return "No backup made here yet."
    return "Last backup: " + time.strftime("%Y-%m-%d %H:%M", time.localtime(last))


def report_text(report: RestoreReport) -> str:
    """What a restore into the running wallet did, in a few lines."""
    parts = [f"Restored the signing record of {len(report.signers)} signer(s)."]
    if report.files:
        parts.append("Files restored: " + ", ".join(report.files) + ".")
    if report.kept:
        parts.append("Kept this folder's own " + ", ".join(report.kept) + ".")
    if report.replayed:
        parts.append(f"Rebuilt {len(report.replayed)} entity(ies) held only here.")
    if report.missing:
        parts.append(
            "Not keys of this wallet: " + ", ".join(short(s) for s in report.missing) + "."
        )
    parts.extend(report.notes)
    return " ".join(parts)


class BackupBox(QWidget):
    """``result`` shows what was done."""

    def __init__(self, actions: BackupActions, result: QLabel, parent: QWidget | None = None):
        super().__init__(parent)
        self.wallet = actions
        self.result = result
        self.dialog: QDialog | None = None
        self.schedule = QComboBox()
        self.schedule.addItems(list(BACKUP_SCHEDULES))
        self.schedule.setCurrentText(actions.settings.backup_schedule)
        self.schedule.setToolTip(
            "A scheduled backup is made while the wallet is unlocked, after a first "
            "Back up now, into the backup folder"
        )
        self.last = QLabel(last_backup_text(actions.settings.last_backup))
        self.last.setProperty("role", "muted")
        self.back_up_button = QPushButton("Back up now…")
        self.back_up_button.clicked.connect(self.choose_backup_file)
        self.restore_button = QPushButton("Restore from a backup…")
        self.restore_button.clicked.connect(self.choose_restore_file)
        self.only_here = QLabel()
        self.only_here.setObjectName("onlyHereLines")
        self.only_here.setWordWrap(True)
        self.only_here.setProperty("role", "warning")
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Schedule"))
        row.addWidget(self.schedule)
        row.addWidget(self.last, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.back_up_button)
        buttons.addWidget(self.restore_button)
        buttons.addStretch(1)
        col.addLayout(row)
        col.addLayout(buttons)
        col.addWidget(self.only_here)
        self.refresh()

    def refresh(self) -> None:
        lines = self.wallet.only_here()
        self.only_here.setText("\n".join(f"\u26a0 {line}" for line in lines.values()))
        self.only_here.setVisible(bool(lines))
        self.last.setText(last_backup_text(self.wallet.settings.last_backup))

    def choose_backup_file(self) -> None:
        folder = self.wallet.backup_folder()
        default = folder / backup_fmt.file_name(int(time.time()))
        name, _ = QFileDialog.getSaveFileName(
            self, "Back up the wallet's data folder", str(default), "XLN backups (*.json)"
        )
        if name:
            self.back_up_to(Path(name))

    def back_up_to(self, path: Path) -> UnlockDialog:
        done: list[Path] = []

        async def attempt(password: str) -> None:
            done.append(await self.wallet.back_up(path, password))

        dialog = UnlockDialog(
            attempt,
            title="Back up the wallet",
            text=(
                f"Enter your wallet password: the backup {path.name} opens with it "
                "(the password at the time of the backup)."
            ),
            action="Back up",
            quit_label="Cancel",
            busy_text="Reading the node and encrypting the backup…",
            parent=self,
        )
        dialog.unlocked.connect(lambda: self._done(f"Backed up to {done[-1]}."))
        return self._open(dialog)

    def choose_restore_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Restore from a backup", str(self.wallet.backup_folder()), "XLN backups (*.json)"
        )
        if name:
            self.restore_from(Path(name))

    def restore_from(self, path: Path) -> UnlockDialog:
        reports: list[RestoreReport] = []

        async def attempt(password: str) -> None:
            raw = await asyncio.to_thread(backup_fmt.load, path)
            reports.append(await self.wallet.restore_backup(raw, password))

        dialog = UnlockDialog(
            attempt,
            title="Restore from a backup",
            text=f"Enter the wallet password the backup {path.name} was made under.",
            action="Restore",
            quit_label="Cancel",
            busy_text="Opening the backup and restoring…",
            parent=self,
        )
        dialog.unlocked.connect(lambda: self._done(report_text(reports[-1])))
        return self._open(dialog)

    def _open(self, dialog: UnlockDialog) -> UnlockDialog:
        self.dialog = dialog
        dialog.open()
        return dialog

    def _done(self, text: str) -> None:
        self.result.setText(text)
        self.refresh()
