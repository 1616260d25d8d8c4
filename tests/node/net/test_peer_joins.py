"""A peer's join_entity needs the certified frame that added the signer, and is capped
per peer and at once (node/join_proof.py, node/net/limits.py).

A real server on 127.0.0.1 hosting one signer, with a peer link (``--peer``) to a
real WebSocket server written for the test: the frame source. It answers
CHALLENGE (naming the hostile peer's id as its own), HELLO, PEER_INFO and
GET_FRAMES with the certified frames it is given, and counts the GET_FRAMES.
The hostile peer, with a real identity key (CHALLENGE and HELLO), delivers
join_entity naming a height; the node fetches the frames up to it from its link,
verifies each (certificate, execution, state hash) from the genesis the join
carries, and queues the join only if the named frame made the signer a member.

The entities are made up (one member whose key the test holds, 2 shares of
threshold 2), with frames made and certified by that member: a frame whose
``add_signer`` adds the hosted signer is a proof; a frame that adds another key,
a certificate by another key, no frames at all, a height past the bound, or no
height are refused with a clear error, and nothing changes. The caps: per peer
(refused proofs count), at once across peers, and the copies of one join share
one check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from node.codec import (
    ZERO_HASH,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    decode,
    encode_list,
    encode_tree,
    encode_uint,
)
from node.coordinator import Coordinator
from node.crypto import bls
from node.identity import Identity
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.frames import Certificate, Frame, bitfield
from node.machines.governance import AddSigner, Config, Member, signer_id
from node.machines.server import CreateSigner
from node.machines.signer import JoinEntity
from node.net import limits
from node.net.peers import PeerNetwork
from node.net.protocol import (
    PROTOCOL_VERSION,
    Err,
    Rep,
    Reply,
    Req,
    decode_request,
    encode_reply,
    encode_request,
    error_of,
)
from node.net.server import ApiServer
from node.runtime import Node, NodeConfig
from node.storage import Store
from node.tokens import TokenStore
from node.txs import REGISTRIES, Level, Tx, TxBody
from tests.conftest import recv_reply
from tests.node.net.peer_hello import handshake, sender_of

DEADLINE_S = 20
SK_S = 303  # the hosted signer
SIGNER_PK = bls.sk_to_pk(SK_S)
SIGNER = signer_id(SIGNER_PK)
PEER = Identity(bls.keygen(b"\x0c" * 32))
OTHER_PEER = Identity(bls.keygen(b"\x0d" * 32))
NODE_IDENTITY = Identity(bls.keygen(b"\x0e" * 32))
OTHER_SK = 404  # a key that is not the hosted signer's


@dataclass
class MadeUp:
    """An entity of one member (key ``sk``) and its certified frames."""

    sk: int
    salt: int
    frames: list[tuple[Frame, Certificate]] = field(default_factory=list)

    def __post_init__(self) -> None:
        member = Member(bls.sk_to_pk(self.sk), 2)
        self.genesis = rep.Genesis(
            Config((member,), 2, member.id),
            self.salt.to_bytes(32, "big"),
            (bls.pop_prove(self.sk),),
        )
        self.replica = rep.create(member.id, self.genesis)

    @property
    def entity_id(self) -> bytes:
        return self.replica.entity_id

    def add(self, body: TxBody, *, cert_sk: int | None = None) -> Frame:
        """Frame the member's batch of ``body`` at the next height, certify it (by
        ``cert_sk`` if given: a certificate that does not verify) and apply it."""
        r = self.replica
        member = r.entity.config.members[0].id
        batch = ent.sign_batch(r.entity_id, self.sk, member, r.next_height, [Tx.of(body)])
        post, events = ent.execute(r.entity, [batch], verify=False)
        frame = Frame.make(
            r.entity_id, r.next_height, r.head, [batch], post.hash, outbox=events.outbox
        )
        sk = cert_sk or self.sk
        outbox = tuple(bls.sign(sk, o.hash) for o in frame.outbox)  # a new config's notice
        cert = Certificate(0, bitfield([0], 1), bls.sign(sk, frame.message(0)), outbox)
        self.frames.append((frame, cert))
        if cert_sk is None:
            self.replica, _ = rep.step(r, [Tx.of(rep.Commit(frame, cert))])
            assert self.replica.next_height == frame.height + 1
        return frame

    def join(self, height: int | None = None) -> JoinEntity:
        return JoinEntity(self.genesis, len(self.frames) if height is None else height)


def adds(pubkey: bytes, sk: int) -> TxBody:
    return ent.Propose(AddSigner(pubkey, bls.pop_prove(sk), 1), 1000)


@dataclass
class FrameSource:
    """The peer server the node links to: it serves the frames of ``entities``."""

    entities: dict[bytes, MadeUp] = field(default_factory=dict)
    asked: int = 0  # GET_FRAMES answered
    hold: asyncio.Event = field(default_factory=asyncio.Event)  # GET_FRAMES wait for it
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    waiting: int = 0  # GET_FRAMES held
    asking: asyncio.Event = field(default_factory=asyncio.Event)  # set at each GET_FRAMES

    def __post_init__(self) -> None:
        self.hold.set()

    async def serve(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                assert isinstance(frame, bytes)
                req = decode_request(frame, limits=limits.REQUEST)
                rid = req.request_id
                if req.type is Req.CHALLENGE:
                    # It claims the hostile peer's id: the node asks it first.
                    body = [PROTOCOL_VERSION, b"\x01" * 32, PEER.id]
                    await ws.send(encode_reply(Rep.CHALLENGE, rid, body))
                elif req.type is Req.HELLO:
                    body = [PROTOCOL_VERSION, b"peer", PEER.id, 1, []]
                    await ws.send(encode_reply(Rep.WELCOME, rid, body))
                elif req.type is Req.PEER_INFO:
                    await ws.send(encode_reply(Rep.PEER_INFO, rid, [[]]))
                elif req.type is Req.GET_FRAMES:
                    task = asyncio.ensure_future(self._frames(ws, rid, req.body))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def _frames(self, ws: ServerConnection, rid: int, body: list[RlpItem]) -> None:
        self.waiting += 1
        self.asking.set()
        await self.hold.wait()
        self.waiting -= 1
        entity = as_bytes(body[0], "entity")
        first, count = as_int(body[1], "from"), as_int(body[2], "count")
        made = self.entities.get(entity)
        pairs = made.frames[first - 1 : first - 1 + count] if made else []
        page = encode_list([encode_list([f.raw, c.raw]) for f, c in pairs])
        self.asked += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(
                encode_list([encode_uint(Rep.FRAMES), encode_uint(rid), encode_list([page])])
            )


@dataclass
class Live:
    node: Node
    api: ApiServer
    url: str
    source: FrameSource


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    source = FrameSource()
    async with serve(source.serve, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        data = tmp_path / "data"
        node = Node(Store(data / "chain"), NodeConfig(tick_ms=10))
        peers = PeerNetwork([f"ws://127.0.0.1:{port}"], NODE_IDENTITY)
        up = asyncio.Event()
        peers.on_change.append(lambda _: up.set())  # the link is up
        coordinator = Coordinator(node, peers)
        api = ApiServer(node, TokenStore(data), ZERO_HASH, coordinator=coordinator)
        listen = await api.listen_tcp("127.0.0.1", 0)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        peers.start()
        try:
            ack = await node.submit((), [Tx.of(CreateSigner(SIGNER_PK, bls.pop_prove(SK_S)))])
            assert ack.receipts[0].error is None
            async with asyncio.timeout(DEADLINE_S):
                await up.wait()
            yield Live(node, api, f"ws://127.0.0.1:{listen}", source)
        finally:
            await peers.close()
            stop.set()
            await asyncio.wait_for(task, 30)
            await coordinator.close()
            await api.close()
            node.close()


async def deliver(ws: ClientConnection, identity: Identity, rid: int, join: JoinEntity) -> Reply:
    await send_join(ws, identity, rid, join)
    return await recv_reply(ws, DEADLINE_S)


async def send_join(ws: ClientConnection, identity: Identity, rid: int, join: JoinEntity) -> None:
    body = [SIGNER, b"", decode(Tx.of(join).raw)]
    await ws.send(encode_request(Req.DELIVER, rid, sender_of(identity), (), body))


def held(node: Node) -> frozenset[bytes]:
    return frozenset(node.state.by_id[SIGNER].by_entity)


async def until_held(node: Node, entity: bytes) -> None:
    """Wait, block by block, until the signer holds ``entity``."""
    blocks = node.subscribe(None)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while entity not in held(node):
                await blocks.queue.get()
    finally:
        node.unsubscribe(blocks)


def proof(source: FrameSource, salt: int, before: int = 0) -> MadeUp:
    """A made-up entity whose frame ``before + 1`` adds the hosted signer, served."""
    made = MadeUp(9000 + salt, salt)
    for n in range(before):
        made.add(ent.Increment(n + 1))
    made.add(adds(SIGNER_PK, SK_S))
    source.entities[made.entity_id] = made
    return made


async def test_a_join_with_the_frame_that_added_the_signer_makes_the_replica(live: Live) -> None:
    made = proof(live.source, 1, before=2)
    async with connect(live.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        assert (await deliver(ws, PEER, 3, made.join())).type is Rep.DELIVERED
        await until_held(live.node, made.entity_id)
        # Again, once held: answered, no check, no block.
        before = (live.node.state.height, live.node.state.hash(), live.source.asked)
        assert (await deliver(ws, PEER, 4, made.join())).type is Rep.DELIVERED
        assert (live.node.state.height, live.node.state.hash(), live.source.asked) == before
    replica = live.node.state.replica(SIGNER, made.entity_id)
    assert replica is not None
    assert replica.genesis == made.genesis


def refused(reply: Reply, reason: str) -> None:
    assert error_of(reply) == (Err.FORBIDDEN, f"join_entity refused: {reason}")


async def test_joins_without_proof_are_refused_and_change_nothing(live: Live) -> None:
    node, source = live.node, live.source
    # A made-up entity whose frames nobody serves.
    unknown = MadeUp(9100, 100)
    unknown.add(adds(SIGNER_PK, SK_S))
    # A frame that adds another key, not the hosted signer.
    other = MadeUp(9101, 101)
    other.add(adds(bls.sk_to_pk(OTHER_SK), OTHER_SK))
    source.entities[other.entity_id] = other
    # A frame that adds the signer, certified by another key than the member's.
    forged = MadeUp(9102, 102)
    forged.add(adds(SIGNER_PK, SK_S), cert_sk=OTHER_SK)
    source.entities[forged.entity_id] = forged
    # The signer was added at height 2: height 1 is not the frame that added it.
    early = proof(source, 103, before=1)
    # A genesis proof of possession that does not verify.
    made = proof(source, 104)
    bad_pop = JoinEntity(
        rep.Genesis(made.genesis.config, made.genesis.salt, (bls.pop_prove(OTHER_SK),)), 1
    )
    live.api.joins = limits.JoinQuota(per_window=100)
    before = (node.state.height, node.state.hash())
    async with connect(live.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        reply = await deliver(ws, PEER, 3, unknown.join())
        assert error_of(reply)[0] is Err.FORBIDDEN
        assert error_of(reply)[1].startswith(
            "join_entity refused: no certified frame at height 1 of that entity: "
        )
        refused(
            await deliver(ws, PEER, 4, other.join()),
            "the frame at height 1 does not make the signer a member",
        )
        reply = await deliver(ws, PEER, 5, forged.join())
        assert error_of(reply)[1].endswith(": commit refused: aggregate signature does not verify")
        refused(
            await deliver(ws, PEER, 6, early.join(1)),
            "the frame at height 1 does not make the signer a member",
        )
        # Past the frames there are: the source serves none at height 3.
        reply = await deliver(ws, PEER, 7, early.join(3))
        assert error_of(reply)[1].startswith(
            "join_entity refused: no certified frame at height 3 of that entity: ws://"
        )
        assert error_of(reply)[1].endswith(": none served")
        refused(await deliver(ws, PEER, 8, bad_pop), "genesis: invalid proof of possession")
        asked = source.asked
        past = limits.MAX_JOIN_PROOF_FRAMES + 1
        refused(
            await deliver(ws, PEER, 9, made.join(past)),
            f"the frame that added the signer is at height {past}; a join is checked up to"
            f" height {limits.MAX_JOIN_PROOF_FRAMES} (the signer can find its entities"
            " with FIND_ENTITIES)",
        )
        no_height = await deliver(ws, PEER, 10, JoinEntity(made.genesis))
        assert error_of(no_height) == (
            Err.FORBIDDEN,
            "join_entity refused: a peer's join_entity must name the certified frame that"
            " added the signer ([config, salt, pops, height])",
        )
        assert source.asked == asked  # neither cost a fetch
    assert (node.state.height, node.state.hash()) == before
    assert held(node) == frozenset()
    assert node.inbox_size == 0


async def test_joins_are_capped_per_peer_and_at_once(live: Live) -> None:
    node, source = live.node, live.source
    live.api.joins = limits.JoinQuota(per_window=3, in_flight=2)
    nothing = [MadeUp(9200 + n, 200 + n) for n in range(3)]
    for made in nothing:
        made.add(adds(SIGNER_PK, SK_S))  # certified, but nobody serves it
    good = [proof(source, 300 + n) for n in range(4)]
    async with connect(live.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
        # Refused proofs count against the peer's window.
        for rid, made in enumerate(nothing, start=3):
            assert error_of(await deliver(ws, PEER, rid, made.join()))[0] is Err.FORBIDDEN
        asked = source.asked
        busy = await deliver(ws, PEER, 10, good[0].join())
        assert error_of(busy) == (
            Err.BUSY,
            f"a peer may have at most 3 join_entity accepted per"
            f" {limits.PEER_JOIN_WINDOW_S:g} s; try again later",
        )
        assert source.asked == asked  # past its cap: nothing fetched

    # At once: while two checks wait for their frames, a third join is BUSY, and a
    # copy of one being checked shares its check.
    live.api.joins = limits.JoinQuota()
    source.hold.clear()
    async with connect(live.url) as a, connect(live.url) as b:
        assert (await handshake(a, PEER)).type is Rep.WELCOME
        assert (await handshake(b, OTHER_PEER)).type is Rep.WELCOME
        await send_join(a, PEER, 3, good[0].join())
        await send_join(a, PEER, 4, good[1].join())
        async with asyncio.timeout(DEADLINE_S):
            while source.waiting < 2:
                source.asking.clear()
                await source.asking.wait()
        third = await deliver(b, OTHER_PEER, 3, good[2].join())
        assert error_of(third) == (
            Err.BUSY,
            f"the node checks at most {limits.MAX_JOIN_PROOFS_AT_ONCE} join_entity proofs"
            " at once; try again later",
        )
        await send_join(b, OTHER_PEER, 4, good[0].join())  # a copy: shares the check
        assert node.inbox_size == 0
        assert held(node) == frozenset()
        asked = source.asked
        source.hold.set()
        replies = {(await recv_reply(a)).request_id for _ in range(2)}
        assert replies == {3, 4}
        assert (await recv_reply(b)).type is Rep.DELIVERED
        assert source.asked == asked + 2  # one fetch per check
        for made in good[:2]:
            await until_held(node, made.entity_id)
        assert good[2].entity_id not in held(node)


def test_the_join_quota_bounds_in_flight_and_forgets_after_its_window() -> None:
    now = [0.0]
    quota = limits.JoinQuota(per_window=3, window_s=10.0, in_flight=2, clock=lambda: now[0])
    peer, other = b"p" * 48, b"q" * 48
    quota.take(peer)
    quota.take(peer)
    in_flight = quota.refusal(peer)
    assert in_flight is not None
    assert "at most 2 join_entity checked or queued at once" in in_flight
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


def test_join_entity_encodes_with_its_height_or_none() -> None:
    """``[config, salt, pops, height]`` from a peer; ``[config, salt, pops]`` (the node's
    own, after a restore, and what older blocks hold) decodes with height 0; a height
    of 0 written out is not canonical and does not decode."""
    genesis = MadeUp(9300, 400).genesis
    registry = REGISTRIES[Level.SIGNER]
    for join, size in ((JoinEntity(genesis), 3), (JoinEntity(genesis, 7), 4)):
        raw = Tx.of(join).raw
        item = decode(raw)
        assert isinstance(item, list)
        assert len(item) == 1 + size
        assert registry.decode(item, raw).body == join
    zero = decode(Tx.of(JoinEntity(genesis)).raw)
    assert isinstance(zero, list)
    with pytest.raises(DecodeError, match="join_entity height"):
        registry.decode([*zero, b""], encode_tree([*zero, b""]))
    with pytest.raises(DecodeError, match=r"join_entity: expected \[config, salt, pops\]"):
        registry.decode(zero[:3], encode_tree(zero[:3]))
