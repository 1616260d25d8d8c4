"""join_entity from peer servers is capped per peer (node/net/limits.py).

A real server on 127.0.0.1 hosting one signer; a peer with a real identity key
(CHALLENGE and HELLO) delivers join_entity for made-up entities (each a fresh
one-member config with a valid proof of possession). The first
MAX_PEER_JOINS_PER_WINDOW are applied; the next is BUSY and nothing is made for
it. A join_entity for an entity the signer holds already is a no-op and not
counted; another peer has its own count. The quota's in-flight bound and its
window are checked with a clock of the test's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from node.codec import decode
from node.crypto import bls
from node.identity import Identity
from node.machines.governance import Config, Member, signer_id
from node.machines.replica import Genesis
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity, JoinEntity
from node.net import limits
from node.net.client import NodeClient
from node.net.protocol import Err, Rep, Reply, Req, encode_request, error_of
from node.runtime import Node
from node.txs import Tx
from tests.conftest import LiveNode, recv_reply, start_live_node, stop_live_node
from tests.node.net.peer_hello import handshake, sender_of

DEADLINE_S = 20
SK_S = 303  # the hosted signer
PEER = Identity(bls.keygen(b"\x0c" * 32))
OTHER_PEER = Identity(bls.keygen(b"\x0d" * 32))


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveNode]:
    node = await start_live_node(tmp_path / "data")
    try:
        async with await NodeClient.connect(node.url, token=node.token) as admin:
            receipts = await admin.submit([CreateSigner(bls.sk_to_pk(SK_S), bls.pop_prove(SK_S))])
            assert receipts.receipts[0].error is None
        yield node
    finally:
        await stop_live_node(node)


def made_up(n: int) -> JoinEntity:
    """A join_entity for an entity of one made-up member (not the hosted signer)."""
    sk = 9000 + n
    member = Member(bls.sk_to_pk(sk), 1)
    return JoinEntity(
        Genesis(Config((member,), 1, member.id), n.to_bytes(32, "big"), (bls.pop_prove(sk),))
    )


def entity_of(join: JoinEntity) -> bytes:
    return CreateEntity(join.genesis).entity_id


async def deliver(ws: ClientConnection, identity: Identity, rid: int, join: JoinEntity) -> Reply:
    to = signer_id(bls.sk_to_pk(SK_S))
    body = [to, b"", decode(Tx.of(join).raw)]
    await ws.send(encode_request(Req.DELIVER, rid, sender_of(identity), (), body))
    return await recv_reply(ws, DEADLINE_S)


def held(node: Node) -> frozenset[bytes]:
    return frozenset(node.state.by_id[signer_id(bls.sk_to_pk(SK_S))].by_entity)


async def until_held(node: Node, entity: bytes) -> None:
    """Wait, block by block, until the signer holds ``entity``."""
    blocks = node.subscribe(None)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while entity not in held(node):
                await blocks.queue.get()
    finally:
        node.unsubscribe(blocks)


async def test_join_entity_beyond_the_cap_is_refused_and_makes_nothing(live: LiveNode) -> None:
    node = live.node
    cap = limits.MAX_PEER_JOINS_PER_WINDOW
    joins = [made_up(n) for n in range(cap + 2)]
    async with connect(live.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        for rid, join in enumerate(joins[:cap], start=3):
            assert (await deliver(ws, PEER, rid, join)).type is Rep.DELIVERED
            await until_held(node, entity_of(join))  # applied: no longer in flight
        before = (node.state.height, node.state.hash())
        refused = await deliver(ws, PEER, 100, joins[cap])
        assert error_of(refused) == (
            Err.BUSY,
            f"a peer may have at most {cap} join_entity accepted per"
            f" {limits.PEER_JOIN_WINDOW_S:g} s; try again later",
        )
        # One the signer holds already is a no-op: answered, not counted, no block.
        again = await deliver(ws, PEER, 101, joins[0])
        assert again.type is Rep.DELIVERED
        assert (node.state.height, node.state.hash()) == before
        assert entity_of(joins[cap]) not in held(node)
        assert held(node) == frozenset(entity_of(j) for j in joins[:cap])

    # Another peer has a count of its own.
    async with connect(live.url) as ws:
        assert (await handshake(ws, OTHER_PEER)).type is Rep.WELCOME
        assert (await deliver(ws, OTHER_PEER, 3, joins[cap + 1])).type is Rep.DELIVERED
        await until_held(node, entity_of(joins[cap + 1]))
    # The first peer, on a new connection, is still over its cap.
    async with connect(live.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        assert error_of(await deliver(ws, PEER, 3, joins[cap]))[0] is Err.BUSY
    assert entity_of(joins[cap]) not in held(node)


def test_the_join_quota_bounds_in_flight_and_forgets_after_its_window() -> None:
    now = [0.0]
    quota = limits.JoinQuota(per_window=3, window_s=10.0, in_flight=2, clock=lambda: now[0])
    peer, other = b"p" * 48, b"q" * 48
    quota.take(peer)
    quota.take(peer)
    in_flight = quota.refusal(peer)
    assert in_flight is not None
    assert "at most 2 join_entity queued at once" in in_flight
    assert quota.refusal(other) is None
    quota.done(peer)
    assert quota.refusal(peer) is None
    quota.take(peer)
    quota.done(peer)
    quota.done(peer)
    window = quota.refusal(peer)
    assert window is not None
    assert "at most 3 join_entity accepted per 10 s" in window
    now[0] = 9.9
    assert quota.refusal(peer) is not None
    now[0] = 10.0
    assert quota.refusal(peer) is None
