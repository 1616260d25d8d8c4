"""Payments in frames the wallet did not sign still reach its history.

On the embedded node (simulation), entity E has two members: the wallet's
signer alice (1 share) and bob (2 shares, threshold 2, bob proposes), whose key
is a plain :class:`Agent` served over the agent protocol. Bob's pre-commit alone
certifies E's frames, and the wallet's accountant approves nothing on E (its
rule names only alice's own entity F), so the wallet signs none of them. F pays
E over a channel: the wallet learns of E's frame from its FRAME_EVENT, reads the
frame with GET_FRAMES (its token's scope reaches its replica of E), re-executes
it on the state before, and shows the payment in its history; and so when the
wallet's agent is gone altogether and E pays F.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.agent import Agent
from node.crypto import bls
from node.machines import entity as ent
from node.machines.accounts import OpenChannel, Pay
from node.machines.entity import EntityState
from node.machines.frames import Signatures
from node.machines.governance import signer_id
from node.machines.replica import SubmitBatch
from node.machines.server import CreateSigner
from node.net.agent_client import serve_signer
from node.net.client import NodeClient
from node.tokens import Scope, TokenStore
from node.txs import Tx, TxBody
from tests.wallet.conftest import PASSWORD, Kit, Waiter, _WakeHandler
from wallet.flows.accountant import Rules
from wallet.flows.compose import ChannelCard
from wallet.model import NewMember, WalletModel
from wallet.service import WalletService
from wallet.settings import Settings

ASSET = 1


@dataclass
class Setup:
    service: WalletService
    model: WalletModel
    alice: bytes
    bob_sk: int
    bob: bytes
    client: NodeClient
    waiter: Waiter
    e: bytes = b""
    f: bytes = b""

    def state(self, entity: bytes) -> EntityState | None:
        entry = self.model.entities.get((self.alice, entity))
        return None if entry is None else entry.state

    async def bob_submits(self, txs: list[TxBody]) -> None:
        replica = await self.service.session.read_replica(self.bob, self.e)
        assert replica is not None
        nonce = replica.entity.nonce_of(self.bob) + 1
        batch = ent.sign_batch(self.e, self.bob_sk, self.bob, nonce, [Tx.of(t) for t in txs])
        receipts = await self.client.submit([SubmitBatch(batch)], [self.bob, self.e])
        assert receipts.receipts[0].error is None, receipts.receipts[0].error


@pytest.fixture
async def setup(kit: Kit, tmp_path: Path) -> AsyncIterator[Setup]:
    model = WalletModel()
    service = WalletService(
        kit.data,
        model,
        kit.vault,
        Settings(tick_ms=20, accountant_on=True),
        ttl_s=20.0,
        simulation=True,
    )
    waiter = Waiter()
    for signal in (model.entities_changed, model.connection_changed):
        signal.connect(waiter.wake)
    model.history_added.connect(waiter.wake)
    handler = _WakeHandler(waiter, asyncio.get_running_loop())
    logging.getLogger().addHandler(handler)
    await service.start()
    await service.unlock(PASSWORD)
    assert service.embedded is not None
    assert service.embedded.api is not None
    token, _ = TokenStore(service.embedded.data).create(Scope("server"), "test")
    service.embedded.api.refresh_tokens()
    client = await NodeClient.connect(service.embedded.url, token=token)
    bob_sk = bls.keygen(secrets.token_bytes(32))
    bob_pk = bls.sk_to_pk(bob_sk)
    await client.submit([CreateSigner(bob_pk, bls.pop_prove(bob_sk))])
    bob_agent = Agent(bob_sk, tmp_path / "bob-guard")
    stop = asyncio.Event()
    up: list[bool] = []

    async def bob_signs(entity: bytes, frame_raw: bytes, round_: int) -> Signatures:
        return await asyncio.to_thread(bob_agent.sign_precommit, frame_raw, round_)

    def bob_link(on: bool) -> None:
        up.append(on)
        waiter.wake()

    bob_task = asyncio.create_task(
        serve_signer(
            service.embedded.url, token, signer_id(bob_pk), bob_signs, stop, on_link=bob_link
        )
    )
    agent = service.agents[kit.key.signer_id]
    agent.on_link.append(waiter.wake)
    await waiter.until(lambda: agent.connected and bool(up) and up[-1])
    s = Setup(service, model, kit.key.signer_id, bob_sk, signer_id(bob_pk), client, waiter)
    key = kit.key
    s.e = await service.create_entity(
        key.signer_id,
        [NewMember(key.pubkey, key.pop, 1), NewMember(bob_pk, bls.pop_prove(bob_sk), 2)],
        threshold=2,
        proposer_index=1,
    )
    s.f = await service.create_entity(key.signer_id, [NewMember(key.pubkey, key.pop, 1)], 1, 0)
    await waiter.until(lambda: s.state(s.e) is not None and s.state(s.f) is not None)
    try:
        yield s
    finally:
        stop.set()
        await bob_task
        bob_agent.close()
        with contextlib.suppress(Exception):
            await client.close()
        await service.stop()
        logging.getLogger().removeHandler(handler)


async def test_a_payment_in_a_frame_the_wallet_did_not_sign_shows_in_history(
    setup: Setup,
) -> None:
    s, service = setup, setup.service
    # The accountant approves everything on F, and nothing on E: the wallet signs no E frame.
    service.policy.rules = Rules.parse(
        '[[rule]]\nname = "F only"\napprove = ["counter", "proposal", "vote", "expired", '
        '"voided", "open_channel", "payment", "paid", "received", "minted", "channel_note"]\n'
        f'entities = ["0x{s.f.hex()}"]\n'
    )
    await service.faucet(s.f, ASSET, 1_000)
    await service.faucet(s.e, ASSET, 1_000)
    await s.waiter.until(
        lambda: all((st := s.state(x)) is not None and st.reserve(ASSET) for x in (s.e, s.f))
    )
    e_card = ChannelCard.decode(await service.channel_card(s.e))
    f_card = ChannelCard.decode(await service.channel_card(s.f))
    state_f = s.state(s.f)
    assert state_f is not None
    await service.propose(
        s.alice,
        s.f,
        OpenChannel(s.e, e_card.config, e_card.config_height, ASSET, 500),
        state_f.height + 50,
    )
    state_e = s.state(s.e)
    assert state_e is not None
    action = OpenChannel(s.f, f_card.config, f_card.config_height, ASSET, 0)
    await s.bob_submits([ent.Propose(action, state_e.height + 50)])

    def ready(me: bytes, peer: bytes) -> bool:
        st = s.state(me)
        record = None if st is None else st.channel(peer)
        return (
            record is not None and record.side.status == "ready" and record.side.agreed.height > 0
        )

    await s.waiter.until(lambda: ready(s.f, s.e) and ready(s.e, s.f))
    await service.pay(s.alice, s.f, (s.e,), ASSET, 50)

    def received_by_e() -> list[int]:
        return [
            h.amount or 0
            for h in s.model.history
            if h.kind == "payment" and h.payment == "received" and h.entity_id == s.e
        ]

    await s.waiter.until(lambda: received_by_e() == [50])
    received = next(h for h in s.model.history if h.payment == "received" and h.entity_id == s.e)
    # The wallet never signed that frame (it may sign E's frames that change nothing).
    signed = {r.frame_hash for r in service.queue.all() if r.signed}
    assert received.hash not in signed

    # With the wallet's agent gone, it is not even asked: E pays F on bob's word alone,
    # and the wallet knows of that frame only from its FRAME_EVENT and GET_FRAMES.
    await service.agents[s.alice].stop()
    asked = len(service.queue.all())
    await s.bob_submits([Pay((s.f,), ASSET, 20)])

    def paid_by_e() -> list[int]:
        return [
            h.amount or 0
            for h in s.model.history
            if h.kind == "payment" and h.payment == "payment" and h.entity_id == s.e
        ]

    await s.waiter.until(lambda: paid_by_e() == [20])
    assert len(service.queue.all()) == asked  # no sign request reached the wallet
    state_e = s.state(s.e)
    assert state_e is not None
    record = state_e.channel(s.f)
    assert record is not None
    assert record.side.pending is not None  # the model holds the frame's outcome
