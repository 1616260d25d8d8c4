"""HistoryView: 5,000 real history items in a table model (no widget per row), the
filter by entity, kind and text, live additions, and the certificate detail."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from node.machines.frames import bitfield
from wallet.model import HISTORY_LIMIT, HistoryItem, WalletModel
from wallet.qt import QWidget
from wallet.views.history import COLUMNS, FIXED_COLUMNS, HistoryView

from .content_helpers import IDS, Clock, RecordingActions, queue_with

E1, E2 = b"\x01" * 32, b"\x02" * 32


def item(i: int) -> HistoryItem:
    if i % 5 == 0:
        return HistoryItem("block", i, i.to_bytes(32, "big"), 1_700_000_000_000 + i, f"block {i}")
    entity = E1 if i % 2 else E2
    signers = (IDS[0], IDS[2])
    return HistoryItem(
        "frame",
        i,
        i.to_bytes(32, "big"),
        1_700_000_000_000 + i,
        f"counter +{i % 7}" if i % 3 else "proposal executes: threshold",
        entity,
        IDS[0],
        signers,
        bitfield([0, 2], 3),
        i % 11 != 0,
    )


def setup(qtbot: QtBot, n: int) -> HistoryView:
    model = WalletModel()
    for i in range(1, n + 1):
        model.history.append(item(i))
    view = HistoryView(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    view.resize(900, 560)
    return view


def test_five_thousand_rows_load_as_a_table_model(qtbot: QtBot) -> None:
    view = setup(qtbot, HISTORY_LIMIT)
    assert view.proxy.rowCount() == HISTORY_LIMIT
    assert view.count.text() == f"{HISTORY_LIMIT} items"
    # A model, not widgets: a few dozen child widgets, not one per row.
    assert len(view.findChildren(QWidget)) < 100
    assert view.shown()[0].height == HISTORY_LIMIT  # newest first
    # The deque is full: a new item drops the oldest row.
    view.model.add_history(item(HISTORY_LIMIT + 1))
    assert view.table.rowCount() == HISTORY_LIMIT
    assert view.shown()[0].height == HISTORY_LIMIT + 1
    assert view.shown()[-1].height == 2
    view.show()
    view.grab().save("/tmp/history_view.png")


def test_filter_by_entity_kind_and_text(qtbot: QtBot) -> None:
    view = setup(qtbot, 100)
    view.set_filter(kind="block")
    assert {i.kind for i in view.shown()} == {"block"}
    assert len(view.shown()) == 20
    view.set_filter(entity=E1, kind="frame")
    assert all(i.entity_id == E1 for i in view.shown())
    assert len(view.shown()) == 40
    view.set_filter(entity=E1, kind="frame", text="threshold")
    assert [i.height for i in view.shown()][:3] == [99, 93, 87]
    assert view.count.text() == f"{len(view.shown())} of 100"
    view.set_filter(text=(42).to_bytes(32, "big").hex())
    assert [i.height for i in view.shown()] == [42]
    # A live item that matches appears; one that does not stays hidden.
    view.set_filter(kind="block")
    view.model.add_history(item(105))
    view.model.add_history(item(101))
    assert view.shown()[0].height == 105


def test_certificate_detail(qtbot: QtBot) -> None:
    view = setup(qtbot, 30)
    view.set_filter(text="0x" + (23).to_bytes(32, "big").hex())
    view.select_row(0)
    assert "Frame #23" in view.cert_title.text()
    assert view.cert_hash.value == (23).to_bytes(32, "big")
    assert "Signed by (2)" in view.cert_signers.text()
    assert "0x05" in view.cert_bits.text()
    assert "101" in view.cert_bits.text()
    assert "verifies" in view.cert_valid.text()
    view.set_filter(kind="frame", text="counter")
    rows = view.shown()
    bad = next(i for i, r in enumerate(rows) if r.cert_valid is False)
    view.select_row(bad)
    assert "NOT verify" in view.cert_valid.text()
    view.set_filter(kind="block")
    view.select_row(0)
    assert "no entity certificate" in view.cert_signers.text()


def test_fixed_columns_fit_their_widest_text(qtbot: QtBot) -> None:
    """The time, kind, height, entity and hash columns fit their widest text in the
    font in use (fixed pixel widths cut "fra…" and "19:11…")."""
    view = setup(qtbot, 3)
    metrics = view.view.fontMetrics()
    for col, widest in FIXED_COLUMNS.items():
        assert view.view.columnWidth(col) > metrics.horizontalAdvance(widest), COLUMNS[col]
    assert view.view.columnWidth(1) > metrics.horizontalAdvance("refunded")
