"""Plain, JSON-ready views of the machine hierarchy, for ``xln-node inspect`` and the sim."""

from __future__ import annotations

from typing import Any

from node.machines import governance
from node.machines.replica import Replica
from node.machines.server import ServerState


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
                "action": governance.ACTION_NAMES[type(p.action)],
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
    }
