"""READ_ENTITY end to end: a real node (simulation, one signer with its agent) whose
two entities hold a funded channel, read in parts over a real WebSocket by
:class:`node.net.entity_client.EntityReader`, which checks every proof and
certificate. A lying node is played by a client that alters the node's replies
on their way in (no node here lies on its own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from node.agent import Agent
from node.cli import describe_running
from node.codec import RlpItem, as_list, keccak
from node.coordinator import LocalAgent
from node.crypto import bls
from node.entity_reads import CHANNELS, FORWARDS, ProofError, UnverifiedRead, header_part
from node.evidence import Evidence, Signed
from node.machines import entity as ent
from node.machines.accounts import ChannelRecord, Faucet, OpenChannel, Pay
from node.machines.frames import Certificate, Frame, precommit_message
from node.machines.governance import AddSigner, Config, Member
from node.machines.replica import Genesis, SubmitBatch
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity
from node.net.client import NodeClient, NodeError
from node.net.entity_client import EntityReader
from node.net.protocol import Err, Rep, Reply, Req
from node.net.remote_map import is_partial, lazy_state
from node.runtime import RECENT_STATES, NodeConfig
from node.tokens import Scope
from node.txs import Tx
from tests.conftest import LiveNode, start_live_node, stop_live_node

SK = 303
ASSET = 1
DEADLINE_S = 30.0


@dataclass
class Pair:
    live: LiveNode
    signer: bytes
    config: Config
    e1: bytes
    e2: bytes
    nonces: dict[bytes, int]

    def entity(self, e: bytes) -> ent.EntityState:
        replica = self.live.node.state.replica(self.signer, e)
        assert replica is not None
        return replica.entity

    async def submit(self, entity: bytes, *txs: Any) -> None:
        self.nonces[entity] = self.nonces.get(entity, 0) + 1
        batch = ent.sign_batch(
            entity, SK, self.signer, self.nonces[entity], [Tx.of(t) for t in txs]
        )
        async with await NodeClient.connect(self.live.url, token=self.live.token) as c:
            receipts = await c.submit([SubmitBatch(batch)], [self.signer, entity])
        assert receipts.receipts[0].error is None

    async def until(self, done: Callable[[], bool]) -> None:
        sub = self.live.node.subscribe(None)
        try:
            async with asyncio.timeout(DEADLINE_S):
                while not done():
                    await sub.queue.get()
        finally:
            self.live.node.unsubscribe(sub)


def _funded(p: Pair) -> bool:
    """E1's side of the channel agrees on its collateral (it can pay)."""
    record = p.entity(p.e1).channel(p.e2)
    return record is not None and any(
        a.collateral_left + a.collateral_right == 5_000 for a in record.side.agreed.assets
    )


def _paid(p: Pair) -> bool:
    """E2's side of the channel agrees on the payment of 250."""
    record = p.entity(p.e2).channel(p.e1)
    return record is not None and any(abs(a.delta) == 250 for a in record.side.agreed.assets)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    live = await start_live_node(tmp_path / "node", NodeConfig(tick_ms=10, simulation=True))
    agent = Agent(SK, tmp_path / "guard")
    assert live.api.coordinator is not None
    live.api.coordinator.agents[agent.signer_id] = LocalAgent(agent)
    try:
        pk = bls.sk_to_pk(SK)
        config = Config((Member(pk, 1),), 1, agent.signer_id)
        async with await NodeClient.connect(live.url, token=live.token) as admin:
            await admin.submit([CreateSigner(pk, bls.pop_prove(SK))])
            for salt in (b"\x01" * 32, b"\x02" * 32):
                genesis = Genesis(config, salt, (bls.pop_prove(SK),))
                receipts = await admin.submit([CreateEntity(genesis)], [agent.signer_id])
                assert receipts.receipts[0].error is None
        e1, e2 = (ent.entity_id_for(config, s) for s in (b"\x01" * 32, b"\x02" * 32))
        p = Pair(live, agent.signer_id, config, e1, e2, {})
        await p.submit(
            e1, Faucet(ASSET, 10_000), ent.Propose(OpenChannel(e2, config, 0, ASSET, 5_000), 1000)
        )
        await p.submit(e2, ent.Propose(OpenChannel(e1, config, 0, ASSET, 0), 1000))
        await p.until(lambda: _funded(p))
        await p.submit(e1, Pay((e2,), ASSET, 250))
        await p.until(lambda: _paid(p))
        yield p
    finally:
        await stop_live_node(live)
        agent.close()


