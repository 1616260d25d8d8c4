"""Quotas per peer and per client (node/net/limits.py; issue 13 item 6).

Real servers on 127.0.0.1, real peers with identity keys (CHALLENGE and HELLO),
real client and agent connections. Each test makes one quota bite and checks
that the refusal is the documented error, that nothing was queued for it, and
that another party is served as before:

- messages per second: a peer past its rate is paced (its connection is not
  read until its bucket refills), while another peer is answered at once;
- share of the inbox: a peer's inputs queued past its share get BUSY and are not
  queued; another peer's are; a duplicate of a queued input costs nothing;
- early blocks: past its quota a peer's input waits for the tick;
- subscriptions per client token, across its connections;
- connections per peer identity;
- sign requests a node keeps waiting on one agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from node.codec import decode
from node.coordinator import AgentUnavailable
from node.crypto import bls
from node.identity import Identity
from node.machines.governance import Config, Member, signer_id
from node.machines.replica import Genesis
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity
from node.net import limits
from node.net.client import NodeClient, NodeError
from node.net.protocol import (
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    Topic,
    encode_request,
    error_of,
)
from node.net.server import RemoteAgent
from node.runtime import NodeConfig
from node.txs import Tx
from tests.conftest import LiveNode, recv_reply, start_live_node, stop_live_node
from tests.node.net.peer_hello import handshake, sender_of

DEADLINE_S = 20.0
SK_S = 404  # the hosted signer
PEER = Identity(bls.keygen(b"\x1c" * 32))
OTHER_PEER = Identity(bls.keygen(b"\x1d" * 32))
SIGNER = signer_id(bls.sk_to_pk(SK_S))


async def _with_signer(node: LiveNode) -> None:
    async with await NodeClient.connect(node.url, token=node.token) as admin:
        receipts = await admin.submit([CreateSigner(bls.sk_to_pk(SK_S), bls.pop_prove(SK_S))])
        assert receipts.receipts[0].error is None


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveNode]:
    node = await start_live_node(tmp_path / "data")
    try:
        await _with_signer(node)
        yield node
    finally:
        await stop_live_node(node)


@pytest.fixture
async def slow(tmp_path: Path) -> AsyncIterator[LiveNode]:
    """A node whose tick is a minute away and whose inbox holds 32 transactions, so a
    peer's share is 2; peers get no early block, so what they queue stays queued
    while the test looks, until the test makes a block itself."""
    node = await start_live_node(tmp_path / "data", NodeConfig(tick_ms=60_000, inbox_cap=32))
    node.api.quotas = limits.Quotas(early_blocks=(1e-3, 0.0))
    try:
        async with await NodeClient.connect(node.url, token=node.token) as admin:
            create = CreateSigner(bls.sk_to_pk(SK_S), bls.pop_prove(SK_S))
            submitted = asyncio.create_task(admin.submit([create]))
            await _until(lambda: node.node.inbox_size == 1)
            await node.node.produce_block()
            assert (await asyncio.wait_for(submitted, DEADLINE_S)).receipts[0].error is None
        yield node
    finally:
        await stop_live_node(node)


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, checking it every loop turn; fail after the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        while not condition():  # noqa: ASYNC110 (the inbox and agents have no event)
            await asyncio.sleep(0.005)


def entity_of(create: CreateEntity) -> bytes:
    return create.entity_id


def made_up(n: int) -> CreateEntity:
    """A create_entity a peer may deliver: a new entity whose one member is the hosted
    signer (a join_entity would need the frame that added it, node/join_proof.py)."""
    member = Member(bls.sk_to_pk(SK_S), 1)
    return CreateEntity(
        Genesis(Config((member,), 1, member.id), n.to_bytes(32, "big"), (bls.pop_prove(SK_S),))
    )


async def deliver(
    ws: ClientConnection, identity: Identity, rid: int, create: CreateEntity
) -> Reply:
    body = [SIGNER, b"", decode(Tx.of(create).raw)]
    await ws.send(encode_request(Req.DELIVER, rid, sender_of(identity), (), body))
    return await recv_reply(ws, DEADLINE_S)


def test_a_rate_paces_past_its_burst_and_forgets_idle_parties() -> None:
    now = [0.0]
    rate = limits.Rate(10.0, 20.0, clock=lambda: now[0])
    assert [rate.delay(b"a") for _ in range(20)] == [0.0] * 20
    assert rate.delay(b"a") == pytest.approx(0.1)
    assert rate.delay(b"a") == pytest.approx(0.2)
    assert not rate.try_take(b"a")
    assert rate.delay(b"b") == 0.0  # another party has its own bucket
    now[0] = 0.2  # the debt of two is paid
    assert not rate.try_take(b"a")
    now[0] = 0.35
    assert rate.try_take(b"a")
    rate.SWEEP_AT = 2
    now[0] = 10.0  # both refilled: forgotten when a third party comes
    rate.delay(b"c")
    assert set(rate._buckets) == {b"c"}


async def test_a_peer_past_its_rate_waits_while_another_is_served(live: LiveNode) -> None:
    live.api.quotas = limits.Quotas(peer_rate=(50.0, 50.0))
    flood = 150
    async with connect(live.url) as noisy, connect(live.url) as quiet:
        assert (await handshake(noisy, PEER)).type is Rep.WELCOME
        assert (await handshake(quiet, OTHER_PEER)).type is Rep.WELCOME
        started = time.monotonic()
        for rid in range(3, 3 + flood):
            await noisy.send(encode_request(Req.STATUS, rid, sender_of(PEER), (), []))

        async def drain() -> float:
            for _ in range(flood):
                assert (await recv_reply(noisy, DEADLINE_S)).type is Rep.STATUS
            return time.monotonic() - started

        draining = asyncio.create_task(drain())
        # While the noisy peer waits for its bucket, the quiet one is answered.
        t0 = time.monotonic()
        await quiet.send(encode_request(Req.STATUS, 3, sender_of(OTHER_PEER), (), []))
        assert (await recv_reply(quiet, DEADLINE_S)).type is Rep.STATUS
        quiet_s = time.monotonic() - t0
        noisy_s = await draining
    # (CHALLENGE and HELLO come before the party is known.) Of 150 STATUS the burst
    # covers 50; each of the rest waits 1/50 s for its token.
    assert noisy_s >= (flood - 50) / 50 - 0.05
    assert quiet_s < 1.0, quiet_s
    assert live.api.quotas.paced == flood - 50


async def test_a_peer_past_its_share_of_the_inbox_is_busy_and_queues_nothing(
    slow: LiveNode,
) -> None:
    node = slow.node
    share = limits.inbox_share(32, peer=True)
    assert share == 2
    joins = [made_up(n) for n in range(4)]
    async with connect(slow.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        for rid, join in enumerate(joins[:share], start=3):
            assert (await deliver(ws, PEER, rid, join)).type is Rep.DELIVERED
        assert node.inbox_size == share
        assert slow.api.quotas.late == share  # no early block for either
        # The very same input again: already queued, answered, not queued twice.
        assert (await deliver(ws, PEER, 10, joins[0])).type is Rep.DELIVERED
        assert node.inbox_size == share
        refused = await deliver(ws, PEER, 11, joins[share])
        assert error_of(refused) == (
            Err.BUSY,
            f"this party's share of the inbox is full ({share} of {share} transactions"
            " queued); retry after the next block",
        )
        assert node.inbox_size == share
    async with connect(slow.url) as ws:
        assert (await handshake(ws, OTHER_PEER)).type is Rep.WELCOME
        assert (await deliver(ws, OTHER_PEER, 3, joins[share + 1])).type is Rep.DELIVERED
    assert node.inbox_size == share + 1
    height = node.state.height
    await node.produce_block()  # the queued ones are applied; the shares are free again
    assert node.state.height == height + 1
    assert node.inbox_size == 0
    held = set(node.state.by_id[SIGNER].by_entity)
    assert {entity_of(j) for j in joins} & held == {entity_of(joins[i]) for i in (0, 1, 3)}
    async with connect(slow.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        assert (await deliver(ws, PEER, 3, joins[share])).type is Rep.DELIVERED


async def test_subscriptions_are_capped_per_token_across_connections(
    live: LiveNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_SUBSCRIPTIONS_PER_CLIENT", 3)
    async with (
        await NodeClient.connect(live.url, token=live.token) as a,
        await NodeClient.connect(live.url, token=live.token) as b,
    ):
        await a.subscribe(Topic.BLOCKS)
        await a.subscribe(Topic.BLOCKS)
        await b.subscribe(Topic.BLOCKS)
        with pytest.raises(NodeError) as refused:
            await b.subscribe(Topic.BLOCKS)
        assert (refused.value.code, refused.value.message) == (
            Err.BUSY,
            "at most 3 subscriptions per token, over all its connections",
        )
    # The connections are gone, and their subscriptions with them.
    async with await NodeClient.connect(live.url, token=live.token) as c:
        await c.subscribe(Topic.BLOCKS)


async def test_a_peer_holds_at_most_its_connections(live: LiveNode) -> None:
    cap = limits.MAX_CONNECTIONS_PER_PEER
    conns = [await connect(live.url) for _ in range(cap + 1)]
    try:
        for ws in conns[:cap]:
            assert (await handshake(ws, PEER)).type is Rep.WELCOME
        refused = await handshake(conns[cap], PEER)
        assert error_of(refused) == (
            Err.BUSY,
            f"a peer may hold at most {cap} connections at once; close one first",
        )
        await asyncio.wait_for(conns[cap].wait_closed(), DEADLINE_S)
        other = await connect(live.url)
        assert (await handshake(other, OTHER_PEER)).type is Rep.WELCOME
        await other.close()
    finally:
        for ws in conns:
            await ws.close()


async def test_a_node_keeps_at_most_its_sign_requests_waiting_on_one_agent(
    live: LiveNode,
) -> None:
    """An agent that reads its SIGN and BIND requests and never answers."""
    coordinator = live.api.coordinator
    assert coordinator is not None
    async with connect(live.url) as ws:
        sender = Sender(SenderKind.AGENT, SIGNER)
        await ws.send(encode_request(Req.HELLO, 1, sender, (), [live.token.encode()]))
        assert (await recv_reply(ws)).type is Rep.WELCOME

        requests: list[bytes] = []

        async def read_and_never_answer() -> None:
            async for frame in ws:
                assert isinstance(frame, bytes)
                requests.append(frame)

        reading = asyncio.create_task(read_and_never_answer())
        await _until(lambda: isinstance(coordinator.agents.get(SIGNER), RemoteAgent))
        agent = coordinator.agents[SIGNER]
        assert isinstance(agent, RemoteAgent)
        # (The node may itself have asked one BIND on connect.)
        cap = limits.MAX_PENDING_SIGN_REQUESTS
        waiting = [
            asyncio.create_task(agent.bind_server(bytes([n]) * 48))
            for n in range(cap - len(agent._waiting))
        ]

        await _until(lambda: len(agent._waiting) == cap)
        with pytest.raises(AgentUnavailable, match=f"{cap} requests unanswered"):
            await agent.bind_server(b"\xff" * 48)
        assert len(agent._waiting) == cap
        await _until(lambda: len(requests) == cap)  # each one waiting was sent
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert len(agent._waiting) == 0
        assert len(requests) == cap  # the one refused was never sent
        reading.cancel()
