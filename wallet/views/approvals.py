"""The Approvals view: pre-commit requests waiting for the user, newest first, each
with a countdown; the selected one's hash, effects (governance and channel actions
highlighted, payments with their amount: what leaves red, what comes in green),
decoded transactions with their raw bytes, and the signer bar; Approve and Reject
from buttons or the keyboard. The accountant's decisions are listed greyed, with
the rule that made them.
"""

from __future__ import annotations

import html
import math

from wallet.flows.approvals import ApprovalQueue, ApprovalRequest, Status
from wallet.flows.effects import CHANNEL_ACTION_KINDS, PAYMENT, UNBALANCED_FORWARD, Effect
from wallet.flows.refusals import CHANNELS_WAIT, refusal_lines, withdrawable
from wallet.model import WalletActions, WalletModel
from wallet.qt import (
    QBrush,
    QColor,
    QHBoxLayout,
    QKeySequence,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QShortcut,
    QSplitter,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
)
from wallet.views import theme
from wallet.views.segbar import SegmentedBar, segments_for
from wallet.views.widgets import (
    CopyableHash,
    StatusLine,
    TaskRunner,
    caption,
    mono_font,
    name,
    plural,
    set_role,
    short_hex,
    signer_names,
)

APPROVE_KEYS = ("Ctrl+Return", "Ctrl+Enter")
REJECT_KEYS = ("Ctrl+Backspace", "Delete")
ID_ROLE = Qt.ItemDataRole.UserRole


