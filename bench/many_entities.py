"""Benchmark: what a block costs on a server hosting many idle entities.

A server hosts E one-signer entities, laid out two ways: ``signers``, E signers
holding one entity each, and ``entities``, one signer holding all E. The state is
built directly, as the machines build it (each replica is ``replica.create`` of a
one-member entity, each signer holds its replicas as ``create_entity`` leaves
them; ``check_build`` compares a small one with the state the transactions make),
and written into a fresh LevelDB as one block (``Store.write_block``). Then two
kinds of block are made, through the real transition and storage:

- **empty**: ``apply_block`` with an empty mempool;
- **one entity**: one member's signed batch (``increment(1)``) submitted to one
  entity, a different one each block (so at most E blocks): the replica pools it
  and, being its own proposer, proposes a frame. The batch's BLS signature is
  checked once beforehand, so the block finds it in the verification cache: that
  check costs the same ~2 ms at any E and would drown what this measures.

Then the store is opened again and loaded (``Store.load``, a restart).

For each kind of block: the CPU time of the transition (``apply_block``, state
hash included) and of the storage write (``Store.write_block``: one synced LevelDB
batch), the wall time of the write, and the keys and bytes (key + value) of the
batch (``storage.block_writes``). Medians over ``--blocks`` blocks of each kind.

Usage (from the repo root)::

    .venv/bin/python -m bench.many_entities --entities 10,1000,10000 [--json PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.many_entities``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.block import Block
from node.codec import ZERO_HASH
from node.crypto import bls
from node.machines import replica as rep
from node.machines.counter import Increment
from node.machines.entity import sign_batch
from node.machines.governance import Config, Member
from node.machines.server import (
    CreateSigner,
    ServerState,
    Step,
    Write,
    apply_block,
    replica_write,
)
from node.machines.signer import CreateEntity, SignerState
from node.machines.subs import Subs
from node.mempool import Mempool
from node.storage import Store, block_writes
from node.txs import Tx

LAYOUTS = ("signers", "entities")
FIRST_SK = 1000
SKS: dict[bytes, int] = {}  # signer id -> secret key, of every signer built


@dataclass
class Hosted:
    """A server's state with E idle one-signer entities, and how to reach them."""

    state: ServerState
    routes: list[tuple[bytes, bytes]]  # (signer, entity), one per entity
    sks: list[int]  # the member's secret key of each route


def build(n: int, layout: str) -> Hosted:
    """``n`` one-signer entities: one per signer (``signers``) or all on one signer."""
    signers = n if layout == "signers" else 1
    keys = [(FIRST_SK + i, bls.sk_to_pk(FIRST_SK + i)) for i in range(signers)]
    pops = [bls.pop_prove(sk) for sk, _ in keys]
    held: dict[int, list[rep.Replica]] = {i: [] for i in range(signers)}
    routes, sks = [], []
    SKS.update((Member(pk, 1).id, sk) for sk, pk in keys)
    for e in range(n):
        i = e if layout == "signers" else 0
        sk, pk = keys[i]
        member = Member(pk, 1)
        genesis = rep.Genesis(Config((member,), 1, member.id), e.to_bytes(32, "big"), (pops[i],))
        replica = rep.create(member.id, genesis)
        held[i].append(replica)
        routes.append((member.id, replica.entity_id))
        sks.append(sk)
    states = [SignerState.of(pk, 0, held[i]) for i, (_, pk) in enumerate(keys)]
    state = ServerState(hosted=Subs.of((s.id, s) for s in states))
    return Hosted(state, routes, sks)


def check_build(layout: str, n: int = 6) -> None:
    """``build`` makes the state that ``create_signer`` and ``create_entity`` make."""
    built = build(n, layout).state
    signers = n if layout == "signers" else 1
    keys = [(FIRST_SK + i, bls.sk_to_pk(FIRST_SK + i)) for i in range(signers)]
    pops = [bls.pop_prove(sk) for sk, _ in keys]
    create = [Tx.of(CreateSigner(pk, pop)) for (_, pk), pop in zip(keys, pops, strict=True)]
    state = apply_block(ServerState(), Mempool.build(txs=create), 1000).state
    txs: dict[bytes, list[Tx]] = {}
    for e in range(n):
        i = e % signers
        member = Member(keys[i][1], 1)
        genesis = rep.Genesis(Config((member,), 1, member.id), e.to_bytes(32, "big"), (pops[i],))
        txs.setdefault(member.id, []).append(Tx.of(CreateEntity(genesis)))
    ids = sorted(txs)
    mempool = Mempool.build(ids, [Mempool.build(txs=txs[i]) for i in ids])
    step = apply_block(state, mempool, 2000)
    assert all(r.error is None for r in step.receipts)
    assert step.state.hosted == built.hosted, "the built state is not the machines' state"


def genesis_step(hosted: Hosted) -> Step:
    """Block 1, writing every signer and replica (as the blocks that made them did)."""
    body = replace(hosted.state, height=1, timestamp=1000)
    block = Block.make(1, ZERO_HASH, 1000, Mempool.empty().raw, body.hash())
    changed: list[Write] = []
    for s in body.signers:
        changed.append(Write((s.id,), s.encoded))
        changed.extend(replica_write((s.id, r.entity_id), r, None) for r in s.replicas)
    return Step(replace(body, head=block.hash), block, (), changed=tuple(changed))


