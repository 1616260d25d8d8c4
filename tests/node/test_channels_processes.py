"""Payments through a hub across real node processes, with SIGKILL and restart.

Three ``xln-node run --faucet-chain`` processes peer over loopback. The hub H has
three signers, one per server (threshold 2); the payer A and the payee B have
one signer each. The faucet funds A and H; channels A-H and H-B are opened by
proposals on both sides; A pays B through H. A hub server is killed with SIGKILL
mid-stream and restarted: every payment arrives exactly once, value is
conserved, and both sides of each channel hold the same state.

The faucet is a member's signed batch: one submitted on a server that does not
host the entity's proposer travels there like any batch, and every replica's
reserve grows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.cluster import Cluster, SignerKey
from node.machines.accounts import ExtendCredit, OpenChannel, Pay
from node.machines.channel import ChannelSide
from node.machines.replica import Replica

ASSET = 1
DEADLINE_S = 90.0
FAUCET_DEADLINE_S = 20.0  # a few frames; the lost mint of old waited forever


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(
        tmp_path,
        servers=3,
        signers=5,
        tick_ms=50,
        round_timeout_ms=1000,
        simulation=True,
        resend_ms=300,
        # No node cache: every channel, forward and trie node a server walks is read
        # back from its LevelDB, as a hub's idle channels are, so these runs go
        # through the stored maps, the pins and the restart's lazy load for real.
        cache_mb=0,
    )
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def replica_of(cluster: Cluster, key: SignerKey, entity: bytes) -> Replica:
    r = await cluster.replica(key, entity)
    assert r is not None
    return r


def side(r: Replica, peer: bytes) -> ChannelSide:
    record = r.entity.channel(peer)
    assert record is not None
    return record.side


async def wait_settled(cluster: Cluster, views: list[tuple[SignerKey, bytes, bytes]]) -> None:
    """Until every (key, entity, peer) channel is ready with nothing queued, and each
    pair of sides agrees; woken by certified frames."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            cluster.commits.changed.clear()
            sides = {}
            for key, entity, peer in views:
                r = await cluster.replica(key, entity)
                record = None if r is None else r.entity.channel(peer)
                sides[(entity, peer)] = None if record is None else record.side
            done = all(
                s is not None and s.status == "ready" and not s.queue for s in sides.values()
            ) and all(
                s is not None
                and (peer, entity) in sides
                and (other := sides[(peer, entity)]) is not None
                and other.agreed.hash == s.agreed.hash
                for (entity, peer), s in sides.items()
            )
            if done:
                return
            await cluster.commits.changed.wait()


async def hub_converged(cluster: Cluster, hub: list[SignerKey], entity: bytes) -> list[Replica]:
    """Until the hub's replicas hold one state (a member may apply the last commit
    a little later than the others); woken by certified frames."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            cluster.commits.changed.clear()
            replicas = [await replica_of(cluster, k, entity) for k in hub]
            if len({(r.entity.hash, r.head) for r in replicas}) == 1:
                return replicas
            await cluster.commits.changed.wait()


async def test_a_faucet_away_from_the_proposer_reaches_every_replica(cluster: Cluster) -> None:
    h0, h1, h2, _, _ = cluster.keys
    hub = [h0, h1, h2]
    H = await cluster.create_entity(hub, [1, 1, 1], 2)  # proposer h0, on server 0
    assert (await replica_of(cluster, h1, H)).proposer == h0.id
    assert h1.server != h0.server
    await cluster.faucet(h1, H, ASSET, 700)  # on server 1: the batch goes to h0's server
    async with asyncio.timeout(FAUCET_DEADLINE_S):
        while True:
            cluster.commits.changed.clear()
            replicas = [await replica_of(cluster, k, H) for k in hub]
            if all(r.entity.reserve(ASSET) == 700 for r in replicas):
                break
            await cluster.commits.changed.wait()
    assert len({r.entity.hash for r in replicas}) == 1
    assert replicas[0].entity.nonce_of(h1.id) == 1
    assert replicas[0].entity.reserves == ((ASSET, 700),)  # once, by the signed batch


async def test_payments_through_a_hub_survive_a_sigkill(cluster: Cluster) -> None:
    h0, h1, h2, ka, kb = cluster.keys
    hub = [h0, h1, h2]
    H = await cluster.create_entity(hub, [1, 1, 1], 2)
    A = await cluster.create_entity([ka], [1], 1)
    B = await cluster.create_entity([kb], [1], 1)
    await cluster.faucet(ka, A, ASSET, 10_000)
    await cluster.faucet(h0, H, ASSET, 10_000)
    a_card = await cluster.channel_card(ka, A)
    b_card = await cluster.channel_card(kb, B)
    h_card = await cluster.channel_card(h0, H)
    await cluster.pass_proposal([ka], A, OpenChannel(H, *h_card, ASSET, 5_000))
    await cluster.pass_proposal(hub, H, OpenChannel(A, *a_card, ASSET, 0))
    await cluster.pass_proposal(hub, H, OpenChannel(B, *b_card, ASSET, 5_000))
    await cluster.pass_proposal([kb], B, OpenChannel(H, *h_card, ASSET, 0))
    await cluster.pass_proposal([kb], B, ExtendCredit(H, ASSET, 1_000))
    views = [(ka, A, H), (h0, H, A), (h1, H, B), (kb, B, H)]
    await wait_settled(cluster, views)

    amounts = list(range(1, 41))
    for amount in amounts[:20]:
        await cluster.submit(ka, A, [Pay((H, B), ASSET, amount)])
    await cluster.kill_server(1)  # a hub signer's server, mid-stream
    for amount in amounts[20:30]:
        await cluster.submit(ka, A, [Pay((H, B), ASSET, amount)])
    await cluster.restart_server(1)
    await cluster.watch(h1, H)
    for amount in amounts[30:]:
        await cluster.submit(ka, A, [Pay((H, B), ASSET, amount)])
    await wait_settled(cluster, views)

    paid = sum(amounts)
    a, b = await replica_of(cluster, ka, A), await replica_of(cluster, kb, B)
    hubs = await hub_converged(cluster, hub, H)
    ha = side(hubs[0], A)
    hb = side(hubs[0], B)
    assert side(a, H).agreed.asset(ASSET).balance(side(a, H).me) == 5_000 - paid
    assert ha.agreed.asset(ASSET).balance(ha.me) == paid
    assert hb.agreed.asset(ASSET).balance(hb.me) == 5_000 - paid
    assert side(b, H).agreed.asset(ASSET).balance(side(b, H).me) == paid
    assert len(hubs[0].entity.forwards) == 0
    # Value conserved: reserves plus balances are what the faucet gave.
    total = sum(r.entity.reserve(ASSET) for r in (a, b, hubs[0]))
    for r in (a, b, hubs[0]):
        for c in r.entity.channels.values():
            total += c.side.agreed.asset(ASSET).balance(c.side.me)
    assert total == 20_000
