"""``xln-node sim``: entities finalizing across separate node processes on loopback.

It starts ``--servers`` node processes (each peering with all the others),
hosts ``--signers`` signers on them round-robin with built-in agents, creates
``--entities`` entities over random subsets of the signers, and for
``--seconds`` has every member submit random signed batches: increments,
proposals (threshold and share changes) and votes. It then prints finality
statistics (submission to certified on every replica), and checks that every
replica of each entity holds the same state.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from node.cluster import Cluster, SignerKey
from node.machines import entity as ent
from node.machines.governance import SetShares, SetThreshold
from node.txs import TxBody

COMMIT_TIMEOUT_S = 10.0


def add_sim_parser(sub: Any) -> None:
    sim = sub.add_parser("sim", help="run several node processes with random entity traffic")
    sim.add_argument("--servers", type=int, default=3)
    sim.add_argument("--signers", type=int, default=10)
    sim.add_argument("--entities", type=int, default=2)
    sim.add_argument("--seconds", type=float, default=10.0)
    sim.add_argument("--tick-ms", type=int, default=100)
    sim.add_argument("--round-timeout-ms", type=int, default=2000)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--dir", help="keep the nodes' folders here (default: a temporary folder)")
    sim.add_argument("--json", action="store_true", help="print the statistics as JSON")


async def run_sim(args: argparse.Namespace) -> int:
    if args.servers < 1 or args.signers < 1 or args.entities < 1:
        print("error: servers, signers and entities must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="xln-sim-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(
            root,
            args.servers,
            args.signers,
            tick_ms=args.tick_ms,
            round_timeout_ms=args.round_timeout_ms,
            seed=args.seed,
        )
        try:
            rng = random.Random(args.seed)  # noqa: S311 (simulated traffic, not keys)
            report = await simulate(cluster, args.entities, args.seconds, rng)
        finally:
            await cluster.stop()
    if args.json:
        import json

        print(json.dumps(report))
    else:
        print_report(report, args.tick_ms)
    return 0 if report["replicas_identical"] else 1


async def simulate(
    cluster: Cluster, entities: int, seconds: float, rng: random.Random
) -> dict[str, Any]:
    started = time.perf_counter()
    await cluster.start()
    setup_s = time.perf_counter() - started
    made: list[tuple[bytes, list[SignerKey]]] = []
    for _ in range(entities):
        size = rng.randint(min(3, len(cluster.keys)), len(cluster.keys))
        members = rng.sample(cluster.keys, size)
        shares = [rng.randint(1, 3) for _ in members]
        threshold = sum(shares) // 2 + 1
        entity_id = await cluster.create_entity(members, shares, threshold)
        made.append((entity_id, members))
    latencies: list[float] = []
    lost: list[int] = [0]
    dropped: list[int] = [0]
    deadline = time.perf_counter() + seconds
    workers = [
        _worker(cluster, entity_id, key, members, deadline, rng, latencies, lost, dropped)
        for entity_id, members in made
        for key in members
    ]
    await asyncio.gather(*workers)
    identical, heights = await _compare(cluster, made)
    return {
        "servers": len(cluster.servers),
        "signers": len(cluster.keys),
        "entities": [{"id": e.hex(), "members": len(m), "height": heights[e]} for e, m in made],
        "setup_s": round(setup_s, 2),
        "seconds": seconds,
        "batches": len(latencies),
        "not_committed": lost[0],
        "dropped_by_rules": dropped[0],
        "latency_ms": _percentiles([x * 1000 for x in latencies]),
        "replicas_identical": identical,
    }


async def _worker(
    cluster: Cluster,
    entity_id: bytes,
    key: SignerKey,
    members: list[SignerKey],
    deadline: float,
    rng: random.Random,
    latencies: list[float],
    lost: list[int],
    dropped: list[int],
) -> None:
    routes = [(m.id, entity_id) for m in members]
    while time.perf_counter() < deadline:
        txs = await _random_txs(cluster, entity_id, key, rng)
        t0 = time.perf_counter()
        batch_hash = await cluster.submit(key, entity_id, txs)
        done = await cluster.wait_committed(batch_hash, routes, COMMIT_TIMEOUT_S)
        if done is None:
            # Not certified: the proposer dropped it by the rules (a vote on a
            # proposal that closed meanwhile) if its nonce was never used.
            submitted = cluster.nonces[(entity_id, key.id)]
            await cluster.resync_nonce(key, entity_id)
            if cluster.nonces[(entity_id, key.id)] >= submitted:
                lost[0] += 1
            else:
                dropped[0] += 1
        else:
            latencies.append(done - t0)


async def _random_txs(
    cluster: Cluster, entity_id: bytes, key: SignerKey, rng: random.Random
) -> list[TxBody]:
    roll = rng.random()
    if roll < 0.7:
        return [ent.Increment(rng.randint(1, 10))]
    replica = await cluster.replica(key, entity_id)
    assert replica is not None
    state = replica.entity
    if roll < 0.85 or not state.proposals:
        config = state.config
        total = config.total_shares
        expires = state.height + rng.randint(2, 20)
        if rng.random() < 0.5:
            return [ent.Propose(SetThreshold(rng.randint(total // 2 + 1, total)), expires)]
        member = rng.choice(config.members)
        # Keep the current threshold valid: only shares that keep it within range.
        room = [
            n
            for n in (1, 2, 3)
            if (total - member.shares + n) // 2 < config.threshold <= total - member.shares + n
        ]
        if not room:
            return [ent.Increment(1)]
        return [ent.Propose(SetShares(member.id, rng.choice(room)), expires)]
    open_ = [p for p in state.proposals if key.id not in p.votes]
    if not open_:
        return [ent.Increment(1)]
    return [ent.Vote(rng.choice(open_).id)]


async def _compare(
    cluster: Cluster, made: list[tuple[bytes, list[SignerKey]]]
) -> tuple[bool, dict[bytes, int]]:
    """Wait for quiescence (all replicas at one height, at most 10 s), then compare."""
    identical = True
    heights: dict[bytes, int] = {}
    for entity_id, members in made:
        hashes: set[bytes] = set()
        end = time.monotonic() + COMMIT_TIMEOUT_S
        while True:
            replicas = [await cluster.replica(k, entity_id) for k in members]
            hashes = {r.entity.hash for r in replicas if r is not None}
            if len(hashes) == 1 or time.monotonic() > end:
                break
            await asyncio.sleep(cluster.tick_ms / 1000)
        identical &= len(hashes) == 1
        heights[entity_id] = max(r.entity.height for r in replicas if r is not None)
    return identical, heights


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def print_report(report: dict[str, Any], tick_ms: int) -> None:
    print(
        f"{report['servers']} servers, {report['signers']} signers, "
        f"{len(report['entities'])} entities; set-up {report['setup_s']} s"
    )
    for e in report["entities"]:
        print(f"  entity {e['id'][:16]}  {e['members']} members  height {e['height']}")
    print(
        f"{report['batches']} batches certified on every replica in {report['seconds']} s; "
        f"{report['dropped_by_rules']} dropped by the entity rules (votes on proposals "
        f"that closed meanwhile); {report['not_committed']} lost"
    )
    lat = report["latency_ms"]
    if lat:
        ticks = {k: round(v / tick_ms, 1) for k, v in lat.items()}
        print(
            "finality (submit -> certified on all replicas): "
            + "  ".join(f"{k} {v} ms ({ticks[k]} ticks)" for k, v in lat.items())
        )
    print("replicas identical" if report["replicas_identical"] else "REPLICAS DIFFER")
