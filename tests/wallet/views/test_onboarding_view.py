"""The onboarding pages end to end on the real app controller: a real vault in the
encrypted-file backend, the embedded node, each page refusing bad input with its
reason, then the main window, connected; and afterwards no trace of the secret
key or the recovery phrase in the data folder or the logs."""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from node.crypto import bls
from wallet.app import WalletApp
from wallet.flows.compose import SignerCard
from wallet.flows.onboarding import Onboarding, Step
from wallet.keys import mnemonic
from wallet.model import Link, WalletModel
from wallet.qt import QApplication, QScrollArea, Qt, QWidget
from wallet.views.onboarding import (
    BackupPage,
    CheckPage,
    EntityPage,
    KeyPage,
    NodePage,
    OnboardingWindow,
    PasswordPage,
    complete_word,
)

PASSWORD = "correct horse battery"  # noqa: S105 (a throwaway test wallet)
WAIT_S = 30.0


def make_app(data: Path) -> WalletApp:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    return WalletApp(
        app,
        data,
        theme_name="light",
        prefer_backend="file",
        backend_service=f"xln-signer-test-{secrets.token_hex(6)}",
        fast_kdf=True,
        tick_ms=20,
    )


async def until_connected(model: WalletModel) -> None:
    changed = asyncio.Event()
    model.connection_changed.connect(changed.set)
    try:
        async with asyncio.timeout(WAIT_S):
            while model.connection.link is not Link.CONNECTED:
                changed.clear()
                await changed.wait()
    finally:
        model.connection_changed.disconnect(changed.set)


def type_text(qtbot: QtBot, widget: QWidget, text: str) -> None:
    qtbot.keyClicks(widget, text)  # type: ignore[no-untyped-call]


def press(qtbot: QtBot, widget: QWidget, key: Qt.Key) -> None:
    qtbot.keyClick(widget, key)  # type: ignore[no-untyped-call]


def current(w: OnboardingWindow) -> Step:
    """The window's step (a call, so that mypy does not narrow it between steps)."""
    return w.step


def refused(w: OnboardingWindow, action: Callable[[], None], step: Step) -> str:
    """Run ``action`` then Next; the page must refuse, say why, and stay."""
    action()
    w.next()
    assert current(w) is step
    assert w.error.isVisibleTo(w)
    assert w.error.text()
    return w.error.text()


