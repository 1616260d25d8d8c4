"""The Logs view: ``WalletModel.logs`` in a table, filtered by minimum level,
source (logger name, or its prefix such as ``wallet``) and text.

New lines arrive through ``WalletModel.log_added`` and are appended when they
pass the filter; the table keeps at most ``LOG_LIMIT`` rows, like the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from wallet.model import LOG_LIMIT, LogLine, WalletModel
from wallet.qt import (
    QAbstractItemView,
    QAbstractTableModel,
    QColor,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from wallet.views import theme
from wallet.views.widgets import column_width, follow

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
COLUMNS = ("Time", "Level", "Source", "Message")


@dataclass(frozen=True, slots=True)
class LogFilter:
    level: str = "INFO"  # the lowest level shown
    source: str = ""  # "" for all; else a logger name or a prefix of one ("node")
    text: str = ""

    def passes(self, line: LogLine) -> bool:
        if logging.getLevelName(line.level) < logging.getLevelName(self.level):
            return False
        if self.source and not (
            line.source == self.source or line.source.startswith(self.source + ".")
        ):
            return False
        return not self.text or self.text.lower() in line.message.lower()


def sources(lines: Iterable[LogLine]) -> list[str]:
    """Every logger name and each of its dotted prefixes, sorted."""
    names: set[str] = set()
    for line in lines:
        parts = line.source.split(".")
        names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(names)


class LogTable(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[LogLine] = []

    def reset(self, rows: list[LogLine]) -> None:
        self.beginResetModel()
        self.rows = rows[-LOG_LIMIT:]
        self.endResetModel()

    def append(self, line: LogLine) -> None:
        if len(self.rows) >= LOG_LIMIT:
            self.beginRemoveRows(QModelIndex(), 0, 0)
            del self.rows[0]
            self.endRemoveRows()
        n = len(self.rows)
        self.beginInsertRows(QModelIndex(), n, n)
        self.rows.append(line)
        self.endInsertRows()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        line = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return time.strftime("%H:%M:%S", time.localtime(line.time_ms / 1000)) + (
                    f".{line.time_ms % 1000:03d}"
                )
            return (line.time_ms, line.level, line.source, line.message)[col]
        if role == Qt.ItemDataRole.ForegroundRole and col == 1:
            c = theme.colors()
            color = {"WARNING": c.warn, "ERROR": c.err, "CRITICAL": c.err, "DEBUG": c.muted}
            return QColor(color[line.level]) if line.level in color else None
        if role == Qt.ItemDataRole.ToolTipRole and col == 3:
            return line.message
        return None


class LogsView(QWidget):
    def __init__(self, model: WalletModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Page")
        self.model = model
        self.filter = LogFilter()

        title = QLabel("Logs")
        title.setProperty("role", "title")
        self.level = QComboBox()
        self.level.addItems(LEVELS)
        self.level.setCurrentText(self.filter.level)
        self.source = QComboBox()
        self.source.setMinimumWidth(180)
        self.text = QLineEdit()
        self.text.setPlaceholderText("Filter messages")
        self.text.setClearButtonEnabled(True)
        self.count = QLabel()
        self.count.setProperty("role", "muted")

        bar = QHBoxLayout()
        bar.setSpacing(8)
        bar.addWidget(title)
        bar.addStretch(1)
        bar.addWidget(QLabel("Level"))
        bar.addWidget(self.level)
        bar.addWidget(QLabel("Source"))
        bar.addWidget(self.source)
        bar.addWidget(self.text, 1)

        self.table_model = LogTable(self)
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for col, widest in enumerate(("88:88:88.888", "CRITICAL", "wallet.connection")):
            self.table.setColumnWidth(col, column_width(self.table, widest))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 16)
        layout.setSpacing(10)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.count)

        self.level.currentTextChanged.connect(self._filter_changed)
        self.source.currentIndexChanged.connect(self._filter_changed)
        self.text.textChanged.connect(self._filter_changed)
        follow(self, [(model.log_added, self._added)])
        self._known_sources: list[str] = []
        self._refresh_sources()
        self._apply()

    def set_filter(
        self, level: str | None = None, source: str | None = None, text: str | None = None
    ) -> None:
        """Set the filter controls (what a user does with the combos and the box)."""
        if level is not None:
            self.level.setCurrentText(level)
        if source is not None:
            self._refresh_sources(also=source)
            self.source.setCurrentIndex(max(0, self.source.findData(source)))
        if text is not None:
            self.text.setText(text)

    def _refresh_sources(self, also: str = "") -> None:
        names = sources(self.model.logs)
        if also and also not in names:
            names = sorted([*names, also])
        if names == self._known_sources:
            return
        current = self.source.currentData()
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItem("All sources", "")
        for name in names:
            self.source.addItem(name, name)
        self.source.setCurrentIndex(max(0, self.source.findData(current or "")))
        self.source.blockSignals(False)
        self._known_sources = names

    def _filter_changed(self) -> None:
        self.filter = LogFilter(
            self.level.currentText(), str(self.source.currentData() or ""), self.text.text()
        )
        self._apply()

    def _apply(self) -> None:
        self.table_model.reset([line for line in self.model.logs if self.filter.passes(line)])
        self._count()
        self.table.scrollToBottom()

    def _added(self, line: LogLine) -> None:
        if line.source not in self._known_sources:
            self._refresh_sources()
        if self.filter.passes(line):
            bottom = self.table.verticalScrollBar()
            at_end = bottom.value() >= bottom.maximum() - 2
            self.table_model.append(line)
            if at_end:
                self.table.scrollToBottom()
        self._count()

    def _count(self) -> None:
        self.count.setText(f"{len(self.table_model.rows):,} of {len(self.model.logs):,} lines")
