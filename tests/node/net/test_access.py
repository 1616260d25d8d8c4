"""Who may send what: token scopes on every route, peer servers, and agents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from node.agent import Agent
from node.codec import as_bytes, as_list, decode
from node.coordinator import LocalAgent
from node.crypto import bls
from node.identity import Identity
from node.machines import entity as ent
from node.machines.accounts import Faucet
from node.machines.binding import sign_binding
from node.machines.frames import Frame, Polka
from node.machines.governance import Config, Member, signer_id
from node.machines.refusal import Refusal, sign_refusal
from node.machines.replica import (
    AnnounceBinding,
    Commit,
    Genesis,
    Lock,
    Precommit,
    RefusalInput,
    RoundChange,
    SeenLock,
    SignedRoundChange,
    SubmitBatch,
    Timeout,
)
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity
from node.net.client import NodeClient, NodeError
from node.net.entity_client import EntityReader
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
from node.runtime import NodeConfig
from node.tokens import Scope
from node.txs import Tx
from tests.conftest import LiveNode, recv_reply, start_live_node, stop_live_node
from tests.node.net.peer_hello import challenge, handshake

SK_A, SK_B = 101, 202
DEADLINE_S = 20.0


@dataclass
class World:
    live: LiveNode
    a: bytes
    b: bytes
    entity: bytes


@pytest.fixture
async def world(live_node: LiveNode) -> World:
    async with await NodeClient.connect(live_node.url, token=live_node.token) as admin:
        for sk in (SK_A, SK_B):
            await admin.submit([CreateSigner(bls.sk_to_pk(sk), bls.pop_prove(sk))])
        a = signer_id(bls.sk_to_pk(SK_A))
        config = Config((Member(bls.sk_to_pk(SK_A), 1),), 1, a)
        genesis = Genesis(config, b"\x01" * 32, (bls.pop_prove(SK_A),))
        receipts = await admin.submit([CreateEntity(genesis)], [a])
        assert receipts.receipts[0].error is None
    entity = ent.entity_id_for(config, b"\x01" * 32)
    return World(live_node, a, signer_id(bls.sk_to_pk(SK_B)), entity)


def token(w: World, scope: Scope) -> str:
    return w.live.tokens.create(scope, "access test")[0]


def batch(w: World, nonce: int = 1) -> Tx:
    return Tx.of(SubmitBatch(ent.sign_batch(w.entity, SK_A, w.a, nonce, [Tx.of(ent.Increment(1))])))


async def expect_error(coro: object, code: Err) -> None:
    with pytest.raises(NodeError) as info:
        await coro  # type: ignore[misc]
    assert info.value.code is code, info.value


async def test_signer_token_reaches_its_signer_and_entities_only(world: World) -> None:
    w = world
    async with await NodeClient.connect(w.live.url, token=token(w, Scope("signer", w.a))) as c:
        receipts = await c.submit([batch(w)], [w.a, w.entity])
        assert receipts.receipts[0].error is None
        await c.read_state([w.a])
        await expect_error(c.read_state([w.b]), Err.FORBIDDEN)
        await expect_error(c.read_state(), Err.FORBIDDEN)
        await expect_error(c.request(Req.READ_STATE, [1]), Err.FORBIDDEN)


async def test_entity_token_reaches_only_that_entity(world: World) -> None:
    w = world
    async with await NodeClient.connect(w.live.url, token=token(w, Scope("entity", w.entity))) as c:
        assert (await c.submit([batch(w)], [w.a, w.entity])).receipts[0].error is None
        await expect_error(c.read_state([w.a]), Err.FORBIDDEN)


async def test_frames_are_readable_with_a_scope_that_reaches_a_replica(world: World) -> None:
    """GET_FRAMES: peer servers, and clients whose scope reaches a replica of the entity
    hosted here (a wallet reads the frames it was not asked to sign)."""
    w = world
    for scope in (Scope("server"), Scope("signer", w.a), Scope("entity", w.entity)):
        async with await NodeClient.connect(w.live.url, token=token(w, scope)) as c:
            assert await c.frames(w.entity, 1, 8) == []  # allowed; none certified yet
    for scope in (Scope("signer", w.b), Scope("entity", b"\x09" * 32)):
        async with await NodeClient.connect(w.live.url, token=token(w, scope)) as c:
            await expect_error(c.frames(w.entity, 1, 8), Err.FORBIDDEN)


# The retired ``mint`` entity input (type 8; older chains' faucet): no node reads it
# now, so it is an unknown transaction type, refused before it costs anything.
OLD_MINT: list[object] = [8, [2, b"\x4d" * 32, 1, 10**6]]


async def test_nobody_outside_the_node_may_send_its_clock_or_mint(world: World) -> None:
    w = world
    async with await NodeClient.connect(w.live.url, token=w.live.token) as c:
        await expect_error(c.submit([Timeout(1, 0)], [w.a, w.entity]), Err.FORBIDDEN)
        await expect_error(c.request(Req.SUBMIT, [OLD_MINT], [w.a, w.entity]), Err.INVALID_TX)
        await expect_error(c.submit([batch(w)], [w.b, w.entity]), Err.UNKNOWN_ROUTE)
        await expect_error(
            c.request(Req.DELIVER, [w.a, w.entity, decode(batch(w).raw)]), Err.FORBIDDEN
        )


async def peer_hello(w: World, identity: Identity) -> tuple[ClientConnection, Reply]:
    ws = await connect(w.live.url)
    return ws, await handshake(ws, identity, Sender(SenderKind.SERVER, b"\x07" * 32))


def introduction(w: World, server: Identity) -> object:
    """Member A's binding of ``server``'s key, as that server introduces it (a DELIVER
    item): its consensus traffic for A's entities is taken from then on."""
    return decode(Tx.of(AnnounceBinding(sign_binding(SK_A, w.a, server.pubkey, 1))).raw)


