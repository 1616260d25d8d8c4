"""One real wallet in its own process, driven through its window by JSON lines.

``python -m tests.wallet.wallet_process --data D --node URL --token-file T --keyring
system|file --service NAME --password-file F`` prepares the vault in ``D`` if it
holds no key (one signer key from a fresh mnemonic, fast KDF), saves remote-mode
settings with the accountant OFF (a human approves every frame), runs the real
:class:`~wallet.app.WalletApp`, unlocks it through the unlock dialog, waits until
the window shows the node connected and the agents are up, and writes one line
``{"ok": true, "ready": true, "backend": ..., "signer": ...}``.

Then it serves commands: one JSON object per line on stdin, one JSON reply per
line on stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``). A
reader thread posts each line to the loop; every command runs on the Qt thread,
acts through the window's widgets (fields, buttons) and reads back what the
window shows. Every wait is on a condition with a deadline (``timeout`` in the
command, else :data:`WAIT_S`). Commands:

- ``card``: this wallet's signer card, as the Create-entity dialog offers it;
- ``create_entity {members, shares, threshold, proposer}``: through that dialog;
- ``wait_entity {entity}``: until the Entities view lists the entity;
- ``increment {entity, n}``: the entity card's Increment dialog;
- ``propose_threshold {value}``: the Proposals view's New-proposal dialog;
- ``pending``: the requests the Approvals view lists as waiting, with effects;
- ``wait_pending {contains?, frame?, min_round?}``: until such a request waits;
- ``approve {frame}`` / ``reject {frame}`` (a frame hash): select it in the Approvals view, click;
- ``withdraw {frame}``: once the Approvals view offers to withdraw this signer's batch
  from that frame (a co-signer refused it), click Withdraw;
- ``vote {proposal}``: the Proposals view's Vote button;
- ``show`` / ``wait_show {key, contains}``: header, entity cards, proposals, approvals;
- ``quit``: closes the window; the process exits with the app's code.

Anything else written to stdout goes to stderr, so stdout carries replies only.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from wallet.app import WalletApp
    from wallet.qt import QApplication
    from wallet.views.approvals import ApprovalsView
    from wallet.views.entities import EntitiesView
    from wallet.views.main_window import MainWindow
    from wallet.views.proposals import ProposalsView
    from wallet.views.widgets import TaskRunner

log = logging.getLogger("wallet_process")

WAIT_S = 60.0
_TAGS = re.compile(r"<[^>]+>")
_ROUND = re.compile(r"round (\d+)")

type Json = dict[str, Any]


class CommandError(Exception):
    """A command that cannot be done; the reply says why."""


def _shown_hash(text: str) -> str:
    """The hash as the Approvals view shows it (``0x`` and groups of eight), as 0x-hex."""
    return text.replace(" ", "")


def plain(rich: str) -> str:
    """Rich text as a user reads it."""
    return html.unescape(_TAGS.sub("", rich)).replace("\xa0", " ").strip()


def prepare(data: Path, keyring: str, service: str, password: str, url: str) -> None:
    """A vault with one signer key (if the folder has none) and remote-mode settings."""
    from wallet import settings as settings_io
    from wallet.keys import Vault, choose_backend
    from wallet.keys import mnemonic as mn
    from wallet.settings import Settings

    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    vault = Vault(data, choose_backend(data, keyring, service=service), fast_kdf=True)
    if not vault.keys():
        vault.add_mnemonic(mn.generate(), password, data.name)
    settings_io.save(
        data,
        Settings(node_mode="remote", node_url=url, accountant_on=False, lock_timeout_min=0),
    )


class Driver:
    def __init__(self, wallet: WalletApp, password: str, out: TextIO) -> None:
        self.wallet = wallet
        self.password = password
        self.out = out
        self.changed = asyncio.Event()
        self.commands: asyncio.Queue[str | None] = asyncio.Queue()
        self._hooked_agents: set[bytes] = set()
        self.quitting = False
        self.waiting_for = ""  # what the command under way waits for (for its error)

    # plumbing ----------------------------------------------------------------------

    def reply(self, message: Json) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def poke(self, *_args: object) -> None:
        self.changed.set()

    def start_reader(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self.commands

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=read, name="stdin", daemon=True).start()

    async def until[T](self, what: str, check: Callable[[], T | None]) -> T:
        """``check()`` once it is truthy; woken by the model, the approvals and the
        agents. The deadline is the command's (``serve``) or the start's."""
        self.waiting_for = what
        checks = 0
        while True:
            self.changed.clear()
            value = check()
            checks += 1
            if value:
                self.waiting_for = ""
                log.info("seen %s (check %d)", what, checks)
                return value
            if checks == 1:
                log.info("waiting for %s", what)
            await self.changed.wait()

    @property
    def window(self) -> MainWindow:
        window = self.wallet.window
        if window is None:
            raise CommandError("no main window")
        return window

    def page[V](self, key: str, kind: type[V]) -> V:
        self.window.show_page(key)
        view = self.window.pages[key]
        if not isinstance(view, kind):
            raise CommandError(f"the {key} page is not there")
        return view

    def entities_view(self) -> EntitiesView:
        from wallet.views.entities import EntitiesView

        return self.page("entities", EntitiesView)

    def proposals_view(self) -> ProposalsView:
        from wallet.views.proposals import ProposalsView

        return self.page("proposals", ProposalsView)

    def approvals_view(self) -> ApprovalsView:
        from wallet.views.approvals import ApprovalsView

        return self.page("approvals", ApprovalsView)

    # start -------------------------------------------------------------------------

    async def open(self) -> Json:
        """Unlock through the dialog; wait until the window shows a live connection."""
        wallet = self.wallet
        await wallet.wait_stage("unlock", WAIT_S)
        dialog = wallet.unlock_dialog
        if dialog is None:
            raise CommandError("no unlock dialog")
        dialog.password.setText(self.password)
        dialog.unlock_button.click()
        await wallet.wait_stage("main", WAIT_S)
        model = wallet.model
        for signal in (model.connection_changed, model.entities_changed, model.lock_changed):
            signal.connect(self.poke)
        async with asyncio.timeout(WAIT_S):
            await wallet.service_started.wait()
        service = wallet.service
        assert service is not None
        service.queue.added.append(self.poke)
        service.queue.changed.append(self.poke)
        status = self.window.status

        def ready() -> bool:
            for sid, agent in service.agents.items():
                if sid not in self._hooked_agents:
                    agent.on_link.append(self.poke)
                    self._hooked_agents.add(sid)
            return (
                status.connection.text().startswith("connected")
                and status.locked.text() == "Unlocked"
                and status.accountant.text() == "accountant OFF"
                and bool(service.agents)
                and all(a.connected for a in service.agents.values())
            )

        async with asyncio.timeout(WAIT_S):
            await self.until("the node connection and the agents", ready)
        assert wallet.backend is not None
        keys = service.vault.keys()
        return {
            "ready": True,
            "backend": wallet.backend.name,
            "system": wallet.backend.system,
            "signer": "0x" + keys[0].signer_id.hex(),
            "connection": status.connection.text(),
        }

    # commands ----------------------------------------------------------------------

    async def serve(self) -> None:
        while not self.quitting:
            line = await self.commands.get()
            if line is None:  # the test went away: close as a user would
                self.quitting = True
                self.window.close()
                return
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                name = command.pop("cmd")
                handler = getattr(self, f"cmd_{name}", None)
                if handler is None:
                    raise CommandError(f"unknown command {name!r}")
                limit = float(command.pop("timeout", WAIT_S))
                self.waiting_for = ""
                try:
                    async with asyncio.timeout(limit):
                        result = await handler(**command)
                except TimeoutError:
                    what = self.waiting_for or "the action to finish"
                    raise CommandError(
                        f"timed out after {limit:.0f} s waiting for {what}"
                    ) from None
                self.reply({"ok": True, **(result or {})})
            except (CommandError, ValueError, TypeError, KeyError) as exc:
                self.reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            except Exception as exc:  # reported, and the driver keeps serving
                log.exception("command failed")
                self.reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    async def cmd_card(self) -> Json:
        view = self.entities_view()
        view.create_button.click()
        dialog = view.dialog
        from wallet.views.compose import CreateEntityDialog

        if not isinstance(dialog, CreateEntityDialog):
            raise CommandError("Create entity opened no dialog")
        card = dialog.rows[0].card.text()
        dialog.buttons.button(dialog.buttons.StandardButton.Cancel).click()
        if not card:
            raise CommandError("the Create-entity dialog offers no signer card")
        return {"card": card}

    async def cmd_create_entity(
        self,
        members: list[str],
        shares: list[int],
        threshold: int,
        proposer: int = 0,
    ) -> Json:
        from wallet.views.compose import CreateEntityDialog

        view = self.entities_view()
        view.create_button.click()
        dialog = view.dialog
        if not isinstance(dialog, CreateEntityDialog):
            raise CommandError("Create entity opened no dialog")
        for i, (card, n) in enumerate(zip(members, shares, strict=True)):
            if i >= len(dialog.rows):
                dialog.add_button.click()
            row = dialog.rows[i]
            row.card.setText(card)
            row.shares.setText(str(n))
        dialog.threshold.setText(str(threshold))
        dialog.proposer.setCurrentIndex(proposer)
        dialog.ok_button.click()
        await self._settle(dialog.runner, dialog.windowTitle())
        if dialog.status.error or dialog.created is None:
            errors = [label.text() for label in dialog.errors.values() if label.text()]
            errors += [r.error.text() for r in dialog.rows if r.error.text()]
            dialog.reject()
            raise CommandError(f"not created: {dialog.status.text} {errors}")
        shown = view.status.text
        match = re.search(r"0x[0-9a-f]{64}", shown)
        if match is None:
            raise CommandError(f"the Entities view does not show the new entity: {shown!r}")
        return {"entity": match.group(0), "status": shown}

    async def _settle(self, runner: TaskRunner, what: str) -> None:
        self.waiting_for = what
        await runner.wait_idle()
        self.waiting_for = ""

    def _card(self, entity: str) -> Any:
        for card in self.entities_view().cards:
            if card.entity_id.label.toolTip() == entity:
                return card
        return None

    async def cmd_wait_entity(self, entity: str) -> Json:
        card = await self.until(
            f"entity {entity[:12]} in the Entities view", lambda: self._card(entity)
        )
        return {"summary": card.summary.text(), "numbers": card.numbers.text()}

    async def cmd_increment(self, entity: str, n: int = 1) -> Json:
        card = self._card(entity)
        if card is None:
            raise CommandError("no such entity card")
        card.increment_button.click()
        dialog = self.entities_view().dialog
        from wallet.views.compose import IncrementDialog

        if not isinstance(dialog, IncrementDialog):
            raise CommandError("Increment opened no dialog")
        dialog.n.setText(str(n))
        dialog.ok_button.click()
        await self._settle(dialog.runner, dialog.windowTitle())
        if dialog.status.error:
            dialog.reject()
            raise CommandError(f"not submitted: {dialog.status.text}")
        return {}

    async def cmd_propose_threshold(self, value: int) -> Json:
        from wallet.views.compose import NewProposalDialog, SetThresholdEditor

        view = self.proposals_view()
        view.new_button.click()
        dialog = getattr(view, "editor", None)
        if not isinstance(dialog, NewProposalDialog):
            raise CommandError("New proposal opened no dialog")
        dialog.kind.setCurrentIndex(dialog.kind.findData(SetThresholdEditor.KIND))
        editor = dialog.editor
        assert isinstance(editor, SetThresholdEditor)
        editor.threshold.setText(str(value))
        expires = dialog.expires.text()  # the default expiry, left as it is
        dialog.ok_button.click()
        await self._settle(dialog.runner, dialog.windowTitle())
        if dialog.status.error or dialog.result() != dialog.DialogCode.Accepted:
            shown = [label.text() for label in editor.errors.values() if label.text()]
            dialog.reject()
            raise CommandError(f"not proposed: {dialog.status.text} {shown}")
        return {"expires_at": int(expires)}

    def _pending(self) -> list[Json]:
        """What the Approvals view shows for each waiting request (selecting each)."""
        from wallet.views.approvals import ID_ROLE

        view = self.approvals_view()
        shown: list[Json] = []
        for i in range(view.list.count()):
            item = view.list.item(i)
            view.select(int(item.data(ID_ROLE)))
            if view.title.text() != "Approval needed":
                continue
            rich = view.effects.text()
            found = _ROUND.search(view.subtitle.text())
            shown.append(
                {
                    "row": item.text(),
                    "hash": _shown_hash(view.hash.label.text()),
                    "round": int(found.group(1)) if found else -1,
                    "subtitle": view.subtitle.text(),
                    "effects": [plain(line) for line in rich.split("<br>")],
                    "effects_html": rich.split("<br>"),
                    "signers": view.bar_text.text(),
                }
            )
        return shown

    async def cmd_pending(self) -> Json:
        return {"pending": self._pending()}

    async def cmd_wait_pending(
        self,
        contains: str = "",
        frame: str = "",
        min_round: int = 0,
    ) -> Json:
        def match() -> Json | None:
            for p in self._pending():
                if frame and p["hash"] != frame:
                    continue
                if p["round"] < min_round:
                    continue
                if contains and not any(contains in e for e in p["effects"]):
                    continue
                return p
            return None

        what = f"a pending approval ({contains or frame or 'any'}, round >= {min_round})"
        return await self.until(what, match)

    async def _decide(self, frame: str, approve: bool) -> Json:
        from wallet.views.approvals import ID_ROLE

        view = self.approvals_view()
        for i in range(view.list.count()):
            view.select(int(view.list.item(i).data(ID_ROLE)))
            shown = _shown_hash(view.hash.label.text())
            if view.title.text() == "Approval needed" and shown == frame:
                button = view.approve_button if approve else view.reject_button
                if not button.isVisibleTo(view) or not button.isEnabled():
                    raise CommandError("the button is not offered")
                button.click()
                if view.status.error:
                    raise CommandError(view.status.text)
                return {"status": view.status.text}
        raise CommandError(f"no pending approval for frame {frame[:14]}")

    async def cmd_withdraw(self, frame: str) -> Json:
        from wallet.views.approvals import ID_ROLE

        view = self.approvals_view()

        def offered() -> bool | None:
            for i in range(view.list.count()):
                view.select(int(view.list.item(i).data(ID_ROLE)))
                if _shown_hash(view.hash.label.text()) == frame:
                    return view.withdraw_button.isVisibleTo(view) or None
            return None

        await self.until(f"Withdraw offered for frame {frame[:14]}", offered)
        view.withdraw_button.click()
        await self._settle(view.runner, "the withdrawal")
        if view.status.error:
            raise CommandError(view.status.text)
        return {"status": view.status.text, "refused": view.refused.text()}

    async def cmd_approve(self, frame: str) -> Json:
        return await self._decide(frame, True)

    async def cmd_reject(self, frame: str) -> Json:
        return await self._decide(frame, False)

    async def cmd_vote(self, proposal: int) -> Json:
        view = self.proposals_view()
        row = await self.until(f"proposal #{proposal} shown", lambda: self._row(view, proposal))
        if not row.vote_button.isEnabled():
            raise CommandError(f"the Vote button says {row.vote_button.text()!r}")
        row.vote_button.click()
        await self._settle(view.runner, "the vote")
        if view.status.error:
            raise CommandError(view.status.text)
        return {"status": view.status.text}

    @staticmethod
    def _row(view: ProposalsView, proposal: int) -> Any:
        try:
            return view.row(proposal)
        except KeyError:
            return None

    def _show(self) -> Json:
        from wallet.qt import QLabel

        window = self.window
        cards = [
            {
                "entity": c.entity_id.label.toolTip(),
                "summary": c.summary.text(),
                "numbers": c.numbers.text(),
                "members": c.members.text(),
            }
            for c in self.entities_view().cards
        ]
        proposals = [
            {
                "id": r.proposal.id,
                "labels": [plain(label.text()) for label in r.findChildren(QLabel)],
                "shares": r.shares.text(),
                "vote": r.vote_button.text(),
                "open": not r.vote_button.isHidden(),
            }
            for r in self.proposals_view().rows
        ]
        approvals = self.approvals_view()
        rows = [approvals.list.item(i).text() for i in range(approvals.list.count())]
        return {
            "title": window.title.text(),
            "subtitle": window.subtitle.text(),
            "cards": cards,
            "proposals": proposals,
            "approvals": rows,
            "window_title": window.windowTitle(),
        }

    async def cmd_show(self) -> Json:
        return self._show()

    async def cmd_wait_show(self, key: str, contains: str) -> Json:
        def seen() -> Json | None:
            shown = self._show()
            return shown if contains in json.dumps(shown[key], ensure_ascii=False) else None

        return await self.until(f"{contains!r} in the window's {key}", seen)

    async def cmd_quit(self) -> Json:
        self.quitting = True
        asyncio.get_running_loop().call_soon(self.window.close)
        return {"closing": True}


async def drive(app: QApplication, args: argparse.Namespace, password: str, out: TextIO) -> int:
    from wallet.app import WalletApp

    wallet = WalletApp(
        app,
        Path(args.data),
        node_url=args.node,
        token=args.token,
        theme_name="light",
        prefer_backend=args.keyring,
        backend_service=args.service,
        fast_kdf=True,
    )
    run = asyncio.ensure_future(wallet.run())
    driver = Driver(wallet, password, out)
    driver.start_reader()
    try:
        driver.reply({"ok": True, **await driver.open()})
        await driver.serve()
    except Exception as exc:
        log.exception("the driver failed")
        driver.reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        if wallet.window is not None:
            wallet.window.close()
        elif not run.done():
            run.cancel()
    try:
        async with asyncio.timeout(WAIT_S):
            code: int = await run
    except (TimeoutError, asyncio.CancelledError):
        log.error("the app did not end")
        return 3
    log.info("the app ended with %d", code)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wallet_process", description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--keyring", choices=("system", "file"), required=True)
    parser.add_argument("--service", default="xln-signer")
    parser.add_argument("--password-file", required=True)
    args = parser.parse_args(argv)
    args.token = Path(args.token_file).read_text("utf-8").strip()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out, sys.stdout = sys.stdout, sys.stderr  # stdout carries the replies only
    password = Path(args.password_file).read_text("utf-8").rstrip("\r\n")
    prepare(Path(args.data), args.keyring, args.service, password, args.node)

    from wallet.app import make_qapp
    from wallet.qt import QEventLoop

    app = make_qapp()
    loop = QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        code: int = loop.run_until_complete(drive(app, args, password, out))
    return code


if __name__ == "__main__":
    sys.exit(main())
