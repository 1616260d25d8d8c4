"""Entity consensus across real node processes, with agents in their own processes.

Three ``xln-node run`` processes peer over loopback WebSockets; five signers
are spread over them and each signer's key is held by a separate
``xln-node agent`` process, so every pre-commit crosses the agent protocol.
Nodes are killed with SIGKILL and restarted.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from node.cluster import Cluster, SignerKey
from node.crypto import bls
from node.machines import entity as ent
from node.machines.frames import precommit_message, signers_of
from node.machines.governance import SetThreshold
from node.machines.replica import Replica

DEADLINE_S = 60.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(
        tmp_path, servers=3, signers=5, tick_ms=50, round_timeout_ms=1000, external_agents=True
    )
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def replicas(cluster: Cluster, members: list[SignerKey], entity: bytes) -> list[Replica]:
    out = []
    for key in members:
        r = await cluster.replica(key, entity)
        assert r is not None
        out.append(r)
    return out


async def wait_converged(
    cluster: Cluster, members: list[SignerKey], entity: bytes, height: int
) -> list[Replica]:
    """Until every replica is at ``height`` or above with one state; woken by commits."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            cluster.commits.changed.clear()
            current = await replicas(cluster, members, entity)
            if (
                min(r.entity.height for r in current) >= height
                and len({(r.entity.hash, r.head) for r in current}) == 1
            ):
                return current
            await cluster.commits.changed.wait()


async def wait_state(
    cluster: Cluster, key: SignerKey, entity: bytes, done: Callable[[Replica], bool]
) -> Replica:
    """Until ``key``'s replica satisfies ``done``; woken by certified frames."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            cluster.commits.changed.clear()
            r = await cluster.replica(key, entity)
            assert r is not None
            if done(r):
                return r
            await cluster.commits.changed.wait()


async def commit(cluster: Cluster, key: SignerKey, entity: bytes, members: list[SignerKey]) -> None:
    batch = await cluster.submit(key, entity, [ent.Increment(1)])
    routes = [(m.id, entity) for m in members]
    assert await cluster.wait_committed(batch, routes, DEADLINE_S) is not None


async def test_entity_finalizes_across_servers_and_survives_sigkill(cluster: Cluster) -> None:
    keys = cluster.keys  # servers: s0 -> {0, 3}, s1 -> {1, 4}, s2 -> {2}
    entity = await cluster.create_entity(keys, [1] * 5, 3, proposer=0)

    # A batch from a signer on another server than the proposer's.
    await commit(cluster, keys[1], entity, keys)
    first = await wait_converged(cluster, keys, entity, 1)
    assert {r.entity.counter for r in first} == {1}

    # A proposal, and votes from signers on two other servers, execute exactly once.
    # (A vote needs its proposal committed first; the proposer drops it otherwise.)
    await cluster.submit(keys[2], entity, [ent.Propose(SetThreshold(4), 100)])
    await wait_state(cluster, keys[4], entity, lambda r: bool(r.entity.proposals))
    await cluster.submit(keys[4], entity, [ent.Vote(1)])
    await cluster.submit(keys[0], entity, [ent.Vote(1)])
    await wait_state(cluster, keys[0], entity, lambda r: r.entity.config.threshold == 4)
    state = await wait_converged(cluster, keys, entity, 2)
    assert all(r.entity.config.threshold == 4 and not r.entity.proposals for r in state)

    # SIGKILL a non-proposer server; the other four signers still reach 4 shares.
    await cluster.kill_server(2)
    alive = [k for k in keys if k.server != 2]
    await commit(cluster, keys[1], entity, alive)
    await cluster.restart_server(2)
    await cluster.watch(keys[2], entity)
    height = (await cluster.replica(keys[0], entity)).entity.height  # type: ignore[union-attr]
    await wait_converged(cluster, keys, entity, height)

    # Lower the threshold back to 3 so the entity survives losing the proposer's server.
    await cluster.submit(keys[1], entity, [ent.Propose(SetThreshold(3), 1000)])
    for k in (keys[0], keys[2], keys[3]):
        await wait_state(cluster, k, entity, lambda r: bool(r.entity.proposals))
        await cluster.submit(k, entity, [ent.Vote(2)])
    await wait_state(cluster, keys[1], entity, lambda r: r.entity.config.threshold == 3)

    # SIGKILL the proposer's server: the round moves on to the next signer (s1's).
    await cluster.kill_server(0)
    alive = [k for k in keys if k.server != 0]
    await commit(cluster, keys[2], entity, alive)
    await cluster.restart_server(0)
    for k in keys:
        if k.server == 0:
            await cluster.watch(k, entity)
    height = (await cluster.replica(keys[1], entity)).entity.height  # type: ignore[union-attr]
    final = await wait_converged(cluster, keys, entity, height)
    await commit(cluster, keys[0], entity, keys)  # and it keeps going with everyone back

    # The last certificate verifies with py_ecc alone, against the members' keys.
    r = final[0]
    assert r.cert is not None
    config = (await cluster.replica(keys[0], entity)).entity.config  # type: ignore[union-attr]
    pubkeys = [r.entity.config.members[i].pubkey for i in signers_of(r.entity.config, r.cert)]
    message = precommit_message(entity, r.entity.height, r.cert.round, r.head)
    assert bls.get_backend("py_ecc").fast_aggregate_verify(pubkeys, message, r.cert.signature)
    assert config.threshold == 3

    # inspect shows the signers, the entity, its proposals and last certificate.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.cli",
        "inspect",
        "--data",
        str(cluster.servers[1].data),
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
    info = json.loads(out)
    assert info["source"] == "running node"
    hosted = {s["id"]: s for s in info["signers"]}
    assert set(hosted) == {keys[1].id.hex(), keys[4].id.hex()}
    shown = hosted[keys[1].id.hex()]["entities"][0]
    assert shown["id"] == entity.hex()
    assert shown["threshold"] == 3
    assert shown["proposals"] == []
    assert shown["last_certificate"]["signature"]

    # No node's data folder holds any signer's secret key.
    for server in cluster.servers:
        for path in server.data.rglob("*"):
            if path.is_file() and not path.is_socket():
                blob = path.read_bytes()
                for key in keys:
                    assert key.sk.to_bytes(32, "big") not in blob, path
