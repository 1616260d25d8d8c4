"""Benchmark: BLS12-381 signing and verification (node/crypto/bls.py), per backend.

Measures, for each backend (``blst`` through pyblst, and the pure-Python
``py_ecc`` fallback):

- ``sign``: one 32-byte message;
- ``verify``: one signature, key already loaded (cached);
- ``fast_aggregate_verify_keys``: one aggregate signature of ``--signers``
  (default 100) signers over one message, keys loaded (the frame-certificate
  hot path; target <= 2 ms with blst);
- ``aggregate``: ``--signers`` signatures into one (each is decoded and
  subgroup-checked);
- ``key_deserialize``: one public key decoded and subgroup-checked (what a
  cache miss of ``load_public_key`` costs);
- ``key_cached``: ``load_public_key`` of a key already in the cache.

The keys, messages and signatures are made once with the fastest backend
available (both give identical bytes), outside the clock. Each figure is the
median of per-call times, taken for ``--seconds`` per operation with blst and
for ``--py-ecc-rounds`` calls with py_ecc (its ``aggregate`` of 100 takes ~6 s).

Usage (from the repo root)::

    .venv/bin/python -m bench.bls_verify
    .venv/bin/python -m bench.bls_verify --backends blst --json bench/out/bls.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.bls_verify``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.crypto import bls

TARGET_FAST_AGGREGATE_MS = 2.0
MSG = bytes(range(32))


def time_calls(
    fn: Callable[[], object], seconds: float, max_calls: int, batch: int = 1, warm_up: bool = True
) -> float:
    """Median seconds per call of ``fn``: batches of ``batch`` calls, for ``seconds``
    or ``max_calls`` calls, whichever comes first (at least one batch)."""
    if warm_up:
        fn()
    samples: list[float] = []
    calls = 0
    deadline = time.perf_counter() + seconds
    while not samples or (calls < max_calls and time.perf_counter() < deadline):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch)
        calls += batch
    return statistics.median(samples)


class Fixture:
    """Keys and signatures made once, outside the clock."""

    def __init__(self, signers: int) -> None:
        maker = bls.get_backend(bls.available_backends()[0])
        self.sks = [bls.keygen(i.to_bytes(32, "big")) for i in range(signers)]
        self.pks = [maker.sk_to_pk(sk) for sk in self.sks]
        self.sigs = [maker.sign(sk, MSG) for sk in self.sks]
        self.aggregate = maker.aggregate(self.sigs)


def measure(backend: bls.Backend, fx: Fixture, args: argparse.Namespace) -> dict[str, float]:
    native = backend.name == "blst"
    seconds = args.seconds if native else float("inf")  # py_ecc: a number of calls
    calls = 1_000_000 if native else args.py_ecc_rounds
    keys = [backend.load_public_key(pk) for pk in fx.pks]
    pk, sig, sk = fx.pks[0], fx.sigs[0], fx.sks[0]
    if not backend.fast_aggregate_verify_keys(keys, MSG, fx.aggregate):
        raise RuntimeError(f"{backend.name}: the aggregate signature does not verify")

    ops: dict[str, Callable[[], object]] = {
        "sign": lambda: backend.sign(sk, MSG),
        "verify": lambda: backend.verify(pk, MSG, sig),
        "fast_aggregate_verify_keys": lambda: backend.fast_aggregate_verify_keys(
            keys, MSG, fx.aggregate
        ),
        "aggregate": lambda: backend.aggregate(fx.sigs),
        "key_deserialize": lambda: backend.decode_g1(pk),
    }
    results: dict[str, float] = {}
    for name, fn in ops.items():
        results[name] = time_calls(fn, seconds, calls, warm_up=native)
        print(f"  {name:28s} {results[name] * 1000:10.3f} ms", flush=True)
    results["key_cached"] = time_calls(lambda: backend.load_public_key(pk), 0.2, 200_000, 1000)
    print(f"  {'key_cached':28s} {results['key_cached'] * 1000:10.4f} ms", flush=True)
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    available = bls.available_backends()
    names = [n for n in args.backends.split(",") if n]
    missing = [n for n in names if n not in available]
    if missing:
        print(f"skipping unavailable backends: {', '.join(missing)}")
    fx = Fixture(args.signers)
    results: dict[str, Any] = {}
    for name in names:
        if name in missing:
            continue
        print(f"{name} (median per call, {args.signers} signers for the aggregates):")
        figures = measure(bls.get_backend(name), fx, args)
        results[name] = {k: v * 1000 for k, v in figures.items()}  # ms
    if "blst" in results:
        fav = results["blst"]["fast_aggregate_verify_keys"]
        ok = fav <= TARGET_FAST_AGGREGATE_MS
        print(
            f"blst fast_aggregate_verify_keys, {args.signers} signers: {fav:.3f} ms "
            f"(target <= {TARGET_FAST_AGGREGATE_MS} ms: {benchlib.verdict(ok)})"
        )
    return {"results_ms": results}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default=",".join(bls.BACKEND_NAMES))
    parser.add_argument("--signers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0, help="per operation, blst")
    parser.add_argument("--py-ecc-rounds", type=int, default=3, help="calls per operation")
    parser.add_argument("--json", metavar="PATH", help="write results as JSON ('-' = stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.signers < 1 or args.py_ecc_rounds < 1:
        raise SystemExit("--signers and --py-ecc-rounds must be at least 1")
    print(f"load average {benchlib.machine_info()['loadavg']}")
    results = run(args)
    options = {k: v for k, v in vars(args).items() if k != "json"}
    benchlib.write_json(args.json, {"benchmark": "bls_verify", "options": options, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
