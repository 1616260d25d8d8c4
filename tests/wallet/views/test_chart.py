"""The live chart: its stats (latest lateness, median finality over the window),
painting with and without points in both themes, and throttled repaints."""

from __future__ import annotations

import asyncio

from pytestqt.qtbot import QtBot

from wallet.model import WalletModel
from wallet.qt import QApplication, QImage, Qt
from wallet.views import theme
from wallet.views.chart import WINDOW_S, LiveChart, axis_ticks, describe, percentile, stats
from wallet.views.status import StatusArea


def test_stats_of_an_empty_model() -> None:
    s = stats(WalletModel())
    assert s.lateness_ms is None
    assert s.finality_p50_ms is None


def test_stats_use_the_latest_lateness_and_the_window_median() -> None:
    model = WalletModel()
    model.tick_lateness_ms.extend([(0.0, 9.0), (1.0, 3.0)])
    # one old point outside the window, then three recent ones
    model.finality_ms.extend([(0.0, 5000.0), (WINDOW_S + 10, 100.0), (WINDOW_S + 11, 300.0),
                              (WINDOW_S + 12, 200.0)])  # fmt: skip
    s = stats(model)
    assert s.lateness_ms == 3.0
    assert s.finality_p50_ms == 200.0


def render(chart: LiveChart) -> QImage:
    chart.resize(200, 30)
    image = QImage(chart.size(), QImage.Format.Format_ARGB32)
    image.fill(0)
    chart.render(image)
    return image


def colours(image: QImage) -> set[int]:
    return {image.pixel(x, y) for x in range(image.width()) for y in range(image.height())}


def test_chart_paints_its_series_in_each_theme(qtbot: QtBot) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    for name in ("light", "dark"):
        theme.apply(app, name)
        model = WalletModel()
        chart = LiveChart(model)
        qtbot.addWidget(chart)
        empty = colours(render(chart))
        for i in range(120):
            model.tick_lateness_ms.append((i / 2, float(i % 9)))
            model.finality_ms.append((i / 2, 150.0 + i % 40))
        drawn = colours(render(chart))
        assert len(drawn) > len(empty), f"{name}: the series are drawn"
    theme.apply(app, "light")


def is_dirty(chart: LiveChart) -> bool:
    return chart.dirty


async def test_repaints_are_throttled(qtbot: QtBot) -> None:
    model = WalletModel()
    chart = LiveChart(model)
    qtbot.addWidget(chart)
    chart.show()
    painted = asyncio.Event()
    chart.painted.append(painted.set)
    async with asyncio.timeout(5):
        await painted.wait()  # the first paint, on show
    before = chart.paints
    painted.clear()
    for i in range(300):
        model.finality_ms.append((i / 10, 100.0))
        model.metrics_changed.emit()
    assert is_dirty(chart)
    async with asyncio.timeout(5):
        await painted.wait()
    assert not is_dirty(chart)
    assert chart.paints - before < 5


def test_axis_ticks_are_round_and_few() -> None:
    assert axis_ticks(50) == [0, 10, 20, 30, 40, 50]
    assert axis_ticks(73) == [0, 20, 40, 60]
    assert axis_ticks(1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert axis_ticks(2_400) == [0, 500, 1_000, 1_500, 2_000]
    assert axis_ticks(0) == [0.0]
    for top in (0.3, 7, 99, 101, 12_345):
        ticks = axis_ticks(top)
        assert 2 <= len(ticks) <= 6
        assert ticks[-1] <= top


def test_percentile_and_describe() -> None:
    assert percentile([], 0.99) is None
    assert percentile(range(1, 101), 0.99) == 99
    assert percentile([5.0], 0.5) == 5.0
    points = [(float(i), float(i % 10)) for i in range(60)]  # all within the window
    assert describe(points) == "median 4.5 ms · p99 9.0 ms"
    assert describe([]) == "no data"


def test_a_click_on_the_sparkline_opens_the_chart_with_axes(qtbot: QtBot) -> None:
    model = WalletModel()
    for i in range(120):
        model.tick_lateness_ms.append((i / 2, float(i % 9)))
        model.finality_ms.append((i / 2, 150.0 + i % 40))
    status = StatusArea(model)
    qtbot.addWidget(status)
    status.show()
    qtbot.mouseClick(status.chart, Qt.MouseButton.LeftButton)  # type: ignore[no-untyped-call]
    window = status.chart_window
    assert window is not None
    assert window.isVisible()
    assert window.chart.axes
    window.grab().save("/tmp/chart_window.png")  # paints it
    assert window.chart.ticks == [0, 50, 100, 150]  # up to the largest value, 189 ms
    text = window.legend.text()
    assert "tick lateness" in text
    assert "median 4.0 ms" in text
    assert "finality" in text
    assert status.open_chart() is window  # one window, raised again
