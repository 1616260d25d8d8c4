"""The GUI: one ``QApplication``, one qasync loop, and :class:`WalletApp`, the
controller that ties the vault, the settings and the service to the windows.

Start: theme, data folder, keyring backend (probed in an executor), then the
first-run onboarding if the vault has no key, else the unlock dialog (the KDF
in an executor). Then the main window; once it shows, the service starts
(embedded node or remote connection, the agents) and, after onboarding, the
entity the user asked for is created or joined. Closing the window stops the
service (the embedded node flushes its inbox) and the app exits 0.

``XLN_WALLET_READY_FILE``: when set, the file holds the last start milestone
reached, one line: ``window <stage> <ms since process start>`` once the unlock
dialog or the onboarding window (stage ``unlock`` or ``onboarding``) is shown
and the loop turns, then ``ready <ms since process start>`` once the main
window is (cold-start benchmarks read it); ``-`` prints those lines on standard
output instead (the frozen app's test reads them). Nothing else changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import collector
from wallet import cli, paths
from wallet import settings as settings_io
from wallet.model import NewMember, WalletModel
from wallet.qt import QApplication, QEvent, QEventLoop, QMessageBox, QObject
from wallet.settings import Settings
from wallet.views import theme

if TYPE_CHECKING:  # and imported where used: the first window must not wait for them
    from wallet.backup import Opened
    from wallet.flows.node_trust import CertificateQuestion
    from wallet.flows.onboarding import CreateEntity, JoinEntity, Plan
    from wallet.keys import BackendChoice, Vault
    from wallet.service import WalletService
    from wallet.views.main_window import MainWindow
    from wallet.views.onboarding import OnboardingWindow
    from wallet.views.tray import Tray
    from wallet.views.unlock import UnlockDialog

log = logging.getLogger("wallet.app")

READY_ENV = "XLN_WALLET_READY_FILE"


def _process_age_s() -> float:
    """Seconds since this process started (Linux: from /proc), else 0 (now)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


_AGE_AT_IMPORT = _process_age_s()
_MONO_AT_IMPORT = time.monotonic()


def ms_since_start() -> int:
    return int((_AGE_AT_IMPORT + time.monotonic() - _MONO_AT_IMPORT) * 1000)


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class _EarlyLogs(logging.Handler):
    """Log records into the model until the service's own handler takes over."""

    def __init__(self, model: WalletModel) -> None:
        super().__init__(logging.INFO)
        from wallet.logsink import ModelLogHandler

        self._inner = ModelLogHandler(model, asyncio.get_running_loop())
        self._kind = ModelLogHandler

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if any(isinstance(h, self._kind) for h in root.handlers):
            return  # the service routes logs now
        self._inner.emit(record)


MAIN_WINDOW_MODULES = (
    "wallet.service",
    "wallet.flows.onboarding",
    "wallet.views.main_window",
    "wallet.views.approvals",
    "wallet.views.proposals",
    "wallet.views.entities",
    "wallet.views.history",
    "wallet.views.logs",
    "wallet.views.settings",
    "wallet.views.tray",
)


def _import_main() -> None:
    """Module imports only (no widget is made off the GUI thread)."""
    for name in MAIN_WINDOW_MODULES:
        importlib.import_module(name)


class _ActivityFilter(QObject):
    """Key presses and clicks anywhere in the app restart the idle-lock timer."""

    ACTIVITY = frozenset({QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.Wheel})

    def __init__(self, service: WalletService) -> None:
        super().__init__()
        self.service = service

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in self.ACTIVITY:
            self.service.touch()
        return False


