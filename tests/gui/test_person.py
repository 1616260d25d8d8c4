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
5. A 2-of-2 with a second wallet as the other signer: two wallets (keys made
   as onboarding makes them), their embedded nodes peered in Settings (listen
   port, Copy address, Peers, a restart); the entity created from the co-signer's
   copied card; a counter frame the co-signer approves with a click 20 s after
   it appeared (its entry follows the rounds meanwhile); certified, as both
   nodes (through their protocol) and both windows show.

Not here yet: see :data:`LATER` at the end of the module.

The tests 1 to 4 run in order: each goes on from the wallets the ones before
left (:data:`FIRST`, :data:`RESTORED`); 5 makes its own.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.gui.driver import (
    ROOT,
    App,
    Display,
    GuiError,
    Shots,
    checkout_env,
    pause,
    running,
    until,
)
from tests.gui.phrase import asked_positions, read_phrase
from wallet.keys.backends import SERVICE, choose_backend

SETUP = "XLN Signer · Set up"
UNLOCK = "XLN Signer · Unlock the wallet"
MAIN = "XLN Signer"
NEW_PROPOSAL = "New proposal"
CREATE_ENTITY = "Create an entity"
INCREMENT = "Increment the counter"
BOB_READS_S = 20.0  # a co-signer reading a frame before approving it
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


def inspect(data: Path) -> dict[str, Any]:
    """``xln-node inspect --json`` of the wallet's embedded node: from its store when
    stopped, through its protocol (the control socket) while it runs."""
    xln_node = str(ROOT / ".venv" / "bin" / "xln-node")
    done = subprocess.run(
        [xln_node, "inspect", "--json", "--data", str(data / "node")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=checkout_env(),
    )
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def node_height(data: Path) -> int:
    """The embedded node's height, read from its data folder by ``xln-node inspect``."""
    return int(inspect(data)["height"])


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


def keyed_wallet(data: Path, password: str, label: str) -> Wallet:
    """A wallet as onboarding leaves it with a new key and no entity (the onboarding
    test drives those pages): its key in the system keyring, under ``password``."""
    from wallet.keys import mnemonic
    from wallet.keys.vault import Vault

    phrase = mnemonic.generate()
    Vault(data, choose_backend(data, prefer="system")).add_mnemonic(phrase, password, label)
    return Wallet(data, password, phrase)


def free_ports(n: int) -> list[int]:
    """``n`` ports of 127.0.0.1 free now (held together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def node_settings(data: Path) -> tuple[object, object]:
    """(listen port, peers) as the wallet saved them (``settings.json``)."""
    path = data / "settings.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    return saved.get("listen_port"), saved.get("peers")


def set_up_node(
    app: App, main: str, port: int, *, paste_peer: bool = False, accountant: bool = False
) -> None:
    """Settings (Ctrl+7): the embedded node's listen port, Copy address (this node's,
    for the co-signer), the co-signer's address pasted into Peers if it was copied
    before, the accountant ticked if asked, Save (Alt+S)."""
    app.window(MAIN)
    app.key("ctrl+7")
    app.key("alt+o")  # Listen port
    app.key("ctrl+a")
    app.type(str(port))
    if paste_peer:
        app.key("alt+p")  # Peers
        app.key("ctrl+v")
    app.click_text(main, "Copy address")
    if accountant:
        app.key("alt+a")  # "Let the accountant decide sign requests by its rules"
    app.key("alt+s")  # Save


def running_entities(data: Path) -> list[dict[str, Any]]:
    """The entities of the running embedded node, read through its protocol: one per
    signer and entity."""
    info = inspect(data)
    assert info["source"] == "running node", info["source"]
    return [e for s in info["signers"] for e in s["entities"]]


def approve_top(app: App, main: str) -> None:
    """In Approvals, the newest waiting request approved as a person does: a click on
    the list (the leftmost "Frame #N" is its row), Home, Ctrl+Enter."""
    app.click_text(main, "Frame", leftmost=True)
    app.key("Home")
    app.key("ctrl+Return")


def reject_top(app: App, main: str) -> None:
    """In Approvals, the newest waiting request rejected as a person does: a click on
    the list, Home, Delete."""
    app.click_text(main, "Frame", leftmost=True)
    app.key("Home")
    app.key("Delete")


def top_shows(app: App, main: str, text: str) -> bool:
    """Whether Approvals' newest request (selected with a click and Home) shows ``text``."""
    app.click_text(main, "Frame", leftmost=True)
    app.key("Home")
    return app.shows(main, text)


def approvals_shown(app: App, main: str) -> tuple[int, bool]:
    """In Approvals: how many rows the list shows (each begins "Frame #N"), and whether
    the selected one's signers bar says "certified"."""
    words = app.read(main)
    found = sorted(w.left for w in words if w.text == "Frame")
    rows = len([x for x in found if x < found[0] + 30]) if found else 0
    return rows, any(w.text.strip(".,") == "certified" for w in words)


