"""The live chart of the status area: recent tick lateness and frame finality,
drawn with QPainter from ``WalletModel.tick_lateness_ms`` and ``finality_ms``.

Repaints are throttled: a metrics change only marks the chart dirty, and a timer
repaints at most :data:`FPS` times a second, so a busy node cannot flood the GUI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import median

from wallet.model import WalletModel
from wallet.qt import QColor, QPainter, QPaintEvent, QPen, QPointF, QSize, Qt, QTimer, QWidget
from wallet.views import theme
from wallet.views.widgets import follow

FPS = 4
WINDOW_S = 60.0  # the chart shows this many recent seconds
FLOOR_MS = 50.0  # the y axis is at least this tall, so noise stays flat


@dataclass(frozen=True, slots=True)
class ChartStats:
    lateness_ms: float | None  # the latest tick's lateness
    finality_p50_ms: float | None  # median over the window


def stats(model: WalletModel) -> ChartStats:
    late = model.tick_lateness_ms[-1][1] if model.tick_lateness_ms else None
    recent = _window(model.finality_ms)
    return ChartStats(late, median(v for _, v in recent) if recent else None)


def _window(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    pts = list(points)
    if not pts:
        return []
    start = pts[-1][0] - WINDOW_S
    return [p for p in pts if p[0] >= start]


class LiveChart(QWidget):
    """Two sparklines over the last minute: lateness (line) and finality (dots)."""

    def __init__(self, model: WalletModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.dirty = False
        self.paints = 0  # how often it really repainted
        self.painted: list[Callable[[], None]] = []  # called after each repaint
        self.setToolTip("tick lateness (line) and frame finality (dots), last 60 s")
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // FPS)
        self._timer.timeout.connect(self._flush)
        self._timer.start()
        follow(self, [(model.metrics_changed, self._mark)])

    def sizeHint(self) -> QSize:
        return QSize(160, 22)

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
        r = self.rect().adjusted(1, 2, -1, -2)
        p.setPen(QPen(QColor(c.border), 1))
        p.drawLine(r.bottomLeft(), r.bottomRight())
        late = _window(self.model.tick_lateness_ms)
        fin = _window(self.model.finality_ms)
        if not late and not fin:
            p.end()
            return
        end = max(pt[-1][0] for pt in (late, fin) if pt)
        top = max(FLOOR_MS, *(v for _, v in late), *(v for _, v in fin))

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
