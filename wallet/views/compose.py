"""The dialogs that compose a user's entity actions: increment, a new proposal (one
editor per governance action, and per channel action: open a channel from the
counterparty's channel card, pasted or fetched from the node; extend credit; add
collateral), a vote, create an entity from signer cards, and join
one by id.

Every check is ``wallet.flows.compose``'s (its forms give an error per field,
shown under that field); the dialog only gathers text, shows errors, and runs the
action on the loop, closing when it succeeds and showing the message when it fails.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Sequence
from typing import Any

from node.machines.entity import EntityAction, EntityState, Propose
from node.machines.governance import MAX_SHARES, Config, ConfigError, Member
from node.machines.governance import signer_id as key_id
from wallet.flows import compose
from wallet.flows.channel_pages import first_channels
from wallet.flows.compose import (
    AddSignerForm,
    ChannelForm,
    ComposeError,
    ExtendCreditForm,
    FundChannelForm,
    GovernanceForm,
    OpenChannelForm,
    RemoveSignerForm,
    SetProposerForm,
    SetSharesForm,
    SetThresholdForm,
    SignerCard,
)
from wallet.model import EntityEntry, NewMember, WalletActions, WalletLocked, WalletModel
from wallet.qt import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)
from wallet.views.widgets import (
    StatusLine,
    TaskRunner,
    name,
    plural,
    set_role,
    short_hex,
    signer_names,
)

ERROR_STYLE = "color: #c0392b;"


def error_label() -> QLabel:
    label = QLabel()
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.hide()
    return label


def add_field(form: QFormLayout, label: str, widget: QWidget) -> QLabel:
    """A form row: the widget with its own error line under it; returns the line."""
    box = QWidget()
    v = QVBoxLayout(box)
    v.setContentsMargins(0, 0, 0, 0)
    v.setSpacing(2)
    v.addWidget(widget)
    err = error_label()
    v.addWidget(err)
    form.addRow(label, box)
    return err


def show_error(label: QLabel, text: str | None) -> None:
    label.setText(text or "")
    label.setVisible(bool(text))


class ActionDialog(QDialog):
    """A form, a status line and OK/Cancel; OK validates, then runs the action."""

    OK_TEXT = "OK"

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setModal(True)
        self.setMinimumWidth(460)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.status = StatusLine()
        self.runner = TaskRunner(self.status)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText(self.OK_TEXT)
        # Shown when the action failed because the wallet is locked: the person
        # unlocks from here, then presses OK again.
        self.unlock_button = self.buttons.addButton(
            "Unlock…", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.unlock_button.hide()
        self.unlock_button.clicked.connect(self.request_unlock)
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.errors: dict[str, QLabel] = {}

    def field(self, label: str, widget: QWidget, key: str) -> None:
        """A row with its own error line under it."""
        self.errors[key] = add_field(self.form, label, widget)

    def show_errors(self, errors: dict[str, str]) -> None:
        for key, label in self.errors.items():
            show_error(label, errors.get(key))
        unplaced = [f"{k}: {v}" if k else v for k, v in errors.items() if k not in self.errors]
        if unplaced:
            self.status.fail("; ".join(unplaced))
        elif errors:
            self.status.fail("Please correct the fields marked in red.")
        else:
            self.status.done()

    def start(self, coro: Coroutine[Any, Any, Any], busy: str) -> None:
        self.unlock_button.hide()
        task = self.runner.run(
            coro,
            disable=[self.ok_button],
            busy=busy,
            on_result=lambda _: self.accept(),
            after=lambda: self._offer_unlock(task),
        )

    def _offer_unlock(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and isinstance(task.exception(), WalletLocked):
            self.unlock_button.show()

    def request_unlock(self) -> None:
        """Ask the main window for its unlock dialog (this dialog stays open)."""
        parent = self.parentWidget()
        unlock = getattr(parent.window(), "unlock", None) if parent is not None else None
        if callable(unlock):
            unlock()

    def submit(self) -> None:
        raise NotImplementedError


def _spin_text(value: int) -> QLineEdit:
    edit = QLineEdit(str(value))
    return edit


class IncrementDialog(ActionDialog):
    OK_TEXT = "Increment"

    def __init__(
        self, actions: WalletActions, entry: EntityEntry, parent: QWidget | None = None
    ) -> None:
        super().__init__("Increment the counter", parent)
        self.wallet_actions = actions
        self.entry = entry
        self.n = _spin_text(1)
        self.form.addRow(QLabel(f"Counter now {entry.state.counter}"))
        self.field("By", self.n, "n")
        # A person types the amount at once: it replaces the default 1.
        self.n.setFocus()
        self.n.selectAll()

    def submit(self) -> None:
        try:
            body = compose.increment(self.n.text())
        except ComposeError as exc:
            self.show_errors(exc.errors)
            return
        self.show_errors({})
        e = self.entry
        self.start(
            self.wallet_actions.increment(e.signer_id, e.state.entity_id, body.n),
            f"Incrementing by {body.n}\u2026",
        )


# Governance editors ------------------------------------------------------------------


class _Editor(QWidget):
    """One governance action's fields; ``form()`` makes compose's form from them."""

    KIND = ""
    TITLE = ""

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__()
        self.layout_ = QFormLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.errors: dict[str, QLabel] = {}
        self.state = state
        self.names = names

    def row(self, label: str, widget: QWidget, key: str) -> None:
        self.errors[key] = add_field(self.layout_, label, widget)

    def member_picker(self, exclude_proposer: bool = False) -> QComboBox:
        combo = QComboBox()
        c = self.state.config
        for m in c.members:
            if exclude_proposer and m.id == c.proposer:
                continue
            combo.addItem(f"{name(self.names, m.id)}  ({plural(m.shares, 'share')})", m.id.hex())
        return combo

    def form(self) -> GovernanceForm:
        raise NotImplementedError

    def action(self, state: EntityState) -> EntityAction:
        """The node's action; ComposeError with an error per field."""
        return self.form().to_action(state.config)


