"""The Proposals view: the selected entity's open proposals, and those that closed
(executed or expired) since the window opened; each with its segmented vote bar,
the heights left, and a Vote button. "New proposal" opens the editor dialog.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.machines.entity import EntityState, Proposal
from node.machines.governance import AddSigner, RemoveSigner, SetProposer, SetShares, SetThreshold
from wallet.flows.approvals import ApprovalQueue
from wallet.flows.effects import describe_action
from wallet.model import EntityEntry, WalletActions, WalletModel
from wallet.qt import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QShowEvent,
    Qt,
    QWidget,
)
from wallet.views.segbar import SegmentedBar, segments_for
from wallet.views.widgets import (
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

CLOSED_LIMIT = 200

type Key = tuple[bytes, bytes]  # (the user's signer, entity id)


@dataclass(frozen=True, slots=True)
class Closed:
    proposal: Proposal
    outcome: str  # "executed" or "expired"
    height: int  # the entity height at which the wallet saw it close
    config_before: EntityState


def closed_outcome(p: Proposal, before: EntityState, after: EntityState) -> str:
    """Why an open proposal is gone from ``after``: it executed (or closed void), or expired.

    Before its expiry height it can only have closed by reaching the threshold; at
    or after it, it expired unless its change is visible in the new config.
    """
    if after.height < p.expires_at:
        return "executed"
    c = after.config
    match p.action:
        case SetThreshold(threshold=t) if c.threshold == t != before.config.threshold:
            return "executed"
        case SetProposer(signer=s) if c.proposer == s != before.config.proposer:
            return "executed"
        case AddSigner(pubkey=pk) if any(m.pubkey == pk for m in c.members):
            return "executed"
        case RemoveSigner(signer=s) if s not in c.index and s in before.config.index:
            return "executed"
        case SetShares(signer=s, shares=n) if (
            s in c.index and c.members[c.index[s]].shares == n
        ) and before.config.members[before.config.index[s]].shares != n:
            return "executed"
    return "expired"


def entry_label(entry: EntityEntry, names: dict[bytes, str]) -> str:
    c = entry.state.config
    return (
        f"{short_hex(entry.state.entity_id)}  ·  {plural(len(c.members), 'signer')}, "
        f"threshold {c.threshold}/{c.total_shares}  ·  as {name(names, entry.signer_id)}"
    )


class ProposalRow(QFrame):
    """One proposal: what it does, the bar, the shares so far, heights left, Vote."""

    def __init__(
        self,
        p: Proposal,
        state: EntityState,
        me: bytes,
        names: dict[bytes, str],
        closed: Closed | None = None,
        sent: bool = False,
    ) -> None:
        super().__init__()
        self.proposal = p
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("proposalRow")
        config = state.config if closed is None else closed.config_before.config
        title = QLabel(f"<b>#{p.id}</b>&nbsp; {describe_action(p.action, names)}")
        title.setTextFormat(Qt.TextFormat.RichText)
        meta = QLabel()
        set_role(meta, "muted")
        self.bar = SegmentedBar()
        self.bar.set_segments(
            segments_for(config, set(p.votes), lambda s: name(names, s)), config.threshold
        )
        self.shares = QLabel(f"{config.shares_of(p.votes)}/{plural(config.threshold, 'share')}")
        self.vote_button = QPushButton()
        self.voted = me in p.votes
        if closed is None:
            left = p.expires_at - state.height
            meta.setText(
                f"proposed by {name(names, p.proposer)}  ·  "
                f"{left} height{'s' if left != 1 else ''} left (expires at {p.expires_at})"
            )
            self.vote_button.setText("Voted" if self.voted else "Vote sent" if sent else "Vote")
            self.vote_button.setEnabled(not self.voted and not sent and me in config.index)
            if me not in config.index:
                self.vote_button.setToolTip("Your signer is not a member")
        else:
            meta.setText(
                f"proposed by {name(names, p.proposer)}  ·  {closed.outcome} "
                f"(seen at height {closed.height})"
            )
            self.vote_button.hide()
            self.setEnabled(False)  # greyed: history, not a choice
        self.meta = meta

        grid = QGridLayout(self)
        grid.setContentsMargins(10, 8, 10, 8)
        grid.setHorizontalSpacing(10)
        grid.addWidget(title, 0, 0, 1, 2)
        grid.addWidget(self.vote_button, 0, 2, 2, 1, Qt.AlignmentFlag.AlignVCenter)
        grid.addWidget(meta, 1, 0, 1, 2)
        grid.addWidget(self.bar, 2, 0)
        grid.addWidget(self.shares, 2, 1)
        grid.setColumnStretch(0, 1)


class ProposalsView(QWidget):
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
        self._key: Key | None = None
        self._stale = True  # rows wait until the view is shown
        self._seen: dict[Key, EntityState] = dict((k, e.state) for k, e in model.entities.items())
        self.closed: dict[Key, list[Closed]] = {}
        self.rows: list[ProposalRow] = []
        # Votes submitted but not yet in a committed frame: no second vote meanwhile.
        self.sent: set[tuple[bytes, bytes, int]] = set()

        self.picker = QComboBox()
        self.picker.currentIndexChanged.connect(self._on_pick)
        self.new_button = QPushButton("&New proposal\u2026")  # Alt+N
        self.new_button.clicked.connect(self.open_editor)
        self.status = StatusLine()
        self.runner = TaskRunner(self.status)

        top = QHBoxLayout()
        top.addWidget(QLabel("Entity"))
        top.addWidget(self.picker, 1)
        top.addWidget(self.new_button)

        self.list_layout = scrolled_page(self, top, self.status)
        follow(self, [(model.entities_changed, self._on_entities)])
        self._fill_picker()

    # Entities ----------------------------------------------------------------

    def _fill_picker(self) -> None:
        names = signer_names(self.model)
        keys = sorted(self.model.entities)
        self.picker.blockSignals(True)
        self.picker.clear()
        for k in keys:
            self.picker.addItem(entry_label(self.model.entities[k], names), k)
        if self._key not in self.model.entities:
            self._key = keys[0] if keys else None
        if self._key is not None:
            self.picker.setCurrentIndex(keys.index(self._key))
        self.picker.blockSignals(False)
        self.new_button.setEnabled(self._key is not None)
        self._refresh_when_shown()

    def _refresh_when_shown(self) -> None:
        """Rows are rebuilt on each frame (heights left move); not while hidden."""
        if self.isVisible():
            self.refresh()
        else:
            self._stale = True

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def set_entity(self, signer: bytes, entity: bytes) -> None:
        """Show this entity (the main window's switcher calls it)."""
        if (signer, entity) not in self.model.entities:
            raise KeyError("not one of your entities")
        self._key = (signer, entity)
        self._fill_picker()

    def _on_pick(self, index: int) -> None:
        key = self.picker.itemData(index)
        self._key = None if key is None else (bytes(key[0]), bytes(key[1]))
        self.refresh()

    def _on_entities(self) -> None:
        for key, entry in self.model.entities.items():
            before = self._seen.get(key)
            after = entry.state
            if before is not None and after.height > before.height:
                still = {p.id for p in after.proposals}
                log = self.closed.setdefault(key, [])
                for p in before.proposals:
                    if p.id not in still:
                        log.append(
                            Closed(p, closed_outcome(p, before, after), after.height, before)
                        )
                del log[:-CLOSED_LIMIT]
            self._seen[key] = after
        self._fill_picker()

    def entry(self) -> EntityEntry | None:
        return None if self._key is None else self.model.entities.get(self._key)

    # Rows ----------------------------------------------------------------------

    def refresh(self) -> None:
        self._stale = False
        while self.list_layout.count():
            item = self.list_layout.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.hide()  # at once: deleteLater waits for the event loop
                w.deleteLater()
        self.rows = []
        entry = self.entry()
        if entry is None:
            self.list_layout.addWidget(QLabel("No entity yet: create or join one in Entities."))
            self.list_layout.addStretch(1)
            return
        names = signer_names(self.model)
        state = entry.state
        self.list_layout.addWidget(caption(f"Open ({len(state.proposals)})"))
        if not state.proposals:
            none = QLabel("No open proposal.")
            set_role(none, "muted")
            self.list_layout.addWidget(none)
        for p in sorted(state.proposals, key=lambda p: p.id, reverse=True):
            sent = (entry.signer_id, state.entity_id, p.id) in self.sent
            row = ProposalRow(p, state, entry.signer_id, names, sent=sent)
            row.vote_button.clicked.connect(lambda _=False, r=row: self.vote(r))
            self.rows.append(row)
            self.list_layout.addWidget(row)
        closed = self.closed.get(self._key or (b"", b""), [])
        if closed:
            self.list_layout.addSpacing(8)
            self.list_layout.addWidget(caption("Executed and expired"))
            for c in reversed(closed):
                row = ProposalRow(c.proposal, state, entry.signer_id, names, c)
                self.rows.append(row)
                self.list_layout.addWidget(row)
        self.list_layout.addStretch(1)

    def row(self, proposal_id: int, open_only: bool = True) -> ProposalRow:
        for r in self.rows:
            if r.proposal.id == proposal_id and (not open_only or r.vote_button.isVisibleTo(r)):
                return r
        raise KeyError(f"no proposal #{proposal_id} shown")

    def vote(self, row: ProposalRow) -> None:
        entry = self.entry()
        if entry is None or row.voted:
            return
        pid = row.proposal.id
        key = (entry.signer_id, entry.state.entity_id, pid)
        self.runner.run(
            self.wallet_actions.vote(*key),
            disable=[row.vote_button],
            busy=f"Voting for proposal #{pid}\u2026",
            done=f"Voted for proposal #{pid}; it counts once the next frame commits.",
            on_result=lambda _: self.sent.add(key),
            after=self.refresh,
        )

    def open_editor(self) -> None:
        from wallet.views.compose import NewProposalDialog

        entry = self.entry()
        if entry is None:
            return
        dialog = NewProposalDialog(self.model, self.wallet_actions, entry, self)
        dialog.open()
        self.editor = dialog
