"""Benchmark: how a hub entity's costs grow with its channels, on a stored hub.

Issue 11 measured a 3-signer hub with N channels, one of them active, the others
idle: a frame that moves 256 payments cost 4 ms at N = 10 and 13 s at N = 10,000.
For each N this script

1. generates a data folder holding the hub's first member's replica with N
   channels (``bench/hub_store.py``, in its own process: real channel records and
   trie nodes, marked synthetic);
2. in a **fresh process**, opens every N's store as a node does (``Store.load``:
   the top of each map, nothing below; ``--cache-mb`` bounds the nodes kept in
   memory) and times, on each loaded replica in turn (so that every N meets the
   same speed of the machine, which drifts by up to 2x between processes), the
   median CPU time of ``--reps`` runs, after a cold one (``*_cold_ms``: the nodes
   read from LevelDB), of:

   - **proposer**: ``entity.build`` of a frame whose signed batch pays 256 payments
     of 1 to the active channel's counterparty (the BLS signature checked);
   - **member**: ``entity.execute`` of the same frame (signature checked);
   - **spread**: the 256 payments over 256 different channels (256 channel frames);
   - **frame**: the one-channel frame, signature not checked;
   - **lookup**: one inbound channel message looked up (``accounts.is_stale``);
   - **read channel** / **read page**: READ_ENTITY of one channel, or of a page of
     256 channels, built by the node's code and checked as a client checks it;
   - **block**: the block after the member's frame, made and written for real
     (``server.replica_write`` and ``Store.write_block``): ``bytes_per_block`` is
     the key and value bytes of its synced batch (``storage.block_writes``);

   ``--rounds`` such processes run, each on fresh copies of the folders, and each
   figure is the median over rounds;
3. per N, a process of its own opens that N's store and does each figure's work
   once: ``rss_mb`` is its peak resident memory, and what is resident at the end
   is split in two: ``rss_anon_mb``, its own memory, and ``rss_file_mb``, pages of
   LevelDB's table files, which LevelDB maps and the kernel reads ahead (up to
   128 KB around each node read);
4. **restart**: a real ``xln-node run`` process on a copy of that folder, from its
   start to its answer to READ_ENTITY of the hub's header over a WebSocket (the
   median of ``--rounds``).

Usage (from the repo root)::

    .venv/bin/python -m bench.hub_scale --json bench/out/hub_scale.json
    .venv/bin/python -m bench.hub_scale --channels 10,1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

try:
    import benchlib
    import hub_store
except ModuleNotFoundError:  # run as ``python -m bench.hub_scale``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib
    import hub_store

from node.block import Block
from node.codec import keccak
from node.machines import accounts, replica
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines.accounts import Pay
from node.machines.entity import Batch, EntityState
from node.machines.server import ServerState, Step, Write, replica_write
from node.machines.signer import SignerState
from node.machines.subs import Subs
from node.mempool import Mempool
from node.storage import Store, block_writes
from node.txs import Tx

ASSET = hub_store.ASSET
PAYMENTS = 256
ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_parts_mb() -> tuple[float, float]:
    """Resident memory now, split: anonymous (the process's own: Python objects, the
    cache, LevelDB's block cache) and file-backed (pages of LevelDB's tables, which it
    maps, as the kernel read them ahead; the kernel may drop them). Linux only."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("RssAnon", 0.0), fields.get("RssFile", 0.0)