class AddSignerEditor(_Editor):
    KIND, TITLE = "add_signer", "Add a signer"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.card = QLineEdit()
        self.card.setPlaceholderText("xln-signer:<public key>:<proof>")
        self.shares = _spin_text(1)
        self.threshold = QLineEdit()
        self.threshold.setPlaceholderText(f"unchanged ({state.config.threshold})")
        self.threshold.setToolTip(
            "The threshold after this change: more than half of all shares, the new "
            "signer's included (a 1-of-1 entity becomes 2-of-2 with 2)"
        )
        self.row("Signer card", self.card, "card")
        self.row("Shares", self.shares, "shares")
        self.row("New threshold", self.threshold, "threshold")

    def form(self) -> GovernanceForm:
        return AddSignerForm.from_card(self.card.text(), self.shares.text(), self.threshold.text())


class RemoveSignerEditor(_Editor):
    KIND, TITLE = "remove_signer", "Remove a signer"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.member = self.member_picker(exclude_proposer=True)
        self.row("Signer", self.member, "signer_id_hex")

    def form(self) -> GovernanceForm:
        return RemoveSignerForm(str(self.member.currentData() or ""))


class SetSharesEditor(_Editor):
    KIND, TITLE = "set_shares", "Set a signer's shares"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.member = self.member_picker()
        self.shares = _spin_text(state.config.members[0].shares)
        self.row("Signer", self.member, "signer_id_hex")
        self.row("Shares", self.shares, "shares")

    def form(self) -> GovernanceForm:
        return SetSharesForm(str(self.member.currentData() or ""), self.shares.text())


class SetThresholdEditor(_Editor):
    KIND, TITLE = "set_threshold", "Set the threshold"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        c = state.config
        self.threshold = _spin_text(c.threshold)
        self.threshold.setPlaceholderText(f"{c.total_shares // 2 + 1} .. {c.total_shares}")
        self.row("Threshold", self.threshold, "threshold")
        hint = QLabel(f"now {c.threshold} of {plural(c.total_shares, 'share')}")
        set_role(hint, "muted")
        self.layout_.addRow("", hint)

    def form(self) -> GovernanceForm:
        return SetThresholdForm(self.threshold.text())


