"""The real wallet driven as a person drives it: keys, clicks and eyes on an X display.

Each test starts ``xln-wallet`` (embedded node in its child process, light theme)
under Xvfb and openbox, with the system keyring of the test session (the GNOME
Keyring that ``scripts/test.sh`` starts on its private D-Bus), and acts through
the X server only: the keyboard first (Enter, Tab, the pages' Alt accelerators,
the main window's shortcuts), a click where a person would click, windows found
by their titles, and the screen read with OCR to know which page shows (and to
read the recovery phrase off it, as a person writes it down). Screenshots of
each step go to ``test-artifacts/gui/<test>/``.

1. Onboarding: a new phrase read off the screen, three words checked, the
   password, the embedded node, a 1-of-1 entity; Ctrl+Q; started again, the
   password and **Enter** unlock it and the main window shows the entity.
2. A proposal made in the GUI (add a signer to the 1-of-1, threshold 2, in one
   proposal) approved in the Approvals view: the frame is certified, the header
   shows the new config, and History lists it.
3. The phrase of that wallet restored into a new folder with a new password
   (Back on the way, and the setup goes on); the same key comes back.
4. Both wallets side by side on one keyring, each unlocked with its own
   password (and refusing the other's); their keyring entries do not collide.

Not here yet: see :data:`LATER` at the end of the module.

The tests of this module run in order: each goes on from the wallets the ones
before left (:data:`FIRST`, :data:`RESTORED`).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.gui.driver import ROOT, App, Display, GuiError, Shots, running, until
from tests.gui.phrase import asked_positions, read_phrase
from wallet.keys.backends import SERVICE, choose_backend

SETUP = "XLN Signer · Set up"
UNLOCK = "XLN Signer · Unlock the wallet"
MAIN = "XLN Signer"
NEW_PROPOSAL = "New proposal"
ONBOARDING_S = 120.0  # the KDF, the key stored, the node started, the entity made
CERTIFIED_S = 60.0
FAST_KEY_DELAY_MS = 15  # a long card or phrase, typed as fast as a paste would land


@dataclass
class Wallet:
    data: Path
    password: str
    phrase: str


FIRST: list[Wallet] = []  # what the onboarding test leaves to the others
RESTORED: list[Wallet] = []


def first() -> Wallet:
    if not FIRST:
        raise GuiError("this test goes on from the onboarding test's wallet; run the module")
    return FIRST[0]


def wallet_entries(data: Path) -> set[str]:
    """This wallet's entries in the system keyring that exist, under its own wallet
    id: the password check and each signer key."""
    wallet_id = (data / "wallet-id").read_text().strip()
    keyring = choose_backend(data, prefer="system").keyring
    names = {"wallet-password-check", *signers(data)}
    return {n for n in names if keyring.get_password(SERVICE, f"{wallet_id}.{n}") is not None}


def signers(data: Path) -> list[str]:
    """The signer ids (hex) of the data folder's key index, ``keys.json``."""
    index = json.loads((data / "keys.json").read_text())
    keys = index["keys"] if isinstance(index, dict) else index
    return sorted(str(k["signer_id"]) for k in keys)