async def test_onboarding_creates_a_wallet_and_opens_the_main_window(
    qtbot: QtBot, tmp_path: Path
) -> None:
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
        assert "12 to 24 words" in refused(w, lambda: key.phrase.setPlainText("abandon"), Step.KEY)
        key.new_key.setChecked(True)
        key.label.setText("alice")
        w.next()
        assert current(w) is Step.BACKUP

        backup = w.page(Step.BACKUP)
        assert isinstance(backup, BackupPage)
        # The 24 words fit the window: no scrolling sideways to read them.
        QApplication.processEvents()
        scroll = w.stack.currentWidget()
        assert isinstance(scroll, QScrollArea)
        assert w.isVisible()
        assert not scroll.horizontalScrollBar().isVisible()
        words = [cell.text() for cell in backup.cells]
        assert len(words) == 24
        assert all(words)
        phrase = " ".join(words)
        assert mnemonic.is_valid(phrase)
        assert "wrote" in refused(w, lambda: None, Step.BACKUP)
        backup.confirm.setChecked(True)
        w.next()
        assert current(w) is Step.CHECK
        assert not any(cell.text() for cell in backup.cells), "the words leave the screen"

        check = w.page(Step.CHECK)
        assert isinstance(check, CheckPage)
        positions = w.flow.check_positions
        assert [lab.text() for lab in check.labels] == [f"Word #{p + 1}" for p in positions]

        def wrong() -> None:
            for edit in check.answers:
                edit.setText("zoo")

        assert "does not match" in refused(w, wrong, Step.CHECK)
        for edit, pos in zip(check.answers, positions, strict=True):
            edit.setText(words[pos].upper())
        w.next()
        assert current(w) is Step.PASSWORD

        pw = w.page(Step.PASSWORD)
        assert isinstance(pw, PasswordPage)

        def differ() -> None:
            pw.password.setText(PASSWORD)
            pw.again.setText(PASSWORD + "!")

        assert "differ" in refused(w, differ, Step.PASSWORD)
        pw.password.setText(PASSWORD)
        pw.again.setText(PASSWORD)
        w.next()
        assert current(w) is Step.NODE

        node = w.page(Step.NODE)
        assert isinstance(node, NodePage)
        # The remote node's fields show only when a remote node is chosen.
        assert not node.url.isVisibleTo(node)
        assert not node.token.isVisibleTo(node)

        def bad_remote() -> None:
            node.remote.setChecked(True)
            node.url.setText("http://example")

        assert "ws://" in refused(w, bad_remote, Step.NODE)
        assert node.url.isVisibleTo(node)
        assert node.token.isVisibleTo(node)
        # The connection is tried before Next moves on: nothing listens on this port.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        node.url.setText(f"ws://127.0.0.1:{port}")
        node.token.setText("some token")
        w.next()
        assert w._task is not None
        await w._task
        assert current(w) is Step.NODE
        assert "Cannot reach the node" in w.error.text()
        assert w.next_button.text() == "&Next"  # Alt+N
        node.embedded.setChecked(True)
        assert not node.url.isVisibleTo(node)
        w.next()
        assert current(w) is Step.ENTITY

        entity = w.page(Step.ENTITY)
        assert isinstance(entity, EntityPage)
        assert w._card_task is not None
        await w._card_task
        card = SignerCard.decode(entity.card.text())  # the form the Entities view copies
        assert entity.card.text() == card.encode()
        sk, _ = mnemonic.signer_key(phrase)
        assert card.pubkey == bls.sk_to_pk(sk)
        assert entity.copied.text() == ""
        entity.copy.click()
        assert QApplication.clipboard().text() == entity.card.text()
        assert entity.copied.text() == "Copied"  # the click says it worked

        assert "1 of the 1 shares" in entity.threshold_hint.text()  # alone: 1-of-1

        def bad_entity() -> None:
            entity.create_mode.setChecked(True)
            entity.add_row().card.setText("not a card")
            # a co-signer's share: threshold 1 of 2 is refused, and the hint says why
            assert "2 to 2 here" in entity.threshold_hint.text()
            assert entity.threshold_hint.property("role") == "error"

        assert "signer card" in refused(w, bad_entity, Step.ENTITY)
        entity.skip_mode.setChecked(True)
        w.next()

        await wallet.wait_stage("main")
        assert wallet.window is not None
        assert wallet.window.isVisible()
        assert wallet.onboarding is None
        await until_connected(wallet.model)
        assert wallet.vault is not None
        assert not wallet.vault.locked
        assert [k.label for k in wallet.vault.keys()] == ["alice"]  # noqa: SIM118
        assert wallet.model.locked is False
        wallet.window.close()
        async with asyncio.timeout(WAIT_S):
            assert await run == 0
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    secrets_to_find = [
        sk.to_bytes(32, "big"),
        sk.to_bytes(32, "big").hex().encode(),
        phrase.encode(),
        " ".join(words[:3]).encode(),
    ]
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in secrets_to_find:
                assert secret not in content, f"{path} holds a secret"
    log_text = "\n".join(line.message for line in wallet.model.logs).encode()
    assert log_text, "the app's logs reached the model"
    for secret in secrets_to_find:
        assert secret not in log_text
    assert PASSWORD.encode() not in log_text