class SetProposerEditor(_Editor):
    KIND, TITLE = "set_proposer", "Change the proposer"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.member = self.member_picker()
        self.row("New proposer", self.member, "signer_id_hex")

    def form(self) -> GovernanceForm:
        return SetProposerForm(str(self.member.currentData() or ""))


class _ChannelEditor(_Editor):
    def channel_form(self) -> ChannelForm:
        raise NotImplementedError

    def action(self, state: EntityState) -> EntityAction:
        return self.channel_form().to_action(state)

    def peer_picker(self) -> QComboBox:
        combo = QComboBox()
        combo.setEditable(True)
        for c in first_channels(self.state):
            combo.addItem(f"0x{c.peer.hex()}", c.peer.hex())
        return combo


class OpenChannelEditor(_ChannelEditor):
    """The counterparty's channel card: pasted, or fetched from the node by entity id
    (when the node hosts that entity)."""

    KIND, TITLE = "open_channel", "Open a channel"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.peer = QLineEdit()
        self.peer.setPlaceholderText("the counterparty's entity id, 0x…")
        self.fetch_button = QPushButton("Fetch card")
        self.fetch_button.setToolTip("Read the entity's signer set from this node")
        fetch = QWidget()
        row = QGridLayout(fetch)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.peer, 0, 0)
        row.addWidget(self.fetch_button, 0, 1)
        row.setColumnStretch(0, 1)
        self.card = QLineEdit()
        self.card.setPlaceholderText('{"entity": …, "config_height": …, "config": …}')
        self.asset = _spin_text(1)
        self.collateral = _spin_text(0)
        self.row("Counterparty", fetch, "peer")
        self.row("Channel card", self.card, "card")
        self.row("Asset", self.asset, "asset")
        self.row("Collateral", self.collateral, "collateral")
        hint = QLabel(
            "Reserve: "
            + (", ".join(f"{n:,} of asset {a}" for a, n in state.reserves) or "none")
            + ". The counterparty must open a channel to this entity too."
        )
        hint.setWordWrap(True)
        set_role(hint, "muted")
        self.layout_.addRow("", hint)

    def channel_form(self) -> ChannelForm:
        return OpenChannelForm(self.card.text(), self.asset.text(), self.collateral.text())


class ExtendCreditEditor(_ChannelEditor):
    KIND, TITLE = "set_credit", "Extend credit"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.peer = self.peer_picker()
        self.asset = _spin_text(1)
        self.limit = _spin_text(0)
        self.row("Counterparty", self.peer, "peer")
        self.row("Asset", self.asset, "asset")
        self.row("Credit limit", self.limit, "limit")

    def channel_form(self) -> ChannelForm:
        return ExtendCreditForm(self.peer.currentText(), self.asset.text(), self.limit.text())


class FundChannelEditor(_ChannelEditor):
    KIND, TITLE = "add_collateral", "Add collateral"

    def __init__(self, state: EntityState, names: dict[bytes, str]) -> None:
        super().__init__(state, names)
        self.peer = self.peer_picker()
        self.asset = _spin_text(1)
        self.amount = _spin_text(0)
        self.row("Counterparty", self.peer, "peer")
        self.row("Asset", self.asset, "asset")
        self.row("Amount", self.amount, "amount")

    def channel_form(self) -> ChannelForm:
        return FundChannelForm(self.peer.currentText(), self.asset.text(), self.amount.text())


EDITORS: tuple[type[_Editor], ...] = (
    AddSignerEditor,
    RemoveSignerEditor,
    SetSharesEditor,
    SetThresholdEditor,
    SetProposerEditor,
    OpenChannelEditor,
    ExtendCreditEditor,
    FundChannelEditor,
)

# compose's field names -> the editor's error line
_FIELD_ALIASES = {"pubkey_hex": "card", "pop_hex": "card"}


