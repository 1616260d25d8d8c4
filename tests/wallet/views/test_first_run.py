"""A new user's first run, all in the window, on the embedded node: create a key,
write down and check the backup, choose a password and the embedded node, create
an entity; then propose a change, approve its frame in the Approvals view, and
see it executed in the Entities view. (Votes between two wallets, and a reject,
are in ``tests/wallet/test_two_wallets.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from tests.wallet.views.test_onboarding_view import PASSWORD, WAIT_S, make_app
from wallet.app import WalletApp
from wallet.flows.approvals import Status
from wallet.flows.onboarding import Step
from wallet.views.approvals import ApprovalsView
from wallet.views.compose import NewProposalDialog, SetSharesEditor
from wallet.views.entities import EntitiesView
from wallet.views.onboarding import (
    BackupPage,
    CheckPage,
    EntityPage,
    OnboardingWindow,
    PasswordPage,
)
from wallet.views.proposals import ProposalsView


def step(w: OnboardingWindow) -> Step:
    return w.step


async def until(wallet: WalletApp, check: Callable[[], bool]) -> None:
    """Woken by the model's and the approval queue's changes; a deadline, no sleeping."""
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    model = wallet.model
    queue = wallet.service.queue if wallet.service is not None else None
    listeners = [] if queue is None else [queue.added, queue.changed]
    model.entities_changed.connect(wake)
    model.history_added.connect(wake)
    for listener_list in listeners:
        listener_list.append(wake)
    try:
        async with asyncio.timeout(WAIT_S):
            while not check():
                woken.clear()
                await woken.wait()
    finally:
        model.entities_changed.disconnect(wake)
        model.history_added.disconnect(wake)
        for listener_list in listeners:
            listener_list.remove(wake)


async def test_first_run_to_an_executed_proposal(qtbot: QtBot, tmp_path: Path) -> None:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    wallet = make_app(data)
    run = asyncio.ensure_future(wallet.run())
    try:
        await wallet.wait_stage("onboarding")
        w = wallet.onboarding
        assert w is not None
        w.next()  # a new key (the default choice)
        backup = w.page(Step.BACKUP)
        assert isinstance(backup, BackupPage)
        words = [cell.text() for cell in backup.cells]
        backup.confirm.setChecked(True)
        w.next()
        check = w.page(Step.CHECK)
        assert isinstance(check, CheckPage)
        for edit, pos in zip(check.answers, w.flow.check_positions, strict=True):
            edit.setText(words[pos])
        w.next()
        assert step(w) is Step.PASSWORD
        password = w.page(Step.PASSWORD)
        assert isinstance(password, PasswordPage)
        password.password.setText(PASSWORD)
        password.again.setText(PASSWORD)
        w.next()
        assert step(w) is Step.NODE
        w.next()  # the embedded node (the default choice)
        entity_page = w.page(Step.ENTITY)
        assert isinstance(entity_page, EntityPage)
        entity_page.create_mode.setChecked(True)  # just me: 2 shares, threshold 2
        entity_page.own_shares.setValue(2)
        entity_page.threshold.setValue(2)
        w.next()
        await wallet.wait_stage("main")
        window = wallet.window
        assert window is not None

        # The entity is created once the node runs, and shows in the Entities view.
        await until(wallet, lambda: bool(wallet.model.entities))
        window.show_page("entities")
        entities = window.pages["entities"]
        assert isinstance(entities, EntitiesView)
        await until(wallet, lambda: len(entities.cards) == 1)
        assert "threshold 2 of 2 shares" in entities.cards[0].summary.text()

        # Propose 3 shares for myself, from the Proposals view's editor.
        window.show_page("proposals")
        proposals = window.pages["proposals"]
        assert isinstance(proposals, ProposalsView)
        proposals.new_button.click()
        dialog = proposals.editor
        assert isinstance(dialog, NewProposalDialog)
        dialog.kind.setCurrentIndex(dialog.kind.findData(SetSharesEditor.KIND))
        editor = dialog.editor
        assert isinstance(editor, SetSharesEditor)
        editor.shares.setText("3")
        dialog.ok_button.click()

        # Its frame waits for my approval: the effects say what will change.
        service = wallet.service
        assert service is not None
        await until(wallet, lambda: bool(service.queue.pending()))
        window.show_page("approvals")
        approvals = window.pages["approvals"]
        assert isinstance(approvals, ApprovalsView)
        assert approvals.title.text() == "Approval needed"
        assert "shares" in approvals.effects.text()
        assert "governance" in approvals.effects.text()
        assert approvals.approve_button.isEnabled()
        approvals.approve_button.click()

        # Proposing counts as my vote; my shares reach the threshold, so it executes.
        await until(
            wallet,
            lambda: "threshold 2 of 3 shares" in entities.cards[0].summary.text(),
        )
        decided = [r for r in service.queue.all() if r.status is Status.APPROVED]
        assert decided
        assert all(r.decided_by == "you" for r in decided)
        assert decided[0].signed

        window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run == 0
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


async def test_a_restore_from_the_phrase_says_what_it_found(qtbot: QtBot, tmp_path: Path) -> None:
    """Onboarding's Restore into a new folder, on the embedded node with no peers: the
    signer is marked restored, and the window says no entity was found and why
    (not a bare "No entity yet")."""
    from wallet.flows import restore as restore_flow
    from wallet.keys.mnemonic import generate
    from wallet.views.onboarding import KeyPage

    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    wallet = make_app(data)
    run = asyncio.ensure_future(wallet.run())
    try:
        await wallet.wait_stage("onboarding")
        w = wallet.onboarding
        assert w is not None
        key = w.page(Step.KEY)
        assert isinstance(key, KeyPage)
        key.restore.setChecked(True)
        key.phrase.setPlainText(generate())
        w.next()
        assert step(w) is Step.PASSWORD
        password = w.page(Step.PASSWORD)
        assert isinstance(password, PasswordPage)
        password.password.setText(PASSWORD)
        password.again.setText(PASSWORD)
        w.next()
        w.next()  # the embedded node
        w.next()  # no entity: skip (the default)
        await wallet.wait_stage("main")
        window = wallet.window
        assert window is not None
        model = wallet.model
        woken = asyncio.Event()
        model.restore_changed.connect(woken.set)
        async with asyncio.timeout(WAIT_S):
            while not model.restore_note.startswith("No entity"):
                woken.clear()
                await woken.wait()
        assert window.title.text() == "Restored from the phrase"
        assert window.subtitle.text() == (
            "No entity of this signer found yet; this node has no peers: add your "
            "co-signers' servers in Settings. Asked again at the next connection."
        )
        record = restore_flow.load(data)
        assert len(record.restored) == 1
        assert record.pending == record.restored  # nothing found: asked again later

        window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run == 0
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
