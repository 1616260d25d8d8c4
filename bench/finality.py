"""Benchmark: entity finality across node processes, from submission to certified on every replica.

For each signer count in ``--signers`` (default 1,3,10,30,100) it starts a
fresh cluster (``node/cluster.py``): ``--servers`` node processes (default 3,
fewer if there are fewer signers) peering on loopback, the signers spread
over them round-robin with built-in agents, and one entity whose members are
all the signers (equal shares, threshold a simple majority). Then, one batch
at a time, a random member signs an ``increment`` and submits it to its own
node; the latency is the time from the SUBMIT until the last replica reported
the batch's frame certified and applied (FRAME_EVENT). One batch in flight at a
time, so this is latency, not queueing.

Targets (issue 3): with 10 signers on 3 servers, p99 within 5 ticks at the
default 100 ms tick, and p50 at most 50 ms with ``--tick-ms 10``.

``--hostile MODE`` (issue 13 item 7) measures the harness's entity instead
(``tests/node/hostile.py``): 3 servers, 4 members with 1 share each and
threshold 3, the batches signed by the 3 honest ones, while:

- ``none``: the 4th member is honest too (hosted on server 0): the baseline;
- ``outsider``: the same 4 honest members, and an outside peer (a fresh identity
  key) floods server 1 from a process of its own: join_entity, pre-commits that do
  not verify for the next heights, self-bound round changes;
- ``member``: the 4th member is hostile (its key held by the harness, its server
  the flooding process, genuinely bound): it floods server 1 with its
  equivocating pre-commits and its own round changes to high rounds;
- ``proposer-withhold``: the 4th member is hostile and the round-0 proposer, and
  never proposes: each height waits for round timeouts.

Targets: with ``outsider`` or ``member``, p99 within 3x of ``none``'s; with
``proposer-withhold``, every height certified within the timeouts of rounds 0-3
(``--round-timeout-ms`` x 10), the figure printed with the rounds the
certificates needed.

Usage (from the repo root)::

    .venv/bin/python -m bench.finality
    .venv/bin/python -m bench.finality --signers 10 --tick-ms 10 --json bench/out/f10.json
    .venv/bin/python -m bench.finality --hostile outsider --batches 50
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.finality``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.cluster import Cluster, SignerKey
from node.crypto import bls
from node.machines import entity as ent
from tests.node import hostile

HOSTILE_MODES = ("none", "outsider", "member", "proposer-withhold")

COMMIT_TIMEOUT_S = 30.0


async def _latencies(
    cluster: Cluster, keys: list[SignerKey], entity: bytes, warmup: int, batches: int, seed: int
) -> list[float]:
    """Submit ``warmup + batches`` one-increment batches one at a time, each from a
    random member of ``keys``; the milliseconds each took to be certified on every
    member's replica, warm-up left out."""
    rng = random.Random(seed)
    routes = [(k.id, entity) for k in keys]
    latencies: list[float] = []
    for i in range(warmup + batches):
        key = rng.choice(keys)
        t0 = time.perf_counter()
        batch = await cluster.submit(key, entity, [ent.Increment(1)])
        done = await cluster.wait_committed(batch, routes, COMMIT_TIMEOUT_S)
        if done is None:
            raise RuntimeError(f"batch {i} not certified within {COMMIT_TIMEOUT_S} s")
        if i >= warmup:
            latencies.append((done - t0) * 1000)
    return latencies


