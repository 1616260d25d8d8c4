"""Channels through the WalletService on one embedded node (simulation: the faucet
works): two entities of the wallet's signer open a channel to each other (both
sides propose ``open_channel``, each naming the other's channel card), are funded
by the faucet, and one pays the other. The payment shows in both entities'
history; the accountant's payment rules approve a known payee within its daily
limit, ask beyond it, and the spend ledger remembers what was signed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.machines.accounts import ChannelRecord, ExtendCredit, OpenChannel
from node.machines.entity import EntityState
from node.net.remote_map import is_partial
from tests.wallet.conftest import Kit, Waiter, running_service
from wallet.flows.accountant import Rules
from wallet.flows.approvals import Status
from wallet.flows.compose import ChannelCard
from wallet.flows.payments import SpendLedger
from wallet.model import HistoryItem, NewMember, WalletModel
from wallet.service import WalletError, WalletService

ASSET = 1
ROUTINE = (
    '[[rule]]\nname = "everything but payments"\napprove = ["counter", "proposal", "vote", '
    '"expired", "voided", "open_channel", "set_credit", "add_collateral", "paid", "received", '
    '"forward", "forwarded", "refunded", "rejected", "minted", "channel_note"]\n'
)


@dataclass
class Pair:
    service: WalletService
    model: WalletModel
    kit: Kit
    alice: bytes
    a: bytes
    b: bytes
    waiter: Waiter
    logs: list[str]

    def state(self, entity: bytes) -> EntityState:
        entry = self.model.entities.get((self.alice, entity))
        assert entry is not None, "the entity is not in the model yet"
        return entry.state

    def has(self, entity: bytes) -> bool:
        return (self.alice, entity) in self.model.entities

    def payments(self, entity: bytes, kind: str) -> list[HistoryItem]:
        return [
            h
            for h in self.model.history
            if h.kind == "payment" and h.entity_id == entity and h.payment == kind
        ]


@contextlib.asynccontextmanager
async def pair_of(kit: Kit, **options: Any) -> AsyncIterator[Pair]:
    async with running_service(kit, rules=Rules.parse(ROUTINE), simulation=True, **options) as run:
        service, waiter, key = run.service, run.waiter, kit.key
        agent = service.agents[key.signer_id]
        agent.on_link.append(waiter.wake)
        await waiter.until(lambda: agent.connected)
        me = [NewMember(key.pubkey, key.pop, 1)]
        a = await service.create_entity(key.signer_id, me, 1, 0)
        b = await service.create_entity(key.signer_id, me, 1, 0)
        pair = Pair(service, run.model, kit, key.signer_id, a, b, waiter, run.logs)
        await waiter.until(lambda: pair.has(a) and pair.has(b))
        yield pair


@pytest.fixture
async def pair(kit: Kit) -> AsyncIterator[Pair]:
    async with pair_of(kit) as p:
        yield p


async def channel(p: Pair, me: bytes, peer: bytes) -> ChannelRecord | None:
    """``me``'s channel with ``peer`` as the wallet holds it, through the page the views
    read (the state itself may be partial: not walked on the loop)."""
    page = await p.service.channel_page(p.alice, me, b"", 10)
    return next((r for r in page.records if r.peer == peer), None)


async def open_both(p: Pair, collateral_a: int, collateral_b: int) -> None:
    s = p.service
    await s.faucet(p.a, ASSET, 1000)
    await s.faucet(p.b, ASSET, 1000)
    await p.waiter.until(
        lambda: p.state(p.a).reserve(ASSET) == 1000 and p.state(p.b).reserve(ASSET) == 1000
    )
    card_a = ChannelCard.decode(await s.channel_card(p.a))
    card_b = ChannelCard.decode(await s.channel_card(p.b))
    assert card_a.entity == p.a
    assert card_a.config == p.state(p.a).config
    for me, card, collateral in ((p.a, card_b, collateral_a), (p.b, card_a, collateral_b)):
        action = OpenChannel(card.entity, card.config, card.config_height, ASSET, collateral)
        await s.propose(p.alice, me, action, p.state(me).height + 50)

    async def agreed(me: bytes, peer: bytes, capacity: int) -> bool:
        rec = await channel(p, me, peer)
        if rec is None or rec.side.status != "ready":
            return False
        return bool(rec.side.agreed.asset(ASSET).capacity(rec.side.me) == capacity)

    async def settled() -> bool:
        return await agreed(p.a, p.b, collateral_a) and await agreed(p.b, p.a, collateral_b)

    await p.waiter.until_async(settled)


async def test_a_payment_between_two_entities_shows_in_history(pair: Pair) -> None:
    p, s = pair, pair.service
    await open_both(p, 500, 300)
    assert p.state(p.a).reserve(ASSET) == 500
    assert p.state(p.b).reserve(ASSET) == 700
    assert [h.amount for h in p.model.history if h.payment == "minted"] == [1000, 1000]

    # Beyond the capacity: refused before anything is signed, in the node's words.
    with pytest.raises(WalletError, match="insufficient capacity: 500 of asset 1"):
        await s.pay(p.alice, p.a, (p.b,), ASSET, 501)

    # A known payee within the day's limit: the accountant approves and logs why.
    s.policy.rules = Rules.parse(
        ROUTINE + f'[counterparties]\nbob = "0x{p.b.hex()}"\n'
        '[[rule]]\nname = "pay bob"\napprove = ["payment"]\npayees = "known"\n'
        "max_per_payee_per_day = 150\n"
    )
    await s.pay(p.alice, p.a, (p.b,), ASSET, 100)
    await p.waiter.until(
        lambda: bool(p.payments(p.a, "paid")) and bool(p.payments(p.b, "received"))
    )
    (sent,) = p.payments(p.a, "payment")
    assert (sent.amount, sent.asset, sent.counterparty) == (100, ASSET, p.b)
    (received,) = p.payments(p.b, "received")
    assert (received.amount, received.counterparty) == (100, p.a)
    auto = [r for r in s.queue.all() if r.analysis is not None and r.analysis.payments_out]
    assert auto
    assert auto[0].decided_by == "accountant: pay bob"
    assert "0 + 100 of 150 in the last day" in auto[0].reason
    assert any("approved by accountant: pay bob" in m for m in p.logs)
    assert s.ledger.spent(p.a, p.b, ASSET, 86400) == 100

    await p.waiter.until_async(lambda: balances_are(p, (400, 400)))

    # Over the limit: asked of a human, with the figures; a reject leaves the money.
    await s.pay(p.alice, p.a, (p.b,), ASSET, 60)
    await p.waiter.until(lambda: bool(s.queue.pending()))
    (asked,) = s.queue.pending()
    assert asked.analysis is not None
    assert [e.kind for e in asked.analysis.effects] == ["payment"]
    s.reject(asked.id)
    await p.waiter.until(lambda: asked.status is Status.REJECTED)

    # The ledger is on disk: a new wallet process would count the same spend.
    assert SpendLedger(Path(p.kit.data) / "spend.json").spent(p.a, p.b, ASSET, 86400) == 100


async def balances_are(p: Pair, expected: tuple[int, int]) -> bool:
    ra, rb = await channel(p, p.a, p.b), await channel(p, p.b, p.a)
    assert ra is not None
    assert rb is not None
    return (
        ra.side.agreed.asset(ASSET).balance(ra.side.me),
        rb.side.agreed.asset(ASSET).balance(rb.side.me),
    ) == expected


async def test_a_large_entity_is_held_partially_and_still_pays(kit: Kit) -> None:
    """A wallet holds an entity above ``whole_up_to`` records partially (its header,
    its channels read from the node as needed): here every entity, with
    ``whole_up_to=0``. Its views page the channels from the node, proven; a payment's
    first hop and a channel action are checked against the channel read, proven, in
    the node's words; frames it signs are checked on the partial state."""
    async with pair_of(kit, whole_up_to=0) as p:
        s = p.service
        await open_both(p, 500, 300)
        assert is_partial(p.state(p.a))
        assert is_partial(p.state(p.b))
        page = await s.channel_page(p.alice, p.a, b"", 10)
        assert ([r.peer for r in page.records], page.last) == ([p.b], True)
        with pytest.raises(WalletError, match="insufficient capacity: 500 of asset 1"):
            await s.pay(p.alice, p.a, (p.b,), ASSET, 501)
        stranger = b"\x0c" * 32
        with pytest.raises(WalletError, match="no channel with 0c0c"):
            await s.propose(
                p.alice, p.a, ExtendCredit(stranger, ASSET, 5), p.state(p.a).height + 50
            )
        s.policy.rules = Rules.parse(ROUTINE + '[[rule]]\nname = "pay"\napprove = ["payment"]\n')
        await s.pay(p.alice, p.a, (p.b,), ASSET, 100)
        await p.waiter.until(lambda: bool(p.payments(p.b, "received")))
        await p.waiter.until_async(lambda: balances_are(p, (400, 400)))
        assert is_partial(p.state(p.a))
        # A page after the last channel: empty, and proven the last.
        after = await s.channel_page(p.alice, p.a, p.b, 10)
        assert (after.records, after.last) == ((), True)


async def test_channel_card_of_an_unknown_entity_is_a_clear_error(pair: Pair) -> None:
    with pytest.raises(WalletError, match="no replica of that entity"):
        await pair.service.channel_card(b"\x05" * 32)
