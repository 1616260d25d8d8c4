"""The Logs view: filter by level, source (with prefixes) and text; live lines."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from wallet.model import LogLine, WalletModel
from wallet.views.logs import LogFilter, LogsView, sources


def lines() -> list[LogLine]:
    return [
        LogLine(1_000, "DEBUG", "node.runtime", "tick 1"),
        LogLine(2_000, "INFO", "wallet.service", "connected to node"),
        LogLine(3_000, "WARNING", "wallet.agent", "request expired"),
        LogLine(4_000, "ERROR", "node.coordinator", "peer refused"),
    ]


def test_filter_rules() -> None:
    ls = lines()
    assert [x.message for x in ls if LogFilter("WARNING").passes(x)] == [
        "request expired",
        "peer refused",
    ]
    assert [x.source for x in ls if LogFilter("DEBUG", "node").passes(x)] == [
        "node.runtime",
        "node.coordinator",
    ]
    assert [x.message for x in ls if LogFilter("DEBUG", text="PEER").passes(x)] == ["peer refused"]
    assert sources(ls)[:3] == ["node", "node.coordinator", "node.runtime"]


def test_view_filters_and_follows_new_lines(qtbot: QtBot) -> None:
    model = WalletModel()
    for line in lines():
        model.add_log(line)
    view = LogsView(model)
    qtbot.addWidget(view)
    assert len(view.table_model.rows) == 3  # INFO and up by default
    view.set_filter(level="DEBUG", source="wallet")
    assert [r.source for r in view.table_model.rows] == ["wallet.service", "wallet.agent"]
    model.add_log(LogLine(5_000, "INFO", "wallet.service", "unlocked"))
    model.add_log(LogLine(6_000, "INFO", "node.runtime", "block 9"))
    assert [r.message for r in view.table_model.rows][-1] == "unlocked"
    view.set_filter(source="", text="block")
    assert [r.message for r in view.table_model.rows] == ["block 9"]
    assert view.count.text() == "1 of 6 lines"


def test_columns_fit_a_time_a_level_and_a_source(qtbot: QtBot) -> None:
    view = LogsView(WalletModel())
    qtbot.addWidget(view)
    metrics = view.table.fontMetrics()
    for col, text in enumerate(("23:59:59.999", "CRITICAL", "wallet.connection")):
        assert view.table.columnWidth(col) > metrics.horizontalAdvance(text)
