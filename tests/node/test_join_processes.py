"""A signer added by a proposal on another server joins with its proof and catches up.

Three ``xln-node run`` processes peer over loopback, one signer each with its
built-in agent. An entity of the first two (1 share each, threshold 2) adds the
third through a real proposal and vote. Every replica that applies that frame
sends the new member's server ``join_entity`` naming the frame's height; that
server fetches the certified frames up to it from the sender, verifies them from
the genesis (node/join_proof.py), and only then makes the replica, which catches
up and then signs as a member.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from node.cluster import Cluster, SignerKey
from node.crypto import bls
from node.machines import entity as ent
from node.machines.governance import AddSigner
from node.machines.replica import Replica
from node.net.client import NodeError
from node.net.protocol import Topic

DEADLINE_S = 60.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, servers=3, signers=3, tick_ms=50, round_timeout_ms=1000)
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def until(
    cluster: Cluster, key: SignerKey, entity: bytes, done: Callable[[Replica], bool]
) -> Replica:
    """Until ``key``'s replica exists and satisfies ``done``, woken by each block."""
    client = cluster.client(cluster.servers[key.server])
    sub, queue = await client.subscribe(Topic.BLOCKS)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                try:
                    r: Replica | None = await cluster.replica(key, entity)
                except NodeError:  # UNKNOWN_ROUTE: no replica yet
                    r = None
                if r is not None and done(r):
                    return r
                await queue.get()
    finally:
        await client.unsubscribe(sub)


async def test_a_member_added_on_another_server_joins_and_catches_up(cluster: Cluster) -> None:
    a, b, c = cluster.keys  # one per server
    entity = await cluster.create_entity([a, b], [1, 1], 2)
    await cluster.submit(a, entity, [ent.Increment(5)])
    await until(cluster, b, entity, lambda r: r.entity.counter == 5)
    await cluster.submit(
        a, entity, [ent.Propose(AddSigner(c.pubkey, bls.pop_prove(c.sk), 1), 1000)]
    )
    await until(cluster, b, entity, lambda r: bool(r.entity.proposals))
    await cluster.submit(b, entity, [ent.Vote(1)])
    added = await until(cluster, a, entity, lambda r: c.id in r.entity.config.index)

    # C's server joined (its proof checked) and caught up to the frame that added it.
    joined = await until(cluster, c, entity, lambda r: r.entity.height >= added.entity.height)
    assert joined.genesis == added.genesis
    assert c.id in joined.entity.config.index
    assert joined.entity.counter == 5

    # And C signs as a member: its own batch is certified on all three replicas.
    await cluster.submit(c, entity, [ent.Increment(1)])
    final = [await until(cluster, k, entity, lambda r: r.entity.counter == 6) for k in (a, b, c)]
    assert len({(r.entity.hash, r.head) for r in final}) == 1