async def test_a_header_a_channel_and_pages_read_as_the_node_holds_them(pair: Pair) -> None:
    p = pair
    route = (p.signer, p.e1)
    async with await NodeClient.connect(p.live.url, token=p.live.token) as c:
        reader = EntityReader(lambda: c)
        header = await reader.header(p.signer, p.e1)
        at = header.hash
        _, state = p.live.node.read_entity(route, at)  # acks may still move E1 on
        assert header.height == state.height >= 2
        assert header.small.reserves == state.reserves
        assert header.small.nonces == state.nonces
        assert reader.pins[p.e1] == p.config
        h, record = await reader.channel(p.signer, p.e1, p.e2, at=at)
        assert h.hash == at
        assert isinstance(record, ChannelRecord)
        expected = state.channel(p.e2)
        assert expected is not None
        assert record.encoded == expected.encoded
        _, none = await reader.channel(p.signer, p.e1, keccak(b"a stranger"), at=at)
        assert none is None
        _, page = await reader.page(p.signer, p.e1, CHANNELS, at=at)
        assert [k for k, _ in page.records] == [p.e2]
        assert page.last
        _, forwards = await reader.page(p.signer, p.e1, FORWARDS, at=at)
        assert forwards.records == []
        whole = await reader.state(p.signer, p.e1)
        _, held = p.live.node.read_entity(route, whole.hash)
        assert whole.channels == held.channels
        assert whole.forwards == held.forwards
        assert whole.header == held.header


async def test_a_state_read_lazily_reads_its_maps_node_by_node(pair: Pair) -> None:
    """``lazy_state``: the certified header now, the maps as walks (off the loop)
    reach them, each node checked; the same records and roots as the node's state."""
    p = pair
    async with await NodeClient.connect(p.live.url, token=p.live.token) as c:
        reader = EntityReader(lambda: c)
        lazy = await lazy_state(reader, p.signer, p.e1)
        _, held = p.live.node.read_entity((p.signer, p.e1), lazy.hash)
        assert lazy.header == held.header
        assert len(lazy.channels) == len(held.channels) == 1
        assert len(lazy.forwards) == 0
        channels = await asyncio.to_thread(lambda: dict(lazy.channels.items()))
        assert channels == dict(held.channels.items())
        record = channels[p.e2]
        assert record.encoded == held.channel(p.e2).encoded  # type: ignore[union-attr]
        # A walk on the loop would wait for the loop itself: refused, clearly.
        fresh = await lazy_state(reader, p.signer, p.e1)
        with pytest.raises(RuntimeError, match="off its event loop"):
            fresh.channels.get(p.e2)
        assert is_partial(lazy)
        assert is_partial(fresh)
        # A small entity is read whole instead, when asked: a state to walk anywhere.
        whole = await lazy_state(reader, p.signer, p.e1, whole_up_to=10)
        assert not is_partial(whole)
        _, now = p.live.node.read_entity((p.signer, p.e1), whole.hash)  # acks move E1 on
        assert whole.channels == now.channels
        assert whole.channels.get(p.e2) == now.channel(p.e2)


async def test_an_older_state_reads_until_it_leaves_the_window(pair: Pair) -> None:
    p = pair
    async with await NodeClient.connect(p.live.url, token=p.live.token) as c:
        reader = EntityReader(lambda: c)
        old = await reader.header(p.signer, p.e1)
        await p.submit(p.e1, ent.Increment(1))
        await p.until(lambda: p.entity(p.e1).height > old.height)
        again = await reader.header(p.signer, p.e1, at=old.hash)
        assert again.hash == old.hash
        current = await reader.header(p.signer, p.e1)
        assert current.height > old.height
        for _ in range(RECENT_STATES):
            height = p.entity(p.e1).height
            await p.submit(p.e1, ent.Increment(1))
            await p.until(lambda h=height: p.entity(p.e1).height > h)  # type: ignore[misc]
        with pytest.raises(NodeError) as info:
            await reader.header(p.signer, p.e1, at=old.hash)
        assert info.value.code is Err.NOT_FOUND