async def measure(
    signers: int, servers: int, tick_ms: int, batches: int, warmup: int, seed: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xln-finality-") as tmp:
        cluster = Cluster(Path(tmp), min(servers, signers), signers, tick_ms=tick_ms, seed=seed)
        try:
            started = time.perf_counter()
            await cluster.start()
            keys = cluster.keys
            entity = await cluster.create_entity(keys, [1] * len(keys), len(keys) // 2 + 1)
            setup_s = time.perf_counter() - started
            latencies = await _latencies(cluster, keys, entity, warmup, batches, seed)
        finally:
            await cluster.stop()
    p = {q: benchlib.percentile(latencies, q) for q in (50, 90, 99)}
    return {
        "signers": signers,
        "servers": min(servers, signers),
        "tick_ms": tick_ms,
        "batches": len(latencies),
        "setup_s": round(setup_s, 1),
        "p50_ms": round(p[50], 1),
        "p90_ms": round(p[90], 1),
        "p99_ms": round(p[99], 1),
        "max_ms": round(max(latencies), 1),
        "p50_ticks": round(p[50] / tick_ms, 2),
        "p99_ticks": round(p[99] / tick_ms, 2),
        "latencies_ms": [round(x, 2) for x in latencies],
    }


async def measure_hostile(
    mode: str, tick_ms: int, round_timeout_ms: int, batches: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Finality of the harness's entity (3 honest members and a 4th) under ``mode``."""
    signers = 4 if mode in ("none", "outsider") else 3
    with tempfile.TemporaryDirectory(prefix="xln-finality-hostile-") as tmp:
        cluster = Cluster(
            Path(tmp), 3, signers, tick_ms=tick_ms, round_timeout_ms=round_timeout_ms, seed=seed
        )
        flooder: BaseProcess | None = None
        try:
            await cluster.start()
            honest = cluster.keys[:3]
            if signers == 4:
                fourth = cluster.keys[3]
                entity = await cluster.create_entity(
                    cluster.keys, list(hostile.SHARES), hostile.THRESHOLD
                )
            else:
                fourth = hostile.hostile_member()
                entity = await hostile.create_entity_with(
                    cluster, honest, fourth, hostile_proposes=mode == "proposer-withhold"
                )
            if mode in ("outsider", "member"):
                server = cluster.servers[1]
                flooder = multiprocessing.get_context("spawn").Process(
                    target=hostile.run_flood,
                    args=(
                        server.url,
                        bls.keygen(b"\x72" * 32),
                        mode,
                        honest[1].id,
                        entity,
                        1,
                        [k.id for k in honest],
                        fourth.sk if mode == "member" else None,
                        3600.0,
                    ),
                )
                flooder.start()
            latencies = await _latencies(cluster, honest, entity, warmup, batches, seed)
            rounds = []
            replica = await cluster.replica(honest[0], entity)
            if replica is not None and replica.cert is not None:
                rounds.append(replica.cert.round)
            rss_kib = [hostile.rss_kib(s.proc.pid) for s in cluster.servers if s.proc is not None]
        finally:
            if flooder is not None:
                flooder.terminate()  # the process this benchmark started
                flooder.join(10)
            await cluster.stop()
    p = {q: benchlib.percentile(latencies, q) for q in (50, 90, 99)}
    return {
        "hostile": mode,
        "tick_ms": tick_ms,
        "round_timeout_ms": round_timeout_ms,
        "batches": len(latencies),
        "p50_ms": round(p[50], 1),
        "p90_ms": round(p[90], 1),
        "p99_ms": round(p[99], 1),
        "max_ms": round(max(latencies), 1),
        "last_cert_round": rounds[0] if rounds else None,
        "rss_kib_after": rss_kib,
        "latencies_ms": [round(x, 2) for x in latencies],
    }


def main_hostile(args: argparse.Namespace) -> int:
    modes = HOSTILE_MODES if args.hostile == "all" else ("none", args.hostile)
    runs: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(modes):
        result = asyncio.run(
            measure_hostile(
                mode, args.tick_ms, args.round_timeout_ms, args.batches, args.warmup, args.seed
            )
        )
        runs[mode] = result
        print(
            f"hostile {mode:>17}, tick {args.tick_ms} ms: p50 {result['p50_ms']} ms  "
            f"p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms  max {result['max_ms']} ms"
            f"  (last certificate at round {result['last_cert_round']}; servers' RSS "
            f"{[k // 1024 for k in result['rss_kib_after']]} MiB)",
            flush=True,
        )
        base = runs.get("none")
        if mode in ("outsider", "member") and base is not None:
            ratio = result["p99_ms"] / base["p99_ms"]
            print(f"  target p99 <= 3x none's: {ratio:.2f}x {benchlib.verdict(ratio <= 3)}")
        if mode == "proposer-withhold":
            bound = args.round_timeout_ms * 10
            ok = result["max_ms"] <= bound
            print(f"  target every height within {bound} ms: {benchlib.verdict(ok)}")
    benchlib.write_json(
        args.json, {"finality_hostile": list(runs.values()), "machine": benchlib.machine_info()}
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signers", default="1,3,10,30,100", help="comma-separated counts")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--tick-ms", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100, help="measured batches per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write every figure here (- for stdout)")
    parser.add_argument(
        "--hostile",
        choices=(*HOSTILE_MODES, "all"),
        help="the harness's entity under a hostile peer (with the none baseline first)",
    )
    parser.add_argument("--round-timeout-ms", type=int, default=500, help="with --hostile")
    args = parser.parse_args(argv)
    if args.hostile is not None:
        return main_hostile(args)
    runs = []
    for n in (int(x) for x in args.signers.split(",")):
        result = asyncio.run(
            measure(n, args.servers, args.tick_ms, args.batches, args.warmup, args.seed)
        )
        runs.append(result)
        print(
            f"{n:>4} signers / {result['servers']} servers, tick {args.tick_ms} ms: "
            f"p50 {result['p50_ms']} ms ({result['p50_ticks']} ticks)  "
            f"p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms "
            f"({result['p99_ticks']} ticks)  max {result['max_ms']} ms",
            flush=True,
        )
        if n == 10 and args.servers == 3:
            if args.tick_ms == 100:
                print(f"  target p99 <= 5 ticks: {benchlib.verdict(result['p99_ticks'] <= 5)}")
            if args.tick_ms == 10:
                print(f"  target p50 <= 50 ms: {benchlib.verdict(result['p50_ms'] <= 50)}")
    benchlib.write_json(args.json, {"finality": runs, "machine": benchlib.machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
