"""The main window: a header with the entity switcher, the sidebar (Approvals with
its badge, Proposals, Entities, Channels, History, Logs, Settings), the content
stack and the status area.

It hosts the content views (``ApprovalsView``, ``ProposalsView``, ``EntitiesView``,
``ChannelsView``, ``HistoryView``: each ``View(model, actions, approvals)``) and
shows a quiet placeholder for any that is not there. Shortcuts: Ctrl+1..7 the views, Ctrl+L
lock, Ctrl+U unlock, Ctrl+Shift+C copy the current entity id, Ctrl+Q quit.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from wallet.flows.approvals import ApprovalQueue, ApprovalRequest
from wallet.flows.compose import SignerCard
from wallet.flows.effects import short
from wallet.model import EntityEntry, WalletActions, WalletModel
from wallet.qt import (
    QApplication,
    QCloseEvent,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QKeySequence,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QShortcut,
    QSize,
    QStackedWidget,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from wallet.views import theme
from wallet.views.status import StatusArea

if TYPE_CHECKING:
    from wallet.keys.vault import KeyInfo

log = logging.getLogger(__name__)

# (key, sidebar label, icon, module, class) of the content views, in sidebar order
CONTENT = (
    ("approvals", "Approvals", "approvals", "wallet.views.approvals", "ApprovalsView"),
    ("proposals", "Proposals", "proposals", "wallet.views.proposals", "ProposalsView"),
    ("entities", "Entities", "entities", "wallet.views.entities", "EntitiesView"),
    ("channels", "Channels", "node", "wallet.views.channels", "ChannelsView"),
    ("history", "History", "history", "wallet.views.history", "HistoryView"),
)
PAGES = (*(c[0] for c in CONTENT), "logs", "settings")


def entity_title(entry: EntityEntry) -> tuple[str, str]:
    """(title, subtitle) for the header: the short id, and members and threshold."""
    state = entry.state
    c = state.config
    n = len(c.members)
    title = f"Entity {short(state.entity_id)}"
    sub = (
        f"{n} signer{'s' if n != 1 else ''} · threshold {c.threshold}/{c.total_shares}"
        f" · height {state.height:,} · counter {state.counter:,}"
    )
    return title, sub


def badge_text(label: str, count: int) -> str:
    return f"{label}  ({count})" if count else label


def placeholder(name: str) -> QWidget:
    page = QWidget()
    page.setObjectName("Page")
    text = QLabel(f"{name} will appear here.")
    text.setProperty("role", "muted")
    text.setAlignment(Qt.AlignmentFlag.AlignCenter)
    QVBoxLayout(page).addWidget(text)
    return page


class MainWindow(QMainWindow):
    """The window. ``settings_view`` is built by the app (it needs the keyring and
    settings); ``on_unlock`` asks for the password (the app runs the KDF off the GUI
    thread); ``on_close`` is called once when the window closes."""

    entity_selected = Signal(bytes, bytes)  # (signer, entity)

    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        approvals: ApprovalQueue,
        *,
        logs_view: QWidget | None = None,
        settings_view: QWidget | None = None,
        on_unlock: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.wallet_actions = actions
        self.approvals = approvals
        self._on_unlock = on_unlock
        self._on_close = on_close
        self.setWindowTitle("XLN Signer")
        self.setWindowIcon(theme.app_icon())
        self.resize(1180, 760)
        self.setMinimumSize(QSize(860, 560))

        # header
        self.switcher = QComboBox()
        self.switcher.setMinimumWidth(220)
        self.switcher.setToolTip("The entity shown (signer · entity)")
        self.switcher.currentIndexChanged.connect(self._switched)
        self.title = QLabel("No entity yet")
        self.title.setObjectName("HeaderTitle")
        self.subtitle = QLabel("Create an entity or join one from the Entities view.")
        self.subtitle.setObjectName("HeaderSub")
        self.copy_id = QToolButton()
        self.copy_id.setIcon(theme.icon("copy", size=16))
        self.copy_id.setToolTip("Copy the entity id (Ctrl+Shift+C)")
        self.copy_id.clicked.connect(self.copy_entity_id)
        header = QFrame()
        header.setObjectName("Header")
        head = QHBoxLayout(header)
        head.setContentsMargins(14, 10, 14, 10)
        head.setSpacing(12)
        head.addWidget(self.switcher)
        titles = QVBoxLayout()
        titles.setSpacing(0)
        titles.addWidget(self.title)
        titles.addWidget(self.subtitle)
        head.addLayout(titles, 1)
        head.addWidget(self.copy_id)

        # sidebar and pages
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("Sidebar")
        self.sidebar.setFixedWidth(184)
        self.sidebar.setIconSize(QSize(18, 18))
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.stack = QStackedWidget()
        self.stack.setObjectName("Content")
        self.pages: dict[str, QWidget] = {}
        self._labels: dict[str, str] = {}
        self._icons: list[str] = []  # each sidebar item's icon name, in order
        for key, label, icon, module, cls in CONTENT:
            self._add_page(key, label, icon, self._content(label, module, cls))
        self._add_page("logs", "Logs", "logs", logs_view or placeholder("Logs"))
        self._add_page("settings", "Settings", "settings", settings_view or placeholder("Settings"))
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.sidebar.setCurrentRow(0)
        theme.follow_theme(self, self._redraw_icons)

        self.status = StatusArea(model)
        self.status.lock_requested.connect(self.lock)
        self.status.unlock_requested.connect(self.unlock)

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(0)
        body.addWidget(self.sidebar)
        body.addWidget(self.stack, 1)
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(header)
        col.addLayout(body, 1)
        col.addWidget(self.status)
        self.setCentralWidget(central)

        self._shortcuts()
        model.entities_changed.connect(self.refresh_entities)
        model.restore_changed.connect(self._show_entity)
        approvals.added.append(self._approvals_changed)
        approvals.changed.append(self._approvals_changed)
        self._closed = False
        self.refresh_entities()
        self.refresh_badge()

    # pages -------------------------------------------------------------------

    def _content(self, label: str, module: str, cls: str) -> QWidget:
        try:
            view = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            return placeholder(label)
        widget: QWidget = view(self.model, self.wallet_actions, self.approvals)
        return widget

    def _redraw_icons(self) -> None:
        for row, name in enumerate(self._icons):
            self.sidebar.item(row).setIcon(theme.icon(name, size=18))
        self.copy_id.setIcon(theme.icon("copy", size=16))

    def _add_page(self, key: str, label: str, icon: str, widget: QWidget) -> None:
        item = QListWidgetItem(theme.icon(icon, size=18), label)
        self._icons.append(icon)
        item.setSizeHint(QSize(0, 34))
        self.sidebar.addItem(item)
        self.stack.addWidget(widget)
        self.pages[key] = widget
        self._labels[key] = label

    def set_own_keys(self, keys: Sequence[KeyInfo]) -> None:
        """The user's keys (public parts), so the Entities page offers their signer
        cards (to copy, and as the first member of Create entity)."""
        entities = self.pages.get("entities")
        set_cards = getattr(entities, "set_own_cards", None)
        if set_cards is not None:
            set_cards([SignerCard(k.pubkey, k.pop) for k in keys])

    def show_page(self, key: str) -> None:
        self.sidebar.setCurrentRow(PAGES.index(key))

    def current_page(self) -> str:
        return PAGES[self.sidebar.currentRow()]

    def _shortcuts(self) -> None:
        for i, key in enumerate(PAGES, start=1):
            QShortcut(QKeySequence(f"Ctrl+{i}"), self, lambda k=key: self.show_page(k))
        QShortcut(QKeySequence("Ctrl+L"), self, self.lock)
        QShortcut(QKeySequence("Ctrl+U"), self, self.unlock)
        QShortcut(QKeySequence("Ctrl+Shift+C"), self, self.copy_entity_id)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Quit), self, self.close)

    # header ------------------------------------------------------------------

    def refresh_entities(self) -> None:
        keys = sorted(self.model.entities, key=lambda k: (k[1], k[0]))
        current = self.switcher.currentData()
        self.switcher.blockSignals(True)
        self.switcher.clear()
        for signer, entity in keys:
            self.switcher.addItem(f"{short(entity)}  ·  signer {short(signer)}", (signer, entity))
        self.switcher.setEnabled(bool(keys))
        if not keys:
            self.switcher.addItem("No entity")
        index = keys.index(current) if current in keys else 0
        self.switcher.setCurrentIndex(index)
        self.switcher.blockSignals(False)
        self._show_entity()

    def current_entity(self) -> EntityEntry | None:
        key = self.switcher.currentData()
        return self.model.entities.get(key) if isinstance(key, tuple) else None

    def _switched(self) -> None:
        self._show_entity()
        entry = self.current_entity()
        if entry is not None:
            self.entity_selected.emit(entry.signer_id, entry.state.entity_id)

    def _show_entity(self) -> None:
        entry = self.current_entity()
        self.copy_id.setEnabled(entry is not None)
        if entry is None:
            restoring = self.model.restore_note
            self.title.setText("Restored from the phrase" if restoring else "No entity yet")
            self.subtitle.setText(
                restoring or "Create an entity or join one from the Entities view."
            )
            return
        title, sub = entity_title(entry)
        self.title.setText(title)
        self.title.setToolTip("0x" + entry.state.entity_id.hex())
        self.subtitle.setText(sub)

    def copy_entity_id(self) -> None:
        entry = self.current_entity()
        if entry is not None:
            QApplication.clipboard().setText("0x" + entry.state.entity_id.hex())

    # approvals badge, lock -----------------------------------------------------

    def _approvals_changed(self, _request: ApprovalRequest) -> None:
        self.refresh_badge()

    def pending_count(self) -> int:
        return len(self.approvals.pending())

    def refresh_badge(self) -> None:
        n = self.pending_count()
        item = self.sidebar.item(0)
        item.setText(badge_text(self._labels["approvals"], n))
        self.setWindowTitle(f"XLN Signer ({n})" if n else "XLN Signer")

    def lock(self) -> None:
        if not self.model.locked:
            self.wallet_actions.lock()

    def unlock(self) -> None:
        if self.model.locked and self._on_unlock is not None:
            self._on_unlock()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._closed:
            self._closed = True
            self.model.entities_changed.disconnect(self.refresh_entities)
            for listeners in (self.approvals.added, self.approvals.changed):
                if self._approvals_changed in listeners:
                    listeners.remove(self._approvals_changed)
            if self._on_close is not None:
                self._on_close()
        event.accept()
