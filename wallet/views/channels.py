"""The Channels view: per entity, its reserves, and a page of its channels (50, with
Previous and Next: a hub holds a million), each with its counterparty,
``ready``/``sent`` status, the channel's height, its pending frame (height,
transactions) and queue, and per asset the balance, capacity, collateral and the
credit extended each way. Updated in place as frames arrive; "Pay…" opens the pay
form, whose capacity check (``compose.pay``, the node's own rule) shows inline.

``channel_row`` and ``entity_summary`` are the plain data the cards draw (tests
read them too).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.machines.accounts import ChannelRecord, available
from node.machines.entity import EntityState
from node.net.remote_map import is_partial
from wallet.flows import compose
from wallet.flows.approvals import ApprovalQueue
from wallet.flows.channel_pages import PAGE_SIZE, ChannelPage, ChannelPager, checkable, local_page
from wallet.flows.compose import ComposeError
from wallet.model import EntityEntry, WalletActions, WalletModel
from wallet.qt import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from wallet.views.compose import ActionDialog
from wallet.views.widgets import (
    CopyableHash,
    StatusLine,
    TaskRunner,
    caption,
    follow,
    name,
    plural,
    scrolled_page,
    set_role,
    short_hex,
    signer_names,
)

ASSET_COLUMNS = ("Asset", "Balance", "Capacity", "Collateral", "Credit given", "Credit received")
READY_STYLE = "color: #2e7d32; font-weight: bold;"
SENT_STYLE = "color: #b26a00; font-weight: bold;"


@dataclass(frozen=True, slots=True)
class AssetRow:
    asset: int
    balance: int
    capacity: int
    collateral: int
    credit_given: int  # the credit we extend to the counterparty
    credit_received: int  # the credit it extends to us
    available: int  # what a pay form may still queue (capacity less pending and queued)

    def cells(self) -> tuple[str, ...]:
        return (
            str(self.asset),
            f"{self.balance:,}",
            f"{self.capacity:,}",
            f"{self.collateral:,}",
            f"{self.credit_given:,}",
            f"{self.credit_received:,}",
        )


@dataclass(frozen=True, slots=True)
class ChannelRow:
    peer: bytes
    status: str  # ready / sent
    height: int
    pending: tuple[int, int] | None  # (height, transactions) of our frame awaiting its ack
    queued: int
    assets: tuple[AssetRow, ...]

    def line(self) -> str:
        parts = [f"height {self.height}"]
        if self.pending is not None:
            h, n = self.pending
            parts.append(f"pending frame #{h} ({n} tx{'s' if n != 1 else ''})")
        parts.append(f"{self.queued} queued")
        return "  ·  ".join(parts)


def channel_row(c: ChannelRecord) -> ChannelRow:
    side = c.side
    me = side.me
    assets = tuple(
        AssetRow(
            a.asset,
            a.balance(me),
            a.capacity(me),
            a.collateral_left if me.name == "LEFT" else a.collateral_right,
            a.credit_extended_by(me),
            a.credit_extended_by(me.other),
            max(available(side, a.asset), 0),
        )
        for a in side.agreed.assets
    )
    pending = None if side.pending is None else (side.pending.height, len(side.pending.txs))
    return ChannelRow(c.peer, side.status, side.agreed.height, pending, len(side.queue), assets)


def entity_summary(state: EntityState) -> str:
    reserves = ", ".join(f"{n:,} of asset {a}" for a, n in state.reserves) or "none"
    n = len(state.channels)
    return f"Reserves: {reserves}  ·  {plural(n, 'channel')}"


class ChannelBox(QFrame):
    """One channel: counterparty, status, height, pending and queue, and its assets."""

    def __init__(self, row: ChannelRow) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.peer = CopyableHash(row.peer)
        self.status = QLabel()
        self.line = QLabel()
        set_role(self.line, "muted")
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(18)
        self.grid.setVerticalSpacing(2)
        head = QHBoxLayout()
        head.addWidget(QLabel("Counterparty"))
        head.addWidget(self.peer, 1)
        head.addWidget(self.status)
        v = QVBoxLayout(self)
        v.setContentsMargins(8, 6, 8, 6)
        v.addLayout(head)
        v.addWidget(self.line)
        v.addLayout(self.grid)
        self.cells: list[list[QLabel]] = []
        self.show_row(row)

    def show_row(self, row: ChannelRow) -> None:
        self.row = row
        self.status.setText(row.status)
        self.status.setStyleSheet(READY_STYLE if row.status == "ready" else SENT_STYLE)
        self.status.setToolTip(
            "ready: no frame of ours awaits an ack"
            if row.status == "ready"
            else "sent: our frame awaits the counterparty's ack"
        )
        self.line.setText(row.line())
        while self.grid.count():
            item = self.grid.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        self.cells = []
        if not row.assets:
            hint = QLabel("No asset yet: fund the channel or extend credit (a proposal).")
            set_role(hint, "muted")
            self.grid.addWidget(hint, 0, 0)
            return
        for col, title in enumerate(ASSET_COLUMNS):
            label = QLabel(title)
            set_role(label, "muted")
            self.grid.addWidget(label, 0, col)
        for r, asset in enumerate(row.assets, start=1):
            labels = []
            for col, text in enumerate(asset.cells()):
                label = QLabel(text)
                self.grid.addWidget(label, r, col)
                labels.append(label)
            self.cells.append(labels)


class EntityChannels(QFrame):
    """One entity's reserves and a page of its channels, with Previous and Next when
    they do not fit on one; :meth:`show_entry` refreshes it in place. The page comes
    from the state when the wallet holds it whole, else from the node (proven); the
    card never walks a partial state's channels (``wallet.flows.channel_pages``)."""

    def __init__(
        self,
        entry: EntityEntry,
        names: dict[bytes, str],
        actions: WalletActions,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.wallet_actions = actions
        self.pager = ChannelPager(page_size)
        self.entity_id = CopyableHash(entry.state.entity_id)
        self.summary = QLabel()
        self.pay_button = QPushButton("Pay\u2026")
        head = QHBoxLayout()
        head.addWidget(QLabel(f"<b>Entity</b> as {name(names, entry.signer_id)}"))
        head.addWidget(self.entity_id, 1)
        head.addWidget(self.pay_button)
        self.page_caption = QLabel()
        set_role(self.page_caption, "muted")
        self.previous_button = QPushButton("Previous")
        self.next_button = QPushButton("Next")
        self.previous_button.clicked.connect(self.show_previous)
        self.next_button.clicked.connect(self.show_next)
        self.status = StatusLine()  # a page's read from the node: busy, or why it failed
        self.runner = TaskRunner(self.status)
        nav = QHBoxLayout()
        nav.addWidget(self.page_caption)
        nav.addWidget(self.status, 1)
        nav.addWidget(self.previous_button)
        nav.addWidget(self.next_button)
        self._read_again = False
        self.body = QVBoxLayout()
        v = QVBoxLayout(self)
        v.setContentsMargins(10, 8, 10, 8)
        v.addLayout(head)
        v.addWidget(self.summary)
        v.addLayout(nav)
        v.addLayout(self.body)
        self.boxes: list[ChannelBox] = []
        self.hint: QLabel | None = None
        self.show_entry(entry)

    @property
    def at_hand(self) -> tuple[ChannelRecord, ...]:
        """The channels on the page shown."""
        return self.pager.page.records

    def show_entry(self, entry: EntityEntry) -> None:
        self.entry = entry
        self.summary.setText(entity_summary(entry.state))
        can_pay = bool(entry.state.channels)
        self.pay_button.setEnabled(can_pay)
        self.pay_button.setToolTip(
            "Pay a counterparty, directly or through a hub"
            if can_pay
            else "No channel to pay through yet: open one first (Proposals, New proposal, "
            "open_channel)"
        )
        self._load()

    def show_next(self) -> None:
        if self.pager.next():
            self._load()

    def show_previous(self) -> None:
        if self.pager.previous():
            self._load()

    def _load(self) -> None:
        """The page at the pager's place: at once from a state held whole; from the
        node for a partial one, one read at a time (a read asked for meanwhile is
        made when the one under way ends, at the place and state current then)."""
        state = self.entry.state
        after = self.pager.after
        if not is_partial(state):
            self._took(after, local_page(state, after, self.pager.size))
            return
        if self.runner.running:
            self._read_again = True
            return
        self.runner.run(
            self.wallet_actions.channel_page(
                self.entry.signer_id, state.entity_id, after, self.pager.size
            ),
            busy="Reading channels\u2026",
            on_result=lambda page: self._took(after, page),
            after=self._read_ended,
        )

    def _read_ended(self) -> None:
        if self._read_again:
            self._read_again = False
            self._load()

    def _took(self, after: bytes, page: ChannelPage) -> None:
        if after != self.pager.after:
            self._read_again = True  # the user moved on meanwhile
            return
        if not self.pager.show(page):
            self._load()
            return
        self.page_caption.setText(self.pager.caption(len(self.entry.state.channels)))
        self.previous_button.setVisible(self.pager.has_previous or self.pager.has_next)
        self.next_button.setVisible(self.pager.has_previous or self.pager.has_next)
        self.previous_button.setEnabled(self.pager.has_previous)
        self.next_button.setEnabled(self.pager.has_next)
        self._show_rows([channel_row(r) for r in page.records])

    def _show_rows(self, rows: list[ChannelRow]) -> None:
        if [b.row.peer for b in self.boxes] == [r.peer for r in rows]:
            for box, row in zip(self.boxes, rows, strict=True):
                if box.row != row:
                    box.show_row(row)
            return
        for widget in [*self.boxes, *([self.hint] if self.hint is not None else [])]:
            widget.hide()
            widget.deleteLater()
        self.hint = None
        self.boxes = [ChannelBox(r) for r in rows]
        for box in self.boxes:
            self.body.addWidget(box)
        if not rows:
            self.hint = QLabel(
                "No channel yet: propose open_channel (Proposals, New proposal) with the "
                "counterparty's channel card; it must open one to this entity too."
            )
            self.hint.setWordWrap(True)
            set_role(self.hint, "muted")
            self.body.addWidget(self.hint)


class PayDialog(ActionDialog):
    """Asset, amount, and the payee (one of the channels' counterparties) or a route
    ``hub, ..., payee``; the capacity check shows inline before anything is signed.
    The picker lists the channels on the page shown (``at_hand``); any counterparty
    may be typed. A partial state's channel off that page is checked by the service,
    against the channel it reads from the node, when the user pays."""

    OK_TEXT = "Pay"

    def __init__(
        self,
        actions: WalletActions,
        entry: EntityEntry,
        at_hand: tuple[ChannelRecord, ...],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Pay", parent)
        self.wallet_actions = actions
        self.entry = entry
        self.at_hand = at_hand
        state = entry.state
        self.to = QComboBox()
        self.to.setEditable(True)
        for c in at_hand:
            self.to.addItem(f"0x{c.peer.hex()}", c.peer.hex())
        self.to.setToolTip(
            "The payee, or a route: the first hop (a counterparty of ours), then the "
            "next ones, the payee last, separated by commas"
        )
        rows = [channel_row(c) for c in at_hand]
        first_asset = rows[0].assets[0].asset if rows and rows[0].assets else 1
        self.asset = QLineEdit(str(first_asset))
        self.amount = QLineEdit()
        self.amount.setPlaceholderText("a whole number")
        self.available = QLabel()
        set_role(self.available, "muted")
        self.form.addRow(QLabel(f"From entity {short_hex(state.entity_id)}"))
        self.field("To (payee or route)", self.to, "route")
        self.field("Asset", self.asset, "asset")
        self.field("Amount", self.amount, "amount")
        self.form.addRow("", self.available)
        for signal in (self.to.currentTextChanged, self.asset.textChanged):
            signal.connect(self._show_available)
        self._show_available()

    def route_text(self) -> str:
        return self.to.currentText()

    def _first_hop(self) -> bytes | None:
        try:
            return compose.parse_route(self.route_text())[0]
        except ValueError:
            return None

    def _checkable(self) -> EntityState:
        return checkable(self.entry.state, self.at_hand, self._first_hop())

    def _show_available(self) -> None:
        try:
            route = compose.parse_route(self.route_text())
            asset = compose.parse_asset(self.asset.text())
        except ValueError:
            self.available.setText("")
            return
        state = self._checkable()
        if not compose.channels_checkable(state):
            self.available.setText(
                f"the channel with {short_hex(route[0])} is checked when you pay"
            )
            return
        rec = state.channel(route[0])
        if rec is None:
            self.available.setText(f"no channel with {short_hex(route[0])}")
            return
        self.available.setText(
            f"{max(available(rec.side, asset), 0):,} of asset {asset} available "
            f"towards {short_hex(route[0])}"
        )

    def validate(self) -> tuple[tuple[bytes, ...], int, int] | None:
        try:
            body = compose.pay(
                self.route_text(), self.asset.text(), self.amount.text(), self._checkable()
            )
        except ComposeError as exc:
            self.show_errors(exc.errors)
            return None
        self.show_errors({})
        return body.route, body.asset, body.amount

    def submit(self) -> None:
        checked = self.validate()
        if checked is None:
            return
        route, asset, amount = checked
        e = self.entry
        self.start(
            self.wallet_actions.pay(e.signer_id, e.state.entity_id, route, asset, amount),
            f"Paying {amount:,} of asset {asset}\u2026",
        )


class ChannelsView(QWidget):
    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        approvals: ApprovalQueue,
        parent: QWidget | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.wallet_actions = actions
        self.page_size = page_size
        self.cards: list[EntityChannels] = []
        self.dialog: PayDialog | None = None
        self.status = StatusLine()
        top = QHBoxLayout()
        top.addWidget(caption("Reserves and channels"))
        top.addStretch(1)
        self.body_layout = scrolled_page(self, top, self.status)
        follow(self, [(model.entities_changed, self.refresh)])
        self.refresh()

    def refresh(self) -> None:
        """Update the cards in place when only states moved; rebuild when entities
        come or go."""
        keys = sorted(self.model.entities)
        if [(c.entry.signer_id, c.entry.state.entity_id) for c in self.cards] == keys and keys:
            for card in self.cards:
                entry = self.model.entities[(card.entry.signer_id, card.entry.state.entity_id)]
                if entry is not card.entry:
                    card.show_entry(entry)
            return
        self._rebuild(keys)

    def _rebuild(self, keys: list[tuple[bytes, bytes]]) -> None:
        while self.body_layout.count():
            item = self.body_layout.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.hide()
                w.deleteLater()
        self.cards = []
        names = signer_names(self.model)
        if not keys:
            hint = QLabel("No entity yet: create or join one in the Entities view.")
            set_role(hint, "muted")
            self.body_layout.addWidget(hint)
        for key in keys:
            card = EntityChannels(
                self.model.entities[key], names, self.wallet_actions, self.page_size
            )
            card.pay_button.clicked.connect(lambda _=False, c=card: self.open_pay(c))
            self.cards.append(card)
            self.body_layout.addWidget(card)
        self.body_layout.addStretch(1)

    def open_pay(self, card: EntityChannels) -> PayDialog:
        dialog = PayDialog(self.wallet_actions, card.entry, card.at_hand, self)
        dialog.accepted.connect(lambda: self.status.done("Payment submitted"))
        dialog.open()
        self.dialog = dialog
        return dialog
