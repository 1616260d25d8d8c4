"""Wallet test fixtures.

Non-Qt fixtures first: a vault holding one signer key (``alice``) in the
encrypted-file backend, and ``duo``: a running :class:`WalletService` with
its embedded node, a second signer (``bob``, a plain ``node.agent.Agent``
served over the agent protocol) and one entity of both (threshold 2, alice
proposes first), so no frame is certified without the wallet's signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.agent import Agent
from node.crypto import bls, keystore
from node.machines import entity as ent
from node.machines.governance import signer_id
from node.machines.replica import SubmitBatch
from node.machines.server import CreateSigner
from node.net.agent_client import serve_agent
from node.net.client import NodeClient
from node.txs import Tx, TxBody
from wallet.keys.backends import choose_backend
from wallet.keys.vault import KeyInfo, Vault
from wallet.model import NewMember, WalletModel
from wallet.service import WalletService
from wallet.settings import Settings

PASSWORD = "wallet test password"  # noqa: S105 (a throwaway test wallet)
WAIT_S = 30.0


@dataclass
class Kit:
    data: Path
    vault: Vault
    key: KeyInfo


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    # The encrypted files live in this test's folder, under the wallet's own service
    # name, so a headless agent started on this folder finds the key.
    choice = choose_backend(data, prefer="file")
    vault = Vault(data, choice, fast_kdf=True)
    sk = bls.keygen(secrets.token_bytes(32))
    stored = keystore.encrypt(sk.to_bytes(32, "big"), "import", pubkey=bls.sk_to_pk(sk), fast=True)
    key = vault.add_keystore(stored, "import", PASSWORD, "alice")
    return Kit(data, vault, key)


class Waiter:
    """Wakes on model, queue and log changes and on the node's blocks; ``until``
    re-checks a condition at each wake-up, with a deadline (no sleeping)."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()

    def wake(self, *_: object) -> None:
        self.woken.set()

    async def until(self, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self.woken.clear()
                await self.woken.wait()

    async def until_async(
        self, check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S
    ) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                self.woken.clear()
                if await check():
                    return
                await self.woken.wait()


class _WakeHandler(logging.Handler):
    def __init__(self, waiter: Waiter, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.DEBUG)
        self.waiter = waiter
        self.loop = loop
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")
        self.loop.call_soon_threadsafe(self.waiter.wake)


@dataclass
class Duo:
    service: WalletService
    model: WalletModel
    kit: Kit
    alice: bytes
    bob_sk: int
    bob: bytes
    entity: bytes
    client: NodeClient  # server scope, on the embedded node
    waiter: Waiter
    logs: list[str] = field(default_factory=list)

    async def bob_submits(self, txs: list[TxBody]) -> None:
        """A batch of bob's, signed with his key, through the node."""
        header = await self.service.session.read_header(self.bob, self.entity)
        assert header is not None
        nonce = header.small.nonce_of(self.bob) + 1
        batch = ent.sign_batch(self.entity, self.bob_sk, self.bob, nonce, [Tx.of(t) for t in txs])
        receipts = await self.client.submit([SubmitBatch(batch)], [self.bob, self.entity])
        assert receipts.receipts[0].error is None, receipts.receipts[0].error

    def counter(self) -> int:
        entry = self.model.entities.get((self.alice, self.entity))
        return -1 if entry is None else entry.state.counter


@dataclass
class Running:
    """A started, unlocked :class:`WalletService` whose model, approval queue and log
    lines wake ``waiter``; ``logs`` holds the log lines."""

    service: WalletService
    model: WalletModel
    waiter: Waiter
    logs: list[str]


@contextlib.asynccontextmanager
async def running_service(kit: Kit, **options: Any) -> AsyncIterator[Running]:
    """The wallet on its embedded node (20 ms ticks, accountant on, 20 s approval
    time-out unless ``options`` say otherwise), stopped at the end."""
    model = WalletModel()
    options.setdefault("ttl_s", 20.0)
    settings = options.pop("settings", Settings(tick_ms=20, accountant_on=True))
    service = WalletService(kit.data, model, kit.vault, settings, **options)
    waiter = Waiter()
    for signal in (model.entities_changed, model.lock_changed, model.connection_changed):
        signal.connect(waiter.wake)
    model.history_added.connect(waiter.wake)
    service.queue.added.append(waiter.wake)
    service.queue.changed.append(waiter.wake)
    handler = _WakeHandler(waiter, asyncio.get_running_loop())
    logging.getLogger().addHandler(handler)
    previous_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
        await service.start()
        await service.unlock(PASSWORD)
        yield Running(service, model, waiter, handler.messages)
    finally:
        await service.stop()
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)


@dataclass
class Bob:
    """A second signer on the wallet's embedded node, his key in a plain
    :class:`Agent` served over the agent protocol; ``client`` has server scope."""

    sk: int
    pubkey: bytes
    id: bytes
    client: NodeClient


@contextlib.asynccontextmanager
async def bob_served(run: Running, guard: Path) -> AsyncIterator[Bob]:
    """Bob, until the end; returns once both his agent and the wallet's are connected."""
    service, waiter = run.service, run.waiter
    assert service.embedded is not None
    token = await service.embedded.new_token("test")
    client = await NodeClient.connect(service.embedded.url, token=token)
    sk = bls.keygen(secrets.token_bytes(32))
    pubkey = bls.sk_to_pk(sk)
    receipts = await client.submit([CreateSigner(pubkey, bls.pop_prove(sk))])
    assert receipts.receipts[0].error is None
    agent = Agent(sk, guard)
    stop = asyncio.Event()
    up: list[bool] = []

    def link(on: bool) -> None:
        up.append(on)
        waiter.wake()

    task = asyncio.create_task(serve_agent(service.embedded.url, token, agent, stop, on_link=link))
    try:
        wallet_agents = list(service.agents.values())
        for wallet_agent in wallet_agents:
            wallet_agent.on_link.append(waiter.wake)
        await waiter.until(lambda: all(a.connected for a in wallet_agents) and bool(up) and up[-1])
        yield Bob(sk, pubkey, signer_id(pubkey), client)
    finally:
        stop.set()
        await task
        agent.close()
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
async def duo(kit: Kit, tmp_path: Path) -> AsyncIterator[Duo]:
    async with (
        running_service(kit) as run,
        bob_served(run, tmp_path / "bob-guard") as bob,
    ):
        service, waiter, key = run.service, run.waiter, kit.key
        entity = await service.create_entity(
            key.signer_id,
            [NewMember(key.pubkey, key.pop, 1), NewMember(bob.pubkey, bls.pop_prove(bob.sk), 1)],
            threshold=2,
            proposer_index=0,
        )
        duo = Duo(
            service, run.model, kit, key.signer_id, bob.sk, bob.id, entity, bob.client, waiter
        )
        duo.logs = run.logs
        await waiter.until(lambda: duo.counter() == 0)

        async def bob_has_replica() -> bool:
            return await service.session.read_header(duo.bob, entity) is not None

        await waiter.until_async(bob_has_replica)  # woken by each block (the history)
        yield duo
