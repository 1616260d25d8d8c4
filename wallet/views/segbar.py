"""The segmented vote bar: one segment per signer, sized by shares, filled when that
signer voted (or signed), with a marker at the threshold.

``segments_for`` turns an entity config and a set of voters into plain data; the
widget only paints it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from node.machines.governance import Config
from wallet.qt import (
    QColor,
    QEvent,
    QHelpEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QRectF,
    QSize,
    QSizePolicy,
    QToolTip,
    QWidget,
)
from wallet.views.widgets import plural


@dataclass(frozen=True, slots=True)
class Segment:
    label: str  # who: a short signer name
    shares: int
    filled: bool  # voted / signed


def segments_for(
    config: Config, voted: Collection[bytes], name: Callable[[bytes], str]
) -> list[Segment]:
    """One segment per member, in member order (the certificate's slot order)."""
    return [Segment(name(m.id), m.shares, m.id in voted) for m in config.members]


class SegmentedBar(QWidget):
    """Paints segments proportional to shares; a tooltip names the segment under the mouse."""

    GAP = 2.0
    MARKER = 3.0  # how far the threshold marker reaches above and below the bar

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._segments: tuple[Segment, ...] = ()
        self._threshold = 0
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)

    def set_segments(self, segments: Sequence[Segment], threshold: int) -> None:
        self._segments = tuple(segments)
        self._threshold = threshold
        self.setAccessibleDescription(self.summary())
        self.update()

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._segments

    @property
    def threshold(self) -> int:
        return self._threshold

    @property
    def total(self) -> int:
        return sum(s.shares for s in self._segments)

    @property
    def filled_shares(self) -> int:
        return sum(s.shares for s in self._segments if s.filled)

    def summary(self) -> str:
        return f"{self.filled_shares}/{plural(self._threshold, 'share')}"

    def sizeHint(self) -> QSize:
        return QSize(240, 22)

    def minimumSizeHint(self) -> QSize:
        return QSize(60, 16)

    # Geometry --------------------------------------------------------------------

    def _bar(self) -> QRectF:
        m = self.MARKER
        return QRectF(0.5, m + 0.5, self.width() - 1.0, self.height() - 2 * m - 1.0)

    def segment_rects(self) -> list[QRectF]:
        """Each segment's rectangle, proportional to its shares (gaps between them)."""
        bar = self._bar()
        total = self.total
        if not total:
            return []
        rects: list[QRectF] = []
        seen = 0
        for s in self._segments:
            x0 = bar.left() + bar.width() * seen / total
            seen += s.shares
            x1 = bar.left() + bar.width() * seen / total
            gap = self.GAP if len(self._segments) > 1 and x1 - x0 > 2 * self.GAP else 0.0
            rects.append(QRectF(x0, bar.top(), max(x1 - x0 - gap, 0.5), bar.height()))
        return rects

    def threshold_x(self) -> float:
        bar = self._bar()
        total = self.total
        return bar.left() + bar.width() * min(self._threshold, total) / total if total else 0.0

    def segment_at(self, x: float) -> int | None:
        for i, r in enumerate(self.segment_rects()):
            if r.left() <= x <= r.right() + self.GAP:
                return i
        return None

    # Painting --------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fill = pal.color(pal.ColorRole.Highlight)
        empty = QColor(pal.color(pal.ColorRole.Mid))
        empty.setAlpha(70)
        edge = QColor(pal.color(pal.ColorRole.Mid))
        for s, r in zip(self._segments, self.segment_rects(), strict=True):
            painter.setPen(QPen(fill.darker(115) if s.filled else edge, 1))
            painter.setBrush(fill if s.filled else empty)
            radius = min(3.0, r.width() / 2)
            painter.drawRoundedRect(r, radius, radius)
        if self.total:
            x = self.threshold_x()
            painter.setPen(QPen(pal.color(pal.ColorRole.WindowText), 2))
            painter.drawLine(round(x), 0, round(x), self.height())
        painter.end()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            i = self.segment_at(event.pos().x())
            if i is None:
                QToolTip.hideText()
                event.ignore()
            else:
                QToolTip.showText(event.globalPos(), self.tooltip_for(i), self)
            return True
        return super().event(event)

    def tooltip_for(self, i: int) -> str:
        s = self._segments[i]
        state = "voted" if s.filled else "not yet"
        return f"{s.label}: {s.shares} of {self.total} shares ({state})"
