"""Which entities a signer is a member of: the index a node keeps, and the answer.

A signer restored from its phrase onto a new server knows its key and nothing
else. Its node asks its peers which entities the signer belongs to
(``MEMBERSHIPS``, ``docs/PROTOCOL.md`` § 9 and § 13.8); each answers from the
replicas it hosts, one :class:`Membership` per entity: the genesis (enough to
build a replica and catch up through certified frames), the certified height
and head, the highest height in flight there (a frame proposed or locked above
the certified one), and the members' server bindings it has seen (which servers
host the other members, and the serial the signer's next binding must pass).

:class:`MemberIndex` is the node's index by member: each member's entities in a
sorted list, so a page costs what it returns, not the number of entities hosted.
It is kept in memory by the coordinator from each block's changed replicas (the
same walk that fills its other indexes at start-up).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    as_text,
    decode,
    encode_tree,
    int_bytes,
)
from node.machines import replica as rep
from node.machines.binding import Bound
from node.machines.entity import entity_id_for
from node.machines.replica.state import MAX_BINDINGS

# One MEMBERSHIPS page: at most this many entities, and entries past this many bytes
# go to the next page (a genesis of a 1,024-member entity is about 150 KB).
MAX_PAGE = 256
MAX_PAGE_BYTES = 4 * 1024 * 1024
# What one FIND_ENTITIES gathers and joins, from all peers together.
MAX_FOUND = 1024


@dataclass(frozen=True)
class Membership:
    """One entity a signer is a member of, as one server's replicas show it."""

    entity_id: bytes
    genesis: rep.Genesis
    height: int  # certified
    head: bytes  # the certified frame's hash at ``height``
    in_flight: int  # the highest height with a frame proposed, locked or voted on (>= height)
    bound: tuple[Bound, ...]  # the members' server bindings seen there

    def to_tree(self) -> list[RlpItem]:
        return [
            self.entity_id,
            decode(encode_tree(self.genesis.to_tree())),
            int_bytes(self.height),
            self.head,
            int_bytes(self.in_flight),
            [b.to_tree() for b in self.bound],
        ]

    @classmethod
    def from_item(cls, item: RlpItem) -> Membership:
        """Strict decoding; the genesis must hash to the entity id (DecodeError)."""
        f = as_list(item, "membership", size=6)
        entity_id = as_bytes(f[0], "entity id", size=HASH_LEN)
        genesis = rep.Genesis.from_item(f[1])
        if entity_id_for(genesis.config, genesis.salt) != entity_id:
            raise DecodeError("membership: the genesis is not the entity's")
        height = as_int(f[2], "height")
        in_flight = as_int(f[4], "in flight height", min_value=height)
        bound = tuple(Bound.from_item(b) for b in as_list(f[5], "bindings", max_len=MAX_BINDINGS))
        head = as_bytes(f[3], "head", size=HASH_LEN)
        return cls(entity_id, genesis, height, head, in_flight, bound)

    def serial_of(self, signer: bytes) -> int:
        """The highest binding serial seen here for ``signer`` (0: none)."""
        return max((b.serial for b in self.bound if b.signer == signer), default=0)

    def merged(self, other: Membership) -> Membership:
        """What two servers' answers for one entity say together: the higher certified
        height (with its head), the higher height in flight, the higher serial per
        member."""
        assert other.entity_id == self.entity_id
        top = self if self.height >= other.height else other
        bound: dict[bytes, Bound] = {}
        for b in (*self.bound, *other.bound):
            held = bound.get(b.signer)
            if held is None or b.serial > held.serial:
                bound[b.signer] = b
        return Membership(
            self.entity_id,
            self.genesis,
            top.height,
            top.head,
            max(self.in_flight, other.in_flight),
            tuple(bound[k] for k in sorted(bound)),
        )


@dataclass(frozen=True)
class Found:
    """One entity FIND_ENTITIES found."""

    membership: Membership
    floor: int  # the agent's floor for the entity now
    joined: bool  # a replica was made here by this request


@dataclass
class FindResult:
    """FIND_ENTITIES's answer: ``FOUND [[[membership, floor, joined]...], asked,
    answered, [error...]]``."""

    found: list[Found] = field(default_factory=list)
    asked: int = 0  # peers asked
    answered: int = 0  # peers that answered every page
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether this find is final for a restore: every peer of the node answered,
        and there was a peer to ask or an entity found (a node with no peers that
        found nothing may get peers later). A restored signer's find is asked again
        until one is complete, and then not again: a later find would raise a floor
        to a height the signer is about to sign, which only delays it."""
        answered = not self.errors and self.answered == self.asked
        return answered and (self.asked > 0 or bool(self.found))

    def summary(self) -> str:
        """One line for a log or a console."""
        joined = sum(1 for f in self.found if f.joined)
        text = (
            f"{len(self.found)} entities found ({joined} joined here), "
            f"{self.answered} of {self.asked} peers answered"
        )
        return text + "".join(f"; {e}" for e in self.errors)

    def to_tree(self) -> list[RlpItem]:
        return [
            [
                [f.membership.to_tree(), int_bytes(f.floor), int_bytes(int(f.joined))]
                for f in self.found
            ],
            int_bytes(self.asked),
            int_bytes(self.answered),
            [e.encode() for e in self.errors],
        ]

    @classmethod
    def from_body(cls, body: list[RlpItem]) -> FindResult:
        if len(body) != 4:
            raise DecodeError("FOUND body is [found, peers_asked, peers_answered, errors]")
        found = []
        for item in as_list(body[0], "found", max_len=MAX_FOUND):
            f = as_list(item, "found entity", size=3)
            joined = as_int(f[2], "joined", max_value=1)
            found.append(Found(Membership.from_item(f[0]), as_int(f[1], "floor"), bool(joined)))
        errors = [
            as_text(e, "error", max_len=4096) for e in as_list(body[3], "errors", max_len=1024)
        ]
        return cls(found, as_int(body[1], "asked"), as_int(body[2], "answered"), errors)


def membership_of(replicas: Iterable[rep.Replica], signer: bytes) -> Membership | None:
    """What this server's replicas of one entity show, or None if none of them has
    ``signer`` in its current config."""
    found: Membership | None = None
    for r in replicas:
        if signer not in r.entity.config.index:
            continue
        # A frame proposed (pending), locked, or a round changed at the next height:
        # members may have voted there (an approval leaves no lock, and a round change
        # drops the proposer's frame in flight).
        busy = r.pending is not None or r.lock is not None or r.round > 0
        m = Membership(
            r.entity_id,
            r.genesis,
            r.entity.height,
            r.head,
            r.next_height if busy else r.entity.height,
            r.bindings,
        )
        found = m if found is None else found.merged(m)
    return found


class MemberIndex:
    """Each member's entities, sorted: ``page`` costs what it returns."""

    def __init__(self) -> None:
        self._sorted: dict[bytes, list[bytes]] = {}

    def add(self, member: bytes, entity: bytes) -> None:
        entities = self._sorted.setdefault(member, [])
        at = bisect.bisect_left(entities, entity)
        if at == len(entities) or entities[at] != entity:
            entities.insert(at, entity)

    def page(self, member: bytes, after: bytes, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` of ``member``'s entities above ``after`` (b"": from the
        first), and whether more follow."""
        entities = self._sorted.get(member, [])
        start = bisect.bisect_right(entities, after) if after else 0
        chunk = entities[start : start + limit]
        return chunk, start + limit < len(entities)
