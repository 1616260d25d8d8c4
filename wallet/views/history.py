"""The History view: committed frames, their payments (sent, paid, received,
forwarded, refunded with the reason) and blocks (``WalletModel.history``) in one
table model behind a filter (entity, kind, text), newest first; selecting a row
shows its certificate: who signed, the bitfield, and whether it verified (for a
payment: the payment, and the frame that holds it).

One ``QAbstractTableModel`` over the model's deque and a ``QSortFilterProxyModel``:
5,000 rows are 5,000 tuples, not widgets.
"""

from __future__ import annotations

import time
from typing import Any

from wallet.flows.approvals import ApprovalQueue
from wallet.model import HistoryItem, WalletActions, WalletModel
from wallet.qt import (
    QAbstractItemView,
    QAbstractTableModel,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    QSplitter,
    Qt,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from wallet.views.widgets import (
    CopyableHash,
    caption,
    column_width,
    follow,
    mono_font,
    name,
    set_role,
    short_hex,
    signer_names,
)

COLUMNS = ("Time", "Kind", "Height", "Entity", "What", "Hash")
# The widest text of each fixed column: its width fits it in the font in use
# (fixed pixel widths cut "fra…" and "19:11…").
FIXED_COLUMNS = {
    0: "88:88:88",
    1: "forwarded",
    2: "8,888,888",
    3: short_hex(bytes(32)).replace("0", "8"),
    5: short_hex(bytes(32)).replace("0", "8"),
}
ALL = ""

type Index = QModelIndex | QPersistentModelIndex


def when(time_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(time_ms / 1000))


class HistoryTable(QAbstractTableModel):
    """The history, newest first (row 0 is the last item added)."""

    def __init__(self, model: WalletModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.items: list[HistoryItem] = list(reversed(model.history))

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            match index.column():
                case 0:
                    return when(item.time_ms)
                case 1:
                    return item.payment or item.kind
                case 2:
                    return item.height
                case 3:
                    return short_hex(item.entity_id) if item.entity_id else ""
                case 4:
                    return item.text
                case 5:
                    return short_hex(item.hash)
        if role == Qt.ItemDataRole.ToolTipRole and index.column() in (3, 5):
            value = item.entity_id if index.column() == 3 else item.hash
            return "0x" + value.hex() if value else None
        if role == Qt.ItemDataRole.UserRole:
            return index.row()
        return None

    def add(self, item: HistoryItem, limit: int) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self.items.insert(0, item)
        self.endInsertRows()
        if len(self.items) > limit:  # the model's deque dropped its oldest
            self.beginRemoveRows(QModelIndex(), limit, len(self.items) - 1)
            del self.items[limit:]
            self.endRemoveRows()


class HistoryFilter(QSortFilterProxyModel):
    """Rows of one entity and kind (or all), whose text holds the typed words."""

    def __init__(self, table: HistoryTable) -> None:
        super().__init__()
        self.table = table
        self.setSourceModel(table)
        self.entity: bytes | None = None
        self.kind = ALL
        self.words: list[str] = []

    def set_filter(self, entity: bytes | None, kind: str, text: str) -> None:
        self.beginFilterChange()
        self.entity, self.kind, self.words = entity, kind, text.lower().split()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, row: int, parent: Index) -> bool:
        item = self.table.items[row]
        if self.kind and item.kind != self.kind:
            return False
        if self.entity is not None and item.entity_id != self.entity:
            return False
        if self.words:
            hay = f"{item.text} {item.hash.hex()} {item.height}".lower()
            if item.entity_id:
                hay += " " + item.entity_id.hex()
            return all(w.removeprefix("0x") in hay for w in self.words)
        return True


class HistoryView(QWidget):
    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        approvals: ApprovalQueue,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.table = HistoryTable(model, self)
        self.proxy = HistoryFilter(self.table)

        self.entity = QComboBox()
        self.kind = QComboBox()
        for label, value in (
            ("All kinds", ALL),
            ("Frames", "frame"),
            ("Payments", "payment"),
            ("Blocks", "block"),
        ):
            self.kind.addItem(label, value)
        self.text = QLineEdit()
        self.text.setPlaceholderText("Filter: words, a hash, a height")
        self.text.setClearButtonEnabled(True)
        for signal in (self.entity.currentIndexChanged, self.kind.currentIndexChanged):
            signal.connect(self.apply_filter)
        self.text.textChanged.connect(self.apply_filter)
        self.count = QLabel()
        set_role(self.count, "muted")

        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.setShowGrid(False)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(False)
        for col, mode in enumerate(
            (
                QHeaderView.ResizeMode.Fixed,
                QHeaderView.ResizeMode.Fixed,
                QHeaderView.ResizeMode.Fixed,
                QHeaderView.ResizeMode.Fixed,
                QHeaderView.ResizeMode.Stretch,
                QHeaderView.ResizeMode.Fixed,
            )
        ):
            header.setSectionResizeMode(col, mode)
        for col, widest in FIXED_COLUMNS.items():
            self.view.setColumnWidth(col, column_width(self.view, widest))
        self.view.selectionModel().currentRowChanged.connect(self._on_row)

        # Certificate detail
        self.cert_title = QLabel()
        self.cert_hash = CopyableHash(full=True)
        self.cert_signers = QLabel()
        self.cert_signers.setWordWrap(True)
        self.cert_bits = QLabel()
        self.cert_bits.setFont(mono_font())
        self.cert_valid = QLabel()
        detail = QWidget()
        d = QVBoxLayout(detail)
        d.setContentsMargins(12, 8, 8, 8)
        d.addWidget(caption("Certificate"))
        d.addWidget(self.cert_title)
        d.addWidget(self.cert_hash)
        d.addWidget(self.cert_signers)
        d.addWidget(self.cert_bits)
        d.addWidget(self.cert_valid)
        d.addStretch(1)
        self._show_cert(None)

        top = QHBoxLayout()
        top.addWidget(self.entity)
        top.addWidget(self.kind)
        top.addWidget(self.text, 1)
        top.addWidget(self.count)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.addLayout(top)
        layout.addWidget(split, 1)

        follow(
            self,
            [(model.history_added, self._on_added), (model.entities_changed, self._fill_entities)],
        )
        self._fill_entities()
        self._update_count()

    def _fill_entities(self) -> None:
        keep = self.entity.currentData()
        ids = sorted({e for _, e in self.model.entities} | self._history_entities())
        self.entity.blockSignals(True)
        self.entity.clear()
        self.entity.addItem("All entities", None)
        for e in ids:
            self.entity.addItem(short_hex(e), e)
        i = self.entity.findData(keep) if keep is not None else 0
        self.entity.setCurrentIndex(max(i, 0))
        self.entity.blockSignals(False)

    def _history_entities(self) -> set[bytes]:
        return {i.entity_id for i in self.table.items[:500] if i.entity_id}

    def _on_added(self, item: HistoryItem) -> None:
        limit = self.model.history.maxlen or len(self.model.history)
        self.table.add(item, limit)
        if item.entity_id and self.entity.findData(item.entity_id) < 0:
            self.entity.addItem(short_hex(item.entity_id), item.entity_id)
        self._update_count()

    def apply_filter(self) -> None:
        entity = self.entity.currentData()
        self.proxy.set_filter(
            bytes(entity) if entity is not None else None,
            str(self.kind.currentData() or ""),
            self.text.text(),
        )
        self._update_count()

    def set_filter(self, entity: bytes | None = None, kind: str = ALL, text: str = "") -> None:
        self.entity.setCurrentIndex(max(self.entity.findData(entity), 0) if entity else 0)
        self.kind.setCurrentIndex(self.kind.findData(kind))
        self.text.setText(text)
        self.apply_filter()

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.table.rowCount()
        self.count.setText(f"{shown} of {total}" if shown != total else f"{total} items")

    def shown(self) -> list[HistoryItem]:
        """The rows on screen, in order (tests and the copy action read them)."""
        return [
            self.table.items[self.proxy.mapToSource(self.proxy.index(r, 0)).row()]
            for r in range(self.proxy.rowCount())
        ]

    def select_row(self, row: int) -> None:
        self.view.selectRow(row)
        self.view.setCurrentIndex(self.proxy.index(row, 0))

    def _on_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            self._show_cert(None)
            return
        self._show_cert(self.table.items[self.proxy.mapToSource(current).row()])

    def _show_cert(self, item: HistoryItem | None) -> None:
        if item is None:
            self.cert_title.setText("Select a row to see its certificate.")
            for w in (self.cert_hash, self.cert_signers, self.cert_bits, self.cert_valid):
                w.hide()
            return
        self.cert_hash.show()
        self.cert_hash.set_value(item.hash)
        if item.kind == "payment":
            ent = short_hex(item.entity_id) if item.entity_id else "?"
            self.cert_title.setText(f"Payment ({item.payment}) of {ent}: {item.text}")
            who = short_hex(item.counterparty) if item.counterparty else "nobody"
            self.cert_signers.setText(
                f"{item.amount or 0:,} of asset {item.asset}, counterparty {who}, "
                f"in frame #{item.height} (its certificate is on the frame's row)"
            )
            self.cert_signers.show()
            self.cert_bits.hide()
            self.cert_valid.hide()
            return
        if item.kind != "frame":
            self.cert_title.setText(f"Block {item.height}: {item.text}")
            self.cert_signers.setText("Blocks carry no entity certificate.")
            self.cert_signers.show()
            self.cert_bits.hide()
            self.cert_valid.hide()
            return
        names = signer_names(self.model)
        ent = short_hex(item.entity_id) if item.entity_id else "?"
        self.cert_title.setText(f"Frame #{item.height} of {ent}: {item.text}")
        signed = ", ".join(name(names, s) for s in item.cert_signers) or "nobody recorded"
        self.cert_signers.setText(f"Signed by ({len(item.cert_signers)}): {signed}")
        bits = "".join(
            "1" if item.cert_bitfield[i // 8] >> (i % 8) & 1 else "0"
            for i in range(8 * len(item.cert_bitfield))
        )
        self.cert_bits.setText(f"bitfield 0x{item.cert_bitfield.hex()}  ({bits or 'empty'})")
        match item.cert_valid:
            case True:
                self.cert_valid.setText("✓ verifies against the entity's members")
                self.cert_valid.setStyleSheet("color: #2e7d32;")
            case False:
                self.cert_valid.setText("✗ does NOT verify")
                self.cert_valid.setStyleSheet("color: #c0392b; font-weight: bold;")
            case None:
                self.cert_valid.setText("not checked here")
                set_role(self.cert_valid, "muted")
        for w in (self.cert_signers, self.cert_bits, self.cert_valid):
            w.show()
