"""Two wallets pay each other through a hub entity, and restarts do not disturb it.

The hub is three real ``xln-node run --faucet-chain`` processes on loopback
(``node/cluster.py``) with a hub entity of three signers, one per server
(threshold 2, built-in agents). Alice's wallet and Bob's wallet are two
:class:`WalletService` stacks, each with its own data folder and vault
(encrypted-file keyring), connected over WebSocket to a different hub server as
remote nodes. Each creates its entity there, is funded by the faucet, and
opens a channel with the hub (the hub opens back by a proposal its signers
pass). Each wallet's accountant approves payments to the other's entity
(a known counterparty) within a limit, so every payment is signed without a
human. Then they pay each other through the hub, while a hub server is killed
with SIGKILL and restarted, and Alice's wallet is closed and opened again on
its folder. Every payment arrives once, both sides of each channel agree,
value is conserved, and the payments are in both wallets' history.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.cluster import Cluster
from node.crypto import bls, keystore
from node.machines.accounts import OpenChannel
from node.machines.entity import EntityState
from tests.wallet.conftest import PASSWORD, Waiter, _WakeHandler
from wallet.flows.accountant import Rules
from wallet.flows.compose import ChannelCard
from wallet.keys.backends import choose_backend
from wallet.keys.vault import KeyInfo, Vault
from wallet.model import NewMember, WalletModel
from wallet.service import WalletService
from wallet.settings import Settings

ASSET = 1
WAIT_S = 90.0
ROUTINE = (
    '[[rule]]\nname = "routine"\napprove = ["counter", "proposal", "vote", "expired", '
    '"voided", "open_channel", "set_credit", "add_collateral", "paid", "received", '
    '"forward", "forwarded", "refunded", "rejected", "minted", "channel_note"]\n'
)


def pay_rules(payee: bytes) -> Rules:
    return Rules.parse(
        ROUTINE + f'[counterparties]\nfriend = "0x{payee.hex()}"\n'
        '[[rule]]\nname = "pay my friend"\napprove = ["payment"]\npayees = "known"\n'
        "max_payment = 100\nmax_per_payee_per_day = 10000\n"
    )


@dataclass
class Wallet:
    name: str
    data: Path
    vault: Vault
    key: KeyInfo
    url: str
    token: str
    service: WalletService | None = None
    model: WalletModel | None = None
    entity: bytes = b""

    async def open(self, wake: Waiter, rules: Rules | None = None) -> None:
        self.model = WalletModel()
        self.service = WalletService(
            self.data,
            self.model,
            self.vault,
            Settings(tick_ms=20, accountant_on=True),
            node_url=self.url,
            token=self.token,
            rules=rules,
            ttl_s=20.0,
        )
        for signal in (self.model.entities_changed, self.model.connection_changed):
            signal.connect(wake.wake)
        self.model.history_added.connect(wake.wake)
        await self.service.start()
        await self.service.unlock(PASSWORD)
        agent = self.service.agents[self.key.signer_id]
        agent.on_link.append(wake.wake)
        await wake.until(lambda: agent.connected, timeout_s=WAIT_S)

    async def close(self) -> None:
        if self.service is not None:
            await self.service.stop()
        self.service = None

    def state(self) -> EntityState | None:
        assert self.model is not None
        entry = self.model.entities.get((self.key.signer_id, self.entity))
        return None if entry is None else entry.state

    def balance(self, peer: bytes) -> int | None:
        state = self.state()
        record = None if state is None else state.channel(peer)
        if record is None or record.side.status != "ready" or record.side.queue:
            return None
        return int(record.side.agreed.asset(ASSET).balance(record.side.me))

    def history(self, kind: str) -> int:
        """The total of this kind of payment in the wallet's history (a frame's payments
        of one kind and counterparty are one item with their total)."""
        assert self.model is not None
        return sum(
            h.amount or 0
            for h in self.model.history
            if h.kind == "payment" and h.payment == kind and h.entity_id == self.entity
        )


def new_wallet(root: Path, name: str, url: str, token: str) -> Wallet:
    data = root / name
    data.mkdir(mode=0o700)
    vault = Vault(data, choose_backend(data, prefer="file"), fast_kdf=True)
    sk = bls.keygen(secrets.token_bytes(32))
    stored = keystore.encrypt(sk.to_bytes(32, "big"), "import", pubkey=bls.sk_to_pk(sk), fast=True)
    return Wallet(
        name, data, vault, vault.add_keystore(stored, "import", PASSWORD, name), url, token
    )


def alice_side_hash(w: Wallet, hub: bytes) -> bytes:
    state = w.state()
    record = None if state is None else state.channel(hub)
    assert record is not None
    return record.side.agreed.hash


async def hub_settled(hub: Cluster, entity: bytes, peers: tuple[bytes, ...]) -> EntityState:
    """The hub's state once its three replicas agree and its channels wait for nothing."""
    async with asyncio.timeout(WAIT_S):
        while True:
            replicas = [await hub.replica(k, entity) for k in hub.keys]
            states = {r.entity.hash for r in replicas if r is not None}
            state = replicas[0].entity if replicas[0] is not None else None
            if len(states) == 1 and state is not None:
                records = [state.channel(p) for p in peers]
                if all(r is not None and r.side.status == "ready" for r in records):
                    return state
            await hub.next_commit(0.2)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        tmp_path / "hub",
        servers=3,
        signers=3,
        tick_ms=20,
        round_timeout_ms=1000,
        simulation=True,
        resend_ms=300,
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