def node_height(data: Path) -> int:
    """The embedded node's height, read from its data folder by ``xln-node inspect``."""
    done = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "xln-node"),
            "inspect",
            "--data",
            str(data / "node"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(json.loads(done.stdout)["height"])


def start(display: Display, shots: Shots, wallet: Wallet, name: str) -> App:
    return App(display, wallet.data, name, "--theme", "light")


def unlock(app: App, shots: Shots, password: str, step: str) -> str:
    """Type the password in the unlock dialog and press Enter; the main window's id."""
    app.window(UNLOCK)
    shots.take(f"{step}-unlock")
    app.type(password)
    app.key("Return")
    app.ready()
    return app.window(MAIN)


def quit_app(app: App) -> None:
    app.window(MAIN)
    app.key("ctrl+q")
    assert app.wait_exit() == 0


def page(app: App, wid: str, heading: str, timeout_s: float = 30.0) -> None:
    """Wait until the window shows ``heading`` (a page's title, read on screen)."""
    until(f"{heading!r} on screen", lambda: app.shows(wid, heading), timeout_s)


def phrase_on(app: App, wid: str) -> str | None:
    """The backup page's phrase, if this reading of the screen gives a valid one
    (a blinking cursor or a repaint can spoil one reading)."""
    try:
        return read_phrase(app.read(wid))
    except GuiError:
        return None


def three_asked(app: App, wid: str) -> list[int] | None:
    """The check page's three positions asked for, once one reading shows them all."""
    asked = asked_positions(app.read(wid))
    return asked if len(asked) == 3 else None


def approve(app: App, main: str) -> bool:
    """Approve the newest waiting request as a person does; True once the header
    shows the entity's new config (2-of-2).

    A click on the list gives it the focus, Home selects its top row (the newest
    waiting request comes first), Ctrl+Enter approves and signs. Called until the
    header shows the change: a click that lands while the list repaints is tried
    again (a request follows the rounds as one entry, so the row stays)."""
    if app.shows(main, "threshold 2/2"):
        return True
    if not app.windows(MAIN):  # the title counts what waits: "XLN Signer (1)"
        app.click_text(main, "Frame #1", leftmost=True)  # in the list, not its details
        app.key("Home")
        app.key("ctrl+Return")
    return False


def test_onboarding_then_unlock_with_enter(display: Display, shots: Shots, home: Path) -> None:
    wallet = Wallet(home / "first", "correct horse battery", "")  # a throwaway wallet's
    with running(start(display, shots, wallet, "first"), shots) as app:
        setup = app.window(SETUP)
        page(app, setup, "Your signer key")
        shots.take("key")
        app.key("Return")  # "Create a new key" is chosen; the focus is on the key's name
        page(app, setup, "wrote the 24 words")
        shots.take("backup")
        wallet.phrase = until("the phrase read", lambda: phrase_on(app, setup))
        app.key("alt+i")  # "I wrote the 24 words down"
        app.key("Return")
        asked = until("the word check", lambda: three_asked(app, setup))
        shots.take("check")
        words = wallet.phrase.split()
        for position in asked:
            app.type(words[position - 1])
            app.key("Return")  # to the next empty field; from the last one, Next
        page(app, setup, "Wallet password")
        app.type(wallet.password)
        app.key("Return")
        app.type(wallet.password)
        shots.take("password")
        app.key("Return")
        page(app, setup, "Embedded node")
        shots.take("node")
        app.key("Return")  # the embedded node is the default
        page(app, setup, "Your signer card")
        app.key("alt+c")  # "Create an entity"
        page(app, setup, "Each frame needs signatures")
        shots.take("entity")
        app.key("alt+f")  # Finish
        app.ready(ONBOARDING_S)
        main = app.window(MAIN)
        until("the entity in the header", lambda: app.shows(main, "threshold 1/1"), ONBOARDING_S)
        shots.take("main")
        assert wallet_entries(wallet.data) == {"wallet-password-check", *signers(wallet.data)}
        quit_app(app)
    assert node_height(wallet.data) > 0  # the entity's first frame is on the node's chain

    with running(start(display, shots, wallet, "first"), shots) as app:
        main = unlock(app, shots, wallet.password, "again")
        until("the entity in the header", lambda: app.shows(main, "threshold 1/1"))
        shots.take("unlocked")
        quit_app(app)
    FIRST.append(wallet)


def test_a_proposal_approved_in_the_approvals_view(
    display: Display, shots: Shots, home: Path
) -> None:
    """In the 1-of-1: New proposal (add a signer, threshold 2) from the Proposals view;
    its frame waits in Approvals (the accountant is off: a person approves every
    frame); the frame selected with a click, Ctrl+Enter approves and signs; it is
    certified: the header shows 2 signers, 2/2, and History lists the change."""
    from node.crypto import bls
    from wallet.flows.compose import SignerCard

    one = first()
    sk = bls.keygen(secrets.token_bytes(32))
    card = SignerCard(bls.sk_to_pk(sk), bls.pop_prove(sk)).encode()  # a co-signer's, sent to us
    before = node_height(one.data)
    with running(start(display, shots, one, "first"), shots) as app:
        main = unlock(app, shots, one.password, "first")
        until("the entity in the header", lambda: app.shows(main, "threshold 1/1"))
        app.key("ctrl+2")  # Proposals
        page(app, main, "No open proposal")
        app.key("alt+n")  # New proposal…
        dialog = app.window(NEW_PROPOSAL)
        page(app, dialog, "Signer card")  # "Add a signer" is the first action
        app.key("Tab")  # from the action's box to the card
        app.type(card, FAST_KEY_DELAY_MS)
        app.key("Tab", "Tab")  # past the shares (1) to the new threshold
        app.type("2")
        shots.take("proposal")
        app.key("Return")  # Propose
        app.gone(dialog)

        until("an approval waiting (the title counts it)", lambda: app.windows(f"{MAIN} (1)"))
        app.key("ctrl+1")  # Approvals
        page(app, main, "governance")
        shots.take("approval")
        until("the frame approved and certified", lambda: approve(app, main), CERTIFIED_S)
        assert app.windows(MAIN), "no approval is left waiting"
        shots.take("certified")
        app.key("ctrl+5")  # History
        page(app, main, "new proposal #1")
        shots.take("history")
        quit_app(app)
    assert node_height(one.data) > before


def test_restore_with_a_new_password(display: Display, shots: Shots, home: Path) -> None:
    """The phrase typed into a new folder's setup; Back from the node page to the
    password page and on again; the same key comes back under a new password."""
    one = first()
    wallet = Wallet(home / "restored", "another password, restored", one.phrase)
    with running(start(display, shots, wallet, "restored"), shots) as app:
        setup = app.window(SETUP)
        page(app, setup, "Your signer key")
        app.key("alt+r")  # "Restore a key": the focus goes to the phrase
        app.type(wallet.phrase, FAST_KEY_DELAY_MS)
        shots.take("phrase")
        app.key("alt+n")  # Next (Enter stays in the phrase's box)
        page(app, setup, "Wallet password")
        for _ in range(2):  # the second time after Back from the node page
            app.type(wallet.password)
            app.key("Return")
            app.type(wallet.password)
            app.key("Return")
            page(app, setup, "Embedded node")
            if _ == 0:
                shots.take("node")
                app.key("alt+b")  # Back: to the password page, which works again
                page(app, setup, "Wallet password")
                shots.take("back")
        app.key("Return")
        page(app, setup, "Your signer card")
        shots.take("entity")  # "Skip for now" is the default
        app.key("alt+f")
        app.ready(ONBOARDING_S)
        main = app.window(MAIN)
        page(app, main, "No entity yet")
        shots.take("main")
        quit_app(app)
    assert signers(wallet.data) == signers(one.data)  # the key came back
    assert (wallet.data / "wallet-id").read_text() != (one.data / "wallet-id").read_text()
    RESTORED.append(wallet)


def test_two_wallets_side_by_side(display: Display, shots: Shots) -> None:
    """Both wallets run at once on one keyring; each opens only with its own password."""
    one = first()
    if not RESTORED:
        raise GuiError("this test goes on from the restore test's wallet; run the module")
    two = RESTORED[0]
    with (
        running(start(display, shots, one, "first"), shots) as a,
        running(start(display, shots, two, "restored"), shots) as b,
    ):
        a.window(UNLOCK)
        dialog = b.window(UNLOCK)  # both shown before typing: a new window takes the focus
        display.x("xdotool", "windowmove", dialog, "760", "120")  # the two were one on the other
        b.window(UNLOCK)
        b.type(one.password)  # the other wallet's password opens nothing here
        b.key("Return")
        page(b, dialog, "Wrong password")
        shots.take("other-password-refused")
        b.key("ctrl+a")  # the field still has the focus: a person types over
        main_b = unlock(b, shots, two.password, "restored")
        main_a = unlock(a, shots, one.password, "first")
        # The first's entity as the proposal test left it: the change outlived a restart.
        until("the entity in the first's header", lambda: a.shows(main_a, "threshold 2/2"))
        # The restored wallet says what its restore found: its entity lived only in the
        # first wallet's embedded node, which has no peers to ask (backups: not built).
        page(b, main_b, "Restored from the phrase")
        shots.take("side-by-side")
        for app in (a, b):
            quit_app(app)
    for w in (one, two):
        assert wallet_entries(w.data) == {"wallet-password-check", *signers(w.data)}


# Later: the scenarios of issue 12 item 6 not driven through the X server yet. What
# they show is in place and tested headless: a request follows the rounds as one
# entry (tests/wallet/test_two_wallets.py: B approves after reading for two rounds),
# and a co-signer's refusal is signed, kept by the nodes and shown with its reason
# (tests/wallet/test_headless.py, tests/wallet/views/test_approvals_view.py). What
# they need here: a second wallet whose node is peered with the first's, set up
# through Settings. Dropping the refused frame and withdrawing its batch waits for
# the two-step voting (docs/design/two-step-voting.md).
LATER = (
    # In a 2-of-2 with a second wallet as the other signer, the approval is clicked
    # 20 s after it appeared (a person reading it), and the frame is certified.
    "test_two_of_two_approval_clicked_20_s_later",
    # A refusal by an accountant co-signer is seen by the proposer with its reason;
    # the frame is dropped and the batch withdrawn; the next frame is certified.
    "test_refusal_seen_then_dropped_and_withdrawn",
)