async def test_bad_requests_get_clear_errors(pair: Pair) -> None:
    p = pair
    route = [p.signer, p.e1]
    async with await NodeClient.connect(p.live.url, token=p.live.token) as c:
        for body, code in (
            ([3, b""], Err.MALFORMED),
            ([0], Err.MALFORMED),
            ([0, b"\x01" * 31], Err.MALFORMED),
            ([1, b"", 2, p.e2], Err.MALFORMED),
            ([1, b"", 0, p.e2[:31]], Err.MALFORMED),
            ([2, b"", 0, b"", 0], Err.MALFORMED),
            ([2, b"", 0, b"", 257], Err.MALFORMED),
            ([2, b"", 0, keccak(b"not a key here"), 4], Err.NOT_FOUND),
            ([6, b""], Err.MALFORMED),
            ([4, b"", 0], Err.MALFORMED),
            ([3, b"", 0, p.e2[:31], 1, keccak(b"x")], Err.MALFORMED),
            ([3, b"", 0, p.e2, 1 << 64, keccak(b"x")], Err.MALFORMED),
            ([3, b"", 2, p.e2, 1, keccak(b"x")], Err.MALFORMED),
            ([3, b"", 0, p.e2, 1, keccak(b"no such node")], Err.NOT_FOUND),
        ):
            with pytest.raises(NodeError) as info:
                await c.request(Req.READ_ENTITY, body, route)
            assert info.value.code is code, (body, info.value)
        for bad_route in ([p.signer], [p.signer, keccak(b"no such entity")]):
            with pytest.raises(NodeError) as info:
                await c.request(Req.READ_ENTITY, [0, b""], bad_route)
            assert info.value.code is Err.UNKNOWN_ROUTE
    other, _ = p.live.tokens.create(Scope("entity", p.e2), "e2 only")
    async with await NodeClient.connect(p.live.url, token=other) as c:
        with pytest.raises(NodeError) as info:
            await c.request(Req.READ_ENTITY, [0, b""], route)
        assert info.value.code is Err.FORBIDDEN


class LyingClient(NodeClient):
    """Alters ENTITY replies, and may answer GET_FRAMES with frames of its own, as a
    lying node would."""

    alter: Callable[[list[RlpItem]], list[RlpItem]] = staticmethod(lambda b: b)
    forged_frames: list[tuple[bytes, Certificate]] | None = None

    async def request(self, req_type: Req, body: list[Any], route: Any = ()) -> Reply:
        reply = await super().request(req_type, body, route)
        if reply.type is Rep.ENTITY:
            return Reply(reply.type, reply.request_id, self.alter(list(reply.body)))
        return reply

    async def frames(
        self, entity: bytes, start_height: int, max_count: int
    ) -> list[tuple[bytes, Certificate]]:
        if self.forged_frames is not None:
            return self.forged_frames
        return await super().frames(entity, start_height, max_count)


def _with(body: list[RlpItem], index: int, value: RlpItem) -> list[RlpItem]:
    return [*body[:index], value, *body[index + 1 :]]


def _forged_frame(state: ent.EntityState, sk: int) -> tuple[bytes, Certificate]:
    """A frame at the state's height naming it, its certificate signed by ``sk`` alone
    as member 0: what a node holding that key could make up."""
    frame = Frame.make(state.entity_id, state.height, keccak(b"some parent"), [], state.hash)
    return frame.raw, Certificate(0, b"\x01", bls.sign(sk, frame.message(0)))


