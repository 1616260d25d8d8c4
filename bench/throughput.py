"""Benchmarks 1 and 2 (under load): acknowledged transactions per second over WebSocket.

Starts a real node (``xln-node run --port 0``) in a fresh temporary data folder,
creates a server-scope token, and drives it from separate client process(es):

- every SUBMIT frame is pre-encoded with :func:`node.net.protocol.encode_request`
  before the clock starts (``--batch`` increments per frame), in a ring of
  frames per connection whose request ids are reused only once their reply has
  arrived, so the client encodes nothing while it is measured;
- each connection keeps up to ``--window`` SUBMITs outstanding (pipelining);
- a transaction counts as acknowledged when the RECEIPTS reply of its SUBMIT
  arrives, which the node sends only once the block holding it is durable.

Each run: fresh node, connect and pre-encode, load for ``--warmup`` seconds,
measure for ``--duration`` seconds (``--paced-duration`` for paced runs, which
want more tick samples), stop sending and drain. During the measured
window the parent reads the node's own tick lateness (METRICS) and the CPU time
of the node and of the clients. Afterwards it checks that the node's counter
equals the number of acknowledged increments and fully decodes a sample of the
RECEIPTS replies.

Runs are every combination of ``--connections`` and ``--rates``; rate 0 is
closed-loop (as fast as the node acknowledges: the throughput figure), a
positive rate paces the offered load (for tick jitter at a given load).

Usage (from the repo root)::

    .venv/bin/python bench/throughput.py                    # 1 and 8 connections, max and 20k/s
    .venv/bin/python bench/throughput.py --connections 8 --rates 0 --client-procs 2
    .venv/bin/python bench/throughput.py --json bench/out/throughput.json

The ``client`` subcommand is internal: the parent runs it in a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from node.net.client import NodeClient, parse_receipts
from node.net.protocol import (
    MAX_TXS_PER_SUBMIT,
    Rep,
    Req,
    Sender,
    SenderKind,
    decode_reply,
    encode_request,
)

TARGET_TPS = 20_000
TARGET_LOAD_P99_MS = 10.0
METRIC_SAMPLES = 4096  # node.runtime.METRIC_SAMPLES: the node keeps this many lateness samples
MAX_REPLY_BYTES = 64 * 1024 * 1024
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 20.0
KEEP_REPLIES = 64  # RECEIPTS replies kept per connection for full validation afterwards
MAX_DURATION_S = 600.0
TOKEN_ENV = "XLN_BENCH_TOKEN"  # noqa: S105 - the name of a variable, not a secret


# Client (child process) ------------------------------------------------------


def reply_head(frame: bytes) -> tuple[int, int]:
    """Type and request id of a reply ``[type, request_id, body]``, without decoding the body.

    Reply types are 64..127, so the type is always a single RLP byte.
    """
    first = frame[0]
    if first < 0xC0:
        raise ValueError("reply is not an RLP list")
    pos = 1 if first <= 0xF7 else 1 + first - 0xF7
    rep_type = frame[pos]
    pos += 1
    prefix = frame[pos]
    if prefix < 0x80:
        return rep_type, prefix
    size = prefix - 0x80
    return rep_type, int.from_bytes(frame[pos + 1 : pos + 1 + size], "big")


@dataclass(eq=False)
class Conn:
    """One pipelined connection and its counters."""

    ws: ClientConnection
    frames: list[bytes]  # frames[i] carries request id i + 1
    window: int
    batch: int
    inflight: dict[int, float] = field(default_factory=dict)  # request id -> send time
    sent: int = 0
    acked_txs: int = 0
    errors: int = 0
    first_error: bytes = b""
    latencies: list[float] = field(default_factory=list)  # replies inside the measured window
    kept: list[bytes] = field(default_factory=list)
    measuring: bool = False
    stopping: bool = False
    slots: asyncio.Semaphore = field(init=False)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.window)


def encode_ring(sender: Sender, ring: int, batch: int) -> list[bytes]:
    """``ring`` SUBMIT frames of ``batch`` increment(1) transactions, request ids 1..ring."""
    body = [[1, 1] for _ in range(batch)]  # [type 1 = increment, n = 1]
    return [encode_request(Req.SUBMIT, rid, sender, (), body) for rid in range(1, ring + 1)]


async def _send_loop(conn: Conn, interval: float, phase: float) -> None:
    """Keep ``window`` SUBMITs in flight; with ``interval`` > 0, send at most one per interval."""
    loop = asyncio.get_running_loop()
    ring = len(conn.frames)
    next_rid = 1
    next_at = loop.time() + phase
    for _ in range(sys.maxsize):  # ends when the task is cancelled at the end of the window
        if interval > 0:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # Never catch up more than a second of missed sends in one burst.
            next_at = max(next_at + interval, loop.time() - 1.0)
        await conn.slots.acquire()
        for _ in range(ring):  # skip ids whose reply is still outstanding
            if next_rid not in conn.inflight:
                break
            next_rid = next_rid % ring + 1
        conn.inflight[next_rid] = loop.time()
        conn.sent += 1
        try:
            await conn.ws.send(conn.frames[next_rid - 1])
        except ConnectionClosed:
            conn.inflight.pop(next_rid, None)
            return
        next_rid = next_rid % ring + 1


async def _recv_loop(conn: Conn) -> None:
    loop = asyncio.get_running_loop()
    receipts = int(Rep.RECEIPTS)
    try:
        async for frame in conn.ws:
            if isinstance(frame, str):
                continue
            rep_type, rid = reply_head(frame)
            sent_at = conn.inflight.pop(rid, None)
            if sent_at is None:
                continue
            if rep_type == receipts:
                conn.acked_txs += conn.batch
                if conn.measuring:
                    conn.latencies.append(loop.time() - sent_at)
                    if len(conn.kept) < KEEP_REPLIES:
                        conn.kept.append(frame)
            else:
                conn.errors += 1
                if not conn.first_error:
                    conn.first_error = frame
            conn.slots.release()
            if conn.stopping and not conn.inflight:
                conn.drained.set()
    except ConnectionClosed:
        pass
    finally:
        conn.drained.set()


def _validate(conn: Conn) -> list[str]:
    """Fully decode the kept replies: each is RECEIPTS with one clean receipt per transaction."""
    problems = []
    for frame in conn.kept:
        reply = decode_reply(frame)
        if (int(reply.type), reply.request_id) != reply_head(frame):
            problems.append("reply_head disagrees with decode_reply")
        parsed = parse_receipts(reply)
        if len(parsed.receipts) != conn.batch:
            problems.append(f"{len(parsed.receipts)} receipts for a SUBMIT of {conn.batch}")
        failed = [r for r in parsed.receipts if r.error is not None]
        if failed:
            problems.append(f"{len(failed)} failed receipts, e.g. {failed[0].error}")
    return problems


async def _connect(url: str, token: str, sender: Sender, hello_rid: int) -> ClientConnection:
    ws = await connect(url, compression=None, max_size=MAX_REPLY_BYTES)
    await ws.send(encode_request(Req.HELLO, hello_rid, sender, (), [token.encode()]))
    welcome = decode_reply(await asyncio.wait_for(ws.recv(decode=False), 10))
    if welcome.type is not Rep.WELCOME:
        await ws.close()
        raise RuntimeError(f"HELLO refused: {welcome}")
    return ws


async def _client_main(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sender = Sender(SenderKind.CLIENT, f"bench-{os.getpid()}".encode())
    token = os.environ[TOKEN_ENV]
    conns: list[Conn] = []
    tasks: list[asyncio.Task[None]] = []
    setup_started = time.perf_counter()
    try:
        frames = encode_ring(sender, args.ring, args.batch)
        for _ in range(args.connections):
            ws = await _connect(args.url, token, sender, args.ring + 1)
            conns.append(Conn(ws, frames, args.window, args.batch))
        setup_s = time.perf_counter() - setup_started
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        parts = line.split()
        if len(parts) != 3 or parts[0] != "go":
            raise RuntimeError(f"expected 'go T1 T2' on stdin, got {line!r}")
        # Wall-clock marks shared with the parent, mapped onto this loop's clock.
        offset = loop.time() - time.time()
        mark1, mark2 = float(parts[1]) + offset, float(parts[2]) + offset
        # Paced: each connection offers rate / connections tx/s, phases staggered.
        interval = args.batch * len(conns) / args.rate if args.rate > 0 else 0.0
        senders = [
            asyncio.create_task(_send_loop(c, interval, i * interval / len(conns)))
            for i, c in enumerate(conns)
        ]
        tasks = senders + [asyncio.create_task(_recv_loop(c)) for c in conns]

        await asyncio.sleep(max(0.0, mark1 - loop.time()))
        acked1, t1, cpu1 = sum(c.acked_txs for c in conns), loop.time(), time.process_time()
        for c in conns:
            c.measuring = True
        await asyncio.sleep(max(0.0, mark2 - loop.time()))
        acked2, t2, cpu2 = sum(c.acked_txs for c in conns), loop.time(), time.process_time()
        for c in conns:
            c.measuring = False

        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        for c in conns:
            c.stopping = True
            if not c.inflight:
                c.drained.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.drained.wait() for c in conns)), DRAIN_TIMEOUT_S
            )
        undrained = sum(len(c.inflight) for c in conns)
    finally:
        for c in conns:
            with contextlib.suppress(Exception):
                await c.ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    problems = [p for c in conns for p in _validate(c)]
    first_error = next((c.first_error for c in conns if c.first_error), b"")
    return {
        "setup_s": setup_s,
        "window_s": t2 - t1,
        "window_acked_txs": acked2 - acked1,
        "total_acked_txs": sum(c.acked_txs for c in conns),
        "frames_sent": sum(c.sent for c in conns),
        "errors": sum(c.errors for c in conns),
        "first_error": repr(decode_reply(first_error)) if first_error else "",
        "undrained": undrained,
        "client_cpu_s": cpu2 - cpu1,
        "latencies_ms": [lat * 1000 for c in conns for lat in c.latencies],
        "problems": problems[:10],
    }


def client_main(args: argparse.Namespace) -> int:
    result = asyncio.run(_client_main(args))
    print("result " + json.dumps(result), flush=True)
    return 0


# Parent ----------------------------------------------------------------------


def _spawn_client(
    url: str, token: str, connections: int, rate: float, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "client", "--url", url]
    cmd += ["--connections", str(connections), "--rate", str(rate)]
    cmd += ["--batch", str(args.batch), "--window", str(args.window), "--ring", str(args.ring)]
    env = {**os.environ, TOKEN_ENV: token}
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=benchlib.REPO, env=env
    )


def _read_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float) -> bytes:
    match = benchlib.read_until(proc, re.compile(re.escape(prefix) + rb"[^\n]*\n"), timeout)
    return match.group(0).rstrip(b"\n")


def _new_samples(before: list[int], after: list[int], window_s: float, tick_ms: int) -> list[int]:
    """The lateness samples recorded between two METRICS replies."""
    if len(after) < METRIC_SAMPLES:
        return after[len(before) :]
    count = min(METRIC_SAMPLES, int(window_s * 1000 / tick_ms))
    return after[-count:] if count else []


def _profile_path(prefix: str | None, connections: int, rate: float) -> Path | None:
    if not prefix:
        return None
    path = Path(f"{prefix}.{connections}conn-{rate:.0f}.prof").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def measure(connections: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh node; ``connections`` connections spread over ``--client-procs`` processes."""
    procs_n = max(1, min(args.client_procs, connections))
    split = [
        connections // procs_n + (1 if i < connections % procs_n else 0) for i in range(procs_n)
    ]
    profile = _profile_path(args.node_profile, connections, rate)
    with tempfile.TemporaryDirectory(prefix="xln-bench-tp-") as tmp:
        data = Path(tmp)
        token = benchlib.create_token(data)
        extra = ["--tick-ms", str(args.tick_ms)]
        with benchlib.run_node(data, extra, profile=profile) as node:
            clients: list[subprocess.Popen[bytes]] = []
            control = await asyncio.wait_for(
                NodeClient.connect(node.url, token=token, sender_id=b"bench-control"), 30
            )
            try:
                for n in split:
                    clients.append(_spawn_client(node.url, token, n, rate * n / connections, args))
                for proc in clients:
                    _read_line(proc, b"ready", READY_TIMEOUT_S)
                t1 = time.time() + 0.2 + args.warmup
                t2 = t1 + (args.paced_duration if rate else args.duration)
                for proc in clients:
                    assert proc.stdin is not None
                    proc.stdin.write(f"go {t1} {t2}\n".encode())
                    proc.stdin.flush()
                await asyncio.sleep(max(0.0, t1 - time.time()))
                m1 = await asyncio.wait_for(control.metrics(), 30)
                cpu1, w1 = benchlib.cpu_seconds(node.pid), time.time()
                await asyncio.sleep(max(0.0, t2 - time.time()))
                m2 = await asyncio.wait_for(control.metrics(), 30)
                cpu2, w2 = benchlib.cpu_seconds(node.pid), time.time()
                results = []
                for proc in clients:
                    line = _read_line(proc, b"result ", DRAIN_TIMEOUT_S + 30)
                    results.append(json.loads(line[len(b"result ") :]))
                status = await asyncio.wait_for(control.status(), 30)
            finally:
                await control.close()
                for proc in clients:
                    benchlib.stop_process(proc)
    window_s = max(r["window_s"] for r in results)
    acked = sum(r["window_acked_txs"] for r in results)
    total_acked = sum(r["total_acked_txs"] for r in results)
    latencies = [lat for r in results for lat in r["latencies_ms"]]
    samples = _new_samples(m1["tick_lateness_us"], m2["tick_lateness_us"], w2 - w1, args.tick_ms)
    blocks = m2["blocks"] - m1["blocks"]
    writes = m2["write_us"][-blocks:] if blocks else []
    return {
        "connections": connections,
        "client_processes": procs_n,
        "offered_rate": rate,
        "batch": args.batch,
        "window": args.window,
        "tick_ms": args.tick_ms,
        "measured_s": window_s,
        "acked_txs": acked,
        "tps": acked / window_s if window_s > 0 else 0.0,
        "ack_latency_ms": {
            "p50": benchlib.percentile(latencies, 50),
            "p99": benchlib.percentile(latencies, 99),
        },
        "blocks_in_window": blocks,
        "txs_per_block": (m2["txs"] - m1["txs"]) / blocks if blocks else 0.0,
        "write_ms_p50": benchlib.percentile(writes, 50) / 1000,
        "tick_lateness": benchlib.lateness_summary(samples),
        "tick_lateness_us": samples,
        "node_cpu_pct": 100 * (cpu2 - cpu1) / (w2 - w1),
        "node_cpu_us_per_tx": 1e6 * (cpu2 - cpu1) / acked if acked else 0.0,
        "client_cpu_pct": sum(100 * r["client_cpu_s"] / r["window_s"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "undrained": sum(r["undrained"] for r in results),
        "problems": [p for r in results for p in r["problems"]],
        "counter_matches_acks": status.counter == total_acked,
        "counter": status.counter,
        "total_acked_txs": total_acked,
        "client_setup_s": max(r["setup_s"] for r in results),
        "loadavg_after": os.getloadavg(),
    }


def _print(r: dict[str, Any]) -> None:
    late, lat = r["tick_lateness"], r["ack_latency_ms"]
    load = f"paced at {r['offered_rate']:,.0f} tx/s" if r["offered_rate"] else "closed loop (max)"
    print(
        f"{r['connections']} connection(s) in {r['client_processes']} client process(es), {load}; "
        f"batch {r['batch']}, window {r['window']}, tick {r['tick_ms']} ms"
    )
    tps_note = f"(target >= {TARGET_TPS:,}: {benchlib.verdict(r['tps'] >= TARGET_TPS)})"
    if r["offered_rate"]:
        tps_note = f"(offered {r['offered_rate']:,.0f}/s; not a throughput figure)"
    print(f"  throughput   {r['tps']:>9,.0f} acked tx/s over {r['measured_s']:.1f} s {tps_note}")
    print(
        f"  ack latency  p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms; "
        f"{r['txs_per_block']:,.0f} tx/block, block write p50 {r['write_ms_p50']:.1f} ms"
    )
    jit_ok = late["p99_ms"] <= TARGET_LOAD_P99_MS
    print(
        f"  tick late    p50 {late['p50_ms']:.2f} ms, p99 {late['p99_ms']:.2f} ms, "
        f"max {late['max_ms']:.2f} ms over {late['samples']:.0f} ticks "
        f"(target p99 <= {TARGET_LOAD_P99_MS:.0f} ms: {benchlib.verdict(jit_ok)})"
    )
    print(
        f"  cpu          node {r['node_cpu_pct']:.0f}% of a core "
        f"({r['node_cpu_us_per_tx']:.1f} us per acked tx), clients {r['client_cpu_pct']:.0f}%"
    )
    ok = r["counter_matches_acks"] and not r["problems"] and not r["errors"]
    print(
        f"  checks       {'ok' if ok else 'FAILED'}: counter {r['counter']:,} = acked "
        f"{r['total_acked_txs']:,}? {r['counter_matches_acks']}; errors {r['errors']}, "
        f"undrained {r['undrained']}"
    )
    if r["first_error"]:
        print(f"  first error  {r['first_error']}")
    for problem in r["problems"]:
        print(f"  problem      {problem}")


def parent_main(args: argparse.Namespace) -> int:
    print(f"load average before: {os.getloadavg()}")
    runs = []
    for connections in args.connections:
        for rate in args.rates:
            result = asyncio.run(measure(connections, rate, args))
            _print(result)
            runs.append(result)
    options = {k: v for k, v in vars(args).items() if k not in ("cmd", "json")}
    benchlib.write_json(args.json, {"benchmark": "throughput", "options": options, "runs": runs})
    ok = all(r["counter_matches_acks"] and not r["problems"] and not r["errors"] for r in runs)
    return 0 if ok else 1


def _seconds(text: str) -> float:
    value = float(text)
    if math.isnan(value) or not 0 < value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_DURATION_S:.0f}]")
    return value


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or any(not 1 <= v <= 256 for v in values):
        raise argparse.ArgumentTypeError("comma-separated connection counts, 1..256")
    return values


