"""An honest client's ack latency and the node's memory while connections flood it.

One ``xln-node run`` process (100 ms ticks). An honest client submits one
increment at a time and times each acknowledgement (SUBMIT sent to RECEIPTS
read). First alone (the baseline), then while ``--floods N`` connections, in a
separate process, send one kind of hostile frame as fast as the node takes
them, for each kind in turn:

- ``deep``: before HELLO, 100,000 nested lists (350 KB): cut off by the
  WebSocket cap, reconnect, again;
- ``pre-hello``: before HELLO, a 1 KiB frame past the item cap: error, close,
  reconnect, again;
- ``wide``: after HELLO, the worst frame the caps allow: 65,536 items (21,845
  two-item lists) in a STATUS body, decoded in full before it is refused;
- ``submit``: after HELLO, a SUBMIT at the item cap whose every transaction
  decodes but the last, so the node decodes the envelope and 4,095 transactions
  before it refuses the request;
- ``lies``: after HELLO, frames whose length prefixes lie, 1 MiB each;
- ``deep-auth``: after HELLO, 100,000 nested lists in a 1 MiB-capped frame.

Targets (issue 10): with 4 connections flooding, the honest client's ack
latency p99 stays within 2 ticks (200 ms), and the node's RSS at most 128 MiB
over its idle figure. Run from the repo root::

    .venv/bin/python -m bench.flood --json bench/out/flood.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.flood``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.codec import encode, encode_list, encode_uint, nested_lists
from node.machines.server import Increment
from node.net import limits
from node.net.client import NodeClient
from node.net.protocol import Req, Sender, SenderKind, encode_request
from node.txs import Tx

TICK_MS = 100
SENDER = Sender(SenderKind.CLIENT, b"flood")
KINDS = ("deep", "pre-hello", "wide", "submit", "lies", "deep-auth")


def envelope(req: Req, body_items: list[bytes]) -> bytes:
    return encode_list(
        [
            encode_uint(req),
            encode_uint(7),
            encode([SENDER.kind, SENDER.id]),
            encode([]),
            encode_list(body_items),
        ]
    )


def hostile_frames(kind: str) -> tuple[bool, list[bytes]]:
    """``(after_hello, frames)`` a flooder of ``kind`` sends in turn."""
    cap = limits.REQUEST.max_items
    if kind == "deep":
        return False, [nested_lists(100_000)]
    if kind == "pre-hello":
        return False, [encode_list([b"\x01"] * 1000)]
    if kind == "wide":
        return True, [envelope(Req.STATUS, [b"\xc2\x80\x80"] * ((cap - 9) // 3))]
    if kind == "submit":
        good = Tx.of(Increment(1)).raw
        return True, [envelope(Req.SUBMIT, [good] * 4095 + [b"\xc1\xc0"])]
    if kind == "lies":
        liar = b"\xb9\xff\xff" + b"a" * 100
        return True, [
            encode_list([liar] * 9000)[:-1],
            b"\xf9\xff\xff" + b"\xc0" * (limits.MAX_FRAME_BYTES - 8),
            envelope(Req.STATUS, [b"\xbf" + b"\xff" * 8 + b"x"]),
        ]
    if kind == "deep-auth":
        return True, [envelope(Req.STATUS, [nested_lists(100_000)])]
    raise ValueError(kind)


async def _flooder(url: str, token: str, kind: str, stop_at: float, sent: list[int]) -> None:
    after_hello, frames = hostile_frames(kind)
    hello = encode_request(Req.HELLO, 1, SENDER, (), [token.encode()])
    while time.monotonic() < stop_at:
        try:
            async with connect(url, compression=None, max_size=None, open_timeout=5) as ws:
                if after_hello:
                    await ws.send(hello)
                    await ws.recv()

                async def drain() -> None:
                    with contextlib.suppress(ConnectionClosed):
                        async for _ in ws:
                            pass

                reader = asyncio.create_task(drain())
                try:
                    i = 0
                    while time.monotonic() < stop_at and not reader.done():
                        await ws.send(frames[i % len(frames)])
                        sent[0] += 1
                        i += 1
                        if not after_hello:
                            break  # the node closes it: open another
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(reader), 1.0)
                finally:
                    reader.cancel()
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
            await asyncio.sleep(0.01)


def flood_process(url: str, token: str, kind: str, floods: int, seconds: float, out: Any) -> None:
    """Runs in a child process: ``floods`` connections of ``kind`` for ``seconds``."""

    async def main() -> int:
        stop_at = time.monotonic() + seconds
        sent = [0]
        await asyncio.gather(*(_flooder(url, token, kind, stop_at, sent) for _ in range(floods)))
        return sent[0]

    out.put(asyncio.run(main()))


class RssSampler:
    """Samples a process's resident memory every 50 ms, in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):
                self.peak_mb = max(self.peak_mb, self.now_mb())

    def reset(self) -> None:
        self.peak_mb = self.now_mb()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def honest_acks(client: NodeClient, seconds: float) -> list[float]:
    """Submit one increment at a time for ``seconds``; the ack latencies in ms."""
    latencies = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        await asyncio.wait_for(client.submit([Increment(1)]), 30)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "acks": float(len(latencies)),
        "p50_ms": round(benchlib.percentile(latencies, 50), 1),
        "p99_ms": round(benchlib.percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"tick_ms": TICK_MS, "floods": args.floods, "kinds": {}}
    with tempfile.TemporaryDirectory(prefix="xln-flood-") as tmp:
        data = Path(tmp) / "data"
        token = benchlib.create_token(data)
        with benchlib.run_node(data, ["--tick-ms", str(TICK_MS)]) as node:
            rss = RssSampler(node.pid)
            try:
                async with await NodeClient.connect(node.url, token=token) as client:
                    await honest_acks(client, 2)  # warm up
                    idle_mb = rss.now_mb()
                    baseline = summary(await honest_acks(client, args.seconds))
                    results["idle_rss_mb"] = round(idle_mb, 1)
                    results["baseline"] = baseline
                    print(f"idle RSS {idle_mb:.0f} MiB; alone: {baseline}")
                    ctx = multiprocessing.get_context("spawn")
                    for kind in args.kinds:
                        out = ctx.Queue()
                        proc = ctx.Process(
                            target=flood_process,
                            args=(node.url, token, kind, args.floods, args.seconds + 2, out),
                        )
                        proc.start()
                        await asyncio.sleep(1.5)  # the flood under way
                        rss.reset()
                        under = summary(await honest_acks(client, args.seconds))
                        peak = rss.peak_mb
                        proc.join(timeout=60)
                        frames = out.get(timeout=10) if not out.empty() else -1
                        entry = {
                            **under,
                            "flood_frames": frames,
                            "peak_rss_mb": round(peak, 1),
                            "rss_over_idle_mb": round(peak - idle_mb, 1),
                        }
                        results["kinds"][kind] = entry
                        print(f"{kind:>10}: {entry}")
                        await asyncio.sleep(1)  # let the node settle between kinds
                    metrics = await client.metrics()
                    results["alive"] = node.proc.poll() is None
            finally:
                rss.stop()
    worst_p99 = max(e["p99_ms"] for e in results["kinds"].values())
    worst_rss = max(e["rss_over_idle_mb"] for e in results["kinds"].values())
    results["worst_p99_ms"] = worst_p99
    results["worst_rss_over_idle_mb"] = worst_rss
    results["tick_lateness"] = benchlib.lateness_summary(metrics["tick_lateness_us"])
    ok_latency = worst_p99 <= 2 * TICK_MS
    ok_rss = worst_rss <= 128
    target = 2 * TICK_MS
    print(f"ack p99 under flood <= {target} ms: {worst_p99} ms", benchlib.verdict(ok_latency))
    print(f"RSS over idle <= 128 MiB: {worst_rss} MiB {benchlib.verdict(ok_rss)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floods", type=int, default=4, help="flooding connections")
    parser.add_argument("--seconds", type=float, default=8.0, help="per kind, and alone")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--json", help="write the figures here (- for stdout)")
    args = parser.parse_args()
    benchlib.write_json(args.json, asyncio.run(run(args)))


if __name__ == "__main__":
    main()
