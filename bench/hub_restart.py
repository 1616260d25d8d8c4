"""Benchmark: how long a node takes to load a hub replica with N channels.

Storage keeps each channel record under its own LevelDB key and the replica's header
apart (``node/storage.py``); loading reads the header, then every record of the
replica by prefix, rebuilds the Merkle map in memory and checks its root against
the header. That is still O(N) (issue 11 wants the root loaded and records fetched
when touched), and this script measures it, with the bytes on disk.

A 1-signer hub's replica with N channels, each record a real channel side (a
channel frame and its ack with collateral: a channel decodes only if its side is for
its counterparty), is written as one block into a fresh LevelDB; then ``Store.load``
runs on a fresh ``Store`` (the operating system's file cache is warm: this measures
the node, not the disk).

Usage (from the repo root)::

    .venv/bin/python -m bench.hub_restart --channels 1000,10000,100000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.hub_restart``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.block import Block
from node.codec import keccak
from node.crypto import bls
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.accounts import ChannelRecord
from node.machines.governance import Config, Member
from node.machines.server import ServerState, Step, Write, replica_write
from node.machines.signer import SignerState
from node.machines.subs import Subs
from node.mempool import Mempool
from node.merkle_map import MerkleMap
from node.storage import Store

SK = 7


def side(me: bytes, peer: bytes) -> ch.ChannelSide:
    """``me``'s side of a channel whose first frame, ours, added collateral."""
    mine, _ = benchlib.exchange(
        ch.open_side(me, peer), ch.open_side(peer, me), ch.AddCollateral(1, 1000)
    )
    return mine


def write_hub(path: Path, n: int) -> tuple[ServerState, int]:
    """A store holding one block with a hub replica of ``n`` channels; its state and
    the bytes of its channel records."""
    pk = bls.sk_to_pk(SK)
    member = Member(pk, 1)
    config = Config((member,), 1, member.id)
    genesis = rep.Genesis(config, b"\x01" * 32, (bls.pop_prove(SK),))
    hub = ent.genesis(config, genesis.salt)
    peer_config = Config((Member(bls.sk_to_pk(SK + 1), 1),), 1, Member(bls.sk_to_pk(SK + 1), 1).id)
    records = [
        ChannelRecord(p, peer_config, 0, side(hub.entity_id, p))
        for p in (keccak(b"peer %d" % i) for i in range(n))
    ]
    entity = replace(hub, channels=MerkleMap.from_items((r.peer, r) for r in records))
    replica = rep.Replica(member.id, genesis, entity)
    signer = SignerState.of(pk, 0, (replica,))
    body = ServerState(1, 1000, 0, Subs.of([(signer.id, signer)]))
    block = Block.make(1, bytes(32), 1000, Mempool.build().raw, body.hash())
    state = replace(body, head=block.hash)
    changed = (
        Write((signer.id,), signer.encoded),
        replica_write((signer.id, hub.entity_id), replica, None),
    )
    with Store(path) as store:
        store.write_block(Step(state, block, (), changed=changed))
    return state, sum(len(r.encoded) for r in records)


def measure(n: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="hub-restart-"))
    try:
        built = time.perf_counter()
        state, record_bytes = write_hub(folder / "chain", n)
        built = time.perf_counter() - built
        disk = sum(f.stat().st_size for f in (folder / "chain").iterdir())
        wall, cpu = time.perf_counter(), time.process_time()
        with Store(folder / "chain") as store:
            loaded, _ = store.load()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert loaded == state
        return {
            "channels": n,
            "load_s": wall,
            "load_cpu_s": cpu,
            "record_bytes": record_bytes,
            "disk_bytes": disk,
            "build_s": built,
        }
    finally:
        shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", default="1000,10000,100000")
    parser.add_argument("--json", default=None, help="write the figures here (- for stdout)")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'channels':>10} {'load s':>8} {'cpu s':>8} {'records':>12} {'on disk':>12}")
    for n in (int(x) for x in args.channels.split(",")):
        row = measure(n)
        rows.append(row)
        print(
            f"{n:>10,} {row['load_s']:>8.2f} {row['load_cpu_s']:>8.2f} "
            f"{row['record_bytes']:>12,} {row['disk_bytes']:>12,}",
            flush=True,
        )
    benchlib.write_json(
        args.json, {"benchmark": "hub_restart", "rows": rows, **benchlib.machine_info()}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
