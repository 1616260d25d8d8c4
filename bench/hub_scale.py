"""Benchmark: how a hub entity's costs grow with its channels, on a stored hub.

Issue 11 measured a 3-signer hub with N channels, one of them active, the others
idle: a frame that moves 256 payments cost 4 ms at N = 10 and 13 s at N = 10,000.
For each N this script

1. generates a data folder holding the hub's first member's replica with N
   channels (``bench/hub_store.py``, in its own process: real channel records and
   trie nodes, marked synthetic);
2. in a **fresh process**, opens that store as a node does (``Store.load``: the
   top of each map, nothing below; ``--cache-mb`` bounds the nodes kept in
   memory) and measures, on the loaded replica, the median CPU time of ``--reps``
   runs of:

   - **proposer**: ``entity.build`` of a frame whose signed batch pays 256 payments
     of 1 to the active channel's counterparty (the BLS signature checked);
   - **member**: ``entity.execute`` of the same frame (signature checked);
   - **spread**: the 256 payments over 256 different channels (256 channel frames);
   - **frame**: the one-channel frame, signature not checked;
   - **lookup**: one inbound channel message looked up (``accounts.is_stale``);
   - **block**: the block after the member's frame, made and written for real
     (``server.replica_write`` and ``Store.write_block``): ``bytes_per_block`` is
     the key and value bytes of its synced batch (``storage.block_writes``);
   - **read channel** / **read page**: READ_ENTITY of one channel, or of a page of
     256 channels, built by the node's code and checked as a client checks it;

   then reports ``rss_mb``, that process's peak resident memory, and what is
   resident at the end split in two: ``rss_anon_mb``, its own memory, and
   ``rss_file_mb``, pages of LevelDB's table files, which LevelDB maps and the
   kernel reads ahead (up to 128 KB around each node read);
3. measures **restart**: a real ``xln-node run`` process on that folder, from its
   start to its answer to READ_ENTITY of the hub's header over a WebSocket.

The first run of each figure reads the nodes it touches from LevelDB (the cache
starts empty, as after a restart; reported as ``*_cold_ms``); the median is of
the ``--reps`` runs after it, with a warm cache, as a running hub's active channels
are. Steps 2 and 3 run ``--rounds`` times for each N, interleaved (N1, N2, ..., N1,
N2, ...), each on a fresh copy of the generated folder: this machine's speed drifts
by up to 2x between processes, so each figure is the median over rounds (the
memory figures the largest), and every N meets the same drift.

Usage (from the repo root)::

    .venv/bin/python -m bench.hub_scale --json bench/out/hub_scale.json
    .venv/bin/python -m bench.hub_scale --channels 10,1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
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


def measure_store(data: Path, reps: int, cache_mb: int) -> dict[str, Any]:
    """Step 2 of the module docstring, in this process, on the hub stored at ``data``."""
    with Store(data / hub_store.CHAIN_DIR, cache_bytes=cache_mb << 20) as store:
        state, _ = store.load()
        ((signer_id, signer),) = list(state.hosted.items())
        ((entity_id, held),) = list(signer.held.items())
        hub: EntityState = held.entity
        active = hub_store.peer(0)
        member = hub.config.ids[0]
        txs = [Tx.of(Pay((active,), ASSET, 1)) for _ in range(PAYMENTS)]
        signed = ent.sign_batch(entity_id, hub_store.HUB_SK, member, 1, txs)
        unsigned = Batch.make(member, 1, txs, bytes(96))
        spread = [k for k in islice(hub.channels.keys(), PAYMENTS)]
        spread_txs = [Tx.of(Pay((spread[i % len(spread)],), ASSET, 1)) for i in range(PAYMENTS)]
        spread_batch = Batch.make(member, 1, spread_txs, bytes(96))
        message = accounts.Message(
            accounts.ACK, active, ch.Ack(entity_id, 1, keccak(b"frame")), 0, b"\x01", bytes(96)
        )
        genesis = held.genesis
        posts: list[EntityState] = []

        def proposer() -> None:
            built = ent.build(hub, [signed], [], allow_mint=False)
            assert built.batches == [signed]
            _ = built.post.hash

        def member_frame() -> None:
            post, events = ent.execute(hub, [signed], verify=True)
            assert len(events.payments) == PAYMENTS
            _ = post.hash
            posts.append(post)

        def spread_frame() -> None:
            post, events = ent.execute(hub, [spread_batch], verify=False)
            assert len(events.payments) == PAYMENTS
            _ = post.hash

        def frame() -> None:
            post, events = ent.execute(hub, [unsigned], verify=False)
            assert len(events.outbox) == 1
            _ = post.hash

        runs: dict[str, list[float]] = {}
        for name, fn in (
            ("proposer_frame_ms", proposer),
            ("member_frame_ms", member_frame),
            ("spread_frame_ms", spread_frame),
            ("frame_ms", frame),
            ("lookup_us", lambda: accounts.is_stale(hub.channels, message)),
            ("read_channel_ms", lambda: read_channel(hub, genesis, active)),
            ("read_page_ms", lambda: read_page(hub, genesis)),
        ):
            runs[name] = [cpu_ms(fn) for _ in range(reps + 1)]  # the first run is cold
        runs["lookup_us"] = [t * 1000 for t in runs["lookup_us"]]
        # The block after the member's frame, made and written as the node does.
        new = replica.Replica(held.signer, genesis, posts[0])
        block_cpu = time.process_time()
        write = replica_write((signer_id, entity_id), new, held)
        new_signer = SignerState.of(signer.pubkey, signer.counter, (new,))
        body = ServerState(
            state.height + 1, state.timestamp + 1, state.counter, Subs.of([(signer_id, new_signer)])
        )
        block = Block.make(
            body.height, state.head, body.timestamp, Mempool.build().raw, body.hash()
        )
        from dataclasses import replace

        step = Step(
            replace(body, head=block.hash),
            block,
            (),
            changed=(Write((signer_id,), new_signer.encoded), write),
        )
        written = sum(len(k) + len(v or b"") for k, v in block_writes(step, store.server_id))
        store.write_block(step)
        block_ms = (time.process_time() - block_cpu) * 1000
        row: dict[str, Any] = {name: statistics.median(times[1:]) for name, times in runs.items()}
        row.update(
            {
                name.replace("_ms", "_cold_ms"): times[0]
                for name, times in runs.items()
                if name.endswith("_ms")
            }
        )
        row.update(
            {
                "channels": len(hub.channels),
                "bytes_per_block": written,
                "block_ms": block_ms,
                "read_channel_bytes": read_channel(hub, genesis, active),
                "read_page_bytes": read_page(hub, genesis),
                "cache_mb": cache_mb,
                "cache_used_mb": store.cache.used / 2**20,
                "nodes_read": store.cache.loads,
                "rss_mb": rss_mb(),
            }
        )
        row["rss_anon_mb"], row["rss_file_mb"] = rss_parts_mb()
        return row


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


def measure_once(made: Path, reps: int, cache_mb: int) -> dict[str, Any]:
    """Steps 2 and 3 on a copy of the generated folder (step 2 writes a block)."""
    folder = made.with_name(made.name + "-run")
    shutil.copytree(made, folder)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.hub_scale",
                "--one",
                str(folder),
                "--reps",
                str(reps),
                "--cache-mb",
                str(cache_mb),
            ],
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
        )
        row: dict[str, Any] = json.loads(out.stdout)
        with Store(folder / hub_store.CHAIN_DIR) as store:
            state, _ = store.load()
            ((signer_id, signer),) = list(state.hosted.items())
            entity_id = next(iter(signer.held))
        row["restart_ms"] = restart_ms(folder, [signer_id, entity_id])
        return row
    finally:
        shutil.rmtree(folder)


def measure(sizes: list[int], reps: int, rounds: int, cache_mb: int) -> list[dict[str, Any]]:
    """Every N generated first, then ``rounds`` rounds measuring each N in turn (the
    machine's speed drifts: each figure is the median over rounds of each round's
    median, so every N sees the same drift)."""
    root = Path(tempfile.mkdtemp(prefix="hub-scale-"))
    try:
        made = {n: generate(n, root) for n in sizes}
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
        for _ in range(rounds):
            for n in sizes:
                runs[n].append(measure_once(made[n][0], reps, cache_mb))
        rows = []
        for n in sizes:
            row: dict[str, Any] = {}
            for key, value in runs[n][0].items():
                if isinstance(value, float) and key not in ("rss_mb", "rss_anon_mb", "rss_file_mb"):
                    row[key] = statistics.median(r[key] for r in runs[n])
                elif key in ("rss_mb", "rss_anon_mb", "rss_file_mb"):
                    row[key] = max(r[key] for r in runs[n])
                else:
                    row[key] = value
            folder = made[n][0] / hub_store.CHAIN_DIR
            row["generate_s"] = made[n][1]
            row["disk_bytes"] = sum(f.stat().st_size for f in folder.iterdir())
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
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # step 2, in-process
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure_store(Path(args.one), args.reps, args.cache_mb)))
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
