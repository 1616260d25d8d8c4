"""A hub entity's state with many funded channels, built directly (as
``bench/hub_scale.py`` builds them), not through frames: for the tests of what
reads, stores and shows such states. Each channel side is real: a collateral frame
proposed by the hub and acked by the counterparty."""

from __future__ import annotations

from dataclasses import replace

from node.codec import keccak
from node.crypto import bls
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.accounts import ChannelRecord, Forwarded
from node.machines.governance import Config, Member
from node.merkle_map import MerkleMap
from tests.node.channel_sides import exchange

SKS = (101, 102)


def funded_side(me: bytes, peer: bytes, collateral: int) -> ch.ChannelSide:
    """``me``'s side of a channel whose first frame added ``collateral``."""
    mine, _ = exchange(
        ch.open_side(me, peer), ch.open_side(peer, me), ch.AddCollateral(1, collateral)
    )
    return mine


def hub_config() -> Config:
    members = tuple(Member(bls.sk_to_pk(sk), 1) for sk in SKS)
    return Config(members, 2, members[0].id)


def hub(n: int, forwards: int = 0, height: int = 7) -> tuple[rep.Genesis, ent.EntityState]:
    """A 2-of-2 hub's genesis and its state at ``height`` with ``n`` channels (peers
    ``keccak(b"peer %d")``) and ``forwards`` payments in flight through them."""
    config = hub_config()
    genesis = rep.Genesis(config, b"\x07" * 32, tuple(bls.pop_prove(sk) for sk in SKS))
    state = ent.genesis(config, genesis.salt)
    peers = [keccak(b"peer %d" % i) for i in range(n)]
    records = [
        ChannelRecord(p, config, 0, funded_side(state.entity_id, p, 1000 + i))
        for i, p in enumerate(peers)
    ]
    in_flight = [(keccak(b"payment %d" % i), Forwarded(peers[i % n])) for i in range(forwards)]
    return genesis, replace(
        state,
        height=height,
        channels=MerkleMap.from_items((r.peer, r) for r in records),
        forwards=MerkleMap.from_items(in_flight),
    )