class WalletApp:
    """The app's controller. ``stage`` is "starting", "onboarding", "unlock",
    "main" or "closed"; ``stage_changed`` is set at each change (tests wait on it)."""

    def __init__(
        self,
        app: QApplication,
        data: Path,
        *,
        node_url: str | None = None,
        token: str | None = None,
        theme_name: str | None = None,
        prefer_backend: str | None = None,
        backend_service: str | None = None,
        fast_kdf: bool = False,
        tick_ms: int | None = None,
        ready_file: str | None = None,
    ) -> None:
        self.app = app
        self.data = data
        self.node_url = node_url
        self.token = token
        self.theme_name = theme_name
        self.prefer_backend = prefer_backend
        self.backend_service = backend_service
        self.fast_kdf = fast_kdf
        self.tick_ms = tick_ms
        self.ready_file = ready_file
        self.stage = "starting"
        self.stage_changed = asyncio.Event()
        self.model = WalletModel()
        self.settings = Settings()
        self.backend: BackendChoice | None = None
        self.vault: Vault | None = None
        self.service: WalletService | None = None
        self.window: MainWindow | None = None
        self.tray: Tray | None = None
        self.onboarding: OnboardingWindow | None = None
        self.unlock_dialog: UnlockDialog | None = None
        self.service_started = asyncio.Event()
        self._closed = asyncio.Event()
        self._identity_password: str | None = None
        self._pending_entity: CreateEntity | JoinEntity | None = None
        self._restored_backup: Opened | None = None  # restored in onboarding, for the service
        self._first_backup_password: str | None = None  # onboarding's first backup, once up
        # What an earlier Finish of the first-run wizard stored the key with (the phrase
        # and the password, in memory only): a Finish that failed after storing it is
        # tried again from what the person changed (Back), not refused.
        self._stored_with: tuple[str, str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._early_logs: _EarlyLogs | None = None
        self._activity: _ActivityFilter | None = None
        self._preloading: asyncio.Future[None] | None = None

    # stages ----------------------------------------------------------------------

    def _set_stage(self, stage: str) -> None:
        self.stage = stage
        self.stage_changed.set()

    async def wait_stage(self, stage: str, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.stage != stage:
                self.stage_changed.clear()
                await self.stage_changed.wait()

    @property
    def remote(self) -> bool:
        return self.node_url is not None or self.settings.node_mode == "remote"

    async def run(self) -> int:
        """The whole life of the GUI; returns the exit code."""
        root = logging.getLogger()
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        self._early_logs = _EarlyLogs(self.model)
        root.addHandler(self._early_logs)
        quit_on_close = self.app.quitOnLastWindowClosed()
        self.app.setQuitOnLastWindowClosed(False)  # this controller decides when the app ends
        try:
            return await self._run()
        finally:
            self.app.setQuitOnLastWindowClosed(quit_on_close)
            root.removeHandler(self._early_logs)
            self._set_stage("closed")

    async def _run(self) -> int:
        from wallet.keys import Vault, VaultError, choose_backend

        self.settings, bad = settings_io.load_or_default(self.data)
        if self.tick_ms is not None:
            self.settings.tick_ms = self.tick_ms
        theme.apply(self.app, self.theme_name or self.settings.theme)
        loop = asyncio.get_running_loop()
        kwargs = {"service": self.backend_service} if self.backend_service else {}
        try:
            self.backend = await loop.run_in_executor(
                None, lambda: choose_backend(self.data, self.prefer_backend, **kwargs)
            )
            self.vault = Vault(self.data, self.backend, fast_kdf=self.fast_kdf)
            has_keys = bool(self.vault.keys())
        except (VaultError, OSError, RuntimeError) as exc:
            log.error("cannot open the wallet: %s", exc)
            await self._fatal("The wallet cannot open its keys", str(exc))
            return 1
        if bad:
            log.warning("settings: %s", bad)
        go_on = await (self._unlock_at_start() if has_keys else self._onboard())
        if not go_on:
            await self.preloaded()
            return 0
        await self._open_main()
        await self._closed.wait()
        await self.shutdown()
        return 0

    async def _fatal(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, f"XLN Signer · {title}", text)
        done = asyncio.Event()
        box.finished.connect(lambda _r: done.set())
        box.open()
        await done.wait()

    def _preload(self) -> None:
        """While the user types, import what the main window needs (the service, the
        node, the views) on a thread, so Enter leads to the window at once."""
        if self._preloading is None:
            self._preloading = asyncio.get_running_loop().run_in_executor(None, _import_main)

    async def preloaded(self) -> None:
        """Let the preload thread finish (the app does not exit mid-import)."""
        if self._preloading is not None:
            with contextlib.suppress(Exception):
                await self._preloading

    # onboarding --------------------------------------------------------------------

    async def _onboard(self) -> bool:
        from wallet.flows.onboarding import Onboarding
        from wallet.keys import mnemonic
        from wallet.views.onboarding import OnboardingWindow

        flow = Onboarding(mnemonic.generate, mnemonic.is_valid, secrets.SystemRandom())
        window = OnboardingWindow(flow, self._execute_plan)
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        window.finished.connect(lambda: _resolve(outcome, True))
        window.quit_requested.connect(lambda: _resolve(outcome, False))
        self.onboarding = window
        window.show()
        self._set_stage("onboarding")
        asyncio.get_running_loop().call_soon(self._mark, "window onboarding")
        self._preload()
        try:
            return await outcome
        finally:
            self.onboarding = None
            window.deleteLater()  # the flow (phrase, password) goes with it

    async def _execute_plan(self, plan: Plan) -> None:
        """Store the key (and a remote token), unlock, save the node choice; the
        entity is made once the service runs."""
        from wallet.flows import restore as restore_flow
        from wallet.service import NODE_TOKEN_SECRET

        vault = self.vault
        assert vault is not None
        settings = Settings(**self.settings.to_json())
        if plan.node.mode == "remote":
            settings.node_mode, settings.node_url = "remote", plan.node.url
        else:
            settings.node_mode = "embedded"
        settings.validate()
        mnemonic_words, password = plan.mnemonic, plan.password
        token = plan.node.token

        def store() -> None:
            earlier = self._stored_with
            if vault.keys() and earlier is not None and earlier[1] != password:
                # An earlier Finish of this wizard stored the key, then failed; the
                # person went Back and chose another password: the vault follows.
                vault.change_password(earlier[1], password)
            if not vault.keys() or (earlier is not None and earlier[0] != mnemonic_words):
                # (or Back to another phrase: that key is added; the earlier one stays,
                # named as it was)
                key = vault.add_mnemonic(mnemonic_words, password, plan.label)
                if plan.imported:
                    # A phrase the person already held: a restore. Its guard signs only
                    # above the floors the node finds (wallet/flows/restore.py).
                    restore_flow.mark(self.data, key.signer_id)
            self._stored_with = (mnemonic_words, password)
            if token:
                vault.put_secret(NODE_TOKEN_SECRET, token.encode("utf-8"), password)
            vault.unlock(password)
            settings_io.save(self.data, settings)

        await asyncio.get_running_loop().run_in_executor(None, store)
        if plan.backup is not None:
            settings = await self._restore_backup(plan.backup.path, plan.backup.password, settings)
        self.settings = settings
        if token and self.token is None:
            self.token = token
        self._identity_password = password if settings.peers else None
        self._pending_entity = plan.entity
        self._first_backup_password = password if plan.first_backup else None
        log.info("wallet set up: key %r stored in the %s keyring", plan.label, vault.backend.name)

    async def _restore_backup(self, path: str, password: str, chosen: Settings) -> Settings:
        """Restore a backup of the data folder with the phrase (wallet/flows/backup.py):
        its files, its signing record into the guards; the service replays its node-only
        entities once connected. The node the person chose in the wizard is kept."""
        from wallet import backup as backup_fmt
        from wallet.flows import backup as backup_flow

        vault = self.vault
        assert vault is not None

        def restore() -> tuple[backup_fmt.Opened, Settings]:
            raw = backup_fmt.load(Path(path).expanduser())
            opened, report = backup_flow.restore_offline(self.data, vault, raw, password)
            restored, error = settings_io.load_or_default(self.data)
            if error is None:
                restored.node_mode, restored.node_url = chosen.node_mode, chosen.node_url
            else:
                restored = chosen
            settings_io.save(self.data, restored)
            log.info(
                "restored a backup of %s: files %s, floors for %d signers",
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(opened.header.created)),
                ", ".join(report.files) or "none",
                len(report.floors),
            )
            return opened, restored

        opened, settings = await asyncio.get_running_loop().run_in_executor(None, restore)
        self._restored_backup = opened
        return settings

    # unlock ------------------------------------------------------------------------

    async def _unlock_at_start(self) -> bool:
        from wallet.views.unlock import UnlockDialog

        dialog = UnlockDialog(self._first_unlock)
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        dialog.unlocked.connect(lambda: _resolve(outcome, True))
        dialog.quit_requested.connect(lambda: _resolve(outcome, False))
        self.unlock_dialog = dialog
        dialog.show()
        self._set_stage("unlock")
        asyncio.get_running_loop().call_soon(self._mark, "window unlock")
        self._preload()
        try:
            return await outcome
        finally:
            self.unlock_dialog = None
            dialog.deleteLater()

    async def _first_unlock(self, password: str) -> None:
        from wallet.service import NODE_TOKEN_SECRET

        vault = self.vault
        assert vault is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, vault.unlock, password)
        if self.remote and self.token is None:
            secret = await loop.run_in_executor(None, vault.get_secret, NODE_TOKEN_SECRET, password)
            if secret is None:
                log.error("no API token for the remote node is stored: set it in Settings")
            else:
                self.token = secret.decode("utf-8")
        self._identity_password = password if self.settings.peers and not self.remote else None

    def ask_unlock(self) -> None:
        """The main window's Unlock: the dialog, the KDF in the service's thread."""
        from wallet.views.unlock import UnlockDialog

        if self.unlock_dialog is not None or self.service is None:
            return
        dialog = UnlockDialog(self.service.unlock, quit_label="Cancel", parent=self.window)

        def gone() -> None:
            self.unlock_dialog = None
            dialog.deleteLater()

        dialog.unlocked.connect(gone)
        dialog.quit_requested.connect(gone)
        self.unlock_dialog = dialog
        dialog.open()

    async def _ask_certificate(self, question: CertificateQuestion) -> bool:
        """A remote node's certificate no CA vouches for: the person decides."""
        from wallet.views.certificate import ask_certificate

        return await ask_certificate(question, self.window)

    # the main window ---------------------------------------------------------------------

    async def _open_main(self) -> None:
        from wallet.service import WalletService
        from wallet.views.logs import LogsView
        from wallet.views.main_window import MainWindow
        from wallet.views.settings import SettingsView
        from wallet.views.tray import Tray

        vault, backend = self.vault, self.backend
        assert vault is not None
        assert backend is not None
        service = WalletService(
            self.data,
            self.model,
            vault,
            self.settings,
            node_url=self.node_url,
            token=self.token,
            identity_password=self._identity_password,
            restored_backup=self._restored_backup,
        )
        self._identity_password = None
        self._restored_backup = None
        service.confirm_certificate = self._ask_certificate
        self.service = service
        self.model.locked = vault.locked
        settings_view = SettingsView(
            self.settings,
            self._save_settings,
            backend_name=backend.name,
            backend_system=backend.system,
            backend_warning=backend.warning,
            vault=vault,
            backups=service,
            model=self.model,
        )
        if settings_view.backups is not None:
            self.model.entities_changed.connect(settings_view.backups.refresh)
        window = MainWindow(
            self.model,
            service,
            service.queue,
            logs_view=LogsView(self.model),
            settings_view=settings_view,
            on_unlock=self.ask_unlock,
            on_close=self._closed.set,
        )
        self.window = window
        window.set_own_keys(vault.keys())
        self._activity = _ActivityFilter(service)
        self.app.installEventFilter(self._activity)
        self.tray = Tray(
            service.notifications, window, on_lock=window.lock, on_quit=self._closed.set
        )
        window.show()
        self._set_stage("main")
        asyncio.get_running_loop().call_soon(self._interactive)

    def _interactive(self) -> None:
        """The window is on screen and the loop turns: say so, then start the service."""
        self._mark("ready")
        self._spawn(self._start_service())

    def _mark(self, milestone: str) -> None:
        """A start milestone into the ready file (benchmarks), if one was asked for;
        ``-`` prints it on standard output instead (tests of the frozen app)."""
        if not self.ready_file:
            return
        line = f"{milestone} {ms_since_start()}"
        if self.ready_file == "-":
            print(line, flush=True)
            return
        try:
            Path(self.ready_file).write_text(f"{line}\n", "utf-8")
        except OSError as exc:
            log.warning("cannot write the ready file: %s", exc)

    async def _start_service(self) -> None:
        service = self.service
        assert service is not None
        try:
            await service.start()
        except Exception as exc:
            log.error("the wallet could not start its node connection: %s", exc)
            return
        finally:
            self.service_started.set()
        # Start-up leaves many long-lived objects (Qt wrappers, the node's modules) that
        # every full collection would walk, a stall of the loop; none of them is garbage.
        collector.freeze_startup()
        entity, self._pending_entity = self._pending_entity, None
        if entity is not None:
            await self._make_entity(service, entity)
        password, self._first_backup_password = self._first_backup_password, None
        if password is not None:
            await self._first_backup(service, password)

    async def _first_backup(self, service: WalletService, password: str) -> None:
        """Onboarding's offer, taken: a first backup of the data folder (it also makes
        the data key, so a schedule chosen later asks nothing)."""
        from wallet.backup import BackupError
        from wallet.service import WalletError

        try:
            path = await service.back_up(password=password)
        except (WalletError, BackupError, OSError) as exc:
            log.error("the first backup failed: %s (Settings, Backups, Back up now)", exc)
            return
        log.info("first backup of the data folder written to %s", path)

    async def _make_entity(self, service: WalletService, plan: CreateEntity | JoinEntity) -> None:
        keys = service.vault.keys()
        if not keys:
            return
        key = keys[0]
        try:
            from wallet.flows.onboarding import CreateEntity

            if isinstance(plan, CreateEntity):
                members = [NewMember(key.pubkey, key.pop, plan.own_shares), *plan.others]
                await service.create_entity(
                    key.signer_id, members, plan.threshold, plan.proposer_index
                )
            else:
                log.info("waiting for entity %s to reach this signer", plan.entity_id.hex()[:12])
                await service.join_entity(key.signer_id, plan.entity_id)
        except Exception as exc:
            log.error("the entity could not be set up: %s", exc)

    def _save_settings(self, new: Settings, token: str | None) -> None:
        settings_io.save(self.data, new)
        old, self.settings = self.settings, new
        if new.theme != old.theme:
            theme.apply(self.app, new.theme)
        if self.service is not None:
            self.service.settings = new  # lock timeout, and what the service saves next
            if new.accountant_on != old.accountant_on:
                self.service.set_accountant(new.accountant_on)
        if token:
            self._ask_to_store_token(token)

    def _ask_to_store_token(self, token: str) -> None:
        from wallet.service import NODE_TOKEN_SECRET
        from wallet.views.unlock import UnlockDialog

        vault = self.vault
        assert vault is not None

        async def store(password: str) -> None:
            await asyncio.get_running_loop().run_in_executor(
                None, vault.put_secret, NODE_TOKEN_SECRET, token.encode("utf-8"), password
            )
            log.info("the remote node's token is stored in the keyring")

        dialog = UnlockDialog(
            store,
            title="Store the node token",
            text="Enter your wallet password to keep the new API token encrypted in the keyring.",
            action="Store",
            quit_label="Cancel",
            parent=self.window,
        )
        dialog.finished.connect(lambda _r: dialog.deleteLater())
        dialog.open()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Stop the service (the embedded node flushes) and close the windows."""
        await self.preloaded()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._activity is not None:
            self.app.removeEventFilter(self._activity)
        if self.tray is not None:
            self.tray.close()
        if self.service is not None:
            await self.service.stop()
            log.info("wallet stopped")
        if self.vault is not None:
            self.vault.lock()
        if self.window is not None and self.window.isVisible():
            self.window.close()


def make_qapp() -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    # No display name: Qt appends it to every window title ("XLN Signer · Set up —
    # XLN Signer" in the title bar), and each title already names the app.
    app.setApplicationName("XLN Signer")
    app.setDesktopFileName("xln-wallet")
    return app


def run(args: argparse.Namespace) -> int:
    """``xln-wallet`` with no command: the desktop app; returns the exit code."""
    try:
        node_token = cli.token(args)
    except OSError as exc:
        print(f"xln-wallet: cannot read the token: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "token_file", None) and not getattr(args, "node", None):
        print("xln-wallet: --token-file needs --node URL", file=sys.stderr)
        return 2
    app = make_qapp()
    loop = QEventLoop(app)
    asyncio.set_event_loop(loop)
    data = paths.app_data_dir(args.data)
    wallet = WalletApp(
        app,
        data,
        node_url=args.node,
        token=node_token if args.node else None,
        theme_name=args.theme,
        ready_file=os.environ.get(READY_ENV) or None,
    )
    with loop, contextlib.suppress(KeyboardInterrupt):
        code: int = loop.run_until_complete(wallet.run())
        return code
    return 130
