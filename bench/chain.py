"""Benchmarks 3 and 4: restart time and replay-verify speed for a long counter chain.

1. Generate a chain of ``--blocks`` blocks (default 100,000) through the pure
   transition, not in real time: ``Mempool.build`` + ``apply_block`` +
   ``Store.write_block`` (one synced LevelDB batch per block, exactly as the
   node writes), ``--txs-per-block`` increment(1) transactions per block
   (default 1, like ``xln-node run --demo-increments``), timestamps 100 ms apart.
2. Restart, in-process: ``Store(path)`` + ``store.load()`` (``--repeat`` times).
3. Restart, subprocess: wall time from spawning ``xln-node run --data DIR
   --port 0`` until it prints its listening line (includes Python start-up and
   imports), on the long chain and, for comparison, on an empty data folder.
4. Replay-verify, in-process: :func:`node.chain_verify.verify_chain` over
   ``store.blocks()``, checked against the root's head.
5. Replay-verify, CLI: wall time of ``xln-node verify --data DIR`` (and the
   rate it prints itself, which leaves out its start-up).

The chain lives in a temporary folder that is deleted at the end, unless
``--data DIR`` names a folder to keep (and reuse on the next run: generation is
skipped when the folder already holds a chain of the requested height).

Usage (from the repo root)::

    .venv/bin/python bench/chain.py
    .venv/bin/python bench/chain.py --data /tmp/xln-chain-100k --json bench/out/chain.json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import benchlib

from node.chain_verify import verify_chain
from node.cli import CHAIN_DIR
from node.machines.server import Increment, apply_block
from node.mempool import Mempool
from node.storage import Store
from node.txs import Tx

TARGET_RESTART_S = 1.0
TARGET_REPLAY_BPS = 20_000.0
GENESIS_MS = 1_700_000_000_000
BLOCK_MS = 100
MAX_BLOCKS = 10_000_000
VERIFY_TIMEOUT_S = 600.0
VERIFY_LINE = re.compile(r"ok: (\d+) blocks verified in ([\d.]+) s")


def generate(data: Path, blocks: int, txs_per_block: int) -> dict[str, Any]:
    """Extend the chain in ``data`` to ``blocks`` blocks; returns timing."""
    tx = Tx.of(Increment(1))
    mempool = Mempool.build(txs=[tx] * txs_per_block)  # the same input every block
    with Store(data / CHAIN_DIR) as store:
        state, _ = store.load()
        start_height = state.height
        if start_height > blocks:
            raise SystemExit(
                f"{data} already holds {start_height} blocks, more than --blocks {blocks}"
            )
        started = time.perf_counter()
        report_every = max(1, blocks // 10)
        for height in range(start_height + 1, blocks + 1):
            step = apply_block(state, mempool, GENESIS_MS + height * BLOCK_MS)
            store.write_block(step)
            state = step.state
            if height % report_every == 0:
                print(f"  generated {height:,} blocks", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - started
    made = blocks - start_height
    return {
        "generated_blocks": made,
        "generate_s": elapsed,
        "generate_bps": made / elapsed if elapsed > 0 and made else 0.0,
        "height": state.height,
        "counter": state.counter,
    }


def restart_in_process(data: Path, repeat: int) -> dict[str, Any]:
    """Open the store and load the root, ``repeat`` times."""
    times = []
    height = 0
    for _ in range(repeat):
        started = time.perf_counter()
        store = Store(data / CHAIN_DIR)
        try:
            state, _ = store.load()
            times.append(time.perf_counter() - started)
            height = state.height
        finally:
            store.close()
    return _timing(times) | {"height": height}


def _wall(cmd: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=60, cwd=benchlib.REPO, capture_output=True)
    return time.perf_counter() - started


def restart_subprocess(data: Path, repeat: int) -> dict[str, Any]:
    """Spawn ``xln-node run`` until it listens, ``repeat`` times, on the chain and on an
    empty folder, interleaved with Python start-up baselines (this machine's speed drifts,
    so only figures taken side by side compare)."""
    series: dict[str, list[float]] = {"chain": [], "empty": [], "bare": [], "imports": []}
    with tempfile.TemporaryDirectory(prefix="xln-bench-empty-") as empty:
        for _ in range(repeat):
            with benchlib.run_node(data, log_path=data / "bench-node.log") as node:
                series["chain"].append(node.startup_s)
            with benchlib.run_node(Path(empty)) as node:
                series["empty"].append(node.startup_s)
            series["bare"].append(_wall([sys.executable, "-c", "pass"]))
            series["imports"].append(_wall([sys.executable, "-c", "import node.cli"]))
    return {name: _timing(times) for name, times in series.items()}


def replay_in_process(data: Path, repeat: int) -> dict[str, Any]:
    """Time ``verify_chain(store.blocks())`` ``repeat`` times; the median counts."""
    times = []
    blocks, ok, error = 0, True, None
    with Store(data / CHAIN_DIR) as store:
        state, _ = store.load()
        for _ in range(repeat):
            started = time.perf_counter()
            report = verify_chain(store.blocks(), expected_head=(state.height, state.head))
            times.append(time.perf_counter() - started)
            blocks, ok, error = report.blocks, report.ok and ok, report.error or error
    median = statistics.median(times)
    return _timing(times) | {
        "blocks": blocks,
        "ok": ok,
        "error": error,
        "bps": blocks / median if median > 0 else 0.0,
        "us_per_block": 1e6 * median / blocks if blocks else 0.0,
    }


def replay_profile(data: Path, top: int) -> str:
    """One extra replay under cProfile (slower than unprofiled); the top functions by own time."""
    profiler = cProfile.Profile()
    with Store(data / CHAIN_DIR) as store:
        state, _ = store.load()
        profiler.enable()
        try:
            verify_chain(store.blocks(), expected_head=(state.height, state.head))
        finally:
            profiler.disable()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def replay_cli(data: Path, repeat: int) -> dict[str, Any]:
    """Run ``xln-node verify`` ``repeat`` times; wall time and the CLI's own figure, medians."""
    walls: list[float] = []
    reported: list[float] = []
    blocks, exit_code, text = 0, 0, ""
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(
            [*benchlib.node_command(), "verify", "--data", str(data)],
            capture_output=True,
            timeout=VERIFY_TIMEOUT_S,
            check=False,
            cwd=benchlib.REPO,
        )
        walls.append(time.perf_counter() - started)
        text = out.stdout.decode().strip()
        exit_code = exit_code or out.returncode
        match = VERIFY_LINE.search(text)
        if match:
            blocks = int(match.group(1))
            reported.append(float(match.group(2)))
    wall = statistics.median(walls)
    own = statistics.median(reported) if reported else 0.0
    return {
        "exit_code": exit_code,
        "output": text,
        "blocks": blocks,
        "wall": _timing(walls),
        "wall_bps": blocks / wall if wall > 0 else 0.0,
        "reported_s": reported,
        "reported_bps": blocks / own if own > 0 else 0.0,
    }


