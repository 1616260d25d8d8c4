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

Usage (from the repo root)::

    .venv/bin/python -m bench.finality
    .venv/bin/python -m bench.finality --signers 10 --tick-ms 10 --json bench/out/f10.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.finality``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.cluster import Cluster
from node.machines import entity as ent

COMMIT_TIMEOUT_S = 30.0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signers", default="1,3,10,30,100", help="comma-separated counts")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--tick-ms", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100, help="measured batches per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write every figure here (- for stdout)")
    args = parser.parse_args(argv)
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