async def test_peer_servers_authenticate_by_signature(world: World) -> None:
    w = world
    ident = Identity(bls.keygen(b"\x05" * 32))
    other = Identity(bls.keygen(b"\x06" * 32))
    ws = await connect(w.live.url)
    sender = Sender(SenderKind.SERVER, b"\x07" * 32)
    given, receiver = await challenge(ws, sender)
    forged = [ident.pubkey, given, receiver, other.hello(given, receiver)[3]]
    await ws.send(encode_request(Req.HELLO, 2, sender, (), forged))
    reply = await recv_reply(ws)
    assert error_of(reply) == (Err.UNAUTHORIZED, "peer HELLO signature does not verify")
    await ws.close()

    ws, reply = await peer_hello(w, ident)
    assert reply.type is Rep.WELCOME
    assert sorted(as_bytes(x, "signer") for x in as_list(reply.body[4], "signers")) == sorted(
        [w.a, w.b]
    )

    async def ask(req: Req, body: list[object], route: tuple[bytes, ...] = ()) -> Reply:
        await ws.send(encode_request(req, 2, sender, route, body))
        return await recv_reply(ws)

    reply = await ask(Req.SUBMIT, [decode(batch(w).raw)], (w.a, w.entity))
    assert error_of(reply)[0] is Err.FORBIDDEN  # peers use DELIVER, and only for some inputs
    timeout = decode(Tx.of(Timeout(1, 0)).raw)
    assert error_of(await ask(Req.DELIVER, [w.a, w.entity, timeout]))[0] is Err.FORBIDDEN
    assert error_of(await ask(Req.DELIVER, [w.a, w.entity, OLD_MINT]))[0] is Err.INVALID_TX
    unknown = await ask(Req.DELIVER, [w.b, w.entity, decode(batch(w).raw)])
    assert error_of(unknown)[0] is Err.UNKNOWN_ROUTE
    # Authenticated, it still speaks for no member of A's entity: refused.
    refused = await ask(Req.DELIVER, [w.a, w.entity, decode(batch(w).raw)])
    assert error_of(refused) == (
        Err.FORBIDDEN,
        f"this peer server speaks for no member of entity {w.entity.hex()[:16]}: only a"
        " server a member's agent bound may send its consensus traffic (introduce the"
        " binding with server_binding first)",
    )
    # A binding of another server's key is no introduction of this one.
    other_binding = introduction(w, other)
    not_its_own = await ask(Req.DELIVER, [w.a, w.entity, other_binding])
    assert error_of(not_its_own)[0] is Err.FORBIDDEN
    # Once it introduces A's binding of its key, its traffic for the entity is taken.
    introduced = await ask(Req.DELIVER, [w.a, w.entity, introduction(w, ident)])
    assert introduced.type is Rep.DELIVERED
    delivered = await ask(Req.DELIVER, [w.a, w.entity, decode(batch(w).raw)])
    assert delivered.type is Rep.DELIVERED
    info = await ask(Req.PEER_INFO, [])
    assert info.type is Rep.PEER_INFO
    await ws.close()