async def test_a_lying_node_is_caught(pair: Pair) -> None:
    p = pair
    honest = p.entity(p.e1)
    replica = p.live.node.state.replica(p.signer, p.e1)
    assert replica is not None
    genesis = replica.genesis.to_tree()
    c = await LyingClient.connect(p.live.url, token=p.live.token)
    try:
        reader = EntityReader(lambda: c)

        # a record of another channel (the other entity's side) in place of ours
        other = p.entity(p.e2).channel(p.e1)
        assert other is not None
        c.alter = lambda b: _with(b, 3, [[other.encoded], as_list(b[3], "r")[1]])
        with pytest.raises(ProofError, match="does not hold"):
            await reader.channel(p.signer, p.e1, p.e2)

        # our channel said to be absent
        c.alter = lambda b: _with(b, 3, [[], as_list(b[3], "r")[1]])
        with pytest.raises(ProofError, match="does not hold"):
            await reader.channel(p.signer, p.e1, p.e2)

        # a page that leaves our only channel out
        c.alter = lambda b: _with(b, 3, [[], []])
        with pytest.raises(ProofError, match="empty first page"):
            await reader.page(p.signer, p.e1, CHANNELS)

        # a richer reserve: the certified frame names another header
        richer = replace(honest, reserves=((ASSET, 10**9),))
        c.alter = lambda b: _with(b, 2, header_part(genesis, richer))
        reader = EntityReader(lambda: c)  # nothing cached as certified
        with pytest.raises(ProofError, match="does not name the header"):
            await reader.header(p.signer, p.e1)

        # ... and with a frame made up to name it, signed by a key the entity never had
        stranger_sk = 909
        stranger_pk = bls.sk_to_pk(stranger_sk)
        stranger = Config((Member(stranger_pk, 1),), 1, keccak(stranger_pk))
        c.forged_frames = [_forged_frame(richer, stranger_sk)]
        with pytest.raises(ProofError, match="certificate"):
            await reader.header(p.signer, p.e1)

        # honest: believed, and its config pinned
        c.alter = lambda b: b
        c.forged_frames = None
        assert (await reader.header(p.signer, p.e1, at=honest.hash)).hash == honest.hash
        assert reader.pins[p.e1] == p.config

        # a config said to have changed at a frame the reader never saw, signed by it:
        # the frame that changed it must be certified by the pinned config
        moved = replace(honest, config=stranger, config_height=1)
        c.alter = lambda b: _with(b, 2, header_part(genesis, moved))
        c.forged_frames = [_forged_frame(moved, stranger_sk)]
        with pytest.raises(UnverifiedRead, match="is not frame 1"):
            await reader.header(p.signer, p.e1)
        assert p.e1 not in reader.pins  # unpinned: the next read starts from first use

        # a config said to change at this very frame: the one before must sign it
        now = replace(honest, config=stranger, config_height=honest.height)
        c.alter = lambda b: _with(b, 2, header_part(genesis, now))
        c.forged_frames = [_forged_frame(now, stranger_sk)]
        with pytest.raises(UnverifiedRead, match="the config before it is not known"):
            await reader.header(p.signer, p.e1)
        reader.pins[p.e1] = p.config
        with pytest.raises(ProofError, match="certificate"):
            await reader.header(p.signer, p.e1)

        # with nothing pinned, a config set before this frame is taken on first use
        # (checked only under itself: the documented limit of a first contact)
        fresh = EntityReader(lambda: c)
        c.alter = lambda b: _with(b, 2, header_part(genesis, moved))
        c.forged_frames = [_forged_frame(moved, stranger_sk)]
        assert (await fresh.header(p.signer, p.e1)).small.config == stranger
        assert fresh.pins[p.e1] == stranger

        # honest again: believed, and the cache of certified states holds it
        c.alter = lambda b: b
        c.forged_frames = None
        assert (await reader.header(p.signer, p.e1, at=honest.hash)).hash == honest.hash

        # equivocation evidence: a forged record, and one about another entity, are
        # left out; a genuine one is believed
        def pair_of(entity: bytes, height: int, second_sk: int) -> Evidence:
            one, two = b"\xaa" * 32, b"\xbb" * 32
            return Evidence.of(
                entity,
                height,
                0,
                bls.sk_to_pk(SK),
                Signed(one, bls.sign(SK, precommit_message(entity, height, 0, one))),
                Signed(two, bls.sign(second_sk, precommit_message(entity, height, 0, two))),
            )

        genuine, forged = pair_of(p.e1, 3, SK), pair_of(p.e1, 4, stranger_sk)
        elsewhere = pair_of(p.e2, 3, SK)
        records: list[RlpItem] = [forged.to_tree(), elsewhere.to_tree(), genuine.to_tree()]
        c.alter = lambda b: _with(b, 3, records)
        _, found = await reader.evidence(p.signer, p.e1)
        assert found == [genuine]
        c.alter = lambda b: b
        _, found = await reader.evidence(p.signer, p.e1)
        assert found == []  # this node saw no equivocation
    finally:
        await c.close()


