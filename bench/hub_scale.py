"""Benchmark: how a hub entity's cost per frame and per block grows with its channels.

Issue 11 measured a 3-signer hub with N channels, one of them active, the others
idle but funded: a frame that moves 256 payments cost 4 ms at N = 10 and 13 s at
N = 10,000. This script measures the pure machines (``node/machines/``, no
network, no signatures) on states with N channels built directly (building a
million channels through frames would take hours):

- **frame**: ``entity.execute`` of one frame whose batch pays 256 payments of 1 to
  the active channel's counterparty (256 ``pay`` transactions queued, one channel
  frame proposed), then the new state's **hash** (what a certificate signs); the
  same frame as the **proposer** builds it (``entity.build``, the batch's BLS
  signature checked) and as a **member** executes it (signature checked); and
  the 256 payments **spread** over 256 channels (one each: 256 channel frames);
- **input**: one channel message looked up (``accounts.is_stale``, done per inbound
  message);
- **block**: the block's work for the replica after the frame: its new hash (which
  the signer's state commits to) and what storage writes for it
  (``server.replica_write``), and the bytes written;
- **READ_STATE**: the replica's whole encoding, which ``READ_STATE`` returns, and
  its bytes;
- **read channel**: READ_ENTITY of one channel (``node/entity_reads.py``): the
  node's part (header, record, Merkle proof), encoded, then decoded and checked
  as the client does (the proof against the header's root), and its bytes; and
  the same for a **page** of 256 channels with their proofs.

``rss_mb`` is the process's peak resident memory once the state is built (the
sizes run in ascending order, so it is the peak at that N). Restart is measured
by ``bench/hub_restart.py``.

Each figure is the median CPU time of ``--reps`` runs, each on a fresh state whose
hashes are already cached (as a running replica's are). The idle channels share one
channel side (a funded channel with credit both ways and one ack), each under its
own counterparty id: the machine never reads an untouched channel, so only the
record's bytes matter, and they are those of a real channel.

Usage (from the repo root)::

    .venv/bin/python -m bench.hub_scale --json bench/out/hub_scale.json
    .venv/bin/python -m bench.hub_scale --channels 1000000 --reps 1

The script also runs on the code before issue 11 (channels as a sorted tuple):
copy it and ``benchlib.py`` into a worktree of commit ``50ff6fb`` and run it there
with ``PYTHONPATH`` set to that worktree, so the two can be compared on one
machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.hub_scale``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

from node.codec import keccak
from node.crypto import bls
from node.machines import accounts, replica
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines.accounts import ChannelRecord, Pay
from node.machines.entity import Batch, EntityState
from node.machines.governance import Config, Member
from node.txs import Tx

ASSET = 1
PAYMENTS = 256
HUB_SALT = keccak(b"hub")
HUB_SK = 1001  # the secret key of the hub's first member (``config(1, 3)``)
MERKLE = hasattr(EntityState, "header")  # this tree's channels are a Merkle map
if MERKLE:
    from node.machines.server import replica_write


def config(seed: int, members: int) -> Config:
    pubs = [bls.sk_to_pk(1000 * seed + i + 1) for i in range(members)]
    ms = tuple(Member(p, 1) for p in pubs)
    return Config(ms, members // 2 + 1, ms[0].id)


def funded_side(me: bytes, peer: bytes) -> ch.ChannelSide:
    """``me``'s side of a channel with collateral and credit both ways."""
    mine, theirs = ch.open_side(me, peer), ch.open_side(peer, me)
    mine, theirs = benchlib.exchange(mine, theirs, ch.AddCollateral(ASSET, 10**9))
    theirs, mine = benchlib.exchange(theirs, mine, ch.AddCollateral(ASSET, 10**9))
    mine, theirs = benchlib.exchange(mine, theirs, ch.SetCredit(ASSET, 10**6))
    theirs, mine = benchlib.exchange(theirs, mine, ch.SetCredit(ASSET, 10**6))
    return mine


