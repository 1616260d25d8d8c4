"""Plain, JSON-ready views of the machine hierarchy, for ``xln-node inspect`` and the sim."""

from __future__ import annotations

import itertools
from typing import Any

from node.machines import entity as ent
from node.machines.accounts import ChannelRecord
from node.machines.replica import Replica
from node.machines.server import ServerState

LISTED = 100  # channels listed per entity


def describe(state: ServerState) -> dict[str, Any]:
    return {
        "height": state.height,
        "head": state.head.hex(),
        "state_hash": state.hash().hex(),
        "counter": state.counter,
        "blocks": state.height,
        "timestamp": state.timestamp,
        "signers": [
            {
                "id": s.id.hex(),
                "pubkey": s.pubkey.hex(),
                "counter": s.counter,
                "entities": [describe_replica(r) for r in s.replicas],
            }
            for s in state.signers
        ],
    }


def describe_replica(r: Replica) -> dict[str, Any]:
    e = r.entity
    config = e.config
    return {
        "id": r.entity_id.hex(),
        "height": e.height,
        "counter": e.counter,
        "state_hash": e.hash.hex(),
        "head": r.head.hex(),
        "threshold": config.threshold,
        "proposer": config.proposer.hex(),
        "members": [{"id": m.id.hex(), "shares": m.shares} for m in config.members],
        "proposals": [
            {
                "id": p.id,
                "action": ent.ACTION_NAMES[type(p.action)],
                "expires_at": p.expires_at,
                "proposer": p.proposer.hex(),
                "votes": [v.hex() for v in p.votes],
                "shares": config.shares_of(p.votes),
            }
            for p in e.proposals
        ],
        "last_certificate": None
        if r.cert is None
        else {
            "round": r.cert.round,
            "bitfield": r.cert.bits.hex(),
            "signature": r.cert.signature.hex(),
        },
        "round": r.round,
        "pool": len(r.pool),
        "in_flight": None if r.pending is None else r.pending.frame.hash.hex(),
        "inbox": len(r.inbox),
        "reserves": {str(asset): str(amount) for asset, amount in e.reserves},
        # A hub holds a million channels: the view names how many, and lists the
        # first few (``xln-node inspect`` prints them; read the rest by part).
        "channel_count": len(e.channels),
        "channels": [describe_channel(c) for c in itertools.islice(e.channels.values(), LISTED)],
        "forwards_in_flight": len(e.forwards),
    }


def describe_channel(c: ChannelRecord) -> dict[str, Any]:
    """Amounts are decimal strings (they may exceed what JSON readers hold exactly)."""
    side = c.side
    return {
        "peer": c.peer.hex(),
        "channel_id": side.channel_id.hex(),
        "side": side.me.name.lower(),
        "status": side.status,
        "height": side.agreed.height,
        "pending": None
        if side.pending is None
        else {"height": side.pending.height, "txs": len(side.pending.txs)},
        "queued": len(side.queue),
        "peer_signers": [m.hex() for m in c.peer_config.ids],
        "peer_threshold": c.peer_config.threshold,
        "assets": [
            {
                "asset": a.asset,
                "balance": str(a.balance(side.me)),
                "peer_balance": str(a.balance(side.me.other)),
                "capacity": str(a.capacity(side.me)),
                "peer_capacity": str(a.capacity(side.me.other)),
                "collateral": str(
                    a.collateral_left if side.me.name == "LEFT" else a.collateral_right
                ),
                "credit_extended": str(a.credit_extended_by(side.me)),
                "credit_received": str(a.credit_extended_by(side.me.other)),
            }
            for a in side.agreed.assets
        ],
    }
