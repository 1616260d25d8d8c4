"""Backups as a person uses them (Qt offscreen, the real app, vault and embedded node):
Settings' Back up now and Restore from a backup in their password dialogs, and
onboarding's Restore with a backup file next to the phrase, into a new folder with a
new password: the entity held only on the lost folder's node comes back."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from node.crypto.keystore import WrongPassword
from tests.wallet.conftest import PASSWORD, Kit, Running, Waiter, running_service
from tests.wallet.test_backup import one_of_one
from wallet import backup
from wallet import settings as settings_io
from wallet.flows.onboarding import Step
from wallet.keys.backends import choose_backend
from wallet.keys.vault import Vault
from wallet.qt import QLabel, Qt, QWidget
from wallet.settings import Settings
from wallet.views.backup import BackupBox
from wallet.views.onboarding import EntityPage, KeyPage, NodePage, PasswordPage
from wallet.views.unlock import UnlockDialog

from .test_onboarding_view import WAIT_S, make_app, until_connected

WORDS = " ".join(["abandon"] * 23 + ["art"])
NEW_PASSWORD = "a brand new password"  # noqa: S105 - test data

pytestmark = pytest.mark.usefixtures("app_outlives_dialogs")


def type_text(qtbot: QtBot, widget: QWidget, text: str) -> None:
    qtbot.keyClicks(widget, text)  # type: ignore[no-untyped-call]


async def confirm(qtbot: QtBot, dialog: UnlockDialog, password: str) -> None:
    type_text(qtbot, dialog.password, password)
    qtbot.keyClick(dialog.password, Qt.Key.Key_Return)  # type: ignore[no-untyped-call]
    await asyncio.wait_for(dialog.settled(), WAIT_S)


def phrase_kit(tmp_path: Path) -> Kit:
    data = tmp_path / "first"
    data.mkdir(mode=0o700)
    vault = Vault(data, choose_backend(data, prefer="file"), fast_kdf=True)
    key = vault.add_mnemonic(WORDS, PASSWORD, "alice")
    return Kit(data, vault, key)


async def backed_up(run: Running, kit: Kit, qtbot: QtBot, path: Path) -> bytes:
    """A 1-of-1 entity counted to 2, backed up through Settings' box; its id."""
    entity = await one_of_one(run, kit, 2)
    result = QLabel()
    box = BackupBox(run.service, result)
    qtbot.addWidget(box)
    assert "Only this computer holds entity" not in box.only_here.text()  # no funds
    assert box.last.text() == "No backup made here yet."
    dialog = box.back_up_to(path)
    await confirm(qtbot, dialog, "not the password")
    assert "Wrong password" in dialog.error.text()
    assert not await asyncio.to_thread(path.exists)
    dialog.password.clear()
    await confirm(qtbot, dialog, PASSWORD)
    assert result.text() == f"Backed up to {path}."
    assert box.last.text().startswith("Last backup: ")
    assert backup.read_header(backup.load(path)).heights == {entity: 2}

    # Restore from a backup into the running wallet: it says what it did.
    restore = box.restore_from(path)
    await confirm(qtbot, restore, PASSWORD)
    assert result.text().startswith("Restored the signing record of 1 signer(s).")
    assert "Kept this folder's own" in result.text()
    return entity


