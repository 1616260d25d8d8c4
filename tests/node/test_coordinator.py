"""The coordinator in one node process: local agents, a signer added by a proposal
joins the entity and catches up through certified frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.agent import Agent
from node.coordinator import Coordinator, LocalAgent
from node.crypto import bls
from node.machines import entity as ent
from node.machines.frames import Frame
from node.machines.governance import AddSigner, Config, Member
from node.machines.replica import Genesis, Replica, SubmitBatch
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity
from node.net.peers import PeerLink
from node.runtime import Node, NodeConfig
from node.storage import Store
from node.txs import Tx, TxBody

DEADLINE_S = 30.0


@dataclass
class Local:
    node: Node
    agents: list[Agent]
    blocks: asyncio.Queue[object]
    coordinator: Coordinator

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait, block by block, until ``done()``."""
        async with asyncio.timeout(DEADLINE_S):
            while not done():
                await self.blocks.get()

    def replica(self, i: int, entity: bytes) -> Replica | None:
        return self.node.state.replica(self.agents[i].signer_id, entity)


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    node = Node(Store(tmp_path / "chain"), NodeConfig(tick_ms=10))
    coordinator = Coordinator(node, round_timeout_ms=1000)
    agents = [Agent(bls.keygen(bytes([i + 1]) * 32), tmp_path / f"guard{i}") for i in range(3)]
    for agent in agents:
        coordinator.agents[agent.signer_id] = LocalAgent(agent)
    stop = asyncio.Event()
    run = asyncio.create_task(node.run(stop))
    sub = node.subscribe(None)
    try:
        for agent in agents:
            ack = await node.submit(
                (), [Tx.of(CreateSigner(agent.pubkey, agent.proof_of_possession()))]
            )
            assert ack.receipts[0].error is None
        yield Local(node, agents, sub.queue, coordinator)  # type: ignore[arg-type]
    finally:
        stop.set()
        await run
        await coordinator.close()
        node.close()
        for agent in agents:
            agent.close()


async def submit(local: Local, who: int, entity: bytes, nonce: int, body: TxBody) -> None:
    agent = local.agents[who]
    batch = agent.sign_batch(entity, nonce, [Tx.of(body)])
    ack = await local.node.submit((agent.signer_id, entity), [Tx.of(SubmitBatch(batch))])
    assert ack.receipts[0].error is None


async def test_a_signer_added_by_proposal_joins_and_catches_up(local: Local) -> None:
    a, b, c = local.agents
    config = Config((Member(a.pubkey, 1), Member(b.pubkey, 1)), 2, a.signer_id)
    genesis = Genesis(config, b"\x09" * 32, (a.proof_of_possession(), b.proof_of_possession()))
    ack = await local.node.submit((a.signer_id,), [Tx.of(CreateEntity(genesis))])
    assert ack.receipts[0].error is None
    entity = ent.entity_id_for(config, genesis.salt)
    await local.until(lambda: local.replica(1, entity) is not None)

    await submit(local, 0, entity, 1, ent.Increment(5))
    await submit(
        local, 0, entity, 2, ent.Propose(AddSigner(c.pubkey, c.proof_of_possession(), 1), 50)
    )
    await local.until(lambda: bool(local.replica(1, entity).entity.proposals))  # type: ignore[union-attr]
    await submit(local, 1, entity, 1, ent.Vote(1))

    # C was never in the genesis config: it is invited, and catches up from frame 1.
    def c_caught_up() -> bool:
        rc, ra = local.replica(2, entity), local.replica(0, entity)
        return rc is not None and ra is not None and rc.entity.hash == ra.entity.hash

    await local.until(c_caught_up)
    joined = local.replica(2, entity)
    assert joined is not None
    assert c.signer_id in joined.entity.config.index
    assert joined.entity.counter == 5
    # Every state C's catch-up committed is readable there by its hash (READ_ENTITY's
    # ``at``), also those a block committed together with the frames after them.
    frames = local.node.store.frames(entity, 1, joined.entity.height)
    assert len(frames) == joined.entity.height >= 3
    for raw, _ in frames:
        made = Frame.decode(raw).state_hash
        _, state = local.node.read_entity((c.signer_id, entity), made)
        assert state.hash == made

    # And C now signs as a member: its own batch is certified on all three replicas.
    await submit(local, 2, entity, 1, ent.Increment(1))
    await local.until(
        lambda: all(
            (r := local.replica(i, entity)) is not None and r.entity.counter == 6 for i in range(3)
        )
    )
    heads = {local.replica(i, entity).head for i in range(3)}  # type: ignore[union-attr]
    assert len(heads) == 1


