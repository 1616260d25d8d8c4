"""Benchmark 2 (idle): how late each tick starts against its schedule, on an idle node.

The node measures this itself: every tick appends ``loop.time() - deadline``
(microseconds) to a ring of the last 4096 samples, which the METRICS request
returns. This script starts a real node (``xln-node run --port 0``) in a fresh
temporary data folder, lets it settle for ``--settle`` seconds, reads METRICS,
waits ``--duration`` seconds, reads METRICS again and summarises the samples
taken in between.

Two runs by default: with ``--empty-blocks`` (every tick makes, fsyncs and
publishes a block: the realistic idle cost) and without (a tick with an empty
inbox does nothing). Tick jitter under load is measured by ``throughput.py``.

Usage (from the repo root)::

    .venv/bin/python bench/jitter.py
    .venv/bin/python bench/jitter.py --duration 30 --json bench/out/jitter.json
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib

from node.net.client import NodeClient

TARGET_IDLE_P99_MS = 5.0
METRIC_SAMPLES = 4096  # node.runtime.METRIC_SAMPLES
MAX_SECONDS = 600.0


async def measure(empty_blocks: bool, args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--tick-ms", str(args.tick_ms)]
    if empty_blocks:
        extra.append("--empty-blocks")
    with tempfile.TemporaryDirectory(prefix="xln-bench-jitter-") as tmp:
        data = Path(tmp)
        token = benchlib.create_token(data)
        with benchlib.run_node(data, extra) as node:
            client = await asyncio.wait_for(
                NodeClient.connect(node.url, token=token, sender_id=b"bench-jitter"), 30
            )
            try:
                await asyncio.sleep(args.settle)
                m1 = await asyncio.wait_for(client.metrics(), 30)
                cpu1, t1 = benchlib.cpu_seconds(node.pid), time.perf_counter()
                await asyncio.sleep(args.duration)
                m2 = await asyncio.wait_for(client.metrics(), 30)
                cpu2, t2 = benchlib.cpu_seconds(node.pid), time.perf_counter()
            finally:
                await client.close()
    before, after = m1["tick_lateness_us"], m2["tick_lateness_us"]
    if len(after) < METRIC_SAMPLES:
        samples = after[len(before) :]
    else:
        samples = after[-min(METRIC_SAMPLES, int((t2 - t1) * 1000 / args.tick_ms)) :]
    blocks = m2["blocks"] - m1["blocks"]
    writes = m2["write_us"][-blocks:] if blocks else []
    return {
        "empty_blocks": empty_blocks,
        "tick_ms": args.tick_ms,
        "measured_s": t2 - t1,
        "tick_lateness": benchlib.lateness_summary(samples),
        "tick_lateness_us": samples,
        "blocks": blocks,
        "write_ms": {
            "p50": benchlib.percentile(writes, 50) / 1000,
            "p99": benchlib.percentile(writes, 99) / 1000,
        },
        "node_cpu_pct": 100 * (cpu2 - cpu1) / (t2 - t1),
        "loadavg_after": os.getloadavg(),
    }


def _print(r: dict[str, Any]) -> None:
    late = r["tick_lateness"]
    ok = late["p99_ms"] <= TARGET_IDLE_P99_MS
    mode = "--empty-blocks (a block every tick)" if r["empty_blocks"] else "no empty blocks"
    print(f"idle node, {mode}, tick {r['tick_ms']} ms, {r['measured_s']:.1f} s")
    print(
        f"  tick late    p50 {late['p50_ms']:.2f} ms, p99 {late['p99_ms']:.2f} ms, "
        f"max {late['max_ms']:.2f} ms over {late['samples']:.0f} ticks "
        f"(target p99 <= {TARGET_IDLE_P99_MS:.0f} ms: {benchlib.verdict(ok)})"
    )
    print(
        f"  blocks       {r['blocks']}, write p50 {r['write_ms']['p50']:.2f} ms, "
        f"p99 {r['write_ms']['p99']:.2f} ms; node cpu {r['node_cpu_pct']:.1f}% of a core"
    )


def _seconds(text: str) -> float:
    value = float(text)
    if math.isnan(value) or not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_SECONDS:.0f}]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=_seconds, default=20.0, help="measured seconds per run (20)"
    )
    parser.add_argument("--settle", type=_seconds, default=1.0, help="seconds before measuring (1)")
    parser.add_argument("--tick-ms", type=int, default=100, help="the node's --tick-ms (100)")
    parser.add_argument(
        "--mode",
        choices=("both", "empty-blocks", "no-empty-blocks"),
        default="both",
        help="which runs (both)",
    )
    parser.add_argument("--json", help="also write results as JSON here ('-' for stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.tick_ms <= 10_000:
        raise SystemExit("--tick-ms must be 1..10000")
    modes = {"both": (True, False), "empty-blocks": (True,), "no-empty-blocks": (False,)}[args.mode]
    print(f"load average before: {os.getloadavg()}")
    runs = []
    for empty_blocks in modes:
        result = asyncio.run(measure(empty_blocks, args))
        _print(result)
        runs.append(result)
    options = {k: v for k, v in vars(args).items() if k != "json"}
    benchlib.write_json(args.json, {"benchmark": "jitter", "options": options, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
