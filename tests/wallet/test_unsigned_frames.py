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

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.crypto import bls
from node.machines import entity as ent
from node.machines.accounts import OpenChannel, Pay
from node.machines.entity import EntityState
from node.machines.replica import SubmitBatch
from node.txs import Tx, TxBody
from tests.wallet.conftest import Bob, Kit, Waiter, bob_served, running_service
from wallet.flows.accountant import Rules
from wallet.flows.compose import ChannelCard
from wallet.model import NewMember, WalletModel
from wallet.service import WalletService

ASSET = 1


@dataclass
class Setup:
    service: WalletService
    model: WalletModel
    alice: bytes
    bob: Bob
    waiter: Waiter
    e: bytes = b""
    f: bytes = b""

    def state(self, entity: bytes) -> EntityState | None:
        entry = self.model.entities.get((self.alice, entity))
        return None if entry is None else entry.state

    async def bob_submits(self, txs: list[TxBody]) -> None:
        header = await self.service.session.read_header(self.bob.id, self.e)
        assert header is not None
        nonce = header.small.nonce_of(self.bob.id) + 1
        batch = ent.sign_batch(self.e, self.bob.sk, self.bob.id, nonce, [Tx.of(t) for t in txs])
        receipts = await self.bob.client.submit([SubmitBatch(batch)], [self.bob.id, self.e])
        assert receipts.receipts[0].error is None, receipts.receipts[0].error


@pytest.fixture
async def setup(kit: Kit, tmp_path: Path) -> AsyncIterator[Setup]:
    async with (
        running_service(kit, simulation=True) as run,
        bob_served(run, tmp_path / "bob-guard") as bob,
    ):
        service, key = run.service, kit.key
        s = Setup(service, run.model, key.signer_id, bob, run.waiter)
        s.e = await service.create_entity(
            key.signer_id,
            [NewMember(key.pubkey, key.pop, 1), NewMember(bob.pubkey, bls.pop_prove(bob.sk), 2)],
            threshold=2,
            proposer_index=1,
        )
        s.f = await service.create_entity(key.signer_id, [NewMember(key.pubkey, key.pop, 1)], 1, 0)
        await s.waiter.until(lambda: s.state(s.e) is not None and s.state(s.f) is not None)
        yield s


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
