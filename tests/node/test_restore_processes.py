"""A restore across real node processes: the signer's entities are found through the
peers, and the restored signer never signs twice.

Three ``xln-node run`` processes; a 4-member entity with threshold 3 (one share
each: k0 and k3 on server 0, k1 on server 1, k2 on server 2), k0 proposing. With
the agents of k2 and k3 stopped, k0 and k1 pre-commit a frame at height 2 that
cannot be certified. Server 1 is SIGKILLed and its data folder and k1's guard
are lost. A new server 1 at the same URL hosts k1 again with a restored agent
(in this process, so the test can also ask it directly): FIND_ENTITIES finds the
entity through the peers, the agent takes the floor 2 before the replica exists,
and it refuses a different frame at height 2. Once k2 and k3 are back, height 2
is certified without k1. With k2's agent stopped again, height 3 needs k1's
share: the restored signer signs it, and its signature is in the certificate.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node import identity as node_identity
from node.agent import Agent, Refused
from node.cluster import PASSWORD, Cluster, SignerKey
from node.codec import keccak
from node.machines import entity as ent
from node.machines.frames import Frame, signers_of
from node.machines.replica import Replica
from node.memberships import FindResult
from node.net.agent_client import AgentStats, serve_agent
from node.net.client import NodeError
from node.net.protocol import Topic
from node.tokens import Scope, TokenStore

DEADLINE_S = 60.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(
        tmp_path, servers=3, signers=4, tick_ms=50, round_timeout_ms=1000, external_agents=True
    )
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def until_replica(cluster: Cluster, key: SignerKey, entity: bytes, done: object) -> Replica:
    """Until ``key``'s replica satisfies ``done`` (a predicate), woken by each block."""
    assert callable(done)
    client = cluster.client(cluster.servers[key.server])
    sub, queue = await client.subscribe(Topic.BLOCKS)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                r = await cluster.replica(key, entity)
                if r is not None and done(r):
                    return r
                await queue.get()
    finally:
        await client.unsubscribe(sub)


async def stop_agent(cluster: Cluster, key: SignerKey) -> None:
    proc = cluster.agents.pop(key.index)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def find(
    cluster: Cluster, key: SignerKey, peers: int, serving: asyncio.Task[None]
) -> FindResult:
    """FIND_ENTITIES until the agent is connected and ``peers`` peers answered
    (``serving``: the agent's task; if it ended, its error is raised)."""
    client = cluster.client(cluster.servers[key.server])
    deadline = time.monotonic() + DEADLINE_S
    while True:
        if serving.done():
            serving.result()
            raise AssertionError("the restored agent stopped")
        try:
            result = await client.find_entities(key.id)
            if result.answered >= peers:
                return result
        except NodeError as exc:
            if "not connected" not in str(exc):
                raise
        assert time.monotonic() < deadline, "FIND_ENTITIES never reached the peers"
        await asyncio.sleep(0.1)  # the agent's and the peers' links are being made