@pytest.fixture
async def simulation(tmp_path: Path) -> AsyncIterator[World]:
    """A simulation node hosting A (with its agent) and B; entity of A alone."""
    live = await start_live_node(tmp_path / "sim", NodeConfig(tick_ms=10, simulation=True))
    agent = Agent(SK_A, tmp_path / "guard")
    assert live.api.coordinator is not None
    live.api.coordinator.agents[agent.signer_id] = LocalAgent(agent)
    try:
        async with await NodeClient.connect(live.url, token=live.token) as admin:
            for sk in (SK_A, SK_B):
                await admin.submit([CreateSigner(bls.sk_to_pk(sk), bls.pop_prove(sk))])
            a = agent.signer_id
            config = Config((Member(bls.sk_to_pk(SK_A), 1),), 1, a)
            genesis = Genesis(config, b"\x01" * 32, (bls.pop_prove(SK_A),))
            receipts = await admin.submit([CreateEntity(genesis)], [a])
            assert receipts.receipts[0].error is None
        yield World(live, a, signer_id(bls.sk_to_pk(SK_B)), ent.entity_id_for(config, genesis.salt))
    finally:
        await stop_live_node(live)
        agent.close()


async def test_a_peer_cannot_forge_a_faucet(simulation: World) -> None:
    """On a simulation chain a faucet is worth forging. A peer may deliver it only as
    a batch its member signed: a legacy mint input, a batch claiming A but signed by
    B, and B's own batch (not a member) are refused at once, naming why, and change
    nothing; A's genuine batch, relayed by the same peer, credits the reserve."""
    w = simulation
    server = Identity(bls.keygen(b"\x05" * 32))
    ws, reply = await peer_hello(w, server)
    assert reply.type is Rep.WELCOME
    sender = Sender(SenderKind.SERVER, b"\x07" * 32)

    def faucet_batch(sk: int, signer: bytes) -> object:
        batch = ent.sign_batch(w.entity, sk, signer, 1, [Tx.of(Faucet(1, 10**6))])
        return decode(Tx.of(SubmitBatch(batch)).raw)

    async def deliver(rid: int, item: object) -> Reply:
        await ws.send(encode_request(Req.DELIVER, rid, sender, (), [w.a, w.entity, item]))
        return await recv_reply(ws)

    node = w.live.node
    # The peer relays for A: A bound it (introduced on this connection, and recorded).
    async with await NodeClient.connect(w.live.url, token=w.live.token) as c:
        _, recorded = await c.subscribe(Topic.COMMITS, [w.a, w.entity])
        assert (await deliver(99, introduction(w, server))).type is Rep.DELIVERED
        async with asyncio.timeout(DEADLINE_S):
            await recorded.get()
    held = node.state.replica(w.a, w.entity)
    assert held is not None
    assert [b.server_key for b in held.bindings] == [server.pubkey]
    before = (node.state.height, node.state.hash())
    assert error_of(await deliver(1, OLD_MINT)) == (
        Err.INVALID_TX,
        "unknown entity transaction type 8",
    )
    refused = [
        (
            faucet_batch(SK_B, w.a),
            f"batch signature does not verify under member {w.a.hex()[:16]}'s key",
        ),
        (faucet_batch(SK_B, w.b), f"batch from {w.b.hex()[:16]}, not a member of the entity"),
    ]
    for rid, (item, reason) in enumerate(refused, start=2):
        assert error_of(await deliver(rid, item)) == (Err.FORBIDDEN, reason)
    assert (node.state.height, node.state.hash()) == before  # not even a block

    async with await NodeClient.connect(w.live.url, token=w.live.token) as c:
        _, frames = await c.subscribe(Topic.COMMITS, [w.a, w.entity])
        assert (await deliver(9, faucet_batch(SK_A, w.a))).type is Rep.DELIVERED
        async with asyncio.timeout(DEADLINE_S):
            while (r := node.state.replica(w.a, w.entity)) is None or r.entity.height == 0:
                await frames.get()
    assert r.entity.reserve(1) == 10**6
    assert r.entity.nonce_of(w.a) == 1
    await ws.close()