async def test_two_wallets_pay_each_other_through_a_hub_across_restarts(
    hub: Cluster, tmp_path: Path
) -> None:
    wake = Waiter()
    handler = _WakeHandler(wake, asyncio.get_running_loop())
    logging.getLogger().addHandler(handler)
    keys = hub.keys
    H = await hub.create_entity(keys, [1, 1, 1], 2)
    await hub.faucet(keys[0], H, ASSET, 100_000)
    alice = new_wallet(tmp_path, "alice", hub.servers[0].url, hub.servers[0].token)
    bob = new_wallet(tmp_path, "bob", hub.servers[1].url, hub.servers[1].token)
    try:
        for w in (alice, bob):
            await w.open(wake, Rules.parse(ROUTINE))
            assert w.service is not None
            me = [NewMember(w.key.pubkey, w.key.pop, 1)]
            w.entity = await w.service.create_entity(w.key.signer_id, me, 1, 0)
            await wake.until(lambda w=w: w.state() is not None, timeout_s=WAIT_S)  # type: ignore[misc]
            await w.service.faucet(w.entity, ASSET, 1_000)
        await wake.until(
            lambda: all((s := w.state()) and s.reserve(ASSET) == 1_000 for w in (alice, bob)),
            timeout_s=WAIT_S,
        )
        # Each wallet opens a channel with the hub, with 500 of collateral; the hub opens
        # back with 2,000 of its own, so it can forward both ways.
        h_config, h_height = await hub.channel_card(keys[0], H)
        for w in (alice, bob):
            assert w.service is not None
            card = ChannelCard.decode(await w.service.channel_card(w.entity))
            action = OpenChannel(H, h_config, h_height, ASSET, 500)
            state = w.state()
            assert state is not None
            await w.service.propose(w.key.signer_id, w.entity, action, state.height + 50)
            back = OpenChannel(w.entity, card.config, card.config_height, ASSET, 2_000)
            await hub.pass_proposal(keys, H, back)
        await wake.until(
            lambda: alice.balance(H) == 500 and bob.balance(H) == 500, timeout_s=WAIT_S
        )
        assert alice.service is not None
        assert bob.service is not None
        alice.service.policy.rules = pay_rules(bob.entity)
        bob.service.policy.rules = pay_rules(alice.entity)

        a_to_b = [10, 20, 30, 40, 50, 60]
        b_to_a = [5, 15, 25, 35]

        async def pay(w: Wallet, to: Wallet, amount: int) -> None:
            assert w.service is not None
            await w.service.pay(w.key.signer_id, w.entity, (H, to.entity), ASSET, amount)

        for amount in a_to_b[:2]:
            await pay(alice, bob, amount)
        for amount in b_to_a[:2]:
            await pay(bob, alice, amount)
        await wake.until(lambda: bob.history("received") == sum(a_to_b[:2]), timeout_s=WAIT_S)

        # A hub signer's server dies mid-stream and comes back.
        await pay(alice, bob, a_to_b[2])
        await hub.kill_server(2)
        await pay(bob, alice, b_to_a[2])
        await hub.restart_server(2)
        await hub.watch(keys[2], H)

        # Alice's wallet is closed and opened again on its folder (keys from its vault).
        await wake.until(lambda: alice.history("received") == sum(b_to_a[:3]), timeout_s=WAIT_S)
        await alice.close()
        await alice.open(wake, pay_rules(bob.entity))
        await wake.until(lambda: alice.state() is not None, timeout_s=WAIT_S)
        for amount in a_to_b[3:]:
            await pay(alice, bob, amount)
        await pay(bob, alice, b_to_a[3])

        net = sum(a_to_b) - sum(b_to_a)
        await wake.until(
            lambda: alice.balance(H) == 500 - net and bob.balance(H) == 500 + net, timeout_s=WAIT_S
        )
        await wake.until(lambda: bob.history("received") == sum(a_to_b), timeout_s=WAIT_S)
        # Alice's wallet was opened again: its history holds what came after.
        await wake.until(lambda: alice.history("received") == b_to_a[3], timeout_s=WAIT_S)
        assert bob.history("paid") == sum(b_to_a)
        h_state = await hub_settled(hub, H, (alice.entity, bob.entity))
        # Value conserved: the hub's balances moved by exactly what passed through.
        ha, hb = h_state.channel(alice.entity), h_state.channel(bob.entity)
        assert ha is not None
        assert hb is not None
        assert ha.side.agreed.asset(ASSET).balance(ha.side.me) == 2_000 + net
        assert hb.side.agreed.asset(ASSET).balance(hb.side.me) == 2_000 - net
        assert ha.side.agreed.hash == alice_side_hash(alice, H)
        assert len(h_state.forwards) == 0
    finally:
        logging.getLogger().removeHandler(handler)
        await alice.close()
        await bob.close()
