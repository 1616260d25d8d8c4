"""Shared builders for the content-view tests: real BLS keys, real entity states and
frames, a real ApprovalQueue, a settable clock, a qasync loop to run a scenario on,
and ``RecordingActions``, which stands in for ``WalletService`` (it has its own
tests): it records each call and can hold or fail it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from node.codec import ZERO_HASH
from node.crypto import bls
from node.machines import channel as ch
from node.machines.accounts import ChannelRecord
from node.machines.entity import (
    EntityAction,
    EntityState,
    Increment,
    Propose,
    Vote,
    execute,
    genesis,
    sign_batch,
)
from node.machines.frames import Frame
from node.machines.governance import Action, Config, Member, signer_id
from node.txs import Tx, TxBody
from tests.node.channel_sides import exchange
from wallet.flows.approvals import ApprovalQueue
from wallet.flows.channel_pages import ChannelPage, local_page
from wallet.flows.effects import analyze
from wallet.model import EntityEntry, NewMember, WalletLocked, WalletModel
from wallet.qt import QApplication, QEventLoop

N_KEYS = 5
SKS = [bls.keygen(bytes([i + 41]) * 32) for i in range(N_KEYS)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
POPS = [bls.pop_prove(sk) for sk in SKS]
SALT = b"\x33" * 32
ME = 0  # the user's signer in these tests


def config(shares: Sequence[int], threshold: int, proposer: int = 0) -> Config:
    return Config(tuple(Member(PKS[i], s) for i, s in enumerate(shares)), threshold, IDS[proposer])


def entity(shares: Sequence[int] = (50, 30, 20), threshold: int = 67) -> EntityState:
    return genesis(config(shares, threshold), SALT)


class Replica:
    """One entity's agreed state, advanced by real signed batches."""

    def __init__(self, state: EntityState) -> None:
        self.state = state

    def frame(self, *batches: tuple[int, Sequence[TxBody]]) -> tuple[EntityState, Frame]:
        """The next frame with these (signer index, bodies) batches; the state stays."""
        signed = [
            sign_batch(
                self.state.entity_id,
                SKS[who],
                IDS[who],
                self.state.nonce_of(IDS[who]) + 1,
                [Tx.of(b) for b in bodies],
            )
            for who, bodies in batches
        ]
        new, events = execute(self.state, signed)
        frame = Frame.make(
            self.state.entity_id,
            self.state.height + 1,
            ZERO_HASH,
            signed,
            new.hash,
            outbox=events.outbox,
        )
        return new, frame

    def commit(self, *batches: tuple[int, Sequence[TxBody]]) -> EntityState:
        self.state, _ = self.frame(*batches)
        return self.state

    def propose(self, who: int, action: Action, ttl: int = 50) -> EntityState:
        return self.commit((who, [Propose(action, self.state.height + 1 + ttl)]))

    def vote(self, who: int, pid: int) -> EntityState:
        return self.commit((who, [Vote(pid)]))

    def increment(self, who: int, n: int) -> EntityState:
        return self.commit((who, [Increment(n)]))


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def queue_with(clock: Clock) -> ApprovalQueue:
    return ApprovalQueue(clock)


def request_for(
    queue: ApprovalQueue, replica: Replica, *batches: tuple[int, Sequence[TxBody]], ttl: float = 30
) -> int:
    """A pending request for the user's signer, with a real analysis of a real frame."""
    _, frame = replica.frame(*batches)
    analysis = analyze(replica.state, frame)
    return queue.add(IDS[ME], replica.state.entity_id, frame, 0, analysis, ttl).id


def model_with(*states: EntityState, signer: int = ME) -> WalletModel:
    model = WalletModel()
    for s in states:
        model.set_entity(EntityEntry(IDS[signer], s))
    return model


