"""The first-run pages: thin Qt over :class:`wallet.flows.onboarding.Onboarding`.

One page per step (key, backup, check, password, node, entity) in a
``QStackedWidget`` with Back and Next; Next hands the page's input to the flow,
and a :class:`StepRefused` shows its reason under the page, changing nothing.
At the end the window runs ``execute(plan)`` (the app's: the vault in an
executor, then the service), with a progress bar, and emits ``finished``.

The entity page shows the user's own signer card (computed off the GUI thread
from the phrase) with a copy button, to send to co-signers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from wallet.connection import connection_problem
from wallet.flows.onboarding import (
    CHECKED_WORDS,
    Onboarding,
    Plan,
    Step,
    StepRefused,
    WrongWords,
    threshold_hint,
)
from wallet.keys import mnemonic
from wallet.qt import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QCloseEvent,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QKeyEvent,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    Qt,
    QTimer,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from wallet.views import theme

Execute = Callable[[Plan], Awaitable[None]]

STEPS = (Step.KEY, Step.BACKUP, Step.CHECK, Step.PASSWORD, Step.NODE, Step.ENTITY, Step.DONE)
TITLES = {
    Step.KEY: ("Your signer key", "Create a new key, or restore one from its recovery phrase."),
    Step.BACKUP: (
        "Your recovery phrase",
        "These 24 words are the only backup of your key. Write them down, in order, on "
        "paper, and keep them somewhere safe. Anyone who has them can sign as you.",
    ),
    Step.CHECK: ("Check your backup", "Type the words asked for, from what you wrote down."),
    Step.PASSWORD: (
        "Wallet password",
        "The password locks and unlocks your keys on this computer. It is not part of "
        "the backup: the recovery phrase alone restores the key.",
    ),
    Step.NODE: (
        "Node",
        "The wallet talks to an XLN node. The embedded node runs inside the wallet; a "
        "remote node is reached by its URL and API token.",
    ),
    Step.ENTITY: (
        "Entity",
        "Create an entity with your co-signers, join one that lists your key, or skip "
        "this and do it later from the Entities view.",
    ),
    Step.DONE: ("Setting up", "Storing your key in the keyring and starting the wallet."),
}


TRAIL = {
    Step.KEY: "Key",
    Step.BACKUP: "Backup",
    Step.CHECK: "Check",
    Step.PASSWORD: "Password",
    Step.NODE: "Node",
    Step.ENTITY: "Entity",
}


def signer_card(phrase: str) -> str:
    """This key's signer card, as the wallet shows and copies it everywhere
    (``xln-signer:<key>:<proof>``). Slow-ish (key derivation): run it in an executor."""
    from node.crypto import bls
    from wallet.flows.compose import SignerCard
    from wallet.keys import mnemonic

    sk, _path = mnemonic.signer_key(phrase)
    return SignerCard(bls.sk_to_pk(sk), bls.pop_prove(sk)).encode()


def _explain(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setProperty("role", "muted")
    return label


class KeyPage(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.new_key = QRadioButton("&Create a new key")
        self.restore = QRadioButton("&Restore a key from its recovery phrase")
        group = QButtonGroup(self)
        group.addButton(self.new_key)
        group.addButton(self.restore)
        self.new_key.setChecked(True)
        self.phrase = QPlainTextEdit()
        self.phrase.setPlaceholderText("The 12 to 24 words of your recovery phrase, in order")
        self.phrase.setFixedHeight(84)
        self.phrase.setEnabled(False)
        self.restore.toggled.connect(self.phrase.setEnabled)
        # Restore chosen (Alt+R, or a click): the words are typed at once, no click first.
        self.restore.toggled.connect(lambda on: on and self.phrase.setFocus())
        # A backup of the data folder, restored with the phrase (optional).
        self.backup_path = QLineEdit()
        self.backup_path.setPlaceholderText("Also restore from a backup file (optional)")
        self.browse = QPushButton("Backup &file…")
        self.browse.clicked.connect(self._browse)
        self.backup_password = QLineEdit()
        self.backup_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.backup_password.setPlaceholderText("The wallet password the backup was made under")
        for widget in (self.backup_path, self.browse, self.backup_password):
            widget.setEnabled(False)
            self.restore.toggled.connect(widget.setEnabled)
        self.label = QLineEdit("my signer")
        self.label.setMaxLength(64)
        self.label.setPlaceholderText("A name for this key")
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(10)
        col.addWidget(self.new_key)
        col.addWidget(_explain("A new 24-word recovery phrase is made on this computer."))
        col.addSpacing(6)
        col.addWidget(self.restore)
        col.addWidget(self.phrase)
        row = QHBoxLayout()
        row.addWidget(self.backup_path, 1)
        row.addWidget(self.browse)
        col.addLayout(row)
        col.addWidget(self.backup_password)
        col.addWidget(
            _explain(
                "The phrase brings back the key and the entities your co-signers' servers "
                "hold; a backup also brings back what only this computer held."
            )
        )
        col.addSpacing(6)
        name = QLabel("Key name")
        name.setProperty("role", "section")
        col.addWidget(name)
        col.addWidget(self.label)
        col.addStretch(1)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Restore from a backup", str(Path.home()), "XLN backups (*.json)"
        )
        if path:
            self.backup_path.setText(path)

    def submit(self, flow: Onboarding) -> None:
        if self.restore.isChecked():
            flow.import_key(
                self.phrase.toPlainText(),
                self.label.text(),
                self.backup_path.text(),
                self.backup_password.text(),
            )
            self.phrase.clear()  # the flow holds it now; no copy in the widget
            self.backup_password.clear()
        else:
            flow.create_key(self.label.text())


class BackupPage(QWidget):
    """The 24 words in a numbered grid of three columns (four overflowed the window),
    and the "I wrote it down" confirm."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.grid_frame = QFrame()
        self.grid_frame.setProperty("role", "card")
        self.grid = QGridLayout(self.grid_frame)
        self.grid.setContentsMargins(16, 12, 16, 12)
        self.grid.setHorizontalSpacing(16)
        self.grid.setVerticalSpacing(6)
        self.cells: list[QLabel] = []
        for i in range(24):
            number = QLabel(f"{i + 1}.")
            number.setProperty("role", "muted")
            number.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            number.setMinimumWidth(24)
            word = QLabel("")
            word.setProperty("role", "mono")
            word.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
            row, column = i % 8, i // 8
            self.grid.addWidget(number, row, column * 2)
            self.grid.addWidget(word, row, column * 2 + 1)
            self.cells.append(word)
        for column in range(3):
            self.grid.setColumnStretch(column * 2 + 1, 1)
        self.confirm = QCheckBox("&I wrote the 24 words down, in order, and keep them safe")
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(12)
        col.addWidget(self.grid_frame)
        col.addWidget(self.confirm)
        col.addStretch(1)

    def show_words(self, words: list[str]) -> None:
        for cell, word in zip(self.cells, words + [""] * (24 - len(words)), strict=True):
            cell.setText(word)
        self.confirm.setChecked(False)

    def clear(self) -> None:
        for cell in self.cells:
            cell.setText("")

    def submit(self, flow: Onboarding) -> None:
        if not self.confirm.isChecked():
            raise StepRefused("confirm that you wrote the words down before going on")
        flow.backup_done()
        self.clear()