class NewProposalDialog(ActionDialog):
    OK_TEXT = "Propose"

    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        entry: EntityEntry,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("New proposal", parent)
        self.wallet_actions = actions
        self.entry = entry
        names = signer_names(model)
        state = entry.state
        self.kind = QComboBox()
        self.stack = QStackedWidget()
        self.editors: dict[str, _Editor] = {}
        for cls in EDITORS:
            editor = cls(state, names)
            self.editors[cls.KIND] = editor
            self.kind.addItem(cls.TITLE, cls.KIND)
            self.stack.addWidget(editor)
            if isinstance(editor, OpenChannelEditor):
                editor.fetch_button.clicked.connect(lambda _=False, e=editor: self.fetch_card(e))
        self.kind.currentIndexChanged.connect(self._on_kind)
        self.expires = _spin_text(compose.default_expiry(state))
        self.form.addRow(QLabel(f"Entity {short_hex(state.entity_id)} at height {state.height}"))
        self.form.addRow("Action", self.kind)
        self.form.addRow(self.stack)
        self.field("Expires at height", self.expires, "expires_at")
        self.action_error = error_label()
        self.form.addRow(self.action_error)
        # A person picks the action first, then Tab goes through its fields (the
        # dialog's own first focus was its OK button, before the form).
        self.kind.setFocus()

    def _on_kind(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        self.show_errors({})

    def fetch_card(self, editor: OpenChannelEditor) -> None:
        """Fill the card from the node, for the entity id typed."""
        try:
            peer = compose.parse_hex(editor.peer.text(), 32, "entity id")
        except ValueError as exc:
            show_error(editor.errors["peer"], str(exc))
            return
        show_error(editor.errors["peer"], None)

        def got(card: str) -> None:
            editor.card.setText(card)
            self.status.done("Channel card fetched from the node")

        self.runner.run(
            self.wallet_actions.channel_card(peer),
            disable=[editor.fetch_button],
            busy="Fetching the channel card\u2026",
            on_result=got,
        )

    def set_kind(self, kind: str) -> _Editor:
        self.kind.setCurrentIndex(self.kind.findData(kind))
        return self.editors[kind]

    @property
    def editor(self) -> _Editor:
        return self.editors[str(self.kind.currentData())]

    def show_errors(self, errors: dict[str, str]) -> None:
        errors = dict(errors)
        editor = self.editor
        mine: dict[str, str] = {}
        for key, text in list(errors.items()):
            target = _FIELD_ALIASES.get(key, key)
            if target in editor.errors:
                mine[target] = f"{mine[target]}; {text}" if target in mine else text
                del errors[key]
        for key, label in editor.errors.items():
            show_error(label, mine.get(key))
        show_error(self.action_error, errors.pop("action", None))
        super().show_errors(errors)
        if mine and not errors:
            self.status.fail("Please correct the fields marked in red.")

    def validate(self) -> Propose | None:
        """The proposal, or None with every error shown next to its field."""
        state = self.entry.state
        errors: dict[str, str] = {}
        action = None
        try:
            action = self.editor.action(state)
        except ComposeError as exc:
            errors.update(exc.errors)
        if action is not None:
            try:
                body = compose.propose(action, self.expires.text(), state)
            except ComposeError as exc:
                errors.update(exc.errors)
            else:
                self.show_errors({})
                return body
        self.show_errors(errors)
        return None

    def submit(self) -> None:
        body = self.validate()
        if body is None:
            return
        e = self.entry
        self.start(
            self.wallet_actions.propose(
                e.signer_id, e.state.entity_id, body.action, body.expires_at
            ),
            "Proposing\u2026",
        )


class VoteDialog(ActionDialog):
    OK_TEXT = "Vote"

    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        entry: EntityEntry,
        proposal_id: int | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Vote", parent)
        from wallet.flows.effects import describe_action

        self.wallet_actions = actions
        self.entry = entry
        names = signer_names(model)
        self.proposal = QComboBox()
        for p in entry.state.proposals:
            self.proposal.addItem(f"#{p.id}  {describe_action(p.action, names)}", p.id)
        if proposal_id is not None:
            self.proposal.setCurrentIndex(max(self.proposal.findData(proposal_id), 0))
        self.field("Proposal", self.proposal, "proposal_id")

    def submit(self) -> None:
        e = self.entry
        try:
            body = compose.vote(str(self.proposal.currentData() or ""), e.state, e.signer_id)
        except ComposeError as exc:
            self.show_errors(exc.errors)
            return
        self.show_errors({})
        self.start(
            self.wallet_actions.vote(e.signer_id, e.state.entity_id, body.proposal_id),
            f"Voting for #{body.proposal_id}\u2026",
        )


# Entities ----------------------------------------------------------------------------


class MemberRow(QWidget):
    def __init__(self, card: str = "", shares: int = 1) -> None:
        super().__init__()
        self.card = QLineEdit(card)
        self.card.setPlaceholderText("xln-signer:<public key>:<proof>")
        self.shares = QLineEdit(str(shares))
        self.shares.setMaximumWidth(80)
        self.remove = QPushButton("Remove")
        self.remove.setFlat(True)
        self.error = error_label()
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.card, 0, 0)
        grid.addWidget(self.shares, 0, 1)
        grid.addWidget(self.remove, 0, 2)
        grid.addWidget(self.error, 1, 0, 1, 3)
        grid.setColumnStretch(0, 1)