async def test_settings_backs_up_and_onboarding_restores_into_a_new_folder(
    qtbot: QtBot, tmp_path: Path
) -> None:
    kit = phrase_kit(tmp_path)
    path = tmp_path / "backups" / "xln-backup.json"
    async with running_service(kit) as run:
        entity = await backed_up(run, kit, qtbot, path)
        signer = kit.key.signer_id

    # The folder is lost. A new one: Restore, the phrase and the backup file.
    data = tmp_path / "second"
    data.mkdir(mode=0o700)
    wallet = make_app(data)
    run_app = asyncio.ensure_future(wallet.run())
    try:
        await wallet.wait_stage("onboarding")
        w = wallet.onboarding
        assert w is not None
        key = w.page(Step.KEY)
        assert isinstance(key, KeyPage)
        assert not key.backup_path.isEnabled()
        key.restore.setChecked(True)
        assert key.backup_path.isEnabled()
        key.phrase.setPlainText(WORDS)
        key.backup_path.setText(str(path))
        w.next()
        assert current_step(w.step) is Step.KEY  # the backup's password is missing
        assert "password the backup was made under" in w.error.text()
        key.phrase.setPlainText(WORDS)  # (the page gives the phrase to the flow only once)
        key.backup_password.setText(PASSWORD)
        w.next()
        assert current_step(w.step) is Step.PASSWORD
        pw = w.page(Step.PASSWORD)
        assert isinstance(pw, PasswordPage)
        pw.password.setText(NEW_PASSWORD)
        pw.again.setText(NEW_PASSWORD)
        w.next()
        node = w.page(Step.NODE)
        assert isinstance(node, NodePage)
        node.embedded.setChecked(True)
        w.next()
        assert current_step(w.step) is Step.ENTITY
        w.next()  # no entity: the backup brings it

        await wallet.wait_stage("main")
        await until_connected(wallet.model)
        service = wallet.service
        assert service is not None
        waiter = Waiter()
        wallet.model.entities_changed.connect(waiter.wake)
        wallet.model.log_added.connect(waiter.wake)
        await waiter.until(lambda: (signer, entity) in wallet.model.entities)
        assert wallet.model.entities[(signer, entity)].state.counter == 2
        await waiter.until(lambda: signer in service.agents)
        assert await service.agents[signer].floor_of(entity) == 2
        assert wallet.model.contacts == {}
        # The new folder's wallet opens with the new password; the backup with the old.
        assert wallet.vault is not None
        wallet.vault.lock()
        with pytest.raises(WrongPassword):
            wallet.vault.unlock(PASSWORD)
        await service.unlock(NEW_PASSWORD)
        # Signs above the backup's floor (the accountant is off here: the person approves).
        service.queue.added.append(waiter.wake)
        await service.increment(signer, entity, 1)
        await waiter.until(lambda: bool(service.queue.pending()))
        (request,) = service.queue.pending()
        assert request.frame.height == 3
        service.approve(request.id)
        await waiter.until(lambda: wallet.model.entities[(signer, entity)].state.counter == 3)
        assert wallet.window is not None
        wallet.window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run_app == 0
    finally:
        if not run_app.done():
            run_app.cancel()
            await asyncio.gather(run_app, return_exceptions=True)


def current_step(step: Step) -> Step:
    return step


async def test_onboarding_offers_the_first_backup(qtbot: QtBot, tmp_path: Path) -> None:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    folder = tmp_path / "auto"
    settings_io.save(data, Settings(backup_folder=str(folder)))
    wallet = make_app(data)
    run_app = asyncio.ensure_future(wallet.run())
    try:
        await wallet.wait_stage("onboarding")
        w = wallet.onboarding
        assert w is not None
        flow = w.flow
        flow.create_key("alice")
        flow.backup_done()
        flow.check_words([flow.words[p] for p in flow.check_positions])
        flow.set_password(PASSWORD, PASSWORD)
        flow.use_embedded_node()
        w._show_step()
        entity = w.page(Step.ENTITY)
        assert isinstance(entity, EntityPage)
        assert not entity.first_backup.isChecked()  # an offer
        entity.first_backup.setChecked(True)
        entity.create_mode.setChecked(True)  # a 1-of-1: only this computer will hold it
        w.next()

        await wallet.wait_stage("main")
        waiter = Waiter()
        wallet.model.log_added.connect(waiter.wake)
        await waiter.until(lambda: bool(os.listdir(folder)) if os.path.isdir(folder) else False)
        (name,) = os.listdir(folder)
        raw = await asyncio.to_thread(backup.load, folder / name)
        header = backup.read_header(raw)
        assert wallet.vault is not None
        assert header.signers == (wallet.vault.keys()[0].signer_id,)
        opened = backup.open_backup(raw, PASSWORD)
        assert len(opened.payload.entities) == len(header.heights) == 1  # the 1-of-1
        assert wallet.service is not None
        assert wallet.service.settings.last_backup == header.created
        assert wallet.window is not None
        wallet.window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run_app == 0
    finally:
        if not run_app.done():
            run_app.cancel()
            await asyncio.gather(run_app, return_exceptions=True)