async def test_inspect_reads_a_running_node_in_proven_parts(pair: Pair) -> None:
    """``xln-node inspect`` on a running node: lists, certified headers and each
    entity's first channels, as the node holds them, without a whole replica."""
    p = pair
    route = (p.signer, p.e1)
    async with await NodeClient.connect(p.live.url, token=p.live.token) as c:
        info = await describe_running(c)
    assert info["height"] >= 1
    assert info["blocks"] == info["height"]
    (signer,) = info["signers"]
    assert signer["id"] == p.signer.hex()
    entities = {e["id"]: e for e in signer["entities"]}
    assert set(entities) == {p.e1.hex(), p.e2.hex()}
    e1 = entities[p.e1.hex()]
    _, held = p.live.node.read_entity(route, bytes.fromhex(e1["state_hash"]))  # kept by hash
    assert e1["height"] == held.height
    assert e1["reserves"] == {str(a): str(n) for a, n in held.reserves}
    assert [c["peer"] for c in e1["channels"]] == [p.e2.hex()]
    assert e1["more_channels"] is False
    assert e1["last_certificate"] is not None
    frames = p.live.node.store.frames(p.e1, held.height, 1)
    (frame_raw, _), *_ = frames
    assert e1["head"] == keccak(frame_raw).hex()
    assert "round" not in e1  # a replica's own consensus state is not read this way
    assert info["evidence"] == []  # no member equivocated


async def test_a_reader_follows_a_config_change_and_a_new_one_takes_it_on_first_use(
    pair: Pair,
) -> None:
    """An entity of A's (10 shares, threshold 6) adds a second signer with 1 share (A
    alone still meets the threshold). A reader that trusted the old config follows
    the change through the frame that made it, certified by the old config; a
    reader that never saw the entity takes the new config on first use."""
    p = pair
    pk = bls.sk_to_pk(SK)
    config = Config((Member(pk, 10),), 6, p.signer)
    salt = b"\x03" * 32
    async with await NodeClient.connect(p.live.url, token=p.live.token) as c:
        receipts = await c.submit(
            [CreateEntity(Genesis(config, salt, (bls.pop_prove(SK),)))], [p.signer]
        )
        assert receipts.receipts[0].error is None
        e3 = ent.entity_id_for(config, salt)
        await p.submit(e3, ent.Increment(1))
        await p.until(lambda: p.entity(e3).height >= 1)
        before = EntityReader(lambda: c)
        await before.header(p.signer, e3)
        assert before.pins[e3] == config
        other_sk = 404
        other_pk = bls.sk_to_pk(other_sk)
        await p.submit(e3, ent.Propose(AddSigner(other_pk, bls.pop_prove(other_sk), 1), 1000))
        await p.until(lambda: len(p.entity(e3).config.members) == 2)
        changed_at = p.entity(e3).config_height
        await p.submit(e3, ent.Increment(1))  # a frame after the change
        await p.until(lambda: p.entity(e3).height > changed_at)
        header = await before.header(p.signer, e3)
        assert header.small.config_height == changed_at < header.height
        assert len(before.pins[e3].members) == 2
        after = EntityReader(lambda: c)
        again = await after.header(p.signer, e3, at=header.hash)
        assert again.hash == header.hash
        assert after.pins[e3] == before.pins[e3]
