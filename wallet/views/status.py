"""The status area at the foot of the main window: the node connection
(connected / connecting / disconnected, embedded or remote, height, tick), the
accountant, the lock with its button, and the live chart with its figures.

It only reads ``WalletModel``; the lock button emits ``lock_requested`` or
``unlock_requested`` and the window decides what that means.
"""

from __future__ import annotations

from wallet.model import Connection, Link, WalletModel
from wallet.qt import (
    QColor,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPainter,
    QPaintEvent,
    QSize,
    Qt,
    QToolButton,
    QWidget,
    Signal,
)
from wallet.views import theme
from wallet.views.chart import ChartWindow, LiveChart, stats
from wallet.views.widgets import follow, set_role

LOCKED_TEXT = "Locked: signs nothing"  # short: the status bar is shared; the tooltip says more
UNLOCKED_TEXT = "Unlocked"


def connection_text(c: Connection) -> str:
    """The connection in one line: ``connected · embedded node · height 18233 · tick 100 ms``."""
    where = "embedded node" if c.mode == "embedded" else f"remote {c.url}".strip()
    parts = [c.link.value, where]
    if c.link is Link.CONNECTED:
        parts += [f"height {c.height:,}", f"tick {c.tick_ms} ms"]
    elif c.error:
        parts.append(c.error)
    return " · ".join(parts)


def metrics_text(model: WalletModel) -> str:
    s = stats(model)
    late = "\u2013" if s.lateness_ms is None else f"{s.lateness_ms:.0f} ms"
    fin = "\u2013" if s.finality_p50_ms is None else f"{s.finality_p50_ms:.0f} ms"
    return f"late {late} · p50 finality {fin}"


class Dot(QWidget):
    """A small filled circle in the colour of the link state."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.link = Link.DISCONNECTED
        self.setFixedSize(QSize(10, 10))

    def set_link(self, link: Link) -> None:
        self.link = link
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        c = theme.colors()
        color = {Link.CONNECTED: c.ok, Link.CONNECTING: c.warn, Link.DISCONNECTED: c.err}
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(color[self.link]))
        p.drawEllipse(1, 1, 8, 8)
        p.end()


def _sep() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.VLine)
    line.setFixedHeight(14)
    line.setStyleSheet("color: palette(mid);")
    return line


class StatusArea(QFrame):
    lock_requested = Signal()
    unlock_requested = Signal()

    def __init__(self, model: WalletModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("StatusArea")
        self.model = model
        self.dot = Dot()
        self.connection = QLabel()
        self.connection.setProperty("strong", True)
        self.accountant = QLabel()
        self.locked = QLabel()
        self.lock_button = QToolButton()
        self.lock_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.lock_button.clicked.connect(self._lock_clicked)
        self.chart = LiveChart(model)
        self.chart.setFixedWidth(160)
        self.chart.clicked.connect(self.open_chart)
        self.chart_window: ChartWindow | None = None
        self.metrics = QLabel()
        self.metrics.setMinimumWidth(190)

        row = QHBoxLayout(self)
        row.setContentsMargins(12, 4, 8, 4)
        row.setSpacing(10)
        row.addWidget(self.dot)
        row.addWidget(self.connection)
        row.addStretch(1)
        row.addWidget(self.chart)
        row.addWidget(self.metrics)
        row.addWidget(_sep())
        row.addWidget(self.accountant)
        row.addWidget(_sep())
        row.addWidget(self.locked)
        row.addWidget(self.lock_button)

        follow(
            self,
            [
                (model.connection_changed, self.refresh),
                (model.lock_changed, self.refresh),
                (model.accountant_changed, self.refresh),
                (model.metrics_changed, self._metrics),
            ],
        )
        theme.follow_theme(self, self.refresh)
        self.refresh()

    def open_chart(self) -> ChartWindow:
        """The chart with axes and figures, in its own window (one at a time)."""
        if self.chart_window is None:
            self.chart_window = ChartWindow(self.model, self)
        self.chart_window.show()
        self.chart_window.raise_()
        return self.chart_window

    def refresh(self) -> None:
        m = self.model
        self.dot.set_link(m.connection.link)
        self.connection.setText(connection_text(m.connection))
        self.connection.setToolTip(m.connection.error or m.connection.url or "embedded node")
        self.accountant.setText(f"accountant {'ON' if m.accountant_on else 'OFF'}")
        self.locked.setText(LOCKED_TEXT if m.locked else UNLOCKED_TEXT)
        self.locked.setToolTip(
            "Your keys are not in memory: nothing is signed, and approvals wait, until you unlock"
            if m.locked
            else "Your keys are in memory: approved frames are signed"
        )
        set_role(self.locked, "error" if m.locked else "")
        self.lock_button.setText("Unlock" if m.locked else "Lock")
        self.lock_button.setIcon(theme.icon("unlock" if m.locked else "lock", size=16))
        self.lock_button.setToolTip("Unlock the keys" if m.locked else "Lock the keys (Ctrl+L)")
        self._metrics()

    def _metrics(self) -> None:
        self.metrics.setText(metrics_text(self.model))

    def _lock_clicked(self) -> None:
        if self.model.locked:
            self.unlock_requested.emit()
        else:
            self.lock_requested.emit()