def one_entity_mempool(hosted: Hosted, k: int) -> Mempool:
    """A signed ``increment(1)`` for the ``k``-th entity (modulo E), nonce by round."""
    index = k % len(hosted.routes)
    signer, entity = hosted.routes[index]
    nonce = k // len(hosted.routes) + 1
    batch = sign_batch(entity, hosted.sks[index], signer, nonce, [Tx.of(Increment(1))])
    leaf = Mempool.build(txs=[Tx.of(rep.SubmitBatch(batch))])
    return Mempool.build([signer], [Mempool.build([entity], [leaf])])


def warm_signature(mempool: Mempool) -> None:
    """Check the batch's signature once, outside the timing (``bls`` caches it)."""
    signer, entity = mempool.keys[0], mempool.subs[0].keys[0]
    body = mempool.subs[0].subs[0].txs[0].body
    assert isinstance(body, rep.SubmitBatch)
    batch = body.batch
    pk = bls.sk_to_pk(SKS[signer])
    assert bls.verify(pk, batch.message(entity), batch.signature)


def run_blocks(
    store: Store, state: ServerState, mempools: list[Mempool]
) -> tuple[ServerState, dict[str, float]]:
    apply_cpu, write_cpu, write_wall, keys, sizes = [], [], [], [], []
    for mempool in mempools:
        c0 = time.process_time()
        step = apply_block(state, mempool, state.timestamp + 100)
        c1 = time.process_time()
        writes = block_writes(step, store.server_id)
        w0, c2 = time.perf_counter(), time.process_time()
        store.write_block(step)
        c3, w1 = time.process_time(), time.perf_counter()
        apply_cpu.append((c1 - c0) * 1000)
        write_cpu.append((c3 - c2) * 1000)
        write_wall.append((w1 - w0) * 1000)
        keys.append(len(writes))
        sizes.append(sum(len(k) + len(v or b"") for k, v in writes))
        state = step.state
    med: Callable[[list[float]], float] = statistics.median
    return state, {
        "cpu_ms": med([a + w for a, w in zip(apply_cpu, write_cpu, strict=True)]),
        "apply_cpu_ms": med(apply_cpu),
        "write_cpu_ms": med(write_cpu),
        "write_wall_ms": med(write_wall),
        "keys": med([float(k) for k in keys]),
        "bytes": med([float(b) for b in sizes]),
    }


def measure(n: int, layout: str, blocks: int) -> dict[str, Any]:
    built = time.perf_counter()
    hosted = build(n, layout)
    built = time.perf_counter() - built
    folder = Path(tempfile.mkdtemp(prefix="many-entities-"))
    try:
        with Store(folder / "chain") as store:
            first = genesis_step(hosted)
            store.write_block(first)
            state = first.state
            state, empty = run_blocks(store, state, [Mempool.empty()] * blocks)
            # Each block touches another entity (so each proposes a frame); the batch's
            # signature is checked beforehand, as a node's verification cache would
            # hold it (a BLS check costs the same at any E and would hide the rest).
            mempools = [one_entity_mempool(hosted, k) for k in range(min(blocks, n))]
            for mempool in mempools:
                warm_signature(mempool)
            state, one = run_blocks(store, state, mempools)
        load_s = time.perf_counter()
        with Store(folder / "chain") as store:
            loaded, _ = store.load()
        load_s = time.perf_counter() - load_s
        assert loaded == state
        return {
            "layout": layout,
            "entities": n,
            "empty": empty,
            "one": one,
            "build_s": built,
            "load_s": load_s,
        }
    finally:
        shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", default="10,1000,10000")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--blocks", type=int, default=50, help="blocks of each kind")
    parser.add_argument("--json", default=None, help="write the figures here (- for stdout)")
    args = parser.parse_args(argv)
    layouts = args.layouts.split(",")
    if args.blocks < 1 or any(layout not in LAYOUTS for layout in layouts):
        parser.error(f"--blocks at least 1; --layouts from {', '.join(LAYOUTS)}")
    rows = []
    print(
        f"{'layout':>8} {'entities':>9} | {'empty: cpu ms':>13} {'keys':>5} {'bytes':>9} | "
        f"{'one: cpu ms':>11} {'keys':>5} {'bytes':>9} | {'write wall ms':>13} | {'load s':>6}"
    )
    for layout in layouts:
        check_build(layout)
        for n in (int(x) for x in args.entities.split(",")):
            row = measure(n, layout, args.blocks)
            rows.append(row)
            e, o = row["empty"], row["one"]
            print(
                f"{layout:>8} {n:>9,} | {e['cpu_ms']:>13.3f} {e['keys']:>5.0f} {e['bytes']:>9,.0f} "
                f"| {o['cpu_ms']:>11.3f} {o['keys']:>5.0f} {o['bytes']:>9,.0f} "
                f"| {e['write_wall_ms']:>6.2f} {o['write_wall_ms']:>6.2f} | {row['load_s']:>6.2f}",
                flush=True,
            )
    benchlib.write_json(
        args.json,
        {
            "benchmark": "many_entities",
            "blocks": args.blocks,
            "rows": rows,
            **benchlib.machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