def test_the_word_check_as_a_person_types_it(qtbot: QtBot) -> None:
    """Each field completes from the BIP-39 word list; Enter moves to the next field
    and, on the last, goes on; a wrong word's field is marked, and editing it takes
    the mark and the stale reason away."""

    async def never(plan: object) -> None:
        raise AssertionError("nothing is executed in this test")

    flow = Onboarding(mnemonic.generate, mnemonic.is_valid, random.Random(5))
    w = OnboardingWindow(flow, never, card_of=lambda phrase: "card")
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)  # keys go where a person's would: the focus
    flow.create_key("alice")
    flow.backup_done()
    w._show_step()
    check = w.page(Step.CHECK)
    assert isinstance(check, CheckPage)
    assert w.focusWidget() is check.answers[0]  # typing starts there, no click needed
    words = flow.words
    positions = flow.check_positions
    assert complete_word("abou") == "about"
    assert complete_word("Zon") == "zone"
    assert complete_word("ab") == "ab"  # abandon, ability, able, ...: left as typed

    wrong = 1  # the second word asked for is typed wrong
    for i, (edit, pos) in enumerate(zip(check.answers, positions, strict=True)):
        edit.setFocus()
        # Four letters complete a BIP-39 word (they are unique in the list).
        typed = "zoo" if i == wrong and words[pos] != "zoo" else words[pos][:4]
        type_text(qtbot, edit, typed)
        press(qtbot, edit, Qt.Key.Key_Return)  # the last one's Enter is Next
    assert current(w) is Step.CHECK
    typed_words = [words[p] for p in positions]
    if typed_words[wrong] != "zoo":
        typed_words[wrong] = "zoo"
    assert [e.text() for e in check.answers] == typed_words  # completed from 4 letters
    assert check.marked() == [i == wrong for i in range(len(positions))]
    assert "does not match" in w.error.text()
    assert w.error.isVisibleTo(w)

    fix = check.answers[wrong]
    fix.clear()
    type_text(qtbot, fix, words[positions[wrong]])
    assert check.marked() == [False] * len(positions)
    assert not w.error.isVisibleTo(w)
    press(qtbot, check.answers[-1], Qt.Key.Key_Return)
    assert current(w) is Step.PASSWORD

    # The same Enter on the next page: to the second field, then Next.
    page = w.page(Step.PASSWORD)
    assert isinstance(page, PasswordPage)
    assert w.focusWidget() is page.password
    type_text(qtbot, page.password, PASSWORD)
    press(qtbot, page.password, Qt.Key.Key_Return)
    assert current(w) is Step.PASSWORD
    assert w.focusWidget() is page.again
    type_text(qtbot, page.again, PASSWORD)
    press(qtbot, page.again, Qt.Key.Key_Return)
    assert current(w) is Step.NODE


async def test_back_after_a_failed_finish(qtbot: QtBot) -> None:
    """A Finish that fails says why, offers Try again, and Back works (it was disabled:
    a dead end when what failed was on an earlier page)."""
    tried: list[object] = []

    async def fails(plan: object) -> None:
        tried.append(plan)
        raise RuntimeError("the keyring went away")

    flow = Onboarding(mnemonic.generate, mnemonic.is_valid, random.Random(5))
    w = OnboardingWindow(flow, fails, card_of=lambda phrase: "card")
    qtbot.addWidget(w)
    w.show()
    flow.create_key("alice")
    flow.backup_done()
    flow.check_words([flow.words[p] for p in flow.check_positions])
    flow.set_password("a good password", "a good password")
    flow.use_embedded_node()
    w._show_step()
    assert current(w) is Step.ENTITY
    w.next_button.click()  # Finish (the entity skipped)
    assert w._task is not None
    await w._task  # the failure is shown; the task does not raise
    assert len(tried) == 1
    assert current(w) is Step.DONE
    assert "keyring went away" in w.error.text()
    assert w.next_button.text() == "&Try again"
    assert w.back_button.isEnabled()
    w.back_button.click()
    assert current(w) is Step.ENTITY
    w.back_button.click()
    assert current(w) is Step.NODE
