"""The live chart of the status area: recent tick lateness and frame finality,
drawn with QPainter from ``WalletModel.tick_lateness_ms`` and ``finality_ms``.

Repaints are throttled: a metrics change only marks the chart dirty, and a timer
repaints at most :data:`FPS` times a second, so a busy node cannot flood the GUI.

The status area shows it as a sparkline; a click opens :class:`ChartWindow`, the
same chart with axes (milliseconds, seconds ago), a legend, and the window's
median and 99th percentile of each series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import median

from wallet.model import WalletModel
from wallet.qt import (
    QColor,
    QDialog,
    QLabel,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from wallet.views import theme
from wallet.views.widgets import follow

FPS = 4
WINDOW_S = 60.0  # the chart shows this many recent seconds
FLOOR_MS = 50.0  # the y axis is at least this tall, so noise stays flat
AXES_MARGINS = (56, 10, -12, -26)  # room for the labels, with axes


@dataclass(frozen=True, slots=True)
class ChartStats:
    lateness_ms: float | None  # the latest tick's lateness
    finality_p50_ms: float | None  # median over the window


def stats(model: WalletModel) -> ChartStats:
    late = model.tick_lateness_ms[-1][1] if model.tick_lateness_ms else None
    recent = _window(model.finality_ms)
    return ChartStats(late, median(v for _, v in recent) if recent else None)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; None if there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n q), at least 1
    return ordered[int(rank) - 1]


def axis_ticks(top: float) -> list[float]:
    """Round values from 0 up to at most ``top``: steps of 1, 2 or 5 times a power of
    ten, at most five of them above 0."""
    if top <= 0:
        return [0.0]
    magnitude = 10 ** math.floor(math.log10(top))
    step = 10 * magnitude
    for m in (0.1, 0.2, 0.5, 1, 2, 5):
        if top / (m * magnitude) <= 5:
            step = m * magnitude
            break
    return [round(i * step, 12) for i in range(int(top / step + 1e-9) + 1)]


def describe(points: Iterable[tuple[float, float]]) -> str:
    """``median X ms · p99 Y ms`` of a series over the window, or ``no data``."""
    values = [v for _, v in _window(points)]
    if not values:
        return "no data"
    return f"median {median(values):.1f} ms · p99 {percentile(values, 0.99):.1f} ms"


def _window(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    pts = list(points)
    if not pts:
        return []
    start = pts[-1][0] - WINDOW_S
    return [p for p in pts if p[0] >= start]


class LiveChart(QWidget):
    """Two series over the last minute: lateness (line) and finality (dots); with
    ``axes``, their scales and labels too."""

    clicked = Signal()

    def __init__(
        self, model: WalletModel, parent: QWidget | None = None, *, axes: bool = False
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.axes = axes
        self.ticks: list[float] = []  # the y axis's labels at the last repaint
        self.dirty = False
        self.paints = 0  # how often it really repainted
        self.painted: list[Callable[[], None]] = []  # called after each repaint
        if not axes:
            self.setToolTip(
                "tick lateness (line) and frame finality (dots), last 60 s: click for more"
            )
            self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // FPS)
        self._timer.timeout.connect(self._flush)
        self._timer.start()
        follow(self, [(model.metrics_changed, self._mark)])

    def sizeHint(self) -> QSize:
        return QSize(560, 260) if self.axes else QSize(160, 22)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mousePressEvent(event)

    def _mark(self) -> None:
        self.dirty = True

    def _flush(self) -> None:
        if self.dirty:
            self.dirty = False
            self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        self.paints += 1
        self._draw()
        for listener in list(self.painted):
            listener()

    def _draw(self) -> None:
        c = theme.colors()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = self.rect().adjusted(*(AXES_MARGINS if self.axes else (1, 2, -1, -2)))
        p.setPen(QPen(QColor(c.border), 1))
        p.drawLine(r.bottomLeft(), r.bottomRight())
        late = _window(self.model.tick_lateness_ms)
        fin = _window(self.model.finality_ms)
        top = max([FLOOR_MS, *(v for _, v in late), *(v for _, v in fin)])
        if self.axes:
            self._draw_axes(p, r, top)
        if not late and not fin:
            p.end()
            return
        end = max(pt[-1][0] for pt in (late, fin) if pt)

        def at(t: float, v: float) -> QPointF:
            x = r.left() + r.width() * (1 - (end - t) / WINDOW_S)
            y = r.bottom() - (r.height() - 1) * min(v, top) / top
            return QPointF(x, y)

        if len(late) > 1:
            p.setPen(QPen(QColor(c.series1), 1.4))
            p.drawPolyline([at(t, v) for t, v in late])
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(c.series2))
        for t, v in fin:
            p.drawEllipse(at(t, v), 1.8, 1.8)
        p.end()

    def _draw_axes(self, p: QPainter, rect: QRect, top: float) -> None:
        """Milliseconds on the left (round values, grid lines), seconds ago below."""
        c = theme.colors()
        self.ticks = axis_ticks(top)
        for value in self.ticks:
            y = rect.bottom() - (rect.height() - 1) * value / top
            p.setPen(QPen(QColor(c.border), 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            p.setPen(QColor(c.muted))
            p.drawText(
                QRectF(0, y - 8, rect.left() - 6, 16),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                f"{value:g} ms",
            )
        for ago in (60, 45, 30, 15, 0):
            x = rect.left() + rect.width() * (1 - ago / WINDOW_S)
            p.setPen(QColor(c.muted))
            p.drawText(
                QRectF(x - 30, rect.bottom() + 4, 60, 16),
                Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                "now" if ago == 0 else f"-{ago} s",
            )


class ChartWindow(QDialog):
    """The chart at a readable size: axes, a legend and each series' figures."""

    def __init__(self, model: WalletModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("XLN Signer · Node timing, last 60 s")
        self.model = model
        self.chart = LiveChart(model, self, axes=True)
        self.chart.setMinimumSize(520, 240)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        col = QVBoxLayout(self)
        col.addWidget(self.chart, 1)
        col.addWidget(self.legend)
        self.chart.painted.append(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        c = theme.colors()
        self.legend.setText(
            f"<span style='color:{c.series1}'>━</span> tick lateness, how late each "
            f"block's tick ran: {describe(self.model.tick_lateness_ms)}<br>"
            f"<span style='color:{c.series2}'>●</span> finality, from a batch's "
            f"submission to its certified frame: {describe(self.model.finality_ms)}"
        )
