"""Plain, JSON-ready views of the machine hierarchy, for ``xln-node inspect`` and the sim."""

from __future__ import annotations

import itertools
from typing import Any

from node.evidence import Evidence
from node.machines import entity as ent
from node.machines.accounts import ChannelRecord
from node.machines.entity import EntityState
from node.machines.frames import Certificate
from node.machines.replica import Replica
from node.machines.server import ServerState

LISTED = 100  # channels listed per entity


def describe(state: ServerState) -> dict[str, Any]:
    """The whole hierarchy as a node holds it (``inspect`` on a stopped node's store)."""
    return {
        **describe_server(state.height, state.head, state.hash(), state.counter, state.timestamp),
        "signers": [
            describe_signer(s.id, s.pubkey, s.counter, [describe_replica(r) for r in s.replicas])
            for s in state.signers
        ],
    }


def describe_server(
    height: int, head: bytes, state_hash: bytes, counter: int, timestamp: int
) -> dict[str, Any]:
    return {
        "height": height,
        "head": head.hex(),
        "state_hash": state_hash.hex(),
        "counter": counter,
        "blocks": height,
        "timestamp": timestamp,
    }


def describe_signer(
    signer: bytes, pubkey: bytes, counter: int, entities: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"id": signer.hex(), "pubkey": pubkey.hex(), "counter": counter, "entities": entities}


def describe_replica(r: Replica) -> dict[str, Any]:
    """A replica as its node holds it: the entity, and this signer's consensus state."""
    e = r.entity
    return {
        **describe_entity(
            e, e.hash, r.head, r.cert, list(itertools.islice(e.channels.values(), LISTED))
        ),
        "round": r.round,
        "pool": len(r.pool),
        "in_flight": None if r.pending is None else r.pending.frame.hash.hex(),
        "inbox": len(r.inbox),
        # A hub holds a million channels: the view names how many, and lists the
        # first few (``xln-node inspect`` prints them; read the rest by part).
        "channel_count": len(e.channels),
        "forwards_in_flight": len(e.forwards),
    }


def describe_entity(
    e: EntityState,
    state_hash: bytes,
    head: bytes | None,
    cert: Certificate | None,
    channels: list[ChannelRecord],
) -> dict[str, Any]:
    """An entity's agreed state: its small fields (``e``'s maps are not read: a
    header read in parts leaves them empty) and the channels given."""
    config = e.config
    return {
        "id": e.entity_id.hex(),
        "height": e.height,
        "counter": e.counter,
        "state_hash": state_hash.hex(),
        "head": None if head is None else head.hex(),
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
        if cert is None
        else {
            "round": cert.round,
            "bitfield": cert.bits.hex(),
            "signature": cert.signature.hex(),
        },
        "reserves": {str(asset): str(amount) for asset, amount in e.reserves},
        "channels": [describe_channel(c) for c in channels],
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


def describe_evidence(e: Evidence) -> dict[str, Any]:
    """One record of equivocation evidence: who, where, and the two frames with the
    member's signature of each (enough to check both against ``pubkey``)."""
    return {
        "entity": e.entity_id.hex(),
        "member": e.member.hex(),
        "pubkey": e.pubkey.hex(),
        "height": e.height,
        "round": e.round,
        "frames": [e.a.frame_hash.hex(), e.b.frame_hash.hex()],
        "signatures": [e.a.signature.hex(), e.b.signature.hex()],
    }
