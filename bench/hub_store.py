"""Generate a hub's data folder with N channels, fast, for the benchmarks.

Building a million channels through frames would take hours, so this writes the
state directly: one server hosting the first member of a 3-signer hub entity
(``config(1, 3)`` of ``bench/hub_scale.py``), whose replica holds N channels. What
is written is what the node itself would have written for that state:

- every channel record under its own key (``C`` + route + counterparty), a real
  ``ChannelRecord`` that decodes: the active channel and the first 255 others (in
  key order) are funded, with credit both ways; the rest are opened and idle;
- every branch of the channels' Merkle map and its top (``N`` keys), made by the
  node's own code (``MerkleMap.changes`` and ``merkle_store.node_writes``);
- one block holding the hub's signer and replica header, written by
  ``Store.write_block``, so the root, the signer's map and the state hash agree.

The store is marked **synthetic** (``Store.write_synthetic``): its one block did not
make its state, and ``xln-node verify`` refuses it with that reason.

Usage (from the repo root)::

    .venv/bin/python -m bench.hub_store --channels 1000000 --data /tmp/hub
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.hub_store``: benchlib is beside us
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
from node.machines.server import RECORD_CHANNEL, ServerState, Step, Write, replica_write
from node.machines.signer import SignerState
from node.machines.subs import Subs
from node.mempool import Mempool
from node.merkle_map import MerkleMap
from node.merkle_store import MapWrite, node_writes
from node.storage import Store, node_prefix, record_key

ASSET = 1
FUNDED = 256  # channels with sides of their own: the active one and a page's worth
HUB_SALT = keccak(b"hub")
HUB_SK = 1001  # the secret key of the hub's first member (``config(1, 3)``)
CHAIN_DIR = "chain"  # as ``xln-node run --data DATA`` keeps it: DATA/chain
NOTE = "bench/hub_store.py: a hub of {n:,} channels written directly"


def config(seed: int, members: int) -> Config:
    pubs = [bls.sk_to_pk(1000 * seed + i + 1) for i in range(members)]
    ms = tuple(Member(p, 1) for p in pubs)
    return Config(ms, members // 2 + 1, ms[0].id)


def peer(i: int) -> bytes:
    """The counterparty id of channel ``i``; channel 0 is the active one."""
    return keccak(b"peer %d" % i)


def funded_side(me: bytes, other: bytes) -> ch.ChannelSide:
    """``me``'s side of a channel with collateral and credit both ways."""
    mine, theirs = ch.open_side(me, other), ch.open_side(other, me)
    mine, theirs = benchlib.exchange(mine, theirs, ch.AddCollateral(ASSET, 10**9))
    theirs, mine = benchlib.exchange(theirs, mine, ch.AddCollateral(ASSET, 10**9))
    mine, theirs = benchlib.exchange(mine, theirs, ch.SetCredit(ASSET, 10**6))
    theirs, mine = benchlib.exchange(theirs, mine, ch.SetCredit(ASSET, 10**6))
    return mine