def parse_members(
    rows: Sequence[tuple[str, str]],
) -> tuple[list[NewMember], dict[int, str]]:
    """Cards and shares as typed -> members, and an error per row index."""
    members: list[NewMember] = []
    errors: dict[int, str] = {}
    seen: set[bytes] = set()
    for i, (card_text, shares_text) in enumerate(rows):
        try:
            card = SignerCard.decode(card_text)
            shares = compose.parse_int(shares_text, "shares", 1, MAX_SHARES)
        except ValueError as exc:
            errors[i] = str(exc)
            continue
        if card.signer_id in seen:
            errors[i] = "this signer is listed twice"
            continue
        seen.add(card.signer_id)
        members.append(card.member(shares))
    return members, errors


class CreateEntityDialog(ActionDialog):
    """Members as signer cards with their shares, the threshold and the proposer."""

    OK_TEXT = "Create entity"

    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        own_cards: Sequence[SignerCard],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Create an entity", parent)
        self.wallet_actions = actions
        self.model = model
        self.own_cards = list(own_cards)
        self.created: bytes | None = None
        names = signer_names(model)
        self.signer = QComboBox()
        own = {c.signer_id for c in own_cards} | {s for s, _ in model.entities}
        for sid in sorted(own):
            self.signer.addItem(name(names, sid) if len(own) > 1 else short_hex(sid), sid.hex())
        self.field("Your signer", self.signer, "signer")
        self.members_box = QWidget()
        self.members_layout = QVBoxLayout(self.members_box)
        self.members_layout.setContentsMargins(0, 0, 0, 0)
        self.rows: list[MemberRow] = []
        self.add_button = QPushButton("Add member")
        self.add_button.clicked.connect(lambda: self.add_member().card.setFocus())
        self.form.addRow("Members", self.members_box)
        self.form.addRow("", self.add_button)
        self.threshold = QLineEdit()
        self.field("Threshold", self.threshold, "threshold")
        self.proposer = QComboBox()
        self.field("Proposer", self.proposer, "proposer")
        for card in own_cards[:1]:
            self.add_member(card.encode(), 1)
        if not self.rows:
            self.add_member()

    def add_member(self, card: str = "", shares: int = 1) -> MemberRow:
        """A member's row (Add member puts the cursor in its card)."""
        row = MemberRow(card, shares)
        row.remove.clicked.connect(lambda: self._remove(row))
        row.card.textChanged.connect(self._refresh_proposers)
        self.rows.append(row)
        self.members_layout.addWidget(row)
        self._refresh_proposers()
        self._tab_order()
        return row

    def _remove(self, row: MemberRow) -> None:
        if len(self.rows) > 1:
            self.rows.remove(row)
            row.deleteLater()
            self._refresh_proposers()
            self._tab_order()

    def _tab_order(self) -> None:
        """Tab follows the form as it reads: rows added later came last in Qt's order,
        after the proposer."""
        chain: list[QWidget] = [self.signer]
        for row in self.rows:
            chain += [row.card, row.shares, row.remove]
        chain += [self.add_button, self.threshold, self.proposer]
        for first, second in itertools.pairwise(chain):
            QWidget.setTabOrder(first, second)

    def _refresh_proposers(self) -> None:
        keep = self.proposer.currentIndex()
        self.proposer.clear()
        for i in range(len(self.rows)):
            self.proposer.addItem(f"member {i + 1}", i)
        self.proposer.setCurrentIndex(min(max(keep, 0), len(self.rows) - 1))

    def validate(self) -> tuple[bytes, list[NewMember], int, int] | None:
        members, row_errors = parse_members([(r.card.text(), r.shares.text()) for r in self.rows])
        for i, row in enumerate(self.rows):
            show_error(row.error, row_errors.get(i))
        errors: dict[str, str] = {}
        signer_hex = str(self.signer.currentData() or "")
        signer = bytes.fromhex(signer_hex) if signer_hex else b""
        if not signer:
            errors["signer"] = "you need a signer key first"
        total = sum(m.shares for m in members)
        threshold: int | None = None
        try:
            threshold = compose.parse_int(self.threshold.text(), "threshold", 1, 2**64 - 1)
        except ValueError as exc:
            errors["threshold"] = str(exc)
        proposer = int(self.proposer.currentData() or 0)
        if not row_errors and members:
            ids = [key_id(m.pubkey) for m in members]
            if signer and signer not in ids:
                errors["signer"] = "your signer must be one of the members"
            if threshold is not None:
                try:
                    Config(
                        tuple(Member(m.pubkey, m.shares) for m in members), threshold, ids[proposer]
                    )
                except ConfigError as exc:
                    errors["threshold"] = f"{exc} ({total // 2 + 1} .. {total})"
        if row_errors or errors or threshold is None:
            self.show_errors(errors)
            if row_errors and not errors:
                self.status.fail("Please correct the members marked in red.")
            return None
        self.show_errors({})
        return signer, members, threshold, proposer

    def submit(self) -> None:
        checked = self.validate()
        if checked is None:
            return
        signer, members, threshold, proposer = checked

        def created(entity: bytes) -> None:
            self.created = entity
            self.accept()

        self.runner.run(
            self.wallet_actions.create_entity(signer, members, threshold, proposer),
            disable=[self.ok_button],
            busy="Creating the entity\u2026",
            on_result=created,
        )


class JoinEntityDialog(ActionDialog):
    OK_TEXT = "Join"

    def __init__(
        self,
        model: WalletModel,
        actions: WalletActions,
        own_signers: Sequence[bytes],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Join an entity", parent)
        self.wallet_actions = actions
        names = signer_names(model)
        self.signer = QComboBox()
        for sid in own_signers:
            self.signer.addItem(name(names, sid), sid.hex())
        self.entity = QLineEdit()
        self.entity.setPlaceholderText("0x… (32 bytes)")
        self.field("Your signer", self.signer, "signer")
        self.field("Entity id", self.entity, "entity")

    def submit(self) -> None:
        errors: dict[str, str] = {}
        entity = b""
        try:
            entity = compose.parse_hex(self.entity.text(), 32, "entity id")
        except ValueError as exc:
            errors["entity"] = str(exc)
        signer_hex = str(self.signer.currentData() or "")
        if not signer_hex:
            errors["signer"] = "you need a signer key first"
        self.show_errors(errors)
        if errors:
            return
        self.start(
            self.wallet_actions.join_entity(bytes.fromhex(signer_hex), entity),
            "Waiting for the entity's replica\u2026",
        )