async def test_consensus_messages_about_a_past_height_cost_no_block(simulation: World) -> None:
    """Round changes, pre-commits, commits and locks about a height the replica has
    committed, or a round it has left, change nothing in any block: the node answers
    DELIVERED and makes no block for them (a peer flooding old round changes made one
    block each). A round change the replica can use still makes one."""
    w = simulation
    node = w.live.node
    server = Identity(bls.keygen(b"\x05" * 32))
    ws, reply = await peer_hello(w, server)
    assert reply.type is Rep.WELCOME
    sender = Sender(SenderKind.SERVER, b"\x07" * 32)

    async def deliver(rid: int, tx: Tx) -> Reply:
        item = decode(tx.raw)
        await ws.send(encode_request(Req.DELIVER, rid, sender, (), [w.a, w.entity, item]))
        return await recv_reply(ws)

    introduced = Tx.of(AnnounceBinding(sign_binding(SK_A, w.a, server.pubkey, 1)))
    assert (await deliver(0, introduced)).type is Rep.DELIVERED
    async with await NodeClient.connect(w.live.url, token=w.live.token) as c:
        _, frames = await c.subscribe(Topic.COMMITS, [w.a, w.entity])
        batch = ent.sign_batch(w.entity, SK_A, w.a, 1, [Tx.of(ent.Increment(1))])
        assert (await deliver(1, Tx.of(SubmitBatch(batch)))).type is Rep.DELIVERED
        async with asyncio.timeout(DEADLINE_S):
            while (r := node.state.replica(w.a, w.entity)) is None or r.entity.height == 0:
                await frames.get()
        ((raw, cert),) = node.store.frames(w.entity, 1, 1)
        frame = Frame.decode(raw)
        signature = bls.sign(SK_A, frame.message(0))
        old = [
            signed_round_change(w, server, 1, 3),  # height 1 is committed
            Tx.of(Precommit(1, 0, frame.hash, w.a, signature)),
            Tx.of(Commit(frame, cert)),
            Tx.of(SeenLock(Lock(0, frame, Polka(0, b"\x01", signature)))),
        ]
        _, blocks = await c.subscribe(Topic.BLOCKS, [])
        before = (node.state.height, node.state.hash())
        for rid, tx in enumerate(old * 50, start=2):
            assert (await deliver(rid, tx)).type is Rep.DELIVERED
        assert (node.state.height, node.state.hash()) == before  # not one block
        assert blocks.empty()

        # A member's round change at the next height is news: a block takes it.
        news = signed_round_change(w, server, 2, 1)
        assert (await deliver(999, news)).type is Rep.DELIVERED
        async with asyncio.timeout(DEADLINE_S):
            await blocks.get()
        assert node.state.height == before[0] + 1
    await ws.close()


def signed_round_change(
    w: World, server: Identity, height: int, round_: int, *, member_sk: int = SK_A
) -> Tx:
    """Member A's round change as ``server`` sends it, under a binding by ``member_sk``
    (A's key for a genuine one) of ``server``'s identity key."""
    rc = RoundChange(height, round_, w.a, None)
    bound = sign_binding(member_sk, w.a, server.pubkey, 1)
    signature = bls.sign(server.secret_key, SignedRoundChange.message(w.entity, rc))
    return Tx.of(SignedRoundChange(rc, bound, signature))


async def test_a_peer_round_change_must_be_signed_by_the_members_bound_server(
    simulation: World,
) -> None:
    """Issue 13 item 1: a peer with a fresh identity key cannot forge a member's round
    change. Unsigned ones are the node's own; a signed one needs the member's binding of
    the sending server's key, and is refused before it costs a block."""
    w = simulation
    node = w.live.node
    hostile = Identity(bls.keygen(b"\x06" * 32))
    ws, reply = await peer_hello(w, hostile)
    assert reply.type is Rep.WELCOME
    sender = Sender(SenderKind.SERVER, b"\x07" * 32)  # as peer_hello gave it

    async def deliver(rid: int, tx: Tx) -> Reply:
        item = decode(tx.raw)
        await ws.send(encode_request(Req.DELIVER, rid, sender, (), [w.a, w.entity, item]))
        return await recv_reply(ws)

    before = (node.state.height, node.state.hash())
    unsigned = Tx.of(RoundChange(1, 21, w.a, None))
    assert error_of(await deliver(1, unsigned)) == (
        Err.FORBIDDEN,
        "peers may not send round_change",
    )
    forged = signed_round_change(w, hostile, 1, 21, member_sk=SK_B)  # not A's binding
    code, message = error_of(await deliver(2, forged))
    assert code is Err.FORBIDDEN
    assert "does not verify under member" in message, message
    # A genuine binding of another server, relayed by this one.
    other = Identity(bls.keygen(b"\x08" * 32))
    relayed = signed_round_change(w, other, 1, 21)
    assert error_of(await deliver(3, relayed)) == (
        Err.FORBIDDEN,
        "a round change comes only from the server its member's binding names",
    )
    assert (node.state.height, node.state.hash()) == before  # not even a block
    replica = node.state.replica(w.a, w.entity)
    assert replica is not None
    assert replica.round == 0
    assert replica.ahead == ()
    await ws.close()


