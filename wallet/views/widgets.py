"""Small widgets and helpers the content views share: a copyable hash, a status
line with a busy indicator, the runner that schedules a user's action on the loop,
and how a signer id is named on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from wallet.flows.effects import short
from wallet.model import Slots, WalletModel
from wallet.qt import (
    QFont,
    QFontDatabase,
    QFrame,
    QGuiApplication,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    Qt,
    QTimer,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


def column_width(view: QWidget, widest: str) -> int:
    """A table column's width that fits ``widest`` (and its header) in ``view``'s font,
    with the cell's padding."""
    return view.fontMetrics().horizontalAdvance(widest) + 24


def plural(n: int, word: str) -> str:
    """``1 signer``, ``3 signers``, ``1,024 shares``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def short_hex(data: bytes) -> str:
    """``0x9f3c12…e1ab`` (``flows.effects.short``, the one form of ids on screen)."""
    return short(data)


def mono_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def own_signers(model: WalletModel) -> set[bytes]:
    return {signer for signer, _ in model.entities}


def signer_names(model: WalletModel) -> dict[bytes, str]:
    """Names for signer ids on screen: the user's own signers are "you", co-signers
    the names the person gave them (``model.contacts``)."""
    mine = sorted(own_signers(model))
    if len(mine) == 1:
        return {**model.contacts, mine[0]: "you"}
    return {**model.contacts, **{sid: f"you ({short(sid)})" for sid in mine}}


def name(names: dict[bytes, str], sid: bytes) -> str:
    return names.get(sid) or short(sid)


def follow(widget: QWidget, links: Sequence[tuple[Slots[Any], Callable[..., None]]]) -> None:
    """Connect each (signal, slot) of the model, and disconnect them when ``widget``
    is destroyed (the model outlives its views)."""
    for signal, slot in links:
        signal.connect(slot)

    def detach() -> None:  # a closure: the widget's Python wrapper may be gone by then
        for signal, slot in links:
            signal.disconnect(slot)

    widget.destroyed.connect(detach)


def scrolled_page(page: QWidget, top: QHBoxLayout, status: QWidget) -> QVBoxLayout:
    """The common page: a row of controls, a scrolling body, a status line; returns
    the body's layout."""
    body = QWidget()
    body_layout = QVBoxLayout(body)
    body_layout.setSpacing(8)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(body)
    layout = QVBoxLayout(page)
    layout.setContentsMargins(12, 8, 12, 8)
    layout.addLayout(top)
    layout.addWidget(scroll, 1)
    layout.addWidget(status)
    return body_layout


def set_role(label: QLabel, role: str) -> None:
    """Style a label by its role in the theme's style sheet (muted, error, ok, ...)."""
    label.setStyleSheet("")
    label.setProperty("role", role)
    label.style().unpolish(label)
    label.style().polish(label)


def grouped_hex(value: bytes) -> str:
    """``0x`` and the hex in groups of eight, for checking a hash out of band."""
    digits = value.hex()
    return "0x " + " ".join(digits[i : i + 8] for i in range(0, len(digits), 8))


def caption(text: str) -> QLabel:
    """A small, quiet section heading."""
    label = QLabel(text.upper())
    label.setProperty("role", "caption")
    font = label.font()
    font.setPointSizeF(max(font.pointSizeF() * 0.85, 7.0))
    font.setBold(True)
    font.setLetterSpacing(QFont.SpacingType.PercentageSpacing, 108)
    label.setFont(font)
    return label


def hline() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.HLine)
    line.setFrameShadow(QFrame.Shadow.Plain)
    line.setStyleSheet("color: palette(midlight);")
    return line


class CopyableHash(QWidget):
    """A hash or id, shortened, with a button that copies the whole value as 0x-hex."""

    def __init__(
        self, value: bytes = b"", parent: QWidget | None = None, full: bool = False
    ) -> None:
        super().__init__(parent)
        self._value = value
        self._full = full
        self.label = QLabel()
        self.label.setFont(mono_font())
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.button = QToolButton()
        self.button.setText("Copy")
        self.button.setAutoRaise(True)
        self.button.setToolTip("Copy the whole value")
        self.button.clicked.connect(self.copy)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        if full:  # the whole value, in groups that wrap and are easy to read aloud
            self.label.setWordWrap(True)
            layout.addWidget(self.label, 1)
            layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignTop)
        else:
            layout.addWidget(self.label)
            layout.addWidget(self.button)
            layout.addStretch(1)
        self._revert = QTimer(self)
        self._revert.setSingleShot(True)
        self._revert.setInterval(1200)
        self._revert.timeout.connect(lambda: self.button.setText("Copy"))
        self.set_value(value)

    @property
    def value(self) -> bytes:
        return self._value

    def set_value(self, value: bytes) -> None:
        self._value = value
        self.label.setText(grouped_hex(value) if self._full else short_hex(value))
        self.label.setToolTip(hex0x(value))
        self.button.setEnabled(bool(value))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(hex0x(self._value))
        self.button.setText("Copied")
        self._revert.start()


class StatusLine(QWidget):
    """One line under a form: a busy indicator while an action runs, then its outcome."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # indeterminate
        self.progress.setFixedWidth(60)
        self.progress.setFixedHeight(8)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addWidget(self.label, 1)
        self.error: str | None = None

    def busy(self, text: str) -> None:
        self.error = None
        self.progress.show()
        set_role(self.label, "muted")
        self.label.setText(text)

    def done(self, text: str = "") -> None:
        self.error = None
        self.progress.hide()
        set_role(self.label, "muted")
        self.label.setText(text)

    def fail(self, text: str) -> None:
        self.error = text
        self.progress.hide()
        set_role(self.label, "error")
        self.label.setText(text)

    @property
    def text(self) -> str:
        return self.label.text()

    @property
    def is_busy(self) -> bool:
        return not self.progress.isHidden()


class TaskRunner:
    """Runs a user's action (a coroutine of ``WalletActions``) as a task on the loop.

    While it runs, the given widgets are disabled and the status line shows
    progress; when it ends the status shows the outcome, or the error's message.
    The window never waits on it.
    """

    def __init__(self, status: StatusLine) -> None:
        self.status = status
        self.tasks: set[asyncio.Task[Any]] = set()

    def run[T](
        self,
        coro: Coroutine[Any, Any, T],
        *,
        disable: Sequence[QWidget] = (),
        busy: str = "Working\u2026",
        done: str = "",
        on_result: Callable[[T], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> asyncio.Task[T]:
        for w in disable:
            w.setEnabled(False)
        self.status.busy(busy)
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)

        def finished(t: asyncio.Task[T]) -> None:
            self.tasks.discard(t)
            for w in disable:
                with contextlib.suppress(RuntimeError):  # the widget was deleted meanwhile
                    w.setEnabled(True)
            if t.cancelled():
                self.status.done("Cancelled")
            elif (exc := t.exception()) is not None:
                log.info("action failed: %s", exc)
                self.status.fail(str(exc) or type(exc).__name__)
            else:
                self.status.done(done)
                if on_result is not None:
                    on_result(t.result())
            if after is not None:
                after()

        task.add_done_callback(finished)
        return task

    @property
    def running(self) -> bool:
        return bool(self.tasks)

    async def wait_idle(self) -> None:
        """Until every action started so far has finished (its outcome shown)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))
            await asyncio.sleep(0)  # let the done callbacks run