class CheckPage(QWidget):
    """The words asked for; the first letters of a word are enough (each is completed
    from the BIP-39 word list when the page is submitted: :func:`complete_word`).
    Enter moves on as on every page (:meth:`OnboardingWindow.keyPressEvent`); a word
    that does not match is marked, and its mark goes when it is edited (``on_edit``)."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.form = QGridLayout()
        self.form.setHorizontalSpacing(12)
        self.form.setVerticalSpacing(8)
        self.labels: list[QLabel] = []
        self.answers: list[QLineEdit] = []
        self.on_edit: Callable[[], None] = lambda: None
        for i in range(CHECKED_WORDS):
            label = QLabel("")
            edit = QLineEdit()
            edit.setMaximumWidth(260)
            edit.textEdited.connect(lambda _text, i=i: self._edited(i))
            self.form.addWidget(label, i, 0)
            self.form.addWidget(edit, i, 1)
            self.labels.append(label)
            self.answers.append(edit)
        self.form.setColumnStretch(2, 1)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addLayout(self.form)
        col.addStretch(1)

    def ask(self, positions: tuple[int, ...]) -> None:
        for label, edit, pos in zip(self.labels, self.answers, positions, strict=True):
            label.setText(f"Word #{pos + 1}")
            edit.clear()
            edit.setPlaceholderText(f"word number {pos + 1}")
            _mark(edit, False)

    def submit(self, flow: Onboarding) -> None:
        for edit in self.answers:
            edit.setText(complete_word(edit.text()))
        try:
            flow.check_words([e.text() for e in self.answers])
        except WrongWords as exc:
            for i, edit in enumerate(self.answers):
                _mark(edit, i in exc.indexes)
            self.answers[exc.indexes[0]].setFocus()
            raise
        for edit in self.answers:
            edit.clear()

    def marked(self) -> list[bool]:
        """Which fields are marked wrong."""
        return [edit.property("role") == "error" for edit in self.answers]

    def _edited(self, i: int) -> None:
        _mark(self.answers[i], False)
        self.on_edit()


def complete_word(text: str) -> str:
    """The BIP-39 word that ``text`` begins, if exactly one does (their first four
    letters tell them apart), else ``text`` as typed. A completer's popup, or its inline
    suggestion, took the Enter a person pressed to go on to the next word."""
    typed = text.strip().lower()
    found = [w for w in mnemonic.WORDLIST if w.startswith(typed)] if typed else []
    return found[0] if len(found) == 1 else text


def _mark(edit: QLineEdit, wrong: bool) -> None:
    edit.setProperty("role", "error" if wrong else "")
    edit.style().unpolish(edit)
    edit.style().polish(edit)


class PasswordPage(QWidget):
    def __init__(self, min_length: int) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.password = QLineEdit()
        self.again = QLineEdit()
        for edit, hint in ((self.password, "Password"), (self.again, "The same password again")):
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setPlaceholderText(hint)
            edit.setMaximumWidth(360)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(10)
        col.addWidget(self.password)
        col.addWidget(self.again)
        col.addWidget(_explain(f"At least {min_length} characters."))
        col.addStretch(1)

    def submit(self, flow: Onboarding) -> None:
        flow.set_password(self.password.text(), self.again.text())
        self.password.clear()
        self.again.clear()


class NodePage(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.embedded = QRadioButton("&Embedded node (recommended)")
        self.remote = QRadioButton("Re&mote node")
        group = QButtonGroup(self)
        group.addButton(self.embedded)
        group.addButton(self.remote)
        self.embedded.setChecked(True)
        self.url = QLineEdit()
        self.url.setPlaceholderText("ws://host:port")
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("API token (kept encrypted in the keyring)")
        for edit in (self.url, self.token):
            # Shown only for a remote node: disabled fields looked like ones to fill in.
            edit.setVisible(False)
            edit.setMaximumWidth(420)
            self.remote.toggled.connect(edit.setVisible)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(8)
        col.addWidget(self.embedded)
        col.addWidget(_explain("A light node in this process, on 127.0.0.1 only."))
        col.addSpacing(8)
        col.addWidget(self.remote)
        col.addWidget(self.url)
        col.addWidget(self.token)
        col.addStretch(1)

    def submit(self, flow: Onboarding) -> None:
        if self.remote.isChecked():
            flow.use_remote_node(self.url.text(), self.token.text())
            self.token.clear()
        else:
            flow.use_embedded_node()


class CoSignerRow(QWidget):
    def __init__(self, on_remove: Callable[[CoSignerRow], None]) -> None:
        super().__init__()
        self.card = QLineEdit()
        self.card.setPlaceholderText("Signer card: xln-signer:<public key>:<proof>")
        self.shares = QSpinBox()
        self.shares.setRange(1, 10_000)
        self.shares.setValue(1)
        self.shares.setToolTip("Shares")
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this co-signer")
        remove.clicked.connect(lambda: on_remove(self))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.card, 1)
        row.addWidget(QLabel("shares"))
        row.addWidget(self.shares)
        row.addWidget(remove)


class EntityPage(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Page")
        # own card
        card_title = QLabel("YOUR SIGNER CARD")
        card_title.setProperty("role", "section")
        self.card = QLineEdit()
        self.card.setReadOnly(True)
        self.card.setPlaceholderText("Computing…")
        self.card.setCursorPosition(0)
        self.copy = QToolButton()
        self.copy.setIcon(theme.icon("copy", size=16))
        self.copy.setToolTip("Copy your signer card, to send it to your co-signers")
        self.copy.clicked.connect(self.copy_card)
        self.copy.setEnabled(False)
        self.copied = QLabel("")  # the copy's feedback, for a few seconds
        self.copied.setProperty("role", "ok")
        self._copied_clear = QTimer(self)
        self._copied_clear.setSingleShot(True)
        self._copied_clear.setInterval(3000)
        self._copied_clear.timeout.connect(lambda: self.copied.setText(""))
        card_row = QHBoxLayout()
        card_row.addWidget(self.card, 1)
        card_row.addWidget(self.copy)
        card_row.addWidget(self.copied)

        # choice
        self.create_mode = QRadioButton("&Create an entity")
        self.join_mode = QRadioButton("&Join an entity by its id")
        self.skip_mode = QRadioButton("&Skip for now")
        group = QButtonGroup(self)
        for b in (self.create_mode, self.join_mode, self.skip_mode):
            group.addButton(b)
        self.skip_mode.setChecked(True)

        # create
        self.create_box = QWidget()
        self.own_shares = QSpinBox()
        self.own_shares.setRange(1, 10_000)
        self.own_shares.setValue(1)
        self.threshold = QSpinBox()
        self.threshold.setRange(1, 1_000_000)
        self.threshold.setValue(1)
        self.proposer = QComboBox()
        self.rows: list[CoSignerRow] = []
        self.rows_box = QVBoxLayout()
        self.rows_box.setSpacing(6)
        add = QPushButton("&Add co-signer")
        add.clicked.connect(self.add_row)
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.addWidget(QLabel("Your shares"), 0, 0)
        grid.addWidget(self.own_shares, 0, 1)
        grid.addWidget(QLabel("Threshold"), 0, 2)
        grid.addWidget(self.threshold, 0, 3)
        grid.addWidget(QLabel("Proposer"), 0, 4)
        grid.addWidget(self.proposer, 0, 5)
        grid.setColumnStretch(6, 1)
        create_col = QVBoxLayout(self.create_box)
        create_col.setContentsMargins(22, 0, 0, 0)
        self.threshold_hint = QLabel()
        self.threshold_hint.setWordWrap(True)
        self.threshold_hint.setProperty("role", "muted")
        self.own_shares.valueChanged.connect(self._explain_threshold)
        self.threshold.valueChanged.connect(self._explain_threshold)
        create_col.addLayout(grid)
        create_col.addWidget(self.threshold_hint)
        create_col.addLayout(self.rows_box)
        add_row = QHBoxLayout()
        add_row.addWidget(add)
        add_row.addStretch(1)
        create_col.addLayout(add_row)

        # join
        self.entity_id = QLineEdit()
        self.entity_id.setPlaceholderText("0x… (64 hex digits)")
        self.join_box = QWidget()
        join_col = QVBoxLayout(self.join_box)
        join_col.setContentsMargins(22, 0, 0, 0)
        join_col.addWidget(self.entity_id)

        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(8)
        col.addWidget(card_title)
        col.addLayout(card_row)
        col.addSpacing(6)
        col.addWidget(self.create_mode)
        col.addWidget(self.create_box)
        col.addWidget(self.join_mode)
        col.addWidget(self.join_box)
        col.addWidget(self.skip_mode)
        col.addSpacing(6)
        self.first_backup = QCheckBox("Back up the data folder once the wallet is set up")
        col.addWidget(self.first_backup)
        col.addWidget(
            _explain(
                "An encrypted file in the backup folder (Settings, Backups), under your "
                "wallet password: it keeps what the recovery phrase cannot bring back."
            )
        )
        col.addStretch(1)
        for button in (self.create_mode, self.join_mode, self.skip_mode):
            button.toggled.connect(self._mode)
        self._mode()
        self._refresh_proposers()

    def set_card(self, card: str) -> None:
        self.card.setText(card)
        self.card.setCursorPosition(0)
        self.copy.setEnabled(bool(card))

    def copy_card(self) -> None:
        if self.card.text():
            QApplication.clipboard().setText(self.card.text())
            self.copied.setText("Copied")
            self._copied_clear.start()

    def _mode(self) -> None:
        self.create_box.setVisible(self.create_mode.isChecked())
        self.join_box.setVisible(self.join_mode.isChecked())

    def add_row(self) -> CoSignerRow:
        row = CoSignerRow(self.remove_row)
        row.shares.valueChanged.connect(self._explain_threshold)
        self.rows.append(row)
        self.rows_box.addWidget(row)
        self._refresh_proposers()
        return row

    def remove_row(self, row: CoSignerRow) -> None:
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self._refresh_proposers()

    def _explain_threshold(self) -> None:
        total = self.own_shares.value() + sum(r.shares.value() for r in self.rows)
        ok, text = threshold_hint(total, self.threshold.value())
        self.threshold_hint.setText(text)
        self.threshold_hint.setProperty("role", "muted" if ok else "error")
        self.threshold_hint.style().unpolish(self.threshold_hint)
        self.threshold_hint.style().polish(self.threshold_hint)

    def _refresh_proposers(self) -> None:
        self._explain_threshold()
        current = self.proposer.currentIndex()
        self.proposer.clear()
        self.proposer.addItem("you")
        for i in range(len(self.rows)):
            self.proposer.addItem(f"co-signer {i + 1}")
        self.proposer.setCurrentIndex(current if 0 <= current < self.proposer.count() else 0)

    def submit(self, flow: Onboarding) -> None:
        flow.want_first_backup(self.first_backup.isChecked())
        if self.create_mode.isChecked():
            flow.create_entity(
                self.own_shares.value(),
                [(r.card.text(), r.shares.value()) for r in self.rows],
                self.threshold.value(),
                self.proposer.currentIndex(),
            )
        elif self.join_mode.isChecked():
            flow.join_entity(self.entity_id.text())
        else:
            flow.skip_entity()


class DonePage(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(6)
        self.text = _explain("Storing your key…")
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.progress)
        col.addWidget(self.text)
        col.addStretch(1)


class OnboardingWindow(QWidget):
    """The first-run window. ``finished`` fires after ``execute`` succeeded;
    ``quit_requested`` when the user closes it before that."""

    finished = Signal()
    quit_requested = Signal()

    def __init__(
        self,
        flow: Onboarding,
        execute: Execute,
        *,
        card_of: Callable[[str], str] = signer_card,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.flow = flow
        self._execute = execute
        self._card_of = card_of
        self._card_for = ""
        self._card_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self.setWindowTitle("XLN Signer · Set up")
        self.setWindowIcon(theme.app_icon())
        self.setObjectName("Page")
        self.resize(760, 560)

        self.step_label = QLabel("")
        self.step_label.setProperty("role", "section")
        self.heading = QLabel("")
        self.heading.setProperty("role", "title")
        self.explain = _explain("")
        self.pages = {
            Step.KEY: KeyPage(),
            Step.BACKUP: BackupPage(),
            Step.CHECK: self._check_page(),
            Step.PASSWORD: PasswordPage(flow.min_password),
            Step.NODE: NodePage(),
            Step.ENTITY: EntityPage(),
            Step.DONE: DonePage(),
        }
        self.stack = QStackedWidget()
        for step in STEPS:
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidget(self.pages[step])
            self.stack.addWidget(scroll)
        self.error = QLabel("")
        self.error.setProperty("role", "error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.back_button = QPushButton("&Back")
        self.back_button.clicked.connect(self.back)
        self.next_button = QPushButton("&Next")
        self.next_button.setProperty("primary", True)
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(self.next)

        side = QFrame()
        side.setObjectName("Sidebar")
        side.setFixedWidth(184)
        side_col = QVBoxLayout(side)
        side_col.setContentsMargins(16, 20, 12, 16)
        side_col.setSpacing(8)
        brand = QLabel("XLN Signer")
        brand.setProperty("role", "title")
        side_col.addWidget(brand)
        side_col.addSpacing(12)
        self.trail: dict[Step, QLabel] = {}
        for step in STEPS[:-1]:
            item = QLabel(TRAIL[step])
            self.trail[step] = item
            side_col.addWidget(item)
        side_col.addStretch(1)

        buttons = QHBoxLayout()
        buttons.addWidget(self.back_button)
        buttons.addStretch(1)
        buttons.addWidget(self.next_button)
        main = QVBoxLayout()
        main.setContentsMargins(28, 22, 28, 20)
        main.setSpacing(8)
        main.addWidget(self.step_label)
        main.addWidget(self.heading)
        main.addWidget(self.explain)
        main.addSpacing(8)
        main.addWidget(self.stack, 1)
        main.addWidget(self.error)
        main.addLayout(buttons)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(side)
        row.addLayout(main, 1)
        self._show_step()

    def _check_page(self) -> CheckPage:
        page = CheckPage()
        page.on_edit = lambda: self.error.hide()  # a fix takes the stale reason away
        return page

    # navigation ----------------------------------------------------------------

    @property
    def step(self) -> Step:
        return self.flow.step

    def page(self, step: Step) -> QWidget:
        return self.pages[step]

    def next(self) -> None:
        """Hand the page's input to the flow; show why when it refuses."""
        if self.busy:
            return
        step = self.flow.step
        page = self.pages[step]
        submit = getattr(page, "submit", None)
        if submit is None:  # DONE: a failed setup, tried again
            self._start_execute()
            return
        if isinstance(page, NodePage) and page.remote.isChecked():
            try:
                url, token = self.flow.check_remote_node(page.url.text(), page.token.text())
            except StepRefused as exc:
                self._refuse(str(exc))
                return
            self._task = asyncio.ensure_future(self._test_node(page, url, token))
            return
        try:
            submit(self.flow)
        except StepRefused as exc:
            self._refuse(str(exc))
            return
        self._show_step()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Enter, as a person presses it on any page: to the next empty field of the
        page, or, from its last one, Next (a multi-line field keeps its Enter)."""
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if not enter or event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            super().keyPressEvent(event)
            return
        fields = self._fields()
        focus = self.focusWidget()  # where the keys go
        later = fields[fields.index(focus) + 1 :] if focus in fields else []
        empty = next((f for f in later if not f.text()), None)
        if empty is not None:
            empty.setFocus()
        else:
            self.next()

    def _fields(self) -> list[QLineEdit]:
        """The page's fields a person types in, in order."""
        page = self.pages[self.flow.step]
        return [
            f
            for f in page.findChildren(QLineEdit)
            if f.isVisibleTo(page) and f.isEnabled() and not f.isReadOnly()
        ]

    def back(self) -> None:
        if self.busy:
            return
        if self.flow.step is Step.BACKUP:
            self.pages[Step.BACKUP].clear()  # type: ignore[attr-defined]
        try:
            self.flow.back()
        except StepRefused as exc:
            self._refuse(str(exc))
            return
        self._show_step()

    async def _test_node(self, page: NodePage, url: str, token: str) -> None:
        """Connect once with the token before moving on: a wrong URL, token or
        certificate is said on this page, not at the end of the setup."""
        self.error.hide()
        self.next_button.setEnabled(False)
        self.next_button.setText("Testing…")
        try:
            problem = await connection_problem(url, token)
        finally:
            self.next_button.setEnabled(True)
            self.next_button.setText("&Next")
        if problem is not None:
            self._refuse(problem)
            return
        try:
            page.submit(self.flow)
        except StepRefused as exc:
            self._refuse(str(exc))
            return
        self._show_step()

    def _refuse(self, reason: str) -> None:
        self.error.setText(reason[:1].upper() + reason[1:] + ("" if reason.endswith(".") else "."))
        self.error.show()

    def _show_step(self) -> None:
        step = self.flow.step
        self.error.hide()
        index = STEPS.index(step)
        self.stack.setCurrentIndex(index)
        title, text = TITLES[step]
        self.heading.setText(title)
        self.explain.setText(text)
        self.step_label.setText(
            f"STEP {index + 1} OF {len(STEPS) - 1}" if step is not Step.DONE else "ALMOST DONE"
        )
        for s, label in self.trail.items():
            here = STEPS.index(s)
            number = f"{here + 1}. {TRAIL[s]}"
            label.setText(f"<b>{number}</b>" if s is step else number)
            label.setProperty("role", "" if here <= index else "muted")
            label.style().unpolish(label)
            label.style().polish(label)
        self.back_button.setEnabled(step not in (Step.KEY, Step.DONE))
        self.next_button.setText("&Finish" if step is Step.ENTITY else "&Next")
        self.next_button.setVisible(step is not Step.DONE)
        if step is Step.BACKUP:
            backup: BackupPage = self.pages[Step.BACKUP]  # type: ignore[assignment]
            backup.show_words(self.flow.words)
        elif step is Step.CHECK:
            check: CheckPage = self.pages[Step.CHECK]  # type: ignore[assignment]
            check.ask(self.flow.check_positions)
        elif step is Step.ENTITY:
            self._compute_card()
        elif step is Step.DONE:
            self._start_execute()
        fields = self._fields()
        if fields:  # a person types at once, without a click first
            fields[0].setFocus()

    # background work -------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _compute_card(self) -> None:
        phrase = self.flow.mnemonic
        if self._card_for == phrase:
            return
        self._card_for = phrase
        entity: EntityPage = self.pages[Step.ENTITY]  # type: ignore[assignment]
        entity.set_card("")

        async def compute() -> None:
            loop = asyncio.get_running_loop()
            card = await loop.run_in_executor(None, self._card_of, phrase)
            if self._card_for == phrase:
                entity.set_card(card)

        self._card_task = asyncio.ensure_future(compute())

    def _start_execute(self) -> None:
        done: DonePage = self.pages[Step.DONE]  # type: ignore[assignment]
        done.progress.show()
        done.text.setText("Storing your key in the keyring and starting the wallet…")
        self.error.hide()
        self.next_button.hide()
        self._task = asyncio.ensure_future(self._run(self.flow.plan()))

    async def _run(self, plan: Plan) -> None:
        done: DonePage = self.pages[Step.DONE]  # type: ignore[assignment]
        try:
            await self._execute(plan)
        except Exception as exc:
            done.progress.hide()
            done.text.setText("The wallet could not be set up.")
            self._refuse(str(exc) or type(exc).__name__)
            self.next_button.setText("&Try again")
            self.next_button.show()
            self.back_button.setEnabled(True)  # never a dead end: change what failed
            return
        self._done = True
        self.finished.emit()
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._done:
            if self.busy:  # the key is being stored: let it finish
                event.ignore()
                return
            self._done = True
            self.quit_requested.emit()
        event.accept()
