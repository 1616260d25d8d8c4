"""Screenshots of the wallet for docs/screenshots/, from a real wallet in a temp folder.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py [OUT_DIR]

It sets up an embedded node (in simulation: the faucet works), a key in the
encrypted-file backend, a second signer (bob, a plain ``node.agent.Agent``
served by the same embedded node over the agent protocol), a two-member entity
(1 share each, threshold 2), a few increments, an open proposal, two entities
of the user's with a channel between them and a few payments, and a frame of
bob's waiting for the user's approval; then saves each main view, the
onboarding and the unlock dialog, in the light and the dark theme (PNG,
1100x700).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.agent import Agent
from node.crypto import bls
from node.machines import entity as ent
from node.machines.accounts import OpenChannel
from node.machines.entity import EntityState
from node.machines.governance import SetShares, signer_id
from node.machines.replica import SubmitBatch
from node.machines.server import CreateSigner
from node.net.agent_client import serve_agent
from node.net.client import NodeClient
from node.txs import Tx
from wallet.flows.accountant import Rules
from wallet.flows.compose import ChannelCard
from wallet.flows.onboarding import Onboarding
from wallet.keys import Vault, choose_backend, mnemonic
from wallet.keys.vault import KeyInfo
from wallet.model import NewMember, WalletModel
from wallet.qt import QApplication, QEventLoop, QSize, QWidget
from wallet.service import WalletService
from wallet.settings import Settings
from wallet.views import theme
from wallet.views.logs import LogsView
from wallet.views.main_window import MainWindow
from wallet.views.onboarding import OnboardingWindow, signer_card
from wallet.views.settings import SettingsView
from wallet.views.unlock import UnlockDialog

ROOT = Path(__file__).resolve().parents[1]
SIZE = QSize(1100, 700)
PASSWORD = "screenshots only"  # noqa: S105 (a throwaway wallet in a temp folder)
WAIT_S = 60.0


class Waiter:
    def __init__(self) -> None:
        self.woken = asyncio.Event()

    def wake(self, *_: object) -> None:
        self.woken.set()

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not check():
                self.woken.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self.woken.wait()


async def settle(turns: int = 6) -> None:
    """Let the loop (and so Qt) turn a few times: layouts, polish, first paints."""
    for _ in range(turns):
        await asyncio.sleep(0.05)


def save(widget: QWidget, path: Path) -> None:
    widget.grab().save(str(path), "PNG", 80)
    print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


async def main(out: Path) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.INFO)  # the Logs view shows INFO lines
    with tempfile.TemporaryDirectory(prefix="xln-shots-") as tmp:
        data = Path(tmp) / "wallet"
        data.mkdir(mode=0o700)
        backend = choose_backend(data, prefer="file", service=f"xln-shots-{secrets.token_hex(4)}")
        vault = Vault(data, backend, fast_kdf=True)
        key = vault.add_mnemonic(mnemonic.generate(), PASSWORD, "alice (this laptop)")
        model = WalletModel()
        settings = Settings(tick_ms=100, accountant_on=True)
        service = WalletService(data, model, vault, settings, ttl_s=3600.0, simulation=True)
        waiter = Waiter()
        for signal in (model.entities_changed, model.connection_changed, model.metrics_changed):
            signal.connect(waiter.wake)
        service.queue.added.append(waiter.wake)
        service.queue.changed.append(waiter.wake)
        await service.start()
        await service.unlock(PASSWORD)
        assert service.embedded is not None
        # The node runs in a child process: new_token returns once the node takes it.
        token = await service.embedded.new_token("screenshots")
        client = await NodeClient.connect(service.embedded.url, token=token)
        bob_sk = bls.keygen(secrets.token_bytes(32))
        bob_pk = bls.sk_to_pk(bob_sk)
        bob = signer_id(bob_pk)
        await client.submit([CreateSigner(bob_pk, bls.pop_prove(bob_sk))])
        bob_agent = Agent(bob_sk, Path(tmp) / "bob-guard")
        stop = asyncio.Event()
        up: list[bool] = []

        bob_task = asyncio.ensure_future(
            serve_agent(service.embedded.url, token, bob_agent, stop, on_link=up.append)
        )
        agent = service.agents[key.signer_id]
        agent.on_link.append(waiter.wake)
        await waiter.until(lambda: agent.connected and bool(up) and up[-1])
        entity = await service.create_entity(
            key.signer_id,
            [NewMember(key.pubkey, key.pop, 1), NewMember(bob_pk, bls.pop_prove(bob_sk), 1)],
            threshold=2,
            proposer_index=0,
        )

        def counter() -> int:
            entry = model.entities.get((key.signer_id, entity))
            return -1 if entry is None else entry.state.counter

        await waiter.until(lambda: counter() == 0)
        for n in (3, 5, 2):  # routine: the accountant approves them
            await service.increment(key.signer_id, entity, n)
            target = counter() + n
            await waiter.until(lambda t=target: counter() >= t)  # type: ignore[misc]
        await channels(service, model, waiter, key)
        # a proposal: opening one is routine for the default rules; bob has not voted
        height = model.entities[(key.signer_id, entity)].state.height
        await service.propose(key.signer_id, entity, SetShares(key.signer_id, 2), height + 4000)
        await waiter.until(lambda: bool(model.entities[(key.signer_id, entity)].state.proposals))
        # a frame of bob's that waits for this user
        service.set_accountant(False)
        header = await service.session.read_header(bob, entity)
        assert header is not None
        batch = ent.sign_batch(
            entity, bob_sk, bob, header.small.nonce_of(bob) + 1, [Tx.of(ent.Increment(7))]
        )
        await client.submit([SubmitBatch(batch)], [bob, entity])
        await waiter.until(lambda: bool(service.queue.pending()))
        now = time.monotonic()
        for i in range(240):  # a chart with a minute of history
            model.tick_lateness_ms.append((now - 60 + i / 4, 2.0 + (i * 7 % 11) / 2))
        model.metrics_changed.emit()

        phrase = mnemonic.generate()
        windows: list[MainWindow] = []
        for name in ("light", "dark"):
            theme.apply(app, name)
            window = MainWindow(
                model,
                service,
                service.queue,
                logs_view=LogsView(model),
                settings_view=SettingsView(
                    settings,
                    lambda s, t: None,
                    backend_name=backend.name,
                    backend_system=backend.system,
                    backend_warning=backend.warning,
                ),
            )
            window.set_own_keys(vault.keys())
            # The header shows the 2-of-2 whose frame waits (the switcher's first entity
            # is whichever id sorts first).
            shown = [window.switcher.itemData(i) for i in range(window.switcher.count())]
            window.switcher.setCurrentIndex(shown.index((key.signer_id, entity)))
            for view in window.pages.values():  # the views do not follow the switcher
                set_entity = getattr(view, "set_entity", None)
                if callable(set_entity):
                    set_entity(key.signer_id, entity)
            window.resize(SIZE)
            window.show()
            window.sidebar.setFocus()
            await settle()
            for page in (
                "approvals",
                "proposals",
                "entities",
                "channels",
                "history",
                "logs",
                "settings",
            ):
                window.show_page(page)
                await settle()
                save(window, out / f"{page}-{name}.png")
            window.hide()  # kept: its views listen to the model until the end
            windows.append(window)

            def same_phrase(p: str = phrase) -> str:
                return p

            flow = Onboarding(same_phrase, mnemonic.is_valid, secrets.SystemRandom())
            flow.create_key("alice (this laptop)")

            async def no_execute(_plan: object) -> None:
                return None

            onboarding = OnboardingWindow(flow, no_execute, card_of=signer_card)
            onboarding.resize(SIZE)
            onboarding.show()
            await settle()
            save(onboarding, out / f"onboarding-{name}.png")
            flow.backup_done()
            flow.check_words([flow.words[p] for p in flow.check_positions])
            flow.set_password(PASSWORD, PASSWORD)
            flow.use_embedded_node()
            onboarding._show_step()
            if onboarding._card_task is not None:
                await onboarding._card_task
            await settle()
            save(onboarding, out / f"onboarding-entity-{name}.png")
            onboarding.hide()

            async def wrong(_password: str) -> None:
                raise ValueError("Wrong password. The wallet stays locked.")

            dialog = UnlockDialog(wrong)
            dialog.show()
            dialog.password.setText("guess")
            dialog.submit()
            await dialog.settled()
            await settle()
            save(dialog, out / f"unlock-{name}.png")
            dialog.hide()

        stop.set()
        await bob_task
        bob_agent.close()
        await client.close()
        await service.stop()


async def channels(
    service: WalletService, model: WalletModel, waiter: Waiter, key: KeyInfo
) -> None:
    """Two entities of the user's, funded by the faucet, a channel between them opened
    from both sides, and a few payments each way (the rules approve them here)."""
    me = [NewMember(key.pubkey, key.pop, 1)]
    treasury = await service.create_entity(key.signer_id, me, 1, 0)
    shop = await service.create_entity(key.signer_id, me, 1, 0)

    def state(entity: bytes) -> EntityState | None:
        entry = model.entities.get((key.signer_id, entity))
        return None if entry is None else entry.state

    await waiter.until(lambda: state(treasury) is not None and state(shop) is not None)
    service.policy.rules = Rules.parse(SHOT_RULES)
    await service.faucet(treasury, 1, 5_000)
    await service.faucet(shop, 1, 1_000)
    await waiter.until(
        lambda: all((s := state(e)) is not None and s.reserve(1) > 0 for e in (treasury, shop))
    )
    for mine, peer, collateral in ((treasury, shop, 2_000), (shop, treasury, 300)):
        card = ChannelCard.decode(await service.channel_card(peer))
        here = state(mine)
        assert here is not None
        action = OpenChannel(peer, card.config, card.config_height, 1, collateral)
        await service.propose(key.signer_id, mine, action, here.height + 50)

    def ready(mine: bytes, peer: bytes) -> bool:
        s = state(mine)
        record = None if s is None else s.channel(peer)
        return (
            record is not None and record.side.status == "ready" and record.side.agreed.height > 0
        )

    await waiter.until(lambda: ready(treasury, shop) and ready(shop, treasury))
    for payer, payee, amount in ((treasury, shop, 120), (shop, treasury, 35), (treasury, shop, 60)):
        await service.pay(key.signer_id, payer, (payee,), 1, amount)
    await waiter.until(lambda: ready(treasury, shop) and ready(shop, treasury))
    service.policy.rules = None  # back to the defaults


SHOT_RULES = """\
[[rule]]
name = "screenshots"
approve = ["counter", "proposal", "vote", "expired", "voided", "open_channel", "payment",
           "paid", "received", "minted", "channel_note"]
"""


def run() -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    loop = QEventLoop(app)
    asyncio.set_event_loop(loop)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with loop:
        loop.run_until_complete(main(out))
    return 0


if __name__ == "__main__":
    sys.exit(run())