def _rate_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v]
    if not values or any(math.isnan(v) or not 0 <= v <= 10_000_000 for v in values):
        raise argparse.ArgumentTypeError("comma-separated tx/s, 0 (= unpaced) .. 10,000,000")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    client = sub.add_parser(
        "client", help="internal: one client process (token in $XLN_BENCH_TOKEN)"
    )
    client.add_argument("--url", required=True)
    client.add_argument("--connections", type=int, required=True)
    client.add_argument("--rate", type=float, default=0.0)
    for p in (parser, client):
        p.add_argument("--batch", type=int, default=250, help="increments per SUBMIT frame (250)")
        p.add_argument(
            "--window", type=int, default=32, help="SUBMITs outstanding per connection (32)"
        )
        p.add_argument(
            "--ring", type=int, default=0, help="pre-encoded frames per connection (4 x window)"
        )
    parser.add_argument(
        "--connections", type=_int_list, default=[1, 8], help="runs, e.g. 1,8 (default)"
    )
    parser.add_argument(
        "--rates",
        type=_rate_list,
        default=[0.0, 20_000.0],
        help="offered tx/s per run; 0 = max (0,20000)",
    )
    parser.add_argument("--client-procs", type=int, default=1, help="client processes per run (1)")
    parser.add_argument("--duration", type=_seconds, default=10.0, help="measured s, max runs (10)")
    parser.add_argument(
        "--paced-duration", type=_seconds, default=20.0, help="measured seconds, paced runs (20)"
    )
    parser.add_argument("--warmup", type=_seconds, default=2.0, help="load before measuring (2 s)")
    parser.add_argument("--tick-ms", type=int, default=100, help="the node's --tick-ms (100)")
    parser.add_argument(
        "--node-profile", help="run the node under cProfile; stats to PATH.<run>.prof"
    )
    parser.add_argument("--json", help="also write results as JSON here ('-' for stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.batch <= MAX_TXS_PER_SUBMIT:
        raise SystemExit(f"--batch must be 1..{MAX_TXS_PER_SUBMIT}")
    if not 1 <= args.window <= 4096:
        raise SystemExit("--window must be 1..4096")
    args.ring = min(max(args.ring, 4 * args.window), 16_384)
    if args.cmd == "client":
        return client_main(args)
    if not 1 <= args.client_procs <= 16:
        raise SystemExit("--client-procs must be 1..16")
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