def hub_state(n: int) -> tuple[EntityState, bytes, list[bytes]]:
    """A 3-signer hub with ``n`` channels; the active counterparty's id, and the
    counterparties of the (up to 256) channels with sides of their own."""
    hub = ent.genesis(config(1, 3), HUB_SALT)
    peer_config = config(2, 1)
    active = keccak(b"peer 0")
    idle_side = funded_side(hub.entity_id, keccak(b"idle"))
    records = [ChannelRecord(active, peer_config, 0, funded_side(hub.entity_id, active))]
    records += [
        ChannelRecord(keccak(b"peer %d" % i), peer_config, 0, idle_side) for i in range(1, n)
    ]
    records.sort(key=lambda r: r.peer)
    # The first page's channels get sides of their own: a client decodes what it reads.
    spread = [r.peer for r in records[:PAYMENTS]]
    for i, r in enumerate(records[:PAYMENTS]):
        if r.peer != active:
            records[i] = replace(r, side=funded_side(hub.entity_id, r.peer))
    channels: Any
    if MERKLE:
        from node.merkle_map import MerkleMap

        channels = MerkleMap.from_items((r.peer, r) for r in records)
    else:
        channels = tuple(records)
    state = replace(hub, reserves=((ASSET, 10**12),), channels=channels)
    _ = state.hash  # a running replica has its state's hash cached,
    if MERKLE:
        _ = state.waiting  # and the channels it waits on
    return state, active, spread


def rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_ms(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def measure(n: int, reps: int) -> dict[str, float]:
    state, active, spread = hub_state(n)
    signer = state.config.ids[0]
    txs = [Tx.of(Pay((active,), ASSET, 1)) for _ in range(PAYMENTS)]
    batch = Batch.make(signer, 1, txs, bytes(96))
    # The same 256 payments signed for real (the proposer's build and a member's
    # execution check the batch's signature), and spread over 256 channels.
    signed = ent.sign_batch(state.entity_id, HUB_SK, signer, 1, txs)
    spread_txs = [Tx.of(Pay((spread[i % len(spread)],), ASSET, 1)) for i in range(PAYMENTS)]
    spread_batch = Batch.make(signer, 1, spread_txs, bytes(96))
    message = accounts.Message(
        accounts.ACK,
        active,
        ch.Ack(state.entity_id, 1, keccak(b"frame")),
        0,
        b"\x01",
        bytes(96),
    )
    frames, lookups, snapshots, blocks = [], [], [], []
    proposers: list[float] = []
    members: list[float] = []
    spreads: list[float] = []
    reads: list[float] = []
    pages: list[float] = []
    size = written = read_bytes = page_size = 0
    genesis = replica.Genesis(state.config, HUB_SALT, ())
    for _ in range(reps):
        fresh = hub_state(n)[0] if reps > 1 and n <= 10_000 else state
        result: list[EntityState] = []

        def frame(s: EntityState = fresh, result: list[EntityState] = result) -> None:
            post, events = ent.execute(s, [batch], verify=False)
            assert len(events.outbox) == 1
            assert len(events.payments) == PAYMENTS
            _ = post.hash
            result.append(post)

        frames.append(cpu_ms(frame))
        post = result[0]
        if MERKLE:

            def proposer(s: EntityState = fresh) -> None:
                built = ent.build(s, [signed], [], allow_mint=False)
                assert built.batches == [signed]
                _ = built.post.hash

            def member(s: EntityState = fresh) -> None:
                post, _ = ent.execute(s, [signed], verify=True)
                _ = post.hash

            def spread_frame(s: EntityState = fresh) -> None:
                post, events = ent.execute(s, [spread_batch], verify=False)
                assert len(events.payments) == PAYMENTS
                _ = post.hash

            proposers.append(cpu_ms(proposer))
            members.append(cpu_ms(member))
            spreads.append(cpu_ms(spread_frame))
        found: Any = post.channels
        if not MERKLE:
            found = {c.peer: c for c in found}

        def lookup(channels: Any = found) -> None:
            accounts.is_stale(channels, message)

        def snapshot(state: EntityState = post) -> None:
            _ = state.encoded

        sizes: list[int] = []

        def block(
            before: EntityState = fresh, after: EntityState = post, sizes: list[int] = sizes
        ) -> None:
            old = replica.Replica(signer, genesis, before)
            new = replica.Replica(signer, genesis, after)
            sizes.append(block_bytes(old, new))

        lookups.append(cpu_ms(lookup) * 1000)
        blocks.append(cpu_ms(block))
        written = sizes[0]
        snapshots.append(cpu_ms(snapshot))
        size = len(post.encoded)
        if MERKLE:
            read_bytes = read_channel(post, genesis, active)
            reads.append(cpu_ms(lambda s=post: read_channel(s, genesis, active)))  # type: ignore[misc]
            page_size = read_page(post, genesis)
            pages.append(cpu_ms(lambda s=post: read_page(s, genesis)))  # type: ignore[misc]
    return {
        "channels": n,
        "proposer_frame_ms": statistics.median(proposers) if proposers else 0.0,
        "member_frame_ms": statistics.median(members) if members else 0.0,
        "spread_frame_ms": statistics.median(spreads) if spreads else 0.0,
        "bytes_per_block": written,
        "rss_mb": rss_mb(),
        "frame_ms": statistics.median(frames),
        "lookup_us": statistics.median(lookups),
        "block_ms": statistics.median(blocks),
        "block_bytes": written,
        "snapshot_ms": statistics.median(snapshots),
        "snapshot_bytes": size,
        "read_channel_ms": statistics.median(reads) if reads else 0.0,
        "read_channel_bytes": read_bytes,
        "read_page_ms": statistics.median(pages) if pages else 0.0,
        "read_page_bytes": page_size,
    }


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


def block_bytes(old: replica.Replica, new: replica.Replica) -> int:
    """What a block does for the replica after the frame: hash it (the signer's state
    commits to the hash) and make its writes; returns the bytes written."""
    if not MERKLE:
        _ = new.hash  # keccak of the whole encoding, which the block writes
        return len(new.encoded)
    _ = new.hash
    write = replica_write((new.signer, new.entity_id), new, old)
    return len(write.raw) + sum(len(key) + len(raw or b"") for _, key, raw in write.records)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", default="10,1000,10000,100000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the figures here (- for stdout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    print(
        f"{'channels':>10} {'proposer':>9} {'member':>8} {'spread':>8} {'rss MB':>8} "
        f"{'frame ms':>10} {'lookup µs':>10} {'block ms':>10} "
        f"{'written':>12} {'READ_STATE ms':>14} {'bytes':>12} {'channel ms':>11} "
        f"{'bytes':>7} {'page ms':>8} {'bytes':>8}"
    )
    for n in (int(x) for x in args.channels.split(",")):
        row = measure(n, args.reps)
        rows.append(row)
        print(
            f"{n:>10,} {row['proposer_frame_ms']:>9.2f} {row['member_frame_ms']:>8.2f} "
            f"{row['spread_frame_ms']:>8.2f} {row['rss_mb']:>8.0f} {row['frame_ms']:>10.2f} "
            f"{row['lookup_us']:>10.1f} "
            f"{row['block_ms']:>10.2f} {row['block_bytes']:>12,} "
            f"{row['snapshot_ms']:>14.1f} {row['snapshot_bytes']:>12,} "
            f"{row['read_channel_ms']:>11.2f} {row['read_channel_bytes']:>7,} "
            f"{row['read_page_ms']:>8.1f} {row['read_page_bytes']:>8,}",
            flush=True,
        )
    benchlib.write_json(
        args.json,
        {"benchmark": "hub_scale", "merkle": MERKLE, "rows": rows, **benchlib.machine_info()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