async def test_a_tick_looks_only_at_replicas_with_work(local: Local) -> None:
    """Idle replicas (nothing pooled, in flight, locked or kept to resend) are not in
    the set a tick walks; a replica enters it with its first batch and leaves it once
    the batch is certified."""
    a = local.agents[0]
    entities = []
    for i in range(12):
        config = Config((Member(a.pubkey, 1),), 1, a.signer_id)
        genesis = Genesis(config, bytes([i + 1]) * 32, (a.proof_of_possession(),))
        ack = await local.node.submit((a.signer_id,), [Tx.of(CreateEntity(genesis))])
        assert ack.receipts[0].error is None
        entities.append(ent.entity_id_for(config, genesis.salt))
    await local.until(lambda: all(local.replica(0, e) is not None for e in entities))
    assert local.coordinator._active == set()

    busy = entities[5]
    await submit(local, 0, busy, 1, ent.Increment(3))
    # The block that pooled the batch is durable and stepped before the ack returns;
    # the frame needs the agent's signature, so it is not certified yet.
    assert local.coordinator._active == {(a.signer_id, busy)}
    await local.until(lambda: local.replica(0, busy).entity.counter == 3)  # type: ignore[union-attr]
    await local.until(lambda: not local.coordinator._active)
    assert all(local.replica(0, e).entity.counter == 0 for e in entities if e != busy)  # type: ignore[union-attr]


async def test_an_entitys_local_replicas_and_a_peers_entities_come_from_indexes(
    local: Local,
) -> None:
    """A proposal's fan-out and a catch-up find an entity's replicas hosted here, and a
    peer link's change the entities its signers are members of, by indexes kept from
    each block's changes, not by walking every signer and replica."""
    a, b, _ = local.agents
    remote_sk = bls.keygen(b"\x0c" * 32)
    remote = Member(bls.sk_to_pk(remote_sk), 1)
    shared_config = Config((Member(a.pubkey, 1), Member(b.pubkey, 1)), 2, a.signer_id)
    shared = Genesis(
        shared_config, b"\x01" * 32, (a.proof_of_possession(), b.proof_of_possession())
    )
    with_remote_config = Config((Member(a.pubkey, 1), remote), 2, a.signer_id)
    with_remote = Genesis(
        with_remote_config, b"\x02" * 32, (a.proof_of_possession(), bls.pop_prove(remote_sk))
    )
    solo_config = Config((Member(b.pubkey, 1),), 1, b.signer_id)
    solo = Genesis(solo_config, b"\x03" * 32, (b.proof_of_possession(),))
    for who, genesis in [(a, shared), (a, with_remote), (b, solo)]:
        ack = await local.node.submit((who.signer_id,), [Tx.of(CreateEntity(genesis))])
        assert ack.receipts[0].error is None
    ids = [ent.entity_id_for(g.config, g.salt) for g in (shared, with_remote, solo)]
    await local.until(lambda: local.replica(1, ids[0]) is not None)

    coordinator = local.coordinator
    assert [r.signer for r in coordinator._replicas_of(ids[0])] == sorted(
        [a.signer_id, b.signer_id]
    )
    assert [r.signer for r in coordinator._replicas_of(ids[1])] == [a.signer_id]
    assert [r.signer for r in coordinator._replicas_of(ids[2])] == [b.signer_id]
    assert coordinator._replicas_of(b"\x07" * 32) == []

    assert coordinator._syncing == set()
    coordinator._on_peer_change(PeerLink("ws://127.0.0.1:9", frozenset({remote.id})))
    assert coordinator._syncing == {ids[1]}  # only the entity the peer's signer is in