class _Raw:
    """A record known by its bytes alone: what a leaf hashes and storage writes."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded


@dataclass(frozen=True)
class Hub:
    """What the generator made: where, and the ids a benchmark needs."""

    data: Path
    channels: int
    signer: bytes
    entity_id: bytes
    spread: tuple[bytes, ...]  # the funded channels' counterparties, in key order
    seconds: float
    records_bytes: int


def generate(data: Path, n: int) -> Hub:
    """A data folder at ``data`` holding the hub with ``n`` channels."""
    started = time.perf_counter()
    cfg = config(1, 3)
    member = cfg.members[0]
    genesis = rep.Genesis(cfg, HUB_SALT, ())
    hub = ent.genesis(cfg, HUB_SALT)
    peer_config = config(2, 1)
    peers = sorted(peer(i) for i in range(n))
    funded = set(peers[:FUNDED]) | {peer(0)}
    values = []
    for p in peers:
        side = funded_side(hub.entity_id, p) if p in funded else ch.open_side(hub.entity_id, p)
        values.append((p, _Raw(ChannelRecord(p, peer_config, 0, side).encoded)))
    channels: MerkleMap[_Raw] = MerkleMap.from_items(values)
    route = (member.id, hub.entity_id)
    _, nodes = channels.changes(MerkleMap.empty())

    def items() -> Iterator[tuple[bytes, bytes]]:
        for p, raw in values:
            yield record_key(RECORD_CHANNEL, route, p), raw.encoded
        for key, value in node_writes(
            node_prefix(route, RECORD_CHANNEL), MapWrite(RECORD_CHANNEL, channels, nodes)
        ):
            assert value is not None
            yield key, value

    # Height 1: past its genesis (a state at height 0 is the genesis state, channelless).
    entity = replace(hub, height=1, reserves=((ASSET, 10**12),), channels=channels)  # type: ignore[arg-type]
    replica = rep.Replica(member.id, genesis, entity)
    signer = SignerState.of(member.pubkey, 0, (replica,))
    body = ServerState(1, 1000, 0, Subs.of([(signer.id, signer)]))
    block = Block.make(1, bytes(32), 1000, Mempool.build().raw, body.hash())
    state = replace(body, head=block.hash)
    # The records and nodes were written apart, so the block holds the header only.
    changed = (Write((signer.id,), signer.encoded), Write(route, replica.header))
    (data / CHAIN_DIR).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with Store(data / CHAIN_DIR) as store:
        store.write_synthetic(NOTE.format(n=n), items())
        store.write_block(Step(state, block, (), changed=changed))
    return Hub(
        data,
        n,
        member.id,
        hub.entity_id,
        tuple(p for p in peers if p in funded)[:FUNDED],
        time.perf_counter() - started,
        sum(len(raw.encoded) for _, raw in values),
    )


IDLE_NOTE = "bench/hub_store.py: {n:,} idle channels added to entity {entity} directly"


def add_idle_channels(chain: Path, entity_id: bytes, n: int) -> int:
    """Add ``n`` opened, idle channels (with made-up counterparties) to every replica of
    ``entity_id`` in the stopped node's store at ``chain``, in one block of its own on
    top of its chain; the store is marked synthetic. Every server hosting a member must
    get the same channels, so the replicas agree; the entity certifies the new state
    with its next frame. Returns how many replicas were changed."""
    peer_config = config(2, 1)
    idle = {}
    for i in range(n):
        p = keccak(b"idle %d" % i)
        idle[p] = ChannelRecord(p, peer_config, 0, ch.open_side(entity_id, p))
    with Store(chain) as store:
        state, _ = store.load()
        changed: list[Write] = []
        hosted = state.hosted
        for signer in state.signers:
            old = signer.held.get(entity_id)
            if old is None:
                continue
            channels = old.entity.channels.set_many(
                {p: r for p, r in idle.items() if p not in old.entity.channels}
            )
            new = replace(old, entity=replace(old.entity, channels=channels))
            changed.append(replica_write((signer.id, entity_id), new, old))
            signer = replace(signer, held=signer.held.set(entity_id, new))
            changed.append(Write((signer.id,), signer.encoded))
            hosted = hosted.set(signer.id, signer)
        if changed:
            body = replace(state, height=state.height + 1, hosted=hosted)
            block = Block.make(
                body.height, state.head, state.timestamp, Mempool.build().raw, body.hash()
            )
            store.write_synthetic(IDLE_NOTE.format(n=n, entity=entity_id.hex()), ())
            store.write_block(
                Step(replace(body, head=block.hash), block, (), changed=tuple(changed))
            )
    return len(changed) // 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--data", required=True, help="a new data folder")
    args = parser.parse_args(argv)
    made = generate(Path(args.data), args.channels)
    print(
        f"{made.channels:,} channels in {made.seconds:.1f} s "
        f"({made.records_bytes:,} bytes of records): {made.data}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
