"""Signed round changes across real node processes (issue 13 items 1 and 2).

Three ``xln-node run`` processes, one signer each (built-in agents, ``--agent``), an
entity of the three with threshold 2. Each node asks its agents for their binding of
its identity key and signs its members' round changes to other servers with it. A
hostile peer with a fresh identity key cannot move a replica's round; the bound
server itself cannot replay its round change at another height; and when the
proposer's server is killed, the genuine round changes still move the round and the
height is certified.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from node import identity as node_identity
from node.cluster import PASSWORD, Cluster
from node.codec import decode
from node.crypto import bls
from node.identity import Identity
from node.machines import entity as ent
from node.machines.binding import sign_binding
from node.machines.replica import RoundChange, SignedRoundChange
from node.net.protocol import Err, Rep, Req, Sender, SenderKind, encode_request, error_of
from node.txs import Tx
from tests.conftest import recv_reply
from tests.node.net.peer_hello import handshake

DEADLINE_S = 60.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, servers=3, signers=3, tick_ms=50, round_timeout_ms=500)
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


class Peer:
    """A peer server's connection as a test plays it, with any identity key."""

    def __init__(self, ws: ClientConnection, identity: Identity) -> None:
        self.ws = ws
        self.identity = identity
        self.sender = Sender(SenderKind.SERVER, identity.id)
        self.rid = 10

    @classmethod
    async def open(cls, url: str, identity: Identity) -> Peer:
        ws = await connect(url)
        reply = await handshake(ws, identity)
        assert reply.type is Rep.WELCOME, reply
        return cls(ws, identity)

    async def deliver(self, to: bytes, entity: bytes, tx: Tx) -> tuple[Err | None, str]:
        self.rid += 1
        body = [to, entity, decode(tx.raw)]
        await self.ws.send(encode_request(Req.DELIVER, self.rid, self.sender, (), body))
        reply = await recv_reply(self.ws)
        if reply.type is Rep.DELIVERED:
            return None, ""
        return error_of(reply)


def signed(entity: bytes, rc: RoundChange, server_sk: int, member_sk: int, server_key: bytes) -> Tx:
    binding = sign_binding(member_sk, rc.signer, server_key, 1)
    signature = bls.sign(server_sk, SignedRoundChange.message(entity, rc))
    return Tx.of(SignedRoundChange(rc, binding, signature))


async def test_round_changes_are_signed_by_bound_servers_and_forgeries_refused(
    cluster: Cluster,
) -> None:
    keys = cluster.keys  # signer i on server i
    entity = await cluster.create_entity(keys, [1, 1, 1], 2, proposer=0)
    batch = await cluster.submit(keys[1], entity, [ent.Increment(1)])
    routes = [(k.id, entity) for k in keys]
    assert await cluster.wait_committed(batch, routes, DEADLINE_S) is not None
    before = await cluster.replica(keys[1], entity)
    assert before is not None
    assert before.entity.height == 1
    assert before.round == 0
    height = before.next_height

    # A hostile peer with a fresh identity key, speaking only the protocol, at server 1.
    hostile = Identity(bls.keygen(b"\x66" * 32))
    peer = await Peer.open(cluster.servers[1].url, hostile)
    to = keys[1].id
    for member in (keys[0], keys[2]):
        rc = RoundChange(height, 21, member.id, None)
        code, message = await peer.deliver(to, entity, Tx.of(rc))
        assert (code, message) == (Err.FORBIDDEN, "peers may not send round_change")
        # Its own key "binding" itself for the member: not the member's signature.
        forged = signed(entity, rc, hostile.secret_key, hostile.secret_key, hostile.pubkey)
        code, message = await peer.deliver(to, entity, forged)
        assert code is Err.FORBIDDEN
        assert "does not verify under member" in message, message
    await peer.ws.close()

    # Server 2 itself, bound by member 2, replays a round change made for another height.
    server2 = node_identity.load_or_create(cluster.servers[2].data, PASSWORD, fast_kdf=True)
    bound = await Peer.open(cluster.servers[1].url, server2)
    made_for = RoundChange(height + 5, 21, keys[2].id, None)
    signature = bls.sign(server2.secret_key, SignedRoundChange.message(entity, made_for))
    binding = sign_binding(keys[2].sk, keys[2].id, server2.pubkey, 1)  # its genuine one
    replayed = RoundChange(height, 21, keys[2].id, None)
    src = Tx.of(SignedRoundChange(replayed, binding, signature))
    code, message = await bound.deliver(to, entity, src)
    assert code is Err.FORBIDDEN
    assert "not signed by the server its binding names" in message
    await bound.ws.close()
    after = await cluster.replica(keys[1], entity)
    assert after is not None
    assert (after.round, after.ahead, after.changes) == (0, (), ())  # nothing moved

    # The proposer's server dies: members 1 and 2 time out, and member 2's signed round
    # change reaches member 1 (round 1's proposer), which certifies the height.
    await cluster.kill_server(0)
    batch = await cluster.submit(keys[1], entity, [ent.Increment(1)])
    alive = [(k.id, entity) for k in keys[1:]]
    assert await cluster.wait_committed(batch, alive, DEADLINE_S) is not None
    moved = await cluster.replica(keys[1], entity)
    assert moved is not None
    assert moved.entity.height == 2
    assert moved.cert is not None
    assert moved.cert.round >= 1
    # Each member's binding of its own server is recorded by the others (announced as
    # the entity was made, and carried by the round changes), and no other.
    servers = [
        node_identity.load_or_create(cluster.servers[i].data, PASSWORD, fast_kdf=True)
        for i in range(3)
    ]
    other = await cluster.replica(keys[2], entity)
    assert other is not None
    bound_here = [(b.signer, b.server_key) for r in (moved, other) for b in r.bindings]
    assert (keys[2].id, server2.pubkey) in bound_here  # the round change's, at least
    assert set(bound_here) <= {(k.id, servers[k.server].pubkey) for k in keys}
    # Back with everyone: it keeps certifying.
    await cluster.restart_server(0)
    await cluster.watch(keys[0], entity)
    batch = await cluster.submit(keys[2], entity, [ent.Increment(1)])
    assert await cluster.wait_committed(batch, routes, DEADLINE_S) is not None