def countdown(seconds: float) -> str:
    """``0:42`` left; whole seconds, rounded up so 0:00 means really over."""
    s = max(0, math.ceil(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _order_key(r: ApprovalRequest) -> tuple[bool, int]:
    return (r.status is not Status.PENDING, -r.id)


def ordered(queue: ApprovalQueue) -> list[ApprovalRequest]:
    """Pending newest first, then decided newest first."""
    return sorted(queue.all(), key=_order_key)


def outcome_text(r: ApprovalRequest) -> str:
    match r.status:
        case Status.PENDING:
            return "waiting for you"
        case Status.EXPIRED:
            return f"expired: {r.reason}" if r.reason else "expired"
    who = r.decided_by or "?"
    text = f"{r.status.value} by {who}"
    if r.status is Status.APPROVED and r.signed:
        text += ", signed"
    return text


PAY_OUT_FG = "#c0392b"
PAY_IN_FG = "#2e7d32"
OUT_KINDS = frozenset({PAYMENT, UNBALANCED_FORWARD})
IN_KINDS = frozenset({"received", "refunded", "minted"})


def amount_html(e: Effect) -> str:
    """A payment's amount, signed and coloured: what leaves red, what comes in green."""
    if e.amount is None or not (e.is_payment or e.kind in CHANNEL_ACTION_KINDS):
        return ""
    asset = f" <small>asset {e.asset}</small>" if e.asset is not None else ""
    if e.kind in OUT_KINDS or e.kind in CHANNEL_ACTION_KINDS:
        return f'<b style="color:{PAY_OUT_FG};">\u2212{e.amount:,}</b>{asset}&nbsp; '
    if e.kind in IN_KINDS:
        return f'<b style="color:{PAY_IN_FG};">+{e.amount:,}</b>{asset}&nbsp; '
    return f"<b>{e.amount:,}</b>{asset}&nbsp; "


def effect_html(e: Effect) -> str:
    """One effect's line; governance and channel actions tagged in the theme's tag
    colours (fixed light ones were unreadable on the dark theme)."""
    text = amount_html(e) + html.escape(e.text)
    c = theme.colors()
    if e.kind in CHANNEL_ACTION_KINDS:
        return (
            f'<span style="background:{c.tag_bg}; color:{c.tag_fg};">'
            f"&nbsp;{text}&nbsp;</span>&nbsp;"
            f'<span style="color:{c.tag_fg};">channel</span>'
        )
    if e.governance:
        return (
            f'<span style="background:{c.tag_bg}; color:{c.tag_fg};">'
            f"&nbsp;<b>{text}</b>&nbsp;</span>&nbsp;"
            f'<span style="color:{c.tag_fg};">governance</span>'
        )
    return text


class ApprovalsView(QWidget):
    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        approvals: ApprovalQueue,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.wallet_actions = actions
        self.queue = approvals
        self._selected: int | None = None
        self._signing: int | None = None  # approved here, its signature not sent yet
        self._items: dict[int, QListWidgetItem] = {}

        self.list = QListWidget()
        self.list.setAlternatingRowColors(False)
        self.list.setSpacing(2)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.setMinimumWidth(240)

        self.empty = QLabel("Nothing waits for your approval.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        set_role(self.empty, "muted")

        # Detail ---------------------------------------------------------------
        self.title = QLabel()
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        self.title.setFont(font)
        self.subtitle = QLabel()
        set_role(self.subtitle, "muted")
        self.countdown = QLabel()
        self.countdown.setFont(mono_font())
        self.hash = CopyableHash(full=True)
        self.entity = CopyableHash()
        self.where = QLabel()
        self.effects = QLabel()
        self.effects.setTextFormat(Qt.TextFormat.RichText)
        self.effects.setWordWrap(True)
        self.txs_caption = caption("Transactions")
        self.txs = QLabel()
        self.txs.setTextFormat(Qt.TextFormat.RichText)
        self.txs.setWordWrap(True)
        self.raw_button = QPushButton("Show raw")
        self.raw_button.setCheckable(True)
        self.raw_button.setFlat(True)
        self.raw_button.toggled.connect(self._toggle_raw)
        self.raw = QPlainTextEdit()
        self.raw.setReadOnly(True)
        self.raw.setFont(mono_font())
        self.raw.setMaximumHeight(140)
        self.raw.hide()
        self.bar = SegmentedBar()
        self.bar_text = QLabel()
        set_role(self.bar_text, "muted")
        # Co-signers' signed refusals of this frame, with their reasons.
        self.refused = QLabel()
        self.refused.setWordWrap(True)
        set_role(self.refused, "error")
        self.reject_button = QPushButton("Reject")
        self.reject_button.setToolTip("Reject (Ctrl+Backspace or Delete)")
        self.reject_button.clicked.connect(self.reject_current)
        self.approve_button = QPushButton("Approve and sign")
        self.approve_button.setDefault(True)
        self.approve_button.setToolTip("Approve and sign (Ctrl+Enter)")
        self.approve_button.clicked.connect(self.approve_current)
        self.withdraw_button = QPushButton("&Withdraw my batch")  # Alt+W
        self.withdraw_button.setToolTip(
            "Take your batch out of this frame: a co-signer refused it. Your next"
            " transaction uses its nonce."
        )
        self.withdraw_button.clicked.connect(self.withdraw_current)
        self.withdraw_button.hide()
        self.status = StatusLine()
        self.runner = TaskRunner(self.status)

        d = QVBoxLayout()
        d.setSpacing(6)
        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addStretch(1)
        head.addWidget(self.countdown)
        d.addLayout(head)
        d.addWidget(self.subtitle)
        row = QHBoxLayout()
        row.addWidget(QLabel("Frame hash"))
        row.addWidget(self.hash, 1)
        d.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Entity"))
        row.addWidget(self.entity)
        row.addWidget(self.where, 1)
        d.addLayout(row)
        d.addSpacing(6)
        d.addWidget(caption("Effects"))
        d.addWidget(self.effects)
        d.addSpacing(6)
        row = QHBoxLayout()
        row.addWidget(self.txs_caption)
        row.addStretch(1)
        row.addWidget(self.raw_button)
        d.addLayout(row)
        d.addWidget(self.txs)
        d.addWidget(self.raw)
        d.addSpacing(6)
        d.addWidget(caption("Signers"))
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.bar_text)
        d.addLayout(row)
        d.addWidget(self.refused)
        d.addStretch(1)
        d.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.withdraw_button)
        buttons.addWidget(self.reject_button)
        buttons.addWidget(self.approve_button)
        d.addLayout(buttons)

        self.detail = QWidget()
        self.detail.setLayout(d)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.detail)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(12, 8, 8, 8)
        rl.addWidget(self.empty)
        rl.addWidget(scroll)
        self._scroll = scroll

        split = QSplitter()
        split.addWidget(self.list)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([280, 620])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

        for keys in APPROVE_KEYS:
            QShortcut(
                QKeySequence(keys),
                self,
                self.approve_current,
                context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
            )
        for keys in REJECT_KEYS:
            QShortcut(
                QKeySequence(keys),
                self,
                self.reject_current,
                context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
            )

        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

        on_request, on_entities = self._on_request, self._show_detail
        approvals.added.append(on_request)
        approvals.changed.append(on_request)
        model.entities_changed.connect(on_entities)

        def detach() -> None:  # a closure: the view's wrapper may be gone by then
            for listeners in (approvals.added, approvals.changed):
                if on_request in listeners:
                    listeners.remove(on_request)
            model.entities_changed.disconnect(on_entities)

        self.destroyed.connect(detach)
        self.rebuild()

    # The list ---------------------------------------------------------------

    def _on_request(self, request: ApprovalRequest) -> None:
        """One request arrived or changed: insert or update its row alone (a full
        rebuild per event stalled the loop once hundreds of decisions were listed)."""
        if request.id == self._signing:
            self._show_signing(request)
        current = self.current()
        item = self._items.get(request.id)
        self.list.blockSignals(True)
        if item is None:
            item = QListWidgetItem()
            item.setData(ID_ROLE, request.id)
            self._items[request.id] = item
        else:
            self.list.takeItem(self.list.row(item))  # re-placed below: it may have been decided
        self._style_item(item, request)
        self.list.insertItem(self._row_for(request), item)
        self._forget_dropped()
        if current is None or (current.id == request.id and request.status is not Status.PENDING):
            # Nothing shown, or the shown request was decided: on to the newest pending one.
            self._selected = None
            self._select_default()
        else:
            self.list.setCurrentItem(self._items[current.id])
        self.list.blockSignals(False)
        if current is None or current.id == request.id or self._selected != current.id:
            self._show_detail()

    def _row_for(self, request: ApprovalRequest) -> int:
        """Where a request goes: pending newest first, then decided newest first."""
        key = _order_key(request)
        low, high = 0, self.list.count()
        while low < high:  # rows are sorted by _order_key
            mid = (low + high) // 2
            if _order_key(self._request_at(mid)) < key:
                low = mid + 1
            else:
                high = mid
        return low

    def _request_at(self, row: int) -> ApprovalRequest:
        request = self.queue.get(int(self.list.item(row).data(ID_ROLE)))
        assert request is not None, "rows of requests the queue dropped are removed first"
        return request

    def _forget_dropped(self) -> None:
        """Remove the rows of decisions the queue no longer keeps (it keeps the latest)."""
        while (
            self.list.count()
            and self.queue.get(int(self.list.item(self.list.count() - 1).data(ID_ROLE))) is None
        ):
            gone = self.list.takeItem(self.list.count() - 1)
            self._items.pop(int(gone.data(ID_ROLE)), None)

    def _select_default(self) -> None:
        if self._selected is None or self.queue.get(self._selected) is None:
            first = self.list.item(0) if self.list.count() else None
            self._selected = None if first is None else int(first.data(ID_ROLE))
        item = self._items.get(self._selected) if self._selected is not None else None
        if item is not None:
            self.list.setCurrentItem(item)

    def rebuild(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        self._items = {}
        for r in ordered(self.queue):
            item = QListWidgetItem()
            item.setData(ID_ROLE, r.id)
            self._style_item(item, r)
            self._items[r.id] = item
            self.list.addItem(item)
        self._select_default()
        self.list.blockSignals(False)
        self._show_detail()

    def _style_item(self, item: QListWidgetItem, r: ApprovalRequest) -> None:
        item.setText(self._item_text(r))
        if r.status is not Status.PENDING:
            item.setForeground(QBrush(QColor(128, 128, 128)))
        if r.analysis is not None and r.analysis.governance:
            item.setToolTip("Changes the entity's governance")

    def _item_text(self, r: ApprovalRequest) -> str:
        names = signer_names(self.model)
        what = f"Frame #{r.frame.height}  ·  round {r.round}"
        if r.analysis is not None and r.analysis.governance:
            what += "  ·  governance"
        if r.analysis is not None and r.analysis.payments_out:
            total = sum(e.amount or 0 for e in r.analysis.payments_out)
            what += f"  ·  pays {total:,}"
        if r.status is Status.PENDING:
            when = f"{countdown(r.remaining(self.queue.clock()))} left"
        else:
            when = outcome_text(r)
        return f"{what}\n{short_hex(r.entity)} for {name(names, r.signer)}  ·  {when}"

    def tick(self) -> None:
        """Once a second: the countdowns."""
        for i in range(self.list.count()):
            item = self.list.item(i)
            r = self.queue.get(int(item.data(ID_ROLE)))
            if r is not None and r.status is Status.PENDING:
                item.setText(self._item_text(r))
        current = self.current()
        if current is not None:
            self._show_countdown(current)

    def _on_current(self, item: QListWidgetItem | None, _previous: object = None) -> None:
        self._selected = None if item is None else int(item.data(ID_ROLE))
        self.status.done()
        self._show_detail()

    def current(self) -> ApprovalRequest | None:
        return None if self._selected is None else self.queue.get(self._selected)

    def select(self, request_id: int) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(ID_ROLE) == request_id:
                self.list.setCurrentRow(i)
                return
        raise KeyError(f"no approval request {request_id} listed")

    # The detail --------------------------------------------------------------

    def _show_countdown(self, r: ApprovalRequest) -> None:
        if r.status is Status.PENDING:
            left = r.remaining(self.queue.clock())
            self.countdown.setText(f"{countdown(left)} left" if left > 0 else "expiring")
            self.countdown.setStyleSheet("color: #c0392b;" if left < 10 else "")
        else:
            self.countdown.setText("")

    def _show_detail(self) -> None:
        r = self.current()
        self.empty.setVisible(r is None)
        self._scroll.setVisible(r is not None)
        if r is None:
            return
        names = signer_names(self.model)
        pending = r.status is Status.PENDING
        entry = self.model.entities.get((r.signer, r.entity))
        # The config the frame was signed under: once it applies, the entity's may differ
        # (a frame that adds a signer named the new one as proposer, "1/2 of 2 shares").
        config = r.analysis.config_before if r.analysis is not None else None
        if config is None and entry is not None:
            config = entry.state.config
        if config is None and r.analysis is not None:
            config = r.analysis.config_after
        proposer = config.proposer_at(r.round) if config is not None else None

        if pending:
            self.title.setText("Approval needed")
        elif r.automatic:
            self.title.setText(f"{r.status.value.capitalize()} automatically")
        else:
            self.title.setText(r.status.value.capitalize())
        parts = [f"frame #{r.frame.height}", f"round {r.round}"]
        if proposer is not None:
            parts.append(f"from {name(names, proposer)} (proposer)")
        parts.append(f"for {name(names, r.signer)}")
        sub = "  ·  ".join(parts)
        if not pending:
            sub += f"\n{outcome_text(r)}"
            if r.reason and r.status is not Status.EXPIRED:
                sub += f": {r.reason}"
        self.subtitle.setText(sub)
        self._show_countdown(r)
        self.hash.set_value(r.frame_hash)
        self.entity.set_value(r.entity)
        self.where.setText(f"height {r.frame.height}, round {r.round}")

        a = r.analysis
        if a is None:
            self.effects.setText("<i>Not analysed: the replica's state was not available.</i>")
        elif a.error is not None:
            self.effects.setText(
                f'<span style="color:#c0392b;">This frame does not apply here: '
                f"{html.escape(a.error)}</span>"
            )
        elif not a.effects:
            self.effects.setText("<i>No effect (an empty frame).</i>")
        else:
            self.effects.setText("<br>".join(f"•&nbsp;{effect_html(e)}" for e in a.effects))

        txs = a.txs if a is not None else []
        self.txs_caption.setText(f"TRANSACTIONS ({len(txs)})")
        self.txs.setText(
            "<br>".join(
                f"•&nbsp;<b>{html.escape(name(names, t.signer))}</b> "
                f'<span style="color:gray;">#{t.nonce}</span>&nbsp; {html.escape(t.text)}'
                for t in txs
            )
            or "<i>none</i>"
        )
        raw = [f"{i + 1}. {t.name}: {t.raw_hex}" for i, t in enumerate(txs)]
        frame_hex = r.frame.raw.hex()
        raw.append(f"frame ({len(r.frame.raw)} bytes):")
        raw.extend(frame_hex[i : i + 64] for i in range(0, len(frame_hex), 64))
        self.raw.setPlainText("\n".join(raw))

        if config is not None:
            certified = self._certified_by(r.frame_hash)
            signed = {r.signer} if r.signed else set()
            if certified:  # the certificate says who signed (empty: not checked here)
                signed = set(certified)
            self.bar.set_segments(
                segments_for(config, signed, lambda s: name(names, s)), config.threshold
            )
            self.bar_text.setText(
                f"{self.bar.filled_shares}/{config.threshold} of "
                f"{plural(config.total_shares, 'share')}"
                + ("  ·  certified" if certified is not None else "")
            )
            self.bar.show()
        else:
            self.bar.hide()
            self.bar_text.setText("members unknown")
        lines = refusal_lines(
            self.model.refusals.get(r.entity, ()), r.frame_hash, lambda s: name(names, s)
        )
        if pending and entry is not None and len(entry.state.channels) > 0:
            lines.append(CHANNELS_WAIT)
        self.refused.setText("\n".join(lines))
        self.refused.setVisible(bool(lines))
        nonces = self._withdrawable(r)
        self.withdraw_button.setVisible(bool(nonces))
        self.withdraw_button.setText(
            "&Withdraw my batch" if len(nonces) <= 1 else f"&Withdraw my {len(nonces)} batches"
        )

        self.approve_button.setEnabled(pending)
        self.reject_button.setEnabled(pending)
        self.approve_button.setVisible(pending)
        self.reject_button.setVisible(pending)

    def _toggle_raw(self, on: bool) -> None:
        self.raw.setVisible(on)
        self.raw_button.setText("Hide raw" if on else "Show raw")

    # Deciding ----------------------------------------------------------------

    def approve_current(self) -> None:
        self._decide(approve=True)

    def reject_current(self) -> None:
        self._decide(approve=False)

    def _decide(self, approve: bool) -> None:
        r = self.current()
        if r is None or r.status is not Status.PENDING:
            return
        try:
            if approve:
                self.wallet_actions.approve(r.id)
            else:
                self.wallet_actions.reject(r.id)
        except (KeyError, ValueError, RuntimeError) as exc:
            self.status.fail(str(exc).strip("'\""))
            self.rebuild()
            return
        self.status.done("Approved; signing" if approve else "Rejected")
        self._signing = r.id if approve else None
        if approve:
            self._show_signing(r)  # it may be signed already (an unlocked wallet signs at once)

    def _withdrawable(self, r: ApprovalRequest) -> tuple[int, ...]:
        refusals = self.model.refusals.get(r.entity, ())
        certified = self._certified_by(r.frame_hash) is not None
        return withdrawable(r.frame, r.signer, refusals, certified)

    def withdraw_current(self) -> None:
        """Withdraw this wallet's batches from the selected frame, one withdrawal per
        nonce (the next frame takes them)."""
        r = self.current()
        if r is None or self.runner.running:
            return
        nonces = self._withdrawable(r)
        if not nonces:
            return

        async def withdraw_all() -> None:
            for nonce in nonces:
                await self.wallet_actions.withdraw(r.signer, r.entity, nonce)

        self.runner.run(
            withdraw_all(),
            disable=[self.withdraw_button],
            busy="Withdrawing\u2026",
            done=f"Withdrawn: nonce {', '.join(map(str, nonces))}",
        )

    def _certified_by(self, frame_hash: bytes) -> tuple[bytes, ...] | None:
        """Who signed the frame's certificate, if the wallet saw it certified (its
        history's frame item; empty when the certificate was not checked here). The
        service adds that item before it moves the entity, whose change repaints this."""
        for item in reversed(self.model.history):
            if item.kind == "frame" and item.hash == frame_hash:
                return item.cert_signers
        return None

    def _show_signing(self, request: ApprovalRequest) -> None:
        """The outcome of the approval made here: signed and sent, or not signed."""
        if request.signed:
            self.status.done("Approved; signed and sent")
        elif request.status is Status.EXPIRED:
            self.status.fail(f"Approved, but not signed: {request.reason}")
        else:
            return
        self._signing = None
