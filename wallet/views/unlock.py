"""The unlock dialog: the wallet password, with a progress bar while the KDF runs
off the GUI thread, a clear error on a wrong password, and a Quit button.

The dialog does not know how to unlock: the app gives it ``attempt``, a
coroutine that raises ``WrongPassword`` (or another error with a message fit for
the user) and runs the slow part in an executor. ``unlocked`` fires once it
succeeds; ``quit_requested`` when the user picks Quit (at start) or Cancel.
The same dialog asks for the password before the app stores a new node token,
and before Settings changes the password, shows a recovery phrase or exports a
key; ``extras`` adds hidden-text fields (a new password and its copy), whose
values ``attempt`` gets after the password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from wallet.keys.vault import WrongPassword
from wallet.qt import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from wallet.views import theme

Attempt = Callable[..., Awaitable[None]]  # (password, *extras)


class UnlockDialog(QDialog):
    unlocked = Signal()
    quit_requested = Signal()

    def __init__(
        self,
        attempt: Attempt,
        *,
        title: str = "Unlock the wallet",
        text: str = "Enter your wallet password to unlock your signer keys.",
        action: str = "Unlock",
        quit_label: str = "Quit",
        extras: Sequence[str] = (),
        busy_text: str = "Decrypting your keys…",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._attempt = attempt
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self.setWindowTitle(f"XLN Signer · {title}")
        self.setWindowIcon(theme.app_icon())
        self.setObjectName("Page")
        self.setMinimumWidth(420)

        icon = QLabel()
        icon.setPixmap(theme.icon("lock", size=24).pixmap(24, 24))
        heading = QLabel(title)
        heading.setProperty("role", "title")
        explain = QLabel(text)
        explain.setWordWrap(True)
        explain.setProperty("role", "muted")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("Wallet password")
        self.extra_fields: list[QLineEdit] = []
        for placeholder in extras:
            field = QLineEdit()
            field.setEchoMode(QLineEdit.EchoMode.Password)
            field.setPlaceholderText(placeholder)
            self.extra_fields.append(field)
        self.error = QLabel("")
        self.error.setProperty("role", "error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy: the KDF gives no progress of its own
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(6)
        self.progress.hide()
        self.busy_text = QLabel(busy_text)
        self.busy_text.setProperty("role", "muted")
        self.busy_text.hide()
        # Enter clicks the default button, Unlock, and only it: not also a handler on
        # the field (the attempt disables the field, focus moved to Quit, and the same
        # Enter clicked Quit). Quit is never an auto-default button; while Unlock is
        # disabled, Enter does nothing.
        self.quit_button = QPushButton(quit_label)
        self.quit_button.setAutoDefault(False)
        self.quit_button.clicked.connect(self._quit)
        self.unlock_button = QPushButton(action)
        self.unlock_button.setProperty("primary", True)
        self.unlock_button.setDefault(True)
        self.unlock_button.clicked.connect(self.submit)

        top = QHBoxLayout()
        top.setSpacing(10)
        top.addWidget(icon)
        top.addWidget(heading, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.busy_text)
        buttons.addStretch(1)
        buttons.addWidget(self.quit_button)
        buttons.addWidget(self.unlock_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(20, 18, 20, 16)
        col.setSpacing(10)
        col.addLayout(top)
        col.addWidget(explain)
        col.addSpacing(4)
        col.addWidget(self.password)
        for field in self.extra_fields:
            col.addWidget(field)
        col.addWidget(self.error)
        col.addWidget(self.progress)
        col.addLayout(buttons)

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def settled(self) -> None:
        """Wait for the attempt under way, if any, to end (either way)."""
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def submit(self) -> None:
        """Try the typed password (off the GUI thread, through ``attempt``)."""
        if self.busy or self._done:
            return
        password = self.password.text()
        if not password:
            self._fail("Enter your password.")
            return
        self._set_busy(True)
        extras = [field.text() for field in self.extra_fields]
        self._task = asyncio.ensure_future(self._run(password, extras))

    async def _run(self, password: str, extras: list[str]) -> None:
        try:
            await self._attempt(password, *extras)
        except WrongPassword:
            self._fail("Wrong password. The wallet stays locked.")
            return
        except Exception as exc:  # shown to the user; the app logs the details
            self._fail(str(exc) or type(exc).__name__)
            return
        finally:
            del password, extras
        self._done = True
        self._set_busy(False)
        self._clear()
        self.accept()
        self.unlocked.emit()

    def _fail(self, message: str) -> None:
        self._set_busy(False)
        self.error.setText(message)
        self.error.show()
        self.password.selectAll()
        self.password.setFocus()

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.busy_text.setVisible(busy)
        if busy:
            self.error.hide()
        for field in (self.password, *self.extra_fields):
            field.setEnabled(not busy)
        self.unlock_button.setEnabled(not busy)

    def _clear(self) -> None:
        for field in (self.password, *self.extra_fields):
            field.clear()

    def _quit(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._done = True
        self._clear()
        self.reject()
        self.quit_requested.emit()

    def reject(self) -> None:  # Escape: the same as the Quit/Cancel button
        if not self._done:
            self._done = True
            self._clear()
            super().reject()
            self.quit_requested.emit()
            return
        super().reject()
