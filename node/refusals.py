"""The members' signed refusals this node has seen, per entity: who refused which frame, and why.

A refusal (``node/machines/refusal.py``) comes from a member's agent, through the
member's node, which keeps it here and sends it to the servers of the entity's
other members (a peer's ``refusal`` input, PROTOCOL.md § 13.3). It is the node's
own record, beside the replicas and outside the agreed state, like equivocation
evidence: it moves no replica. ``READ_ENTITY``'s refusals part reads it, so the
proposer and every member's wallet see who refused and why.

A refusal is kept only if its signer is a member of the entity (as the replica's
config says) and its signature verifies under that member's key; each (member,
height, round, frame) once. The log is bounded: the newest
:data:`MAX_PER_ENTITY` refusals of an entity, for the :data:`MAX_ENTITIES` entities
refused most lately. It lives in memory: a restart forgets it, which loses
nothing the entity needs (the frame is re-proposed, and refused again).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from node.machines.governance import Config
from node.machines.refusal import Refusal

MAX_PER_ENTITY = 64
MAX_ENTITIES = 1024


class RefusalLog:
    def __init__(self) -> None:
        self._by_entity: OrderedDict[bytes, deque[Refusal]] = OrderedDict()

    def observe(self, config: Config, refusal: Refusal) -> str | None:
        """Keep ``refusal`` if a member of ``config`` signed it; why not, or None (also
        None for one kept already)."""
        slot = config.index.get(refusal.signer)
        who = refusal.signer.hex()[:16]
        if slot is None:
            return f"refusal by {who}, not a member of the entity"
        if not refusal.verify(config.members[slot].pubkey):
            return f"refusal does not verify under member {who}'s key"
        kept = self._by_entity.get(refusal.entity)
        if kept is None:
            kept = self._by_entity[refusal.entity] = deque(maxlen=MAX_PER_ENTITY)
            while len(self._by_entity) > MAX_ENTITIES:
                self._by_entity.popitem(last=False)
        else:
            self._by_entity.move_to_end(refusal.entity)
        if refusal not in kept:
            kept.append(refusal)
        return None

    def of_entity(self, entity: bytes) -> list[Refusal]:
        """The refusals kept about ``entity``, oldest first."""
        return list(self._by_entity.get(entity, ()))
