"""The tray over a real service: when an approval request arrives (bob proposes a
frame the wallet must approve), a notification lands in the model, the tray
shows it (offscreen: records it), and the sidebar badge counts it."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from node.machines.entity import Increment
from tests.wallet.conftest import Duo
from wallet.flows.approvals import Notifications
from wallet.flows.effects import short
from wallet.qt import QMainWindow
from wallet.views.main_window import MainWindow
from wallet.views.tray import Tray


async def test_approval_needed_notifies_and_badges(qtbot: QtBot, duo: Duo) -> None:
    service = duo.service
    window = MainWindow(duo.model, service, service.queue)
    qtbot.addWidget(window)
    tray = Tray(service.notifications, window, on_lock=window.lock)
    assert tray.available is False  # offscreen Qt has no tray
    service.set_accountant(False)
    await duo.bob_submits([Increment(2)])
    await duo.waiter.until(lambda: bool(service.queue.pending()))
    assert [n.title for n in service.notifications.items] == ["Approval needed"]
    assert tray.shown == list(service.notifications.items)
    assert short(duo.entity) in tray.shown[0].text
    assert window.sidebar.item(0).text() == "Approvals  (1)"
    service.reject(service.queue.pending()[0].id)
    assert window.sidebar.item(0).text() == "Approvals"
    tray.close()
    service.notifications.notify("later", "not shown")
    assert len(tray.shown) == 1


def test_tray_icon_when_a_tray_exists(qtbot: QtBot) -> None:
    notes = Notifications(lambda: 0.0)
    window = QMainWindow()
    qtbot.addWidget(window)
    tray = Tray(notes, window, on_quit=window.close, available=True)
    assert tray.icon is not None
    assert tray.icon.contextMenu() is not None
    notes.notify("Approval needed", "alice: frame 3")
    assert [n.text for n in tray.shown] == ["alice: frame 3"]
    tray.close()
