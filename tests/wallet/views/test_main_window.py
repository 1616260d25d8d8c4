"""The main window over a WalletModel with real entity states: header, sidebar
badge, shortcuts, lock, status area states; and the one-Qt-import rule."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from pytestqt.qtbot import QtBot

from node.machines.entity import Propose
from node.machines.governance import SetThreshold
from tests.wallet.views.content_helpers import (
    IDS,
    ME,
    Clock,
    RecordingActions,
    Replica,
    entity,
    model_with,
    queue_with,
    request_for,
)
from wallet.flows.effects import Effect, short
from wallet.model import Connection, EntityEntry, Link, WalletModel
from wallet.qt import QApplication, QKeySequence, QShortcut
from wallet.views import theme
from wallet.views.approvals import effect_html
from wallet.views.main_window import PAGES, MainWindow, badge_text
from wallet.views.status import StatusArea, connection_text

ROOT = Path(__file__).resolve().parents[3]


def test_only_wallet_qt_imports_pyside_or_qasync() -> None:
    offenders = []
    for folder in ("node", "wallet", "bench", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "wallet" / "qt.py":
                continue
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                if any(n.split(".")[0] in ("PySide6", "qasync") for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def window(qtbot: QtBot, *, pending: int = 0) -> tuple[MainWindow, RecordingActions]:
    state = entity((50, 30, 20), 67)
    replica = Replica(state)
    model = model_with(state, entity((1,), 1))
    queue = queue_with(Clock())
    for i in range(pending):  # distinct frames: one answer decides all requests for a frame
        request_for(queue, replica, (ME, [Propose(SetThreshold(80 + i), 100)]))
    actions = RecordingActions()
    w = MainWindow(model, actions, queue)
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitActive(w)
    return w, actions


def press(w: MainWindow, keys: str) -> None:
    """Fire the window's shortcut for ``keys``. (Synthetic key events do not reach
    QShortcut under pytest-qt offscreen here, though they do in a plain script.)"""
    found = [s for s in w.findChildren(QShortcut) if s.key() == QKeySequence(keys)]
    assert len(found) == 1, keys
    found[0].activated.emit()


def test_header_shows_the_entity_and_copies_its_id(qtbot: QtBot) -> None:
    w, _ = window(qtbot)
    assert w.switcher.count() == 2
    entry = w.current_entity()
    assert entry is not None
    assert w.title.text() == f"Entity {short(entry.state.entity_id)}"
    assert "signer" in w.subtitle.text()
    assert "threshold" in w.subtitle.text()
    w.switcher.setCurrentIndex(1)
    other = w.current_entity()
    assert other is not None
    assert other.state.entity_id != entry.state.entity_id
    w.copy_id.click()
    assert QApplication.clipboard().text() == "0x" + other.state.entity_id.hex()


def test_new_entity_appears_in_the_switcher(qtbot: QtBot) -> None:
    w, _ = window(qtbot)
    from wallet.model import EntityEntry

    w.model.set_entity(EntityEntry(IDS[ME], entity((2, 1), 2)))
    assert w.switcher.count() == 3


def test_a_restore_says_what_finding_the_entities_said(qtbot: QtBot) -> None:
    model = WalletModel()
    w = MainWindow(model, RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(w)
    assert w.title.text() == "No entity yet"
    model.set_restore_note("Looking for this signer's entities on the node's peers…")
    assert w.title.text() == "Restored from the phrase"
    assert w.subtitle.text() == "Looking for this signer's entities on the node's peers…"
    model.set_entity(EntityEntry(IDS[ME], entity((1,), 1)))
    assert w.title.text().startswith("Entity ")


def test_badge_counts_pending_approvals(qtbot: QtBot) -> None:
    w, _ = window(qtbot, pending=2)
    assert w.sidebar.item(0).text() == badge_text("Approvals", 2) == "Approvals  (2)"
    request = w.approvals.pending()[0]
    w.approvals.reject(request.id)
    assert w.sidebar.item(0).text() == "Approvals  (1)"
    assert w.windowTitle() == "XLN Signer (1)"


def test_shortcuts_switch_views(qtbot: QtBot) -> None:
    w, _ = window(qtbot)
    for i, key in enumerate(PAGES, start=1):
        press(w, f"Ctrl+{i}")
        assert w.current_page() == key
        assert w.stack.currentIndex() == i - 1


def test_lock_and_unlock(qtbot: QtBot) -> None:
    w, actions = window(qtbot)
    asked: list[bool] = []
    w._on_unlock = lambda: asked.append(True)
    assert w.model.locked
    w.status.lock_button.click()  # locked: the button unlocks
    assert asked == [True]
    w.model.set_locked(False)
    assert w.status.locked.text() == "Unlocked"
    assert w.status.lock_button.text() == "Lock"
    press(w, "Ctrl+L")
    assert ("lock",) in [tuple(c[:1]) for c in actions.calls]


def link(s: StatusArea) -> Link:
    return s.dot.link


def test_status_area_states(qtbot: QtBot) -> None:
    w, _ = window(qtbot)
    s = w.status
    assert link(s) is Link.DISCONNECTED
    w.model.set_connection(Connection(Link.CONNECTING, "embedded"))
    assert s.connection.text().startswith("connecting · embedded node")
    w.model.set_connection(Connection(Link.CONNECTED, "remote", "ws://10.0.0.2:8765", 18233, 100))
    assert link(s) is Link.CONNECTED
    assert (
        s.connection.text() == "connected · remote ws://10.0.0.2:8765 · height 18,233 · tick 100 ms"
    )
    w.model.set_connection(Connection(Link.DISCONNECTED, "remote", "ws://x", error="refused"))
    assert s.connection.text().endswith("refused")
    assert s.accountant.text() == "accountant OFF"
    # Turned on in Settings while the wallet runs: said at once (it said OFF until a
    # restart: seen by the GUI suite).
    w.model.set_accountant_on(True)
    assert s.accountant.text() == "accountant ON"
    w.model.set_locked(True)
    assert s.locked.text() == "Locked: signs nothing"
    assert s.locked.property("role") == "error"
    assert connection_text(Connection()) == "disconnected · embedded node"


async def test_chart_repaints_throttled(qtbot: QtBot) -> None:
    w, _ = window(qtbot)
    chart = w.status.chart
    for i in range(200):
        w.model.tick_lateness_ms.append((i / 10, float(i % 7)))
        w.model.finality_ms.append((i / 10, 150.0 + i % 50))
        w.model.metrics_changed.emit()
    assert chart.dirty
    before = chart.paints
    painted = asyncio.Event()
    chart.painted.append(painted.set)
    async with asyncio.timeout(5):
        await painted.wait()
    # 200 changes in a burst: a few repaints, not 200
    assert chart.paints - before < 5
    assert "p50 finality" in w.status.metrics.text()
    assert "ms" in w.status.metrics.text()


def test_close_calls_back_once(qtbot: QtBot) -> None:
    closed: list[int] = []
    w, _ = window(qtbot)
    w._on_close = lambda: closed.append(1)
    w.close()
    w.close()
    assert closed == [1]


def test_switching_the_theme_redraws_icons_and_tags(qtbot: QtBot) -> None:
    """Icons are drawn in the theme's text colour: after a switch to dark, the
    sidebar's and the lock button's are redrawn (they stayed dark on the dark
    sidebar), and a governance tag takes the dark theme's colours."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    theme.apply(app, "light")
    w, _ = window(qtbot)
    before = [w.sidebar.item(i).icon().pixmap(18, 18).toImage() for i in range(w.sidebar.count())]
    lock_before = w.status.lock_button.icon().pixmap(16, 16).toImage()
    try:
        theme.apply(app, "dark")
        after = [
            w.sidebar.item(i).icon().pixmap(18, 18).toImage() for i in range(w.sidebar.count())
        ]
        assert all(a != b for a, b in zip(after, before, strict=True))
        assert w.status.lock_button.icon().pixmap(16, 16).toImage() != lock_before
        tag = effect_html(Effect("add_signer", True, "add a signer"))
        assert theme.DARK.tag_fg in tag
        assert theme.DARK.tag_bg in tag
    finally:
        theme.apply(app, "light")
    assert theme.LIGHT.tag_bg in effect_html(Effect("add_signer", True, "add a signer"))
