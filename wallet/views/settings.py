"""The Settings view: node (embedded, with its listen port, its own address to give
co-signers and its peers, as ``wallet.flows.peering`` checks and words them; or
remote URL, token, the CA file a wss:// node is checked against, and the
certificate accepted on first use, which can be forgotten), theme, the
accountant and its rules file (checked with ``Rules.load``, result shown), the
keyring backend in use (with a visible warning when it is not the system
keyring), the key actions (change the password, show a recovery phrase, export
a key: :mod:`wallet.views.key_actions`), the lock timeout, and backups (Back up
now, Restore from a backup, the schedule, the entities only this computer holds:
:mod:`wallet.views.backup`).

The view edits a copy of :class:`~wallet.settings.Settings`; Save validates it and
hands it, with a new token if one was typed, to the ``save`` callback the app
gives (which writes ``settings.json`` and keeps the token in the vault).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from node.net.tls import pretty
from wallet.flows import peering
from wallet.flows.accountant import Rules, RulesError
from wallet.keys.vault import Vault
from wallet.model import WalletModel
from wallet.qt import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    Qt,
    QVBoxLayout,
    QWidget,
)
from wallet.settings import Settings, SettingsError
from wallet.views.backup import BackupActions, BackupBox
from wallet.views.key_actions import KeyActionsBox
from wallet.views.widgets import follow

SaveCallback = Callable[[Settings, str | None], None]  # (settings, new token or None)


def _muted(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setProperty("role", "muted")
    return label


def check_rules(path: str) -> tuple[bool, str]:
    """(ok, what to show) for a rules file; an empty path means the default rules."""
    try:
        rules = Rules.load(path) if path.strip() else Rules.default()
    except RulesError as exc:
        return False, str(exc)
    n = len(rules.rules)
    which = "default rules" if not path.strip() else Path(path).name
    return True, f"{which}: {n} rule{'s' if n != 1 else ''}, valid"


class SettingsView(QWidget):
    def __init__(
        self,
        settings: Settings,
        save: SaveCallback,
        *,
        backend_name: str,
        backend_system: bool,
        backend_warning: str | None = None,
        vault: Vault | None = None,
        backups: BackupActions | None = None,
        model: WalletModel | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``model``: the wallet's, for the embedded node's address in this run."""
        super().__init__(parent)
        self.setObjectName("Page")
        self.settings = settings
        self._save = save
        self.model = model

        # node
        self.embedded = QRadioButton("Embedded node (runs inside the wallet)")
        self.remote = QRadioButton("Remote node")
        group = QButtonGroup(self)
        group.addButton(self.embedded)
        group.addButton(self.remote)
        self.url = QLineEdit(settings.node_url)
        self.url.setPlaceholderText("wss://host:port (ws:// on this machine only)")
        self.ca_file = QLineEdit(settings.node_ca_file)
        self.ca_file.setPlaceholderText("the system's certificate authorities")
        self.ca_file.setToolTip(
            "PEM file of the certificate authorities a wss:// node's certificate must be "
            "signed by; empty: the system's"
        )
        self.cert = QLabel(pretty(settings.node_cert_sha256) if settings.node_cert_sha256 else "")
        self.cert.setObjectName("acceptedCertificate")
        self.cert.setWordWrap(True)
        self.cert.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.forget_cert = QCheckBox("Forget it (ask again at the next connection)")
        self.forget_cert.setVisible(bool(settings.node_cert_sha256))
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("unchanged")
        # the embedded node's peering (wallet.flows.peering)
        self.listen_port = QSpinBox()
        self.listen_port.setRange(0, 65_535)
        self.listen_port.setSpecialValueText("any free port")
        self.listen_port.setValue(settings.listen_port)
        self.listen_port.setToolTip(
            "The embedded node's port on 127.0.0.1. Co-signers' nodes reach it there: "
            "a fixed port keeps its address across restarts."
        )
        self.address = QLabel()
        self.address.setObjectName("nodeAddress")
        self.address.setWordWrap(True)
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_address = QPushButton("Copy address")
        self.copy_address.clicked.connect(self._copy_address)
        address_row = QHBoxLayout()
        address_row.addWidget(self.address, 1)
        address_row.addWidget(self.copy_address)
        self.peers = QLineEdit(peering.peers_text(settings.peers))
        self.peers.setPlaceholderText("ws://127.0.0.1:7002 (a co-signer's node; several: spaces)")
        self.peers.setToolTip(
            "The nodes of your co-signers' wallets (their This node address). Each side "
            "lists the other's; the change applies when the node starts again."
        )
        self.peering_warning = QLabel()
        self.peering_warning.setProperty("role", "warning")
        self.peering_warning.setWordWrap(True)
        self.listen_port.valueChanged.connect(self._show_address)
        self.peers.textChanged.connect(self._show_address)
        (self.remote if settings.node_mode == "remote" else self.embedded).setChecked(True)
        self.remote.toggled.connect(self._node_mode)
        node_box = QGroupBox("Node")
        node = QFormLayout(node_box)
        node.addRow(self.embedded)
        node.addRow("Listen p&ort", self.listen_port)  # Alt+O
        node.addRow("This node", address_row)
        node.addRow("&Peers", self.peers)  # Alt+P
        node.addRow("", self.peering_warning)
        node.addRow(self.remote)
        node.addRow("URL", self.url)
        node.addRow("API token", self.token)
        node.addRow("CA file", self.ca_file)
        if settings.node_cert_sha256:
            node.addRow("Accepted certificate (SHA-256)", self.cert)
            node.addRow("", self.forget_cert)

        # appearance and lock
        self.theme = QComboBox()
        self.theme.addItems(["system", "light", "dark"])
        self.theme.setCurrentText(settings.theme)
        self.lock_timeout = QSpinBox()
        self.lock_timeout.setRange(0, 24 * 60)
        self.lock_timeout.setSuffix(" min")
        self.lock_timeout.setSpecialValueText("never")
        self.lock_timeout.setValue(settings.lock_timeout_min)
        general_box = QGroupBox("General")
        general = QFormLayout(general_box)
        general.addRow("Theme", self.theme)
        general.addRow("Lock after idle", self.lock_timeout)

        # accountant
        # Alt+A
        self.accountant = QCheckBox("Let the &accountant decide sign requests by its rules")
        self.accountant.setChecked(settings.accountant_on)
        self.rules_path = QLineEdit(settings.rules_path)
        self.rules_path.setPlaceholderText("default rules")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.rules_result = QLabel()
        self.rules_result.setWordWrap(True)
        self.rules_path.textChanged.connect(self._check_rules)
        rules_row = QHBoxLayout()
        rules_row.addWidget(self.rules_path, 1)
        rules_row.addWidget(browse)
        acc_box = QGroupBox("Accountant")
        acc = QFormLayout(acc_box)
        acc.addRow(self.accountant)
        acc.addRow("Rules file", rules_row)
        acc.addRow("", self.rules_result)

        # keys
        self.backend = QLabel(backend_name + ("" if backend_system else "  (not a system keyring)"))
        self.backend_warning = QLabel(backend_warning or "")
        self.backend_warning.setProperty("role", "warning")
        self.backend_warning.setWordWrap(True)
        self.backend_warning.setVisible(not backend_system)
        if not backend_system and not backend_warning:
            self.backend_warning.setText(
                "Keys are kept in encrypted files in the data folder, not in the system keyring."
            )
        keys_box = QGroupBox("Keys")
        keys = QFormLayout(keys_box)
        keys.addRow("Keyring backend", self.backend)
        keys.addRow(self.backend_warning)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.key_actions = None if vault is None else KeyActionsBox(vault, self.result)
        if self.key_actions is not None:
            keys.addRow("Password and keys", self.key_actions)

        # backups
        self.backups = None if backups is None else BackupBox(backups, self.result)
        backup_box = QGroupBox("Backups of the data folder")
        backup_form = QFormLayout(backup_box)
        backup_form.addRow(
            _muted(
                "The recovery phrase restores your keys and the entities your co-signers' "
                "servers hold. A backup also keeps what only this folder holds: names, "
                "settings, the signing record, and entities no other server holds."
            )
        )
        if self.backups is not None:
            backup_form.addRow(self.backups)

        self.save_button = QPushButton("&Save")  # Alt+S
        self.save_button.setProperty("primary", True)
        self.save_button.clicked.connect(self.save)
        actions = QHBoxLayout()
        actions.addWidget(self.result, 1)
        actions.addWidget(self.save_button)

        title = QLabel("Settings")
        title.setProperty("role", "title")
        body = QWidget()
        body.setObjectName("Page")
        col = QVBoxLayout(body)
        col.setContentsMargins(20, 16, 20, 16)
        col.setSpacing(12)
        col.addWidget(title)
        boxes = [node_box, general_box, acc_box, keys_box]
        if self.backups is not None:
            boxes.append(backup_box)
        for box in boxes:
            box.setMaximumWidth(720)
            col.addWidget(box)
        col.addLayout(actions)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._scroll = scroll

        self._node_mode()
        self._check_rules()
        if model is not None:
            follow(self, [(model.connection_changed, self._show_address)])
        self._show_address()

    def edited(self) -> Settings:
        """The settings as the form shows them (not yet validated). The accepted
        certificate goes with the node's URL: another URL, or Forget, drops it."""
        url = self.url.text().strip()
        keep_cert = url == self.settings.node_url and not self.forget_cert.isChecked()
        return replace(
            self.settings,
            node_mode="remote" if self.remote.isChecked() else "embedded",
            node_url=url,
            node_ca_file=self.ca_file.text().strip(),
            node_cert_sha256=self.settings.node_cert_sha256 if keep_cert else "",
            theme=self.theme.currentText(),
            accountant_on=self.accountant.isChecked(),
            rules_path=self.rules_path.text().strip(),
            lock_timeout_min=self.lock_timeout.value(),
            backup_schedule=(
                self.backups.schedule.currentText()
                if self.backups is not None
                else self.settings.backup_schedule
            ),
            listen_port=self.listen_port.value(),
        )

    def save(self) -> bool:
        """Validate and save; a refusal says why and saves nothing."""
        new = self.edited()
        token = self.token.text().strip() or None
        try:
            new.peers = peering.parse_peers(self.peers.text(), new.listen_port)
            new.validate()
        except (SettingsError, peering.PeeringError) as exc:
            return self._show(False, str(exc))
        ok, why = check_rules(new.rules_path)
        if not ok:
            return self._show(False, f"rules file: {why}")
        try:
            self._save(new, token)
        except (OSError, ValueError) as exc:
            return self._show(False, f"not saved: {exc}")
        restart = peering.restart_needed(self.settings, new)
        self.settings = new
        self.token.clear()
        self.peers.setText(peering.peers_text(new.peers))
        self._show_address()
        return self._show(
            True, "Saved." + (" The node change applies at the next start." if restart else "")
        )

    def _show(self, ok: bool, text: str) -> bool:
        """The outcome beside Save, scrolled into view (Save is reached by Alt+S from
        the top of a page taller than the window, and "Saved." went unseen)."""
        self.result.setText(text)
        self._scroll.ensureWidgetVisible(self.result)
        self.result.setProperty("role", "ok" if ok else "error")
        self.result.style().unpolish(self.result)
        self.result.style().polish(self.result)
        return ok

    def _node_mode(self) -> None:
        remote = self.remote.isChecked()
        self.url.setEnabled(remote)
        self.token.setEnabled(remote)
        self.ca_file.setEnabled(remote)
        for w in (self.listen_port, self.peers, self.copy_address):
            w.setEnabled(not remote)

    def running_url(self) -> str:
        """The embedded node's URL in this run ("" in remote mode or before it runs)."""
        if self.model is None or self.model.connection.mode != "embedded":
            return ""
        return self.model.connection.url

    def _show_address(self) -> None:
        self.copy_address.setText("Copy address")
        shown = replace(self.settings, listen_port=self.listen_port.value())
        self.address.setText(peering.address_line(shown, self.running_url()))
        try:
            shown.peers = peering.parse_peers(self.peers.text(), shown.listen_port)
        except peering.PeeringError:
            shown.peers = []  # said at Save
        text = peering.warning(shown)
        self.peering_warning.setText(text or "")
        self.peering_warning.setVisible(text is not None)

    def _copy_address(self) -> None:
        """The address to the clipboard; the button says so (beside the address: the
        page's result line may be scrolled away)."""
        address = peering.own_address(self.listen_port.value()) or self.running_url()
        if address:
            QApplication.clipboard().setText(address)
            self.copy_address.setText("Copied \u2713")
            self.copy_address.setToolTip(f"{address}: paste it into your co-signer's Peers")

    def _check_rules(self) -> None:
        ok, text = check_rules(self.rules_path.text())
        self.rules_result.setText(("✓ " if ok else "✗ ") + text)
        self.rules_result.setProperty("role", "ok" if ok else "error")
        self.rules_result.style().unpolish(self.rules_result)
        self.rules_result.style().polish(self.rules_result)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Accountant rules", "", "TOML (*.toml);;All files (*)"
        )
        if path:
            self.rules_path.setText(path)
