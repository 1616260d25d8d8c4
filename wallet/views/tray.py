"""The tray: a ``QSystemTrayIcon`` (when the desktop has a tray) that shows each
new entry of the :class:`~wallet.flows.approvals.Notifications` model as a
message, with a menu to show the window, lock, and quit.

Offscreen Qt has no tray, so ``shown`` (what was, or would have been, shown)
is what tests read; the notifications model itself is the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable

from wallet.flows.approvals import Notification, Notifications
from wallet.qt import QAction, QMainWindow, QMenu, QObject, QSystemTrayIcon
from wallet.views import theme

MESSAGE_MS = 8_000


class Tray(QObject):
    def __init__(
        self,
        notifications: Notifications,
        window: QMainWindow,
        *,
        on_lock: Callable[[], object] | None = None,
        on_quit: Callable[[], object] | None = None,
        available: bool | None = None,
    ) -> None:
        super().__init__(window)
        self.notifications = notifications
        self.window = window
        self.shown: list[Notification] = []
        if available is None:
            available = QSystemTrayIcon.isSystemTrayAvailable()
        self.icon: QSystemTrayIcon | None = None
        if available:
            self.icon = QSystemTrayIcon(theme.app_icon(), self)
            self.icon.setToolTip("XLN Signer")
            menu = QMenu(window)
            show = QAction("Show the wallet", menu)
            show.triggered.connect(self.show_window)
            menu.addAction(show)
            if on_lock is not None:
                lock = QAction("Lock", menu)
                lock.triggered.connect(on_lock)
                menu.addAction(lock)
            if on_quit is not None:
                menu.addSeparator()
                quit_action = QAction("Quit", menu)
                quit_action.triggered.connect(on_quit)
                menu.addAction(quit_action)
            self.icon.setContextMenu(menu)
            self.icon.activated.connect(self._activated)
            self.icon.messageClicked.connect(self.show_window)
            self.icon.show()
        notifications.added.append(self.notify)

    @property
    def available(self) -> bool:
        return self.icon is not None

    def notify(self, item: Notification) -> None:
        self.shown.append(item)
        if self.icon is not None:
            self.icon.showMessage(
                item.title, item.text, QSystemTrayIcon.MessageIcon.Information, MESSAGE_MS
            )

    def show_window(self) -> None:
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason is QSystemTrayIcon.ActivationReason.Trigger:
            self.show_window()

    def close(self) -> None:
        """Stop listening and hide the icon (the app calls it on exit)."""
        if self.notify in self.notifications.added:
            self.notifications.added.remove(self.notify)
        if self.icon is not None:
            self.icon.hide()
