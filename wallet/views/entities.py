"""The Entities view: the user's signers, and each entity they sign for: members with
their shares drawn as a bar (filled: who signed the last certificate), threshold,
proposer, height, counter and the entity id to copy; a warning badge on a member the
node holds equivocation evidence against, and a line per record (worded by
``wallet.flows.evidence``); Increment and Copy channel card (what a counterparty
needs to open a channel) per entity, Create entity and Join by id.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.evidence import Evidence
from wallet.contacts import MAX_NAME, ContactsError, clean_name
from wallet.flows import evidence as ev
from wallet.flows.approvals import ApprovalQueue
from wallet.flows.backup import only_here
from wallet.flows.compose import ChannelCard, SignerCard
from wallet.model import EntityEntry, WalletActions, WalletModel
from wallet.qt import (
    QApplication,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)
from wallet.views.compose import (
    ActionDialog,
    CreateEntityDialog,
    IncrementDialog,
    JoinEntityDialog,
)
from wallet.views.segbar import SegmentedBar, segments_for
from wallet.views.widgets import (
    CopyableHash,
    StatusLine,
    caption,
    follow,
    name,
    plural,
    scrolled_page,
    set_role,
    short_hex,
    signer_names,
)


class EntityCard(QFrame):
    """One entity; :meth:`show_entry` refreshes it in place as its frames arrive."""

    def __init__(
        self,
        entry: EntityEntry,
        names: dict[bytes, str],
        evidence: tuple[Evidence, ...] = (),
        only_here: str | None = None,
    ) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.entity_id = CopyableHash(entry.state.entity_id)
        self.bar = SegmentedBar()
        self.summary = QLabel()
        self.numbers = QLabel()
        set_role(self.numbers, "muted")
        self.members = QLabel()
        self.members.setWordWrap(True)
        self.evidence = QLabel()
        self.evidence.setWordWrap(True)
        set_role(self.evidence, "error")
        self.evidence.setToolTip(
            "The node holds two pre-commits signed by this member for different frames "
            "at one height and round: both signatures verify under the member's key. "
            "An honest signer never does this; its key may be stolen."
        )
        self.only_here = QLabel()
        self.only_here.setObjectName("onlyHere")
        self.only_here.setWordWrap(True)
        set_role(self.only_here, "warning")
        self.only_here.setToolTip(
            "Every member of this entity is hosted on this computer's node: no other "
            "server holds its state, and the recovery phrase cannot bring it back."
        )
        self.shown_only_here: str | None = None
        self.increment_button = QPushButton("Increment\u2026")
        self.name_button = QPushButton("Name co-signers\u2026")
        self.name_button.setToolTip("Names for the other members, shown on this wallet only")
        self.channel_card_button = QPushButton("Copy channel card")
        self.channel_card_button.setToolTip(
            "This entity's id and signer set as JSON: what a counterparty pastes to "
            "open a channel with it"
        )
        grid = QGridLayout(self)
        grid.setContentsMargins(10, 8, 10, 8)
        head = QHBoxLayout()
        head.addWidget(QLabel(f"<b>Entity</b> as {name(names, entry.signer_id)}"))
        head.addWidget(self.entity_id, 1)
        grid.addLayout(head, 0, 0)
        buttons = QHBoxLayout()
        buttons.addWidget(self.name_button)
        buttons.addWidget(self.channel_card_button)
        buttons.addWidget(self.increment_button)
        grid.addLayout(buttons, 0, 1)
        grid.addWidget(self.summary, 1, 0, 1, 2)
        grid.addWidget(self.bar, 2, 0, 1, 2)
        grid.addWidget(self.members, 3, 0, 1, 2)
        grid.addWidget(self.numbers, 4, 0, 1, 2)
        grid.addWidget(self.evidence, 5, 0, 1, 2)
        grid.addWidget(self.only_here, 6, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        self.show_entry(entry, names, evidence, only_here)

    def show_entry(
        self,
        entry: EntityEntry,
        names: dict[bytes, str],
        evidence: tuple[Evidence, ...] = (),
        only_here: str | None = None,
    ) -> None:
        self.entry = entry
        self.shown_evidence = evidence
        self.shown_only_here = only_here
        self.only_here.setText(f"\u26a0 {only_here}" if only_here else "")
        self.only_here.setVisible(only_here is not None)
        found = ev.equivocations(entry.state.config, evidence)
        flagged = ev.badges(found)
        s = entry.state
        c = s.config
        self.bar.set_segments(
            segments_for(c, set(entry.last_cert_signers), lambda sid: name(names, sid)),
            c.threshold,
        )
        self.summary.setText(
            f"{plural(len(c.members), 'signer')}  ·  threshold "
            f"{c.threshold} of {plural(c.total_shares, 'share')}  ·  proposer "
            f"{name(names, c.proposer)}"
        )
        self.numbers.setText(
            f"height {s.height}  ·  counter {s.counter}  ·  "
            f"{len(s.proposals)} open proposal{'s' if len(s.proposals) != 1 else ''}"
        )
        members = "  ".join(
            f"{name(names, m.id)} {m.shares}"
            + (" (proposer)" if m.id == c.proposer else "")
            + (f" \u26a0 equivocated \u00d7{flagged[m.id]}" if m.id in flagged else "")
            for m in c.members[:12]
        )
        if len(c.members) > 12:
            members += f"  … and {len(c.members) - 12} more"
        self.members.setText(members)
        self.evidence.setText("\n".join(ev.lines(found, lambda sid: name(names, sid))))
        self.evidence.setVisible(bool(found))


class NameSignerDialog(ActionDialog):
    """A name for one co-signer (empty: forget it), kept by this wallet alone."""

    OK_TEXT = "Save"

    def __init__(
        self,
        actions: WalletActions,
        signers: Sequence[bytes],
        names: dict[bytes, str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Name a co-signer", parent)
        self.wallet_actions = actions
        self.names = names
        self.signer = QComboBox()
        for sid in signers:
            self.signer.addItem(f"{short_hex(sid)}  {names.get(sid, '')}".rstrip(), sid)
        self.name = QLineEdit()
        self.name.setMaxLength(MAX_NAME)
        self.name.setPlaceholderText("e.g. Alice (treasury)")
        self.signer.currentIndexChanged.connect(self._show_name)
        self.field("Co-signer", self.signer, "signer")
        self.field("Name", self.name, "name")
        self._show_name()
        self.ok_button.setEnabled(bool(signers))

    def _show_name(self) -> None:
        sid = self.signer.currentData()
        self.name.setText(self.names.get(sid, "") if isinstance(sid, bytes) else "")

    def submit(self) -> None:
        sid = self.signer.currentData()
        try:
            name = clean_name(self.name.text())
        except ContactsError as exc:
            self.show_errors({"name": str(exc)})
            return
        self.show_errors({})
        self.start(self.wallet_actions.name_signer(sid, name), "Saving…")


class EntitiesView(QWidget):
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
        self.own_cards: list[SignerCard] = []
        self._shown_signers: list[bytes] | None = None
        self.cards: list[EntityCard] = []
        self.dialog: (
            IncrementDialog | CreateEntityDialog | JoinEntityDialog | NameSignerDialog | None
        ) = None

        self.create_button = QPushButton("Create entity\u2026")
        self.create_button.clicked.connect(self.open_create)
        self.join_button = QPushButton("Join by id\u2026")
        self.join_button.clicked.connect(self.open_join)
        self.status = StatusLine()
        top = QHBoxLayout()
        top.addWidget(caption("Your signers and entities"))
        top.addStretch(1)
        top.addWidget(self.join_button)
        top.addWidget(self.create_button)

        self.body_layout = scrolled_page(self, top, self.status)
        follow(
            self, [(model.entities_changed, self.refresh), (model.contacts_changed, self._rebuild)]
        )
        self.refresh()

    def set_own_cards(self, cards: Sequence[SignerCard]) -> None:
        """The user's keys as signer cards (from the vault), for Create entity."""
        self.own_cards = list(cards)
        self._rebuild()

    def own_signers(self) -> list[bytes]:
        return sorted({c.signer_id for c in self.own_cards} | {s for s, _ in self.model.entities})

    def refresh(self) -> None:
        """Update the cards in place when only the entities' states moved (each frame
        does that); rebuild the page when signers or entities come or go."""
        shown = [(c.entry.signer_id, c.entry.state.entity_id) for c in self.cards]
        if shown == sorted(self.model.entities) and self._shown_signers == self.own_signers():
            names = signer_names(self.model)
            alone = self._only_here()
            for card in self.cards:
                entry = self.model.entities[(card.entry.signer_id, card.entry.state.entity_id)]
                evidence = self.model.evidence.get(entry.state.entity_id, ())
                line = alone.get(entry.state.entity_id)
                if (
                    entry is not card.entry
                    or evidence != card.shown_evidence
                    or line != card.shown_only_here
                ):
                    card.show_entry(entry, names, evidence, line)
            return
        self._rebuild()

    def _only_here(self) -> dict[bytes, str]:
        entries = [(entity, e.state) for (_, entity), e in self.model.entities.items()]
        return only_here(entries, self.model.hosted)

    def _rebuild(self) -> None:
        while self.body_layout.count():
            item = self.body_layout.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.hide()
                w.deleteLater()
        self.cards = []
        names = signer_names(self.model)
        signers = self.own_signers()
        self._shown_signers = signers
        self.join_button.setEnabled(bool(signers))
        self.body_layout.addWidget(caption(f"Signers ({len(signers)})"))
        own_cards = {c.signer_id: c for c in self.own_cards}
        self.card_buttons: dict[bytes, QPushButton] = {}
        for sid in signers:
            row = QWidget()
            h = QHBoxLayout(row)
            h.setContentsMargins(0, 0, 0, 0)
            h.addWidget(QLabel(name(names, sid)))
            h.addWidget(CopyableHash(sid), 1)
            own = own_cards.get(sid)
            if own is not None:
                button = QPushButton("Copy signer card")
                button.setToolTip(
                    "Your public key and proof of possession, as one line to send to "
                    "co-signers: they need it to create an entity with you or add you."
                )
                button.clicked.connect(lambda _=False, c=own: self.copy_card(c))
                self.card_buttons[sid] = button
                h.addWidget(button)
            self.body_layout.addWidget(row)
        self.body_layout.addSpacing(8)
        self.body_layout.addWidget(caption(f"Entities ({len(self.model.entities)})"))
        if not self.model.entities:
            hint = QLabel("No entity yet: create one, or join one whose members list your signer.")
            set_role(hint, "muted")
            self.body_layout.addWidget(hint)
        alone = self._only_here()
        for key in sorted(self.model.entities):
            card = EntityCard(
                self.model.entities[key],
                names,
                self.model.evidence.get(key[1], ()),
                alone.get(key[1]),
            )
            card.increment_button.clicked.connect(
                lambda _=False, c=card: self.open_increment(c.entry)
            )
            card.channel_card_button.clicked.connect(
                lambda _=False, c=card: self.copy_channel_card(c.entry)
            )
            card.name_button.clicked.connect(lambda _=False, c=card: self.open_names(c.entry))
            self.cards.append(card)
            self.body_layout.addWidget(card)
        self.body_layout.addStretch(1)

    def copy_card(self, card: SignerCard) -> None:
        QApplication.clipboard().setText(card.encode())
        self.status.done("Signer card copied: send it to your co-signers")

    def copy_channel_card(self, entry: EntityEntry) -> None:
        QApplication.clipboard().setText(ChannelCard.of(entry.state).encode())
        self.status.done("Channel card copied: a counterparty pastes it to open a channel")

    def open_increment(self, entry: EntityEntry) -> IncrementDialog:
        dialog = IncrementDialog(self.wallet_actions, entry, self)
        dialog.open()
        self.dialog = dialog
        return dialog

    def open_names(self, entry: EntityEntry) -> NameSignerDialog:
        mine = set(self.own_signers())
        others = [m.id for m in entry.state.config.members if m.id not in mine]
        dialog = NameSignerDialog(self.wallet_actions, others, self.model.contacts, self)
        dialog.open()
        self.dialog = dialog
        return dialog

    def open_create(self) -> CreateEntityDialog:
        dialog = CreateEntityDialog(self.model, self.wallet_actions, self.own_cards, self)
        dialog.accepted.connect(
            lambda: self.status.done(
                f"Entity created: 0x{dialog.created.hex()}" if dialog.created else ""
            )
        )
        dialog.open()
        self.dialog = dialog
        return dialog

    def open_join(self) -> JoinEntityDialog:
        dialog = JoinEntityDialog(self.model, self.wallet_actions, self.own_signers(), self)
        dialog.open()
        self.dialog = dialog
        return dialog
