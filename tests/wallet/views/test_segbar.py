"""SegmentedBar: segment widths follow shares, fill follows votes, the threshold
marker sits at threshold/total, and each segment's tooltip names its signer."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from wallet.views.segbar import Segment, SegmentedBar, segments_for

from .content_helpers import IDS, config


def test_segments_for_follows_member_order_and_votes() -> None:
    c = config((50, 30, 20), 67)
    segs = segments_for(c, {IDS[1]}, lambda s: s.hex()[:4])
    assert [s.shares for s in segs] == [50, 30, 20]
    assert [s.filled for s in segs] == [False, True, False]
    assert segs[0].label == IDS[0].hex()[:4]


def test_widths_threshold_and_tooltips(qtbot: QtBot) -> None:
    bar = SegmentedBar()
    qtbot.addWidget(bar)
    bar.resize(401, 22)
    bar.set_segments(
        [Segment("alice", 50, True), Segment("bob", 30, False), Segment("carol", 20, True)], 67
    )
    rects = bar.segment_rects()
    widths = [r.width() + bar.GAP for r in rects]  # a gap after each segment
    assert widths == pytest.approx([200, 120, 80], abs=1)
    assert bar.threshold_x() == pytest.approx(0.5 + 400 * 0.67, abs=0.5)
    assert bar.filled_shares == 70
    assert bar.summary() == "70/67 shares"
    assert bar.segment_at(rects[1].center().x()) == 1
    assert bar.tooltip_for(1) == "bob: 30 of 100 shares (not yet)"
    assert bar.tooltip_for(0) == "alice: 50 of 100 shares (voted)"
    bar.show()
    bar.grab().save("/tmp/segbar.png")


def test_many_members_and_empty(qtbot: QtBot) -> None:
    bar = SegmentedBar()
    qtbot.addWidget(bar)
    bar.resize(300, 20)
    assert bar.segment_rects() == []
    bar.set_segments([Segment(str(i), 1, i % 2 == 0) for i in range(1024)], 513)
    rects = bar.segment_rects()
    assert len(rects) == 1024
    assert all(r.width() > 0 for r in rects)
    bar.grab()  # paints without error