async def test_an_agent_token_must_reach_its_signer(world: World) -> None:
    w = world
    ws = await connect(w.live.url)
    wrong = token(w, Scope("signer", w.b))
    await ws.send(encode_request(Req.HELLO, 1, Sender(SenderKind.AGENT, w.a), (), [wrong.encode()]))
    reply = await recv_reply(ws)
    assert error_of(reply)[0] is Err.UNAUTHORIZED
    await ws.close()
    coordinator = w.live.api.coordinator
    assert coordinator is not None
    assert w.a not in coordinator.agents


def test_entity_inputs_may_carry_frames_larger_than_a_transaction() -> None:
    """A commit of a frame with dozens of batches still crosses to a peer (issue found
    in review: entity inputs were capped like single transactions, at 4 KiB)."""
    from node.machines.frames import Certificate, Frame
    from node.machines.replica import Commit
    from node.txs import MAX_TX_BYTES, REGISTRIES, Level

    a = signer_id(bls.sk_to_pk(SK_A))
    batches = [
        ent.sign_batch(b"\x02" * 32, SK_A, a, n, [Tx.of(ent.Increment(1))]) for n in range(1, 41)
    ]
    frame = Frame.make(b"\x02" * 32, 1, b"\x00" * 32, batches, b"\x03" * 32)
    commit = Tx.of(Commit(frame, Certificate(0, b"\x01", b"\xc0" + b"\x00" * 95)))
    assert len(commit.raw) > MAX_TX_BYTES
    decoded = REGISTRIES[Level.ENTITY].decode(decode(commit.raw), commit.raw)
    assert decoded.body == commit.body


async def test_a_peer_delivers_a_members_signed_refusal_and_readers_see_it(world: World) -> None:
    """A member's signed refusal, delivered by a server that member bound, is kept
    beside the replica (no block) and read back by READ_ENTITY's refusals part; a
    forged one, one from a peer that speaks for no member, and a client's are refused."""
    w = world
    node = w.live.node
    frame_hash = b"\x5e" * 32
    genuine = sign_refusal(SK_A, w.a, w.entity, 2, 0, frame_hash, "accountant: limit: too much")
    forged = sign_refusal(SK_B, w.a, w.entity, 2, 0, frame_hash, "made up")

    async def deliver(ws: ClientConnection, rid: int, item: object) -> Reply:
        body = [w.a, w.entity, item]
        await ws.send(
            encode_request(Req.DELIVER, rid, Sender(SenderKind.SERVER, b"\x07" * 32), (), body)
        )
        return await recv_reply(ws)

    def as_input(r: Refusal) -> object:
        return decode(Tx.of(RefusalInput(r)).raw)

    stranger, _ = await peer_hello(w, Identity(bls.keygen(b"\x09" * 32)))
    code, message = error_of(await deliver(stranger, 1, as_input(genuine)))
    assert code is Err.FORBIDDEN
    assert "speaks for no member of entity" in message
    await stranger.close()

    server = Identity(bls.keygen(b"\x05" * 32))
    ws, _ = await peer_hello(w, server)
    assert (await deliver(ws, 1, introduction(w, server))).type is Rep.DELIVERED
    assert error_of(await deliver(ws, 2, as_input(forged))) == (
        Err.FORBIDDEN,
        f"refusal does not verify under member {w.a.hex()[:16]}'s key",
    )
    before = node.state.height
    assert (await deliver(ws, 3, as_input(genuine))).type is Rep.DELIVERED
    assert node.refusals.of_entity(w.entity) == [genuine]
    await ws.close()

    async with await NodeClient.connect(w.live.url, token=w.live.token) as c:
        reader = EntityReader(lambda: c)
        _, seen = await reader.refusals(w.a, w.entity)
        assert seen == [genuine]
        await expect_error(c.submit([RefusalInput(genuine)], [w.a, w.entity]), Err.FORBIDDEN)
    # The block that recorded the introduced binding, and none for the refusal.
    assert node.state.height <= before + 1