@dataclass
class RecordingActions:
    """Stands in for WalletService (tested on its own): records calls; ``hold`` keeps
    coroutines waiting until released, ``fail`` makes the next ones raise."""

    queue: ApprovalQueue | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    fail: str | None = None
    locked: bool = False  # the actions that sign raise WalletLocked, as the service does
    created: bytes = b"\x77" * 32
    cards: dict[bytes, str] = field(default_factory=dict)  # channel_card answers
    held: dict[bytes, EntityState] = field(default_factory=dict)  # channel_page's pages

    async def _run(self, *call: Any) -> None:
        self.calls.append(call)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise RuntimeError(self.fail)
        if self.locked:
            raise WalletLocked("the wallet is locked: unlock it to sign")

    async def increment(self, signer: bytes, entity: bytes, n: int) -> None:
        await self._run("increment", signer, entity, n)

    async def withdraw(self, signer: bytes, entity: bytes, nonce: int) -> None:
        await self._run("withdraw", signer, entity, nonce)

    async def name_signer(self, signer: bytes, name: str) -> None:
        await self._run("name_signer", signer, name)

    async def propose(
        self, signer: bytes, entity: bytes, action: EntityAction, expires_at: int
    ) -> None:
        await self._run("propose", signer, entity, action, expires_at)

    async def pay(
        self, signer: bytes, entity: bytes, route: tuple[bytes, ...], asset: int, amount: int
    ) -> None:
        await self._run("pay", signer, entity, route, asset, amount)

    async def channel_page(
        self, signer: bytes, entity: bytes, after: bytes, limit: int
    ) -> ChannelPage:
        """A page of the whole state ``held[entity]`` stands for (a partial entry's)."""
        await self._run("channel_page", signer, entity, after, limit)
        return local_page(self.held[entity], after, limit)

    async def channel_card(self, entity: bytes) -> str:
        await self._run("channel_card", entity)
        return self.cards[entity]

    async def faucet(self, entity: bytes, asset: int, amount: int) -> None:
        await self._run("faucet", entity, asset, amount)

    async def vote(self, signer: bytes, entity: bytes, proposal_id: int) -> None:
        await self._run("vote", signer, entity, proposal_id)

    async def create_entity(
        self, signer: bytes, members: Sequence[NewMember], threshold: int, proposer_index: int
    ) -> bytes:
        await self._run("create_entity", signer, tuple(members), threshold, proposer_index)
        return self.created

    async def join_entity(self, signer: bytes, entity: bytes) -> None:
        await self._run("join_entity", signer, entity)

    async def unlock(self, password: str) -> None:
        await self._run("unlock")

    def lock(self) -> None:
        self.calls.append(("lock",))

    def approve(self, request_id: int) -> None:
        self.calls.append(("approve", request_id))
        if self.queue is not None:
            self.queue.approve(request_id)

    def reject(self, request_id: int) -> None:
        self.calls.append(("reject", request_id))
        if self.queue is not None:
            self.queue.reject(request_id)

    def set_accountant(self, on: bool) -> None:
        self.calls.append(("set_accountant", on))


def run_qt[T](coro: Coroutine[Any, Any, T], timeout_s: float = 20) -> T:
    """Run a scenario on a qasync loop (Qt events and asyncio tasks both run)."""
    app = QApplication.instance()
    assert app is not None, "use the qtbot/qapp fixture first"
    loop = QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        result: T = loop.run_until_complete(asyncio.wait_for(coro, timeout_s))
        return result
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def with_channel(
    state: EntityState,
    peer: EntityState,
    mine: int,
    theirs: int,
    credit_given: int = 0,
    paid: int = 0,
    asset: int = 1,
    reserve: int = 0,
) -> EntityState:
    """``state`` with an agreed channel to ``peer``: ``mine``/``theirs`` collateral,
    the credit we extend, and ``paid`` sent by us; ``reserve`` left in reserve."""
    me_side = ch.open_side(state.entity_id, peer.entity_id)
    peer_side = ch.open_side(peer.entity_id, state.entity_id)
    me_side, peer_side = exchange(me_side, peer_side, ch.AddCollateral(asset, mine))
    peer_side, me_side = exchange(peer_side, me_side, ch.AddCollateral(asset, theirs))
    if credit_given:
        me_side, peer_side = exchange(me_side, peer_side, ch.SetCredit(asset, credit_given))
    if paid:
        me_side, peer_side = exchange(me_side, peer_side, ch.Payment(asset, paid))
    record = ChannelRecord(peer.entity_id, peer.config, peer.config_height, me_side)
    channels = state.channels.set(record.peer, record)
    reserves = ((asset, reserve),) if reserve else state.reserves
    return replace(state, channels=channels, reserves=reserves)
