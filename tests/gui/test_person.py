"""The real wallet driven as a person drives it: keys, clicks and eyes on an X display.

Each test starts ``xln-wallet`` (embedded node, light theme) under Xvfb and
openbox, with the system keyring of the test session (the GNOME Keyring that
``scripts/test.sh`` starts), types at about ten keys a second, reads the screen
with OCR and clicks where the words are. Screenshots of each step go to
``test-artifacts/gui/<test>/``.

1. Onboarding: a new phrase read off the screen, three words checked, the
   password, the embedded node, a 1-of-1 entity; then Ctrl+Q; started again,
   the password and **Enter** unlock it and the main window shows the entity.
2. The phrase of that wallet restored into a new folder with a new password;
   then both wallets run side by side on one keyring, each unlocked with its own
   password (and refusing the other's).

The tests of this module run in order: the second restores the first's phrase.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gui.driver import ROOT, App, Display, GuiError, Shots, running, until
from tests.gui.phrase import asked_positions, read_phrase
from wallet.keys.backends import SERVICE, choose_backend

SETUP = "XLN Signer · Set up"
UNLOCK = "XLN Signer · Unlock the wallet"
MAIN = "XLN Signer"
ONBOARDING_S = 120.0  # the KDF, the key stored, the node started, the entity made


@dataclass
class FirstWallet:
    data: Path
    password: str
    phrase: str


FIRST: list[FirstWallet] = []  # what the first test leaves to the second


def wallet_entries(data: Path) -> set[str]:
    """The names of this wallet's entries in the system keyring (under its wallet id)."""
    wallet_id = (data / "wallet-id").read_text().strip()
    keyring = choose_backend(data, prefer="system").keyring
    index = json.loads((data / "keys.json").read_text())
    signers = [k["signer_id"] for k in index["keys"]] if isinstance(index, dict) else []
    names = {"wallet-password-check", *signers}
    return {n for n in names if keyring.get_password(SERVICE, f"{wallet_id}.{n}") is not None}


def node_height(data: Path) -> int:
    """The embedded node's height, read from its data folder by ``xln-node inspect``."""
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "xln-node"), "inspect", "--data", str(data / "node"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(json.loads(done.stdout)["height"])


def unlock(app: App, shots: Shots, password: str, step: str) -> None:
    """Type the password in the unlock dialog and press Enter; wait for the main window."""
    dialog = app.window(UNLOCK)
    shots.take(f"{step}-unlock")
    app.type(password)
    app.key("Return")
    app.ready()
    main = app.window(MAIN)
    assert app.title(main) == MAIN


def test_onboarding_then_unlock_with_enter(display: Display, shots: Shots, home: Path) -> None:
    data = home / "first"
    password = "correct horse battery"  # noqa: S105 (a throwaway wallet's)
    with running(App(display, data, "first", "--theme", "light"), shots) as app:
        setup = app.window(SETUP)
        shots.take("key")
        app.key("Return")  # "Create a new key" is chosen; the key name is the first field
        until("the backup page", lambda: app.shows(setup, "wrote the 24 words"))
        shots.take("backup")
        phrase = read_phrase(app.read(setup))
        app.click_text(setup, "wrote the 24 words")
        app.key("Return")
        until("the word check", lambda: len(asked_positions(app.read(setup))) == 3)
        shots.take("check")
        words = phrase.split()
        for position in asked_positions(app.read(setup)):
            app.type(words[position - 1])
            app.key("Return")  # to the next empty field; from the last one, Next
        until("the password page", lambda: app.shows(setup, "Wallet password"))
        app.type(password)
        app.key("Return")
        app.type(password)
        shots.take("password")
        app.key("Return")
        until("the node page", lambda: app.shows(setup, "Embedded node"))
        shots.take("node")
        app.key("Return")
        until("the entity page", lambda: app.shows(setup, "Create an entity"))
        app.click_text(setup, "Create an entity")
        until("the threshold explained", lambda: app.shows(setup, "Threshold"))
        shots.take("entity")
        app.click_text(setup, "Finish")
        app.ready(ONBOARDING_S)
        main = app.window(MAIN)
        until("the entity in the header", lambda: app.shows(main, "threshold 1/1"), ONBOARDING_S)
        shots.take("main")
        assert wallet_entries(data) >= {"wallet-password-check"}
        assert len(wallet_entries(data)) == 2  # the check entry and the one signer key
        app.key("ctrl+q")
        assert app.wait_exit() == 0
    height = node_height(data)
    assert height > 0

    with running(App(display, data, "first", "--theme", "light"), shots) as app:
        unlock(app, shots, password, "again")
        main = app.window(MAIN)
        until("the entity in the header", lambda: app.shows(main, "threshold 1/1"))
        shots.take("unlocked")
        app.key("ctrl+q")
        assert app.wait_exit() == 0
    FIRST.append(FirstWallet(data, password, phrase))


def test_restore_then_two_wallets_side_by_side(display: Display, shots: Shots, home: Path) -> None:
    if not FIRST:
        raise GuiError("this test restores the phrase the onboarding test read; run the module")
    first = FIRST[0]
    data = home / "restored"
    password = "another password, restored"  # noqa: S105
    with running(App(display, data, "restored", "--theme", "light"), shots) as app:
        setup = app.window(SETUP)
        app.click_text(setup, "Restore a key")
        app.click_text(setup, "The 12 to 24 words")
        app.type(first.phrase)
        shots.take("phrase")
        app.click_text(setup, "Next")
        until("the password page", lambda: app.shows(setup, "Wallet password"))
        app.type(password)
        app.key("Return")
        app.type(password)
        app.key("Return")
        until("the node page", lambda: app.shows(setup, "Embedded node"))
        app.key("Return")
        until("the entity page", lambda: app.shows(setup, "Skip for now"))
        shots.take("entity")
        app.click_text(setup, "Finish")
        app.ready(ONBOARDING_S)
        app.window(MAIN)
        shots.take("main")
        app.key("ctrl+q")
        assert app.wait_exit() == 0

    ids = {(d / "wallet-id").read_text().strip() for d in (first.data, data)}
    assert len(ids) == 2
    keys = [json.loads((d / "keys.json").read_text()) for d in (first.data, data)]
    assert keys[0] == keys[1] or _signers(keys[0]) == _signers(keys[1])  # one key, two wallets

    with (
        running(App(display, first.data, "first", "--theme", "light"), shots) as one,
        running(App(display, data, "restored", "--theme", "light"), shots) as two,
    ):
        dialog = two.window(UNLOCK)
        two.type(first.password)  # the other wallet's password opens nothing here
        two.key("Return")
        until("the wrong password said", lambda: two.shows(dialog, "Wrong password"))
        shots.take("other-password-refused")
        two.key("ctrl+a")
        unlock(two, shots, password, "restored")
        unlock(one, shots, first.password, "first")
        shots.take("side-by-side")
        assert one.proc.poll() is None and two.proc.poll() is None
        for a in (one, two):
            a.window(MAIN)
            a.key("ctrl+q")
            assert a.wait_exit() == 0
    assert len(wallet_entries(first.data)) == 2
    assert len(wallet_entries(data)) == 2


def _signers(index: object) -> list[str]:
    if isinstance(index, dict):
        return sorted(k["signer_id"] for k in index.get("keys", []))
    pytest.fail(f"keys.json reads {index!r}")