def test_two_of_two_approval_clicked_20_s_later(display: Display, shots: Shots, home: Path) -> None:
    """Two wallets, each with its embedded node, peered in Settings (a listen port
    each, the other's address copied into Peers with Copy address, both restarted);
    Alice creates a 2-of-2 with Bob's signer card (Copy signer card in Bob's window,
    pasted in Alice's Create entity); Alice increments the counter, which her
    accountant (ticked in the same Settings visit) approves; Bob's window asks, Bob
    reads it for 20 s (rounds change meanwhile: the entry stays), then approves
    with a click; the frame is certified: both nodes show the entity at counter 1
    through their protocol, and both windows show it. Then a refusal: Alice adds
    5,000, Bob rejects it, Alice's window shows his refusal with its reason and she
    withdraws her batch (Alt+W); Bob approves the withdrawal, which is certified at
    height 2 with the counter still 1."""
    alice = keyed_wallet(home / "alice", "alice's password, two of two", "Alice")
    bob = keyed_wallet(home / "bob", "bob's password, two of two", "Bob")
    port_a, port_b = free_ports(2)
    address_a, address_b = f"ws://127.0.0.1:{port_a}", f"ws://127.0.0.1:{port_b}"

    def shot(wid: str, step: str) -> None:
        display.x("xdotool", "windowraise", wid)
        shots.take(step)

    def both_unlocked(a: App, b: App, step: str) -> tuple[str, str]:
        a.window(UNLOCK)
        dialog = b.window(UNLOCK)
        display.x("xdotool", "windowmove", dialog, "760", "120")
        main_b = unlock(b, shots, bob.password, f"bob-{step}")
        display.x("xdotool", "windowmove", main_b, "100", "40")
        main_a = unlock(a, shots, alice.password, f"alice-{step}")
        return main_a, main_b

    # Peering: each node gets a fixed port, and each lists the other's address.
    with (
        running(start(display, shots, alice, "alice"), shots) as a,
        running(start(display, shots, bob, "bob"), shots) as b,
    ):
        main_a, main_b = both_unlocked(a, b, "first")
        set_up_node(a, main_a, port_a, accountant=True)  # her accountant signs routine frames
        until("Alice's port saved", lambda: node_settings(alice.data) == (port_a, []))
        assert json.loads((alice.data / "settings.json").read_text())["accountant_on"] is True
        shot(main_a, "alice-port")
        # Bob pastes Alice's address, copies his, and signs by hand.
        set_up_node(b, main_b, port_b, paste_peer=True)
        until("Bob's saved", lambda: node_settings(bob.data) == (port_b, [address_a]))
        shot(main_b, "bob-port-and-peer")
        a.window(MAIN)
        a.key("alt+p")
        a.key("ctrl+v")  # Bob's address
        a.key("alt+s")
        until("Alice's peer saved", lambda: node_settings(alice.data) == (port_a, [address_b]))
        shot(main_a, "alice-peer")
        for app in (a, b):
            quit_app(app)

    # Started again, the nodes are peered.
    with (
        running(start(display, shots, alice, "alice"), shots) as a,
        running(start(display, shots, bob, "bob"), shots) as b,
    ):
        main_a, main_b = both_unlocked(a, b, "peered")
        # Bob copies his signer card; Alice pastes it as the second member, threshold 2.
        b.window(MAIN)
        b.key("ctrl+3")  # Entities
        b.click_text(main_b, "Copy signer card")
        shot(main_b, "bob-card")
        a.window(MAIN)
        a.key("ctrl+3")
        a.click_text(main_a, "Create entity")
        dialog = a.window(CREATE_ENTITY)
        a.click_text(dialog, "Add member")  # the cursor goes to the new member's card
        a.key("ctrl+v")
        a.key("Tab", "Tab", "Tab", "Tab")  # past its shares (1), Remove, Add member
        a.type("2")  # the threshold
        shots.take("alice-create")
        a.key("Return")
        a.gone(dialog)
        until("Alice's 2-of-2 in her header", lambda: a.shows(main_a, "threshold 2/2"))
        until("the 2-of-2 in Bob's header", lambda: b.shows(main_b, "threshold 2/2"))
        shot(main_b, "both-2-of-2")

        # Alice increments the counter (her accountant approves it: a counter is routine).
        a.window(MAIN)
        a.click_text(main_a, "Increment")
        dialog = a.window(INCREMENT)
        a.key("Return")  # by 1
        a.gone(dialog)

        # Bob is asked; he reads the frame for 20 s, then approves with a click.
        until("Bob asked (his title counts it)", lambda: b.windows(f"{MAIN} (1)"))
        asked = time.monotonic()
        b.window(f"{MAIN} (1)")
        b.key("ctrl+1")
        page(b, main_b, "counter +1")  # the frame's effect
        shot(main_b, "bob-asked")
        pause(max(0.0, asked + BOB_READS_S / 2 - time.monotonic()))  # a person reading the frame
        assert b.shows(main_b, "counter +1"), "the request stays while Bob reads"
        shot(main_b, "bob-reading")
        pause(max(0.0, asked + BOB_READS_S - time.monotonic()))
        assert b.windows(f"{MAIN} (1)"), "after 20 s, one request waits for Bob"
        shot(main_b, "bob-still-asked")
        approve_top(b, main_b)

        # Certified: both nodes hold the entity at counter 1; both windows show it.
        until("counter 1 in Bob's header", lambda: b.shows(main_b, "counter 1"), CERTIFIED_S)
        assert b.windows(MAIN), "no request is left waiting for Bob"
        assert approvals_shown(b, main_b) == (1, True), "one row, its bar says certified"
        shot(main_b, "certified-bob")
        until("counter 1 in Alice's header", lambda: a.shows(main_a, "counter 1"), CERTIFIED_S)
        assert a.windows(MAIN), "nor for Alice"
        a.window(MAIN)
        a.key("ctrl+1")  # her accountant's decision, in her Approvals
        # One entry for the frame, whatever its rounds; its bar: both shares, certified.
        assert approvals_shown(a, main_a) == (1, True)
        shots.take("certified-alice")
        for wallet in (alice, bob):

            def at_counter_1(w: Wallet = wallet) -> list[dict[str, Any]]:
                return [e for e in running_entities(w.data) if e["counter"] == 1]

            (entity,) = until(f"{wallet.data.name}'s node at counter 1", at_counter_1)
            assert (entity["height"], entity["threshold"], len(entity["members"])) == (1, 2, 2)

        # A refusal, seen, and a withdrawal: Alice increments by 5,000 (her accountant
        # approves it); Bob reads it and rejects it; his signed refusal reaches Alice's
        # window with its reason, and it offers to withdraw her batch; she does
        # (Alt+W); the next frame holds the withdrawal alone, Bob approves it, and it is
        # certified: height 2, the counter still 1.
        a.window(MAIN)
        a.key("ctrl+3")  # Entities, where Increment is
        a.click_text(main_a, "Increment")
        dialog = a.window(INCREMENT)
        a.type("5000")  # the field has the focus, its 1 selected
        a.key("Return")
        a.gone(dialog)
        until("Bob asked for +5000", lambda: b.windows(f"{MAIN} (1)"))
        b.window(f"{MAIN} (1)")
        b.key("ctrl+1")
        until("the +5000 frame on top of Bob's list", lambda: top_shows(b, main_b, "+5000"))
        shot(main_b, "bob-asked-5000")
        reject_top(b, main_b)
        a.window(MAIN)
        a.key("ctrl+1")
        until("Bob's refusal in Alice's window", lambda: top_shows(a, main_a, "Refused by"))
        assert a.shows(main_a, "rejected by hand"), "with its reason"
        shot(main_a, "alice-sees-refusal")
        a.key("alt+w")  # Withdraw my batch
        page(a, main_a, "Withdrawn")
        shot(main_a, "alice-withdrew")
        # Bob's window (its title counts what waits: the +5000, asked again, and then
        # the withdrawal), brought to the front as a person clicks on it.
        display.x("xdotool", "windowactivate", "--sync", main_b, check=False)
        until(
            "the withdrawal asked of Bob",
            lambda: top_shows(b, main_b, "withdraw the batch"),
            CERTIFIED_S,
        )
        shot(main_b, "bob-asked-withdrawal")
        b.key("ctrl+Return")
        until("height 2 in Bob's header", lambda: b.shows(main_b, "height 2"), CERTIFIED_S)
        shot(main_b, "withdrawal-certified")
        for wallet in (alice, bob):

            def at_height_2(w: Wallet = wallet) -> list[dict[str, Any]]:
                return [e for e in running_entities(w.data) if e["height"] == 2]

            (entity,) = until(f"{wallet.data.name}'s node at height 2", at_height_2)
            assert entity["counter"] == 1, "the +5000 was withdrawn, never applied"
        for app in (a, b):
            quit_app(app)


# Later: not driven through the X server yet. A refusal by a headless accountant
# co-signer (an `xln-wallet agent` process, not a window): the refusal with the rule
# that refused is shown headless (tests/wallet/test_headless.py); the person's
# refusal, the withdrawal and the next frame are driven above.
LATER = (
    # A refusal by an accountant co-signer is seen by the proposer with its reason.
    "test_refusal_by_a_headless_accountant_seen_in_the_window",
)