def _timing(times: Sequence[float]) -> dict[str, Any]:
    return {
        "runs_s": list(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


@contextlib.contextmanager
def _data_folder(keep: str | None) -> Iterator[Path]:
    if keep is not None:
        path = Path(keep).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="xln-bench-chain-") as tmp:
        yield Path(tmp)


def _restart_note(seconds: float) -> str:
    return f"(target <= {TARGET_RESTART_S:.0f} s: {benchlib.verdict(seconds <= TARGET_RESTART_S)})"


def _replay_note(bps: float) -> str:
    return f"(target >= {TARGET_REPLAY_BPS:,.0f}/s: {benchlib.verdict(bps >= TARGET_REPLAY_BPS)})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with _data_folder(args.data) as data:
        print(f"chain of {args.blocks:,} blocks ({args.txs_per_block} tx each) in {data}")
        results["generate"] = gen = generate(data, args.blocks, args.txs_per_block)
        if gen["generated_blocks"]:
            print(
                f"  generated {gen['generated_blocks']:,} blocks in {gen['generate_s']:.1f} s "
                f"({gen['generate_bps']:,.0f} blocks/s, one synced batch each)"
            )
        else:
            print(f"  reusing the chain already in {data} (height {gen['height']:,})")
        chain_bytes = sum(f.stat().st_size for f in (data / CHAIN_DIR).iterdir() if f.is_file())
        results["chain_bytes"] = chain_bytes
        print(f"  LevelDB folder: {chain_bytes / 1e6:.1f} MB")

        results["restart_in_process"] = rip = restart_in_process(data, args.repeat)
        print(
            f"restart, in-process Store() + load(): median {_ms(rip['median_s'])}, "
            f"first {_ms(rip['runs_s'][0])}, max {_ms(rip['max_s'])}, height {rip['height']:,} "
            + _restart_note(rip["median_s"])
        )
        results["restart_subprocess"] = rsp = restart_subprocess(data, args.repeat)
        chain = rsp["chain"]
        print(
            f"restart, spawn `xln-node run` until listening: median {_ms(chain['median_s'])}, "
            f"min {_ms(chain['min_s'])}, max {_ms(chain['max_s'])} "
            + _restart_note(chain["median_s"])
        )
        print(
            f"  side by side (medians): empty data folder {_ms(rsp['empty']['median_s'])}; "
            f"`python -c pass` {_ms(rsp['bare']['median_s'])}; "
            f"`python -c 'import node.cli'` {_ms(rsp['imports']['median_s'])}"
        )

        results["replay_in_process"] = rep = replay_in_process(data, args.replay_repeat)
        status = "ok" if rep["ok"] else f"FAILED: {rep['error']}"
        best = rep["blocks"] / rep["min_s"] if rep["min_s"] > 0 else 0.0
        print(
            f"replay-verify, in-process verify_chain: {rep['blocks']:,} blocks, median "
            f"{rep['median_s']:.2f} s of {len(rep['runs_s'])} = {rep['bps']:,.0f} blocks/s "
            f"({rep['us_per_block']:.1f} us/block; best {best:,.0f}/s), {status} "
            + _replay_note(rep["bps"])
        )
        if args.profile:
            results["replay_profile"] = profile = replay_profile(data, args.profile)
            print(profile)
        results["replay_cli"] = cli = replay_cli(data, args.replay_repeat)
        print(
            f"replay-verify, `xln-node verify` (median of {args.replay_repeat}): wall "
            f"{cli['wall']['median_s']:.2f} s = {cli['wall_bps']:,.0f} blocks/s incl. start-up; "
            f"its own timing {cli['reported_bps']:,.0f} blocks/s; exit {cli['exit_code']} "
            + _replay_note(cli["wall_bps"])
        )
        if cli["exit_code"] != 0:
            print(f"  output: {cli['output']}")
    results["ok"] = rep["ok"] and cli["exit_code"] == 0
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=100_000, help="chain height (100000)")
    parser.add_argument("--txs-per-block", type=int, default=1, help="increments per block (1)")
    parser.add_argument("--repeat", type=int, default=5, help="restarts timed per variant (5)")
    parser.add_argument("--replay-repeat", type=int, default=3, help="replays timed, each way (3)")
    parser.add_argument("--data", help="keep the chain in this folder (reused when it exists)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile the replay; print the top N"
    )
    parser.add_argument("--json", help="also write results as JSON here ('-' for stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.blocks <= MAX_BLOCKS:
        raise SystemExit(f"--blocks must be 1..{MAX_BLOCKS}")
    if not 1 <= args.txs_per_block <= 4096:
        raise SystemExit("--txs-per-block must be 1..4096")
    if not 1 <= args.repeat <= 100 or not 1 <= args.replay_repeat <= 100:
        raise SystemExit("--repeat and --replay-repeat must be 1..100")
    print(f"load average before: {os.getloadavg()}")
    results = run(args)
    options = {k: v for k, v in vars(args).items() if k != "json"}
    benchlib.write_json(args.json, {"benchmark": "chain", "options": options, **results})
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