def cpu_ms(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


class _Hub:
    """One stored hub opened as a node opens it, with the work a figure times."""

    def __init__(self, data: Path, cache_mb: int) -> None:
        self.store = Store(data / hub_store.CHAIN_DIR, cache_bytes=cache_mb << 20)
        self.state, _ = self.store.load()
        ((self.signer_id, self.signer),) = list(self.state.hosted.items())
        ((self.entity_id, self.held),) = list(self.signer.held.items())
        hub: EntityState = self.held.entity
        self.hub = hub
        self.active = active = hub_store.peer(0)
        member = hub.config.ids[0]
        nonce = dict(hub.nonces).get(member, 0) + 1
        txs = [Tx.of(Pay((active,), ASSET, 1)) for _ in range(PAYMENTS)]
        self.signed = ent.sign_batch(self.entity_id, hub_store.HUB_SK, member, nonce, txs)
        self.unsigned = Batch.make(member, nonce, txs, bytes(96))
        spread = [k for k in islice(hub.channels.keys(), PAYMENTS)]
        spread_txs = [Tx.of(Pay((spread[i % len(spread)],), ASSET, 1)) for i in range(PAYMENTS)]
        self.spread_batch = Batch.make(member, nonce, spread_txs, bytes(96))
        self.message = accounts.Message(
            accounts.ACK, active, ch.Ack(self.entity_id, 1, keccak(b"frame")), 0, b"\x01", bytes(96)
        )
        self.post: EntityState | None = None

    def proposer(self) -> None:
        built = ent.build(self.hub, [self.signed], [], allow_mint=False)
        assert built.batches == [self.signed]
        _ = built.post.hash

    def member_frame(self) -> None:
        post, events = ent.execute(self.hub, [self.signed], verify=True)
        assert len(events.payments) == PAYMENTS
        _ = post.hash
        self.post = post

    def spread_frame(self) -> None:
        post, events = ent.execute(self.hub, [self.spread_batch], verify=False)
        assert len(events.payments) == PAYMENTS
        _ = post.hash

    def frame(self) -> None:
        post, events = ent.execute(self.hub, [self.unsigned], verify=False)
        assert len(events.outbox) == 1
        _ = post.hash

    def figures(self) -> list[tuple[str, Callable[[], object]]]:
        genesis = self.held.genesis
        return [
            ("proposer_frame_ms", self.proposer),
            ("member_frame_ms", self.member_frame),
            ("spread_frame_ms", self.spread_frame),
            ("frame_ms", self.frame),
            ("lookup_us", lambda: accounts.is_stale(self.hub.channels, self.message)),
            ("read_channel_ms", lambda: read_channel(self.hub, genesis, self.active)),
            ("read_page_ms", lambda: read_page(self.hub, genesis)),
        ]

    def block(self) -> dict[str, Any]:
        """The block after the member's frame, made and written as the node does."""
        assert self.post is not None
        held, state, signer = self.held, self.state, self.signer
        new = replica.Replica(held.signer, held.genesis, self.post)
        started = time.process_time()
        write = replica_write((self.signer_id, self.entity_id), new, held)
        new_signer = SignerState.of(signer.pubkey, signer.counter, (new,))
        body = ServerState(
            state.height + 1,
            state.timestamp + 1,
            state.counter,
            Subs.of([(self.signer_id, new_signer)]),
        )
        block = Block.make(
            body.height, state.head, body.timestamp, Mempool.build().raw, body.hash()
        )
        step = Step(
            dataclasses.replace(body, head=block.hash),
            block,
            (),
            changed=(Write((self.signer_id,), new_signer.encoded), write),
        )
        written = sum(len(k) + len(v or b"") for k, v in block_writes(step, self.store.server_id))
        self.store.write_block(step)
        return {"bytes_per_block": written, "block_ms": (time.process_time() - started) * 1000}


def measure_times(folders: list[Path], reps: int, cache_mb: int) -> list[dict[str, Any]]:
    """Step 2's CPU figures, in this process, for every hub at once: each figure is run
    on each hub in turn (a cold run first, then ``reps``), so every N meets the same
    speed of the machine."""
    hubs = [_Hub(f, cache_mb) for f in folders]
    try:
        runs: list[dict[str, list[float]]] = [{} for _ in hubs]
        names = [name for name, _ in hubs[0].figures()]
        for i, name in enumerate(names):
            for _ in range(reps + 1):
                for h, hub in enumerate(hubs):
                    fn = hub.figures()[i][1]
                    runs[h].setdefault(name, []).append(cpu_ms(fn))
        rows = []
        for hub, times in zip(hubs, runs, strict=True):
            times["lookup_us"] = [t * 1000 for t in times["lookup_us"]]
            row: dict[str, Any] = {name: statistics.median(ts[1:]) for name, ts in times.items()}
            row.update(
                {
                    n.replace("_ms", "_cold_ms"): ts[0]
                    for n, ts in times.items()
                    if n.endswith("_ms")
                }
            )
            genesis = hub.held.genesis
            row.update(
                {
                    "channels": len(hub.hub.channels),
                    "read_channel_bytes": read_channel(hub.hub, genesis, hub.active),
                    "read_page_bytes": read_page(hub.hub, genesis),
                }
            )
            row.update(hub.block())
            rows.append(row)
        return rows
    finally:
        for hub in hubs:
            hub.store.close()


def measure_memory(folder: Path, cache_mb: int) -> dict[str, Any]:
    """Step 2's memory figures: this process opens one hub and does each figure's work
    once, then reports its peak resident memory and what is resident now."""
    hub = _Hub(folder, cache_mb)
    try:
        for _, fn in hub.figures():
            fn()
        hub.block()
        row: dict[str, Any] = {
            "cache_mb": cache_mb,
            "cache_used_mb": hub.store.cache.used / 2**20,
            "nodes_read": hub.store.cache.loads,
            "rss_mb": rss_mb(),
        }
        row["rss_anon_mb"], row["rss_file_mb"] = rss_parts_mb()
        return row
    finally:
        hub.store.close()


async def _read_header(url: str, token: str, route: list[bytes]) -> None:
    from node.entity_reads import HEADER
    from node.net.client import NodeClient
    from node.net.protocol import Rep, Req

    async with await NodeClient.connect(url, token=token) as client:
        reply = await client.request(Req.READ_ENTITY, [HEADER, b""], route)
        assert reply.type is Rep.ENTITY, reply


def restart_ms(data: Path, route: list[bytes]) -> float:
    """Step 3: a real node process's start to its answer to READ_ENTITY of the header."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "token",
            "create",
            "--data",
            str(data),
            "--scope",
            "server",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    token = made.stdout.strip()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the node exited before listening")
            found = re.search(rb"listening on ws://127\.0\.0\.1:(\d+)", line)
            if found:
                break
        asyncio.run(_read_header(f"ws://127.0.0.1:{int(found.group(1))}", token, route))
        return (time.perf_counter() - started) * 1000
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def generate(n: int, root: Path) -> tuple[Path, float]:
    """Step 1, in its own process: the stored hub with ``n`` channels, and the seconds."""
    folder = root / f"hub-{n}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.hub_store", "--channels", str(n), "--data", str(folder)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    return folder, time.perf_counter() - started


def _run(*args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "bench.hub_scale", *args],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def _copies(made: list[Path]) -> list[Path]:
    """Fresh copies of the generated folders (a measurement writes a block)."""
    out = []
    for folder in made:
        copy = folder.with_name(folder.name + "-run")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        out.append(copy)
    return out


def _route(folder: Path) -> list[bytes]:
    with Store(folder / hub_store.CHAIN_DIR) as store:
        state, _ = store.load()
        ((signer_id, signer),) = list(state.hosted.items())
        return [signer_id, next(iter(signer.held))]


def measure(sizes: list[int], reps: int, rounds: int, cache_mb: int) -> list[dict[str, Any]]:
    """Every N generated first; then ``rounds`` fresh processes timing every N at once
    (the median over rounds of each round's median); then, per N, a process of its own
    for the memory figures and a real node's restart (the median of ``rounds``)."""
    root = Path(tempfile.mkdtemp(prefix="hub-scale-"))
    try:
        made = {n: generate(n, root) for n in sizes}
        folders = [made[n][0] for n in sizes]
        timed: list[list[dict[str, Any]]] = []
        for _ in range(rounds):
            copies = _copies(folders)
            timed.append(
                _run(
                    "--times",
                    ",".join(map(str, copies)),
                    "--reps",
                    str(reps),
                    "--cache-mb",
                    str(cache_mb),
                )
            )
        rows = []
        for i, n in enumerate(sizes):
            row: dict[str, Any] = {}
            for key, value in timed[0][i].items():
                floats = isinstance(value, float)
                row[key] = statistics.median(t[i][key] for t in timed) if floats else value
            (copy,) = _copies([made[n][0]])
            row.update(_run("--memory", str(copy), "--cache-mb", str(cache_mb)))
            route = _route(copy)
            row["restart_ms"] = statistics.median(
                restart_ms(c, route) for c in (_copies([made[n][0]])[0] for _ in range(rounds))
            )
            row["generate_s"] = made[n][1]
            chain = made[n][0] / hub_store.CHAIN_DIR
            row["disk_bytes"] = sum(f.stat().st_size for f in chain.iterdir())
            row["rounds"] = rounds
            rows.append(row)
        return rows
    finally:
        shutil.rmtree(root)


def read_channel(state: EntityState, genesis: replica.Genesis, peer: bytes) -> int:
    """READ_ENTITY of one channel, both ends (no socket); returns the part's bytes."""
    from node import entity_reads as reads
    from node.codec import decode, encode_tree

    raw = encode_tree(
        [
            reads.header_part(genesis.to_tree(), state),
            reads.record_part(state, reads.CHANNELS, peer),
        ]
    )
    got = decode(raw)
    assert isinstance(got, list)
    header = reads.EntityHeader.from_item(got[0], state.entity_id)
    record = reads.check_record(header, reads.CHANNELS, peer, got[1])
    assert record is not None
    return len(raw)


def read_page(state: EntityState, genesis: replica.Genesis) -> int:
    """The same for the first page of 256 channels."""
    from node import entity_reads as reads
    from node.codec import decode, encode_tree

    raw = encode_tree(
        [
            reads.header_part(genesis.to_tree(), state),
            reads.page_part(state, reads.CHANNELS, b"", reads.MAX_PAGE),
        ]
    )
    got = decode(raw)
    assert isinstance(got, list)
    header = reads.EntityHeader.from_item(got[0], state.entity_id)
    page = reads.check_page(header, reads.CHANNELS, b"", got[1])
    assert len(page.records) == min(reads.MAX_PAGE, len(state.channels))
    return len(raw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", default="10,1000,100000,1000000")
    parser.add_argument("--reps", type=int, default=3, help="runs per process (after a cold one)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per N, interleaved")
    parser.add_argument("--cache-mb", type=int, default=256, help="the node cache (MiB)")
    parser.add_argument("--json", default=None, help="write the figures here (- for stdout)")
    parser.add_argument("--times", default=None, help=argparse.SUPPRESS)  # step 2, in-process
    parser.add_argument("--memory", default=None, help=argparse.SUPPRESS)  # step 2's memory
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.times is not None:
        folders = [Path(f) for f in args.times.split(",")]
        print(json.dumps(measure_times(folders, args.reps, args.cache_mb)))
        return 0
    if args.memory is not None:
        print(json.dumps(measure_memory(Path(args.memory), args.cache_mb)))
        return 0
    print(
        f"{'channels':>10} {'proposer':>9} {'member':>8} {'spread':>8} {'frame':>7} "
        f"{'block ms':>9} {'written':>8} {'rss MB':>7} {'restart ms':>11} "
        f"{'channel ms':>11} {'bytes':>7} {'page ms':>8} {'bytes':>8} {'disk MB':>8}"
    )
    rows = measure(
        [int(x) for x in args.channels.split(",")], args.reps, args.rounds, args.cache_mb
    )
    for row in rows:
        n = row["channels"]
        print(
            f"{n:>10,} {row['proposer_frame_ms']:>9.2f} {row['member_frame_ms']:>8.2f} "
            f"{row['spread_frame_ms']:>8.2f} {row['frame_ms']:>7.2f} {row['block_ms']:>9.2f} "
            f"{row['bytes_per_block']:>8,} {row['rss_mb']:>7.0f} {row['restart_ms']:>11.0f} "
            f"{row['read_channel_ms']:>11.2f} {row['read_channel_bytes']:>7,} "
            f"{row['read_page_ms']:>8.1f} {row['read_page_bytes']:>8,} "
            f"{row['disk_bytes'] / 2**20:>8.1f}",
            flush=True,
        )
    benchlib.write_json(
        args.json,
        {
            "benchmark": "hub_scale",
            "cache_mb": args.cache_mb,
            "rows": rows,
            **benchlib.machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