async def test_restore_finds_the_entity_and_never_signs_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    k0, k1, k2, k3 = cluster.keys  # servers 0, 1, 2, 0
    entity = await cluster.create_entity(cluster.keys, [1] * 4, 3, proposer=0)
    batch = await cluster.submit(k1, entity, [ent.Increment(1)])
    routes = [(k.id, entity) for k in cluster.keys]
    assert await cluster.wait_committed(batch, routes, DEADLINE_S) is not None

    # Height 2: only k0 and k1 can vote (2 shares of the 3 needed): k1 approves, and
    # no polka forms.
    await stop_agent(cluster, k2)
    await stop_agent(cluster, k3)
    await cluster.submit(k1, entity, [ent.Increment(2)])
    proposer = await until_replica(
        cluster,
        k0,
        entity,
        lambda r: (
            (r.pending is not None and 1 in {i for i, _ in r.pending.approvals})
            or (r.lock is not None and r.entity.height == 1)
        ),
    )
    assert proposer.entity.height == 1
    in_flight = proposer.pending.frame if proposer.pending is not None else proposer.lock.frame  # type: ignore[union-attr]
    assert in_flight.height == 2
    config = proposer.entity.config

    # Server 1 and k1's guard are lost.
    await cluster.lose_server(1)
    await stop_agent(cluster, k1)
    shutil.rmtree(cluster.root / "guards" / k1.id.hex())
    await cluster.restart_server(1)
    await cluster.host_signer(k1)
    server1 = cluster.servers[1]
    token, _ = TokenStore(server1.data).create(Scope("signer", k1.id), "restored agent")
    agent = Agent.from_keystore(cluster.keystore(k1), PASSWORD, tmp_path / "restored-guard")
    agent.mark_restored()
    stop = asyncio.Event()
    stats = AgentStats()
    serving = asyncio.create_task(serve_agent(server1.url, token, agent, stop, stats))
    try:
        # Before the entity is found, the restored guard signs nothing for it.
        other = Frame.make(entity, 2, in_flight.prev_hash, [], keccak(b"another frame"))
        with pytest.raises(Refused, match="peers have not yet told"):
            agent.approve(other.raw, 0, config)

        result = await find(cluster, k1, peers=2, serving=serving)
        assert result.asked == 2
        assert result.errors == []
        assert [f.membership.entity_id for f in result.found] == [entity]
        found = result.found[0]
        assert found.membership.height == 1
        assert found.membership.in_flight == 2
        assert found.floor == 2
        assert agent.floor(entity) == 2
        assert found.joined
        assert found.membership.serial_of(k1.id) == 1  # the lost server's binding
        assert found.membership.genesis.config.threshold == 3

        # The replica comes back by catching up; the floor refuses height 2.
        await until_replica(cluster, k1, entity, lambda r: r.entity.height >= 1)
        await cluster.watch(k1, entity)  # its commits, on the new server

        # The peers learn k1's binding of the new server, above the lost one's serial
        # (so k1's round changes from there count).
        new_key = node_identity.load_or_create(server1.data, PASSWORD, fast_kdf=True).pubkey
        for peer in (k0, k2):
            r = await until_replica(
                cluster, peer, entity, lambda r: getattr(r.bound(k1.id), "serial", 0) >= 2
            )
            bound = r.bound(k1.id)
            assert bound is not None
            assert (bound.serial, bound.server_key) == (2, new_key)
        with pytest.raises(Refused, match="at or below 2"):
            agent.approve(other.raw, 7, config)
        with pytest.raises(Refused, match="at or below 2"):
            agent.approve(in_flight.raw, 7, config)

        # A second FIND changes nothing: the floor holds, nothing is joined again.
        again = await find(cluster, k1, peers=2, serving=serving)
        assert [(f.floor, f.joined) for f in again.found] == [(2, False)]

        # k2 and k3 come back: height 2 is certified without k1's new signature.
        await cluster.start_agent(k2)
        await cluster.start_agent(k3)
        r1 = await until_replica(cluster, k1, entity, lambda r: r.entity.height >= 2)
        assert r1.entity.counter == 3
        assert agent.signed == 0

        # Height 3 without k2: k0, k1 and k3 hold exactly the threshold, so it is
        # certified only with the restored signer's share.
        await stop_agent(cluster, k2)
        batch = await cluster.submit(k1, entity, [ent.Increment(4)])
        live = [(k.id, entity) for k in (k0, k1, k3)]
        assert await cluster.wait_committed(batch, live, DEADLINE_S) is not None
        r0 = await until_replica(cluster, k0, entity, lambda r: r.entity.height >= 3)
        assert r0.entity.counter == 7
        assert agent.signed >= 1
        [(raw, cert)] = await cluster.client(cluster.servers[k0.server]).frames(entity, 3, 1)
        assert Frame.decode(raw).height == 3
        assert signers_of(r0.entity.config, cert) == [0, 1, 3]
    finally:
        stop.set()
        await serving
        agent.close()


async def test_a_restored_agent_process_finds_its_entities_itself(cluster: Cluster) -> None:
    """``xln-node agent --restored``: the agent asks its node FIND_ENTITIES once it is
    connected, so an operator restoring a signer onto a new server runs one command."""
    k0, k1, _, _ = cluster.keys
    entity = await cluster.create_entity(cluster.keys, [1] * 4, 3, proposer=0)
    batch = await cluster.submit(k0, entity, [ent.Increment(1)])
    routes = [(k.id, entity) for k in cluster.keys]
    assert await cluster.wait_committed(batch, routes, DEADLINE_S) is not None

    await cluster.lose_server(1)
    await stop_agent(cluster, k1)
    shutil.rmtree(cluster.root / "guards" / k1.id.hex())
    await cluster.restart_server(1)
    await cluster.host_signer(k1)
    await cluster.start_agent(k1, restored=True)

    # The agent's find joins the entity on the new server, which catches up.
    await cluster.wait_replica(k1, entity, DEADLINE_S)
    r1 = await until_replica(cluster, k1, entity, lambda r: r.entity.height >= 1)
    assert r1.entity.counter == 1
    await cluster.watch(k1, entity)
    batch = await cluster.submit(k0, entity, [ent.Increment(2)])
    assert await cluster.wait_committed(batch, routes, DEADLINE_S) is not None

    await stop_agent(cluster, k1)
    out = cluster.agent_output(k1)
    assert "restored: 1 entities found (1 joined here), 2 of 2 peers answered" in out
    guard = Agent.from_keystore(cluster.keystore(k1), PASSWORD, cluster.root / "guards")
    try:
        assert guard.restored
        assert guard.floor(entity) == 1
    finally:
        guard.close()
