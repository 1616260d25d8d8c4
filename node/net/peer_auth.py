"""Which members a peer server speaks for: the rule for a peer's consensus traffic.

A peer server (a connection whose HELLO proved an identity key, ``node/identity.py``)
may send an entity's consensus traffic (batches, pre-commits, commits, locks,
proposals and other members' bindings) only while it **speaks for** one of the
entity's members: that member's current binding (``node/machines/binding.py``)
names the connection's identity key. The binding is found in one of two places:

- on the replica, recorded from a ``server_binding`` applied in a block (it
  outlives the connection and the node's restarts);
- on the connection, **introduced** by the bound server itself: a
  ``server_binding`` of its own key that it delivers is held for the connection's
  life at once, before any block, so the traffic right behind it on the same
  connection is not refused while the block that records it is being made.

An introduced binding counts at a replica only if the member is in the entity's
config, no higher serial (a revocation among them) is recorded there, and it
verifies under the member's key in that config. A member's id is the hash of its
key, so a binding once verified stays verified: the check costs one signature per
(member, serial) per connection, then a dictionary look-up.

Channel messages (``deliver``) are outside this rule: they carry the
counterparty's quorum signature, which the replica checks, and the counterparty's
servers hold no binding that this entity records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.machines.binding import ServerBinding
from node.machines.replica import Replica

# Bindings one connection may introduce (one per member it hosts): a hub's server
# hosts a few signers; a thousand leaves room and bounds a hostile peer's memory.
MAX_INTRODUCED = 1024


@dataclass
class PeerBindings:
    """The bindings of ``key`` that the connection introduced, highest serial per member."""

    key: bytes  # the connection's identity key
    introduced: dict[bytes, ServerBinding] = field(default_factory=dict)
    _verified: set[tuple[bytes, int, bytes]] = field(default_factory=set)

    def introduce(self, binding: ServerBinding) -> str | None:
        """Hold ``binding`` (of this connection's key) for the connection's life; why
        not, or None. A lower serial than the one held is ignored (not an error: the
        replica's record decides which is current)."""
        if binding.server_key != self.key:
            return "a server introduces only bindings of its own identity key"
        held = self.introduced.get(binding.signer)
        if held is None and len(self.introduced) >= MAX_INTRODUCED:
            return f"a connection may introduce at most {MAX_INTRODUCED} members' bindings"
        if held is None or binding.serial > held.serial:
            self.introduced[binding.signer] = binding
        return None

    def member_for(self, replica: Replica) -> bytes | None:
        """A member of ``replica``'s entity this connection speaks for, or None."""
        config = replica.entity.config
        for signer, binding in self.introduced.items():
            slot = config.index.get(signer)
            if slot is None or binding.revokes:
                continue
            recorded = replica.bound(signer)
            if recorded is not None and (
                recorded.serial > binding.serial
                or (recorded.serial == binding.serial and not recorded.same(binding))
            ):
                continue  # replaced, or a second binding at the recorded serial
            if recorded is not None and recorded.same(binding):
                return signer  # verified when the replica recorded it
            mark = (signer, binding.serial, binding.signature)
            if mark not in self._verified:
                if not binding.verify(config.members[slot].pubkey):
                    continue
                self._verified.add(mark)
            return signer
        for bound in replica.bindings:
            if bound.server_key == self.key and bound.signer in config.index:
                return bound.signer
        return None


def refusal(bindings: PeerBindings, replica: Replica) -> str | None:
    """Why the connection may not send consensus traffic for ``replica``'s entity, or None."""
    if bindings.member_for(replica) is not None:
        return None
    return (
        f"this peer server speaks for no member of entity {replica.entity_id.hex()[:16]}:"
        " only a server a member's agent bound may send its consensus traffic"
        " (introduce the binding with server_binding first)"
    )
