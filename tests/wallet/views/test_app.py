"""The app's start path with an existing vault: the unlock dialog refuses a wrong
password (error shown, still locked), takes the right one, the main window shows,
the embedded node connects, and closing the window stops the service; and the
ready file for cold-start benchmarks."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from node.crypto import bls, keystore
from tests.wallet.test_embedded import pid_gone
from tests.wallet.views.test_onboarding_view import WAIT_S, until_connected
from wallet.app import WalletApp
from wallet.keys import Vault, choose_backend
from wallet.model import Link
from wallet.qt import QApplication, QEvent, QKeyEvent, Qt
from wallet.service import WalletService

PASSWORD = "the right password"  # noqa: S105 (a throwaway test wallet)


def wallet_with_key(data: Path, ready: Path | None = None) -> WalletApp:
    service = f"xln-signer-test-{secrets.token_hex(6)}"
    vault = Vault(data, choose_backend(data, prefer="file", service=service), fast_kdf=True)
    sk = bls.keygen(secrets.token_bytes(32))
    stored = keystore.encrypt(sk.to_bytes(32, "big"), "import", pubkey=bls.sk_to_pk(sk), fast=True)
    vault.add_keystore(stored, "import", PASSWORD, "alice")
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    return WalletApp(
        app,
        data,
        theme_name="dark",
        prefer_backend="file",
        backend_service=service,
        fast_kdf=True,
        tick_ms=20,
        ready_file=str(ready) if ready else None,
    )


def vault_locked(wallet: WalletApp) -> bool:
    assert wallet.vault is not None
    return wallet.vault.locked


def model_locked(wallet: WalletApp) -> bool:
    return wallet.model.locked


def stopped(service: WalletService) -> bool:
    return service.embedded is None and not service.agents


def main_shown(wallet: WalletApp) -> bool:
    return wallet.window is not None and wallet.window.isVisible()


async def test_unlock_then_main_window_then_close_stops_the_service(
    qtbot: QtBot, tmp_path: Path
) -> None:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    ready = tmp_path / "ready"
    wallet = wallet_with_key(data, ready)
    run = asyncio.ensure_future(wallet.run())
    try:
        await wallet.wait_stage("unlock")
        dialog = wallet.unlock_dialog
        assert dialog is not None
        assert dialog.isVisible()
        assert wallet.stage == "unlock"

        dialog.password.setText("not the password")
        dialog.submit()
        assert dialog.busy
        assert dialog.progress.isVisibleTo(dialog), "progress shows while the KDF runs"
        await dialog.settled()
        assert "Wrong password" in dialog.error.text()
        assert dialog.error.isVisibleTo(dialog)
        assert not dialog.progress.isVisibleTo(dialog)
        assert wallet.vault is not None
        assert vault_locked(wallet)
        assert not main_shown(wallet)

        dialog.password.setText(PASSWORD)
        dialog.submit()
        await wallet.wait_stage("main")
        assert wallet.window is not None
        assert wallet.window.isVisible()
        assert not wallet.vault.locked
        await until_connected(wallet.model)
        service = wallet.service
        assert service is not None
        assert service.embedded is not None
        assert ready.read_text().startswith("ready ")
        assert int(ready.read_text().split()[1]) > 0
        assert wallet.model.connection.mode == "embedded"

        # a key press anywhere restarts the idle-lock timer (sent through the app's
        # event filters at once; a simulated click would wait for a loop turn)
        idle_before = service.idle_s()
        key = QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Shift, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(wallet.window, key)
        assert service.idle_s() < idle_before

        # lock from the window, unlock again through the dialog
        wallet.window.lock()
        assert model_locked(wallet)
        wallet.window.unlock()
        again = wallet.unlock_dialog
        assert again is not None
        again.password.setText(PASSWORD)
        again.submit()
        await again.settled()
        assert not model_locked(wallet)

        child = service.embedded.pid
        assert child is not None
        wallet.window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run == 0
        assert stopped(service)
        assert pid_gone(child), "quitting stops the embedded node's process"
        assert not service.agents
        assert vault_locked(wallet)
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


async def test_quit_at_the_unlock_dialog_exits_0(qtbot: QtBot, tmp_path: Path) -> None:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    wallet = wallet_with_key(data)
    run = asyncio.ensure_future(wallet.run())
    await wallet.wait_stage("unlock")
    assert wallet.unlock_dialog is not None
    wallet.unlock_dialog.quit_button.click()
    async with asyncio.timeout(WAIT_S):
        assert await run == 0
    assert wallet.service is None
    assert wallet.window is None


async def test_a_killed_node_is_shown_and_started_again(qtbot: QtBot, tmp_path: Path) -> None:
    """SIGKILL of the embedded node's process: the status bar says so, the wallet
    starts a new one and connects to it (its agents too); quitting stops that one."""
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    wallet = wallet_with_key(data)
    run = asyncio.ensure_future(wallet.run())
    try:
        await wallet.wait_stage("unlock")
        assert wallet.unlock_dialog is not None
        wallet.unlock_dialog.password.setText(PASSWORD)
        wallet.unlock_dialog.submit()
        await wallet.wait_stage("main")
        await until_connected(wallet.model)
        service, window = wallet.service, wallet.window
        assert service is not None
        assert window is not None
        first = service.embedded
        assert first is not None
        first_pid = first.pid
        assert first_pid is not None
        shown: list[str] = []
        wallet.model.connection_changed.connect(
            lambda: shown.append(window.status.connection.text())
        )

        os.kill(first_pid, signal.SIGKILL)

        def back() -> bool:
            node = service.embedded
            return (
                node is not None
                and node is not first
                and wallet.model.connection.link is Link.CONNECTED
                and bool(service.agents)
                and all(a.connected for a in service.agents.values())
            )

        async with asyncio.timeout(WAIT_S):
            while not back():  # noqa: ASYNC110 (other processes: the node, its agents' links)
                await asyncio.sleep(0.02)
        assert any("stopped (killed by SIGKILL); restarting it" in text for text in shown)
        assert any(text.startswith("connecting · embedded node · starting") for text in shown)
        assert window.status.connection.text().startswith("connected · embedded node")
        assert pid_gone(first_pid)
        assert service.embedded is not None
        second_pid = service.embedded.pid
        assert second_pid is not None
        assert second_pid != first_pid

        window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run == 0
        assert pid_gone(second_pid)
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


async def test_a_finish_that_failed_after_storing_the_key_is_tried_again_with_a_new_password(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: Back is never a dead end. The first Finish stores the key, then fails
    (here: the unlock after storing); the person goes Back, picks another password
    and tries again: the vault takes the new password, holds the one key, and opens
    with it (the old password no longer does)."""
    from mnemonic import Mnemonic

    from wallet.flows.onboarding import NodeChoice, Plan

    data = tmp_path / "w"
    data.mkdir(mode=0o700)
    service = f"xln-signer-test-{secrets.token_hex(6)}"
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    wallet = WalletApp(
        app, data, prefer_backend="file", backend_service=service, fast_kdf=True, tick_ms=20
    )
    wallet.vault = vault = Vault(
        data, choose_backend(data, prefer="file", service=service), fast_kdf=True
    )
    words = Mnemonic("english").generate(strength=256)

    def plan(password: str) -> Plan:
        return Plan(words, False, "mine", password, NodeChoice(), None)

    real_unlock = Vault.unlock
    failures = iter([RuntimeError("the keyring went away")])

    def unlock_once_failing(self: Vault, password: str) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_unlock(self, password)

    monkeypatch.setattr(Vault, "unlock", unlock_once_failing)
    with pytest.raises(RuntimeError, match="keyring went away"):
        await wallet._execute_plan(plan("first password"))
    assert len(vault.keys()) == 1  # stored before it failed
    await wallet._execute_plan(plan("second password"))
    assert len(vault.keys()) == 1
    assert not vault.locked
    vault.lock()
    with pytest.raises(keystore.WrongPassword):
        vault.unlock("first password")
    vault.unlock("second password")
    assert not vault.locked
