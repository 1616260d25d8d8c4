"""One signer's replica of an entity: its state, its encodings and their decoding (pure).

The replica holds the agreed :class:`EntityState` (identical on every replica)
and this signer's local consensus state: the pool of signed batches not yet
committed, the current round, the proposer's frame in flight (:class:`Pending`)
with the approvals, polka and pre-commits gathered for it, the highest-round
frame with a polka seen at the next height (the lock a new proposer must
re-propose), the round-change reports, the inbox of channel messages not yet
applied, the mailbox of our signed channel messages still to deliver, and the
members' server bindings seen (``node.machines.binding``). How it moves is
``consensus.step``'s.

Version 3 is two-step voting (``docs/CONSENSUS.md``); the one-step replicas of
versions 1 and 2 are not read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_list,
    encode_tree,
    int_bytes,
    keccak,
)
from node.machines import accounts
from node.machines import entity as ent
from node.machines.accounts import FrameInput
from node.machines.binding import Bound
from node.machines.entity import Batch, EntityState
from node.machines.frames import MAX_OUTBOX, MAX_ROUND, Certificate, Frame, Polka, Signatures
from node.machines.governance import Config
from node.machines.mailbox import NO_MAIL, Kept, Mailbox
from node.machines.outcomes import Outcomes
from node.machines.replica.execution import execute_frame
from node.machines.replica.inputs import Lock
from node.merkle_map import MerkleMap

# 3: two-step voting (a frame in flight gathers approvals and a polka; a lock holds a
# polka). Versions 1 and 2 (one-step voting) are not read: their chains replay only on
# the node that wrote them (node/storage.py refuses their data folders).
STATE_VERSION = 3
ITEMS = 15
MAX_BINDINGS = 1024  # one per member at most (a config's cap)
MAX_POOL = 10_000
MAX_INBOX = 10_000


@dataclass(frozen=True)
class Pending:
    """The proposer's frame in flight at ``round``: the approvals gathered (ascending
    slot), the polka once they hold the threshold, and the pre-commits gathered."""

    frame: Frame
    round: int
    post: EntityState
    sigs: tuple[tuple[int, Signatures], ...] = ()  # pre-commits, ascending slot
    approvals: tuple[tuple[int, bytes], ...] = ()  # ascending slot
    polka: Polka | None = None

    def _tail(self) -> list[bytes]:
        return [
            encode_tree([[int_bytes(i), s.precommit, list(s.outbox)] for i, s in self.sigs]),
            encode_tree([[int_bytes(i), a] for i, a in self.approvals]),
            self.polka.raw if self.polka else encode_tree([]),
        ]

    def to_tree(self) -> RlpTree:
        return decode(self._encode(self.post.encoded))

    @property
    def encoded(self) -> bytes:
        return self._encode(self.post.encoded)

    @property
    def header(self) -> bytes:
        """What the replica's hash commits to: the state after the frame by its hash."""
        return self._encode(encode_tree(self.post.hash))

    def _encode(self, post: bytes) -> bytes:
        return encode_list(
            [self.frame.raw, encode_tree(int_bytes(self.round)), post, *self._tail()]
        )


@dataclass(frozen=True)
class Genesis:
    """How the entity was created: enough for a new member to rebuild it from frame 1."""

    config: Config
    salt: bytes
    pops: tuple[bytes, ...]

    def to_tree(self) -> RlpTree:
        return [self.config.to_tree(), self.salt, list(self.pops)]

    @classmethod
    def from_item(cls, item: RlpItem) -> Genesis:
        f = as_list(item, "genesis", size=3)
        return cls(
            Config.from_item(f[0]),
            as_bytes(f[1], "salt", size=HASH_LEN),
            tuple(as_bytes(p, "pop", size=ent.SIG_LEN) for p in as_list(f[2], "pops")),
        )


@dataclass(frozen=True)
class Replica:
    signer: bytes
    genesis: Genesis
    entity: EntityState
    head: bytes = ZERO_HASH
    cert: Certificate | None = None
    round: int = 0
    pool: tuple[Batch, ...] = ()
    pending: Pending | None = None
    lock: Lock | None = None
    changes: tuple[bytes, ...] = ()  # members that reported moving to ``round``
    ahead: tuple[tuple[bytes, int], ...] = ()  # (member, round) reports above ``round``
    inbox: tuple[FrameInput, ...] = ()  # channel messages not yet applied
    # Our signed channel messages still to be delivered (or resent).
    mailbox: Mailbox = NO_MAIL
    # Each member's highest-serial server binding seen, ascending signer (never reset).
    bindings: tuple[Bound, ...] = ()

    @property
    def version(self) -> int:
        return STATE_VERSION

    def bound(self, member: bytes) -> Bound | None:
        return next((b for b in self.bindings if b.signer == member), None)

    @property
    def entity_id(self) -> bytes:
        return self.entity.entity_id

    @property
    def next_height(self) -> int:
        return self.entity.height + 1

    @property
    def proposer(self) -> bytes:
        return self.entity.config.proposer_at(self.round)

    def to_tree(self) -> RlpTree:
        tree: list[RlpTree] = [
            int_bytes(self.version),
            self.signer,
            self.genesis.to_tree(),
            self.entity.to_tree(),
            self.head,
            self.cert.to_tree() if self.cert else [],
            int_bytes(self.round),
            [decode(b.raw) for b in self.pool],
            self.pending.to_tree() if self.pending else [],
            self.lock.to_tree() if self.lock else [],
            list(self.changes),
            [[m, int_bytes(rd)] for m, rd in self.ahead],
            [i.to_tree() for i in self.inbox],
            self.mailbox.to_tree(),
            [b.to_tree() for b in self.bindings],
        ]
        return tree

    @cached_property
    def encoded(self) -> bytes:
        """The same bytes as ``encode_tree(self.to_tree())``, built from the parts'
        own encodings: the replica holds whole frames (pool, pending, lock, inbox,
        signed messages, channel frames)."""
        return self._encode(
            self.entity.encoded,
            self.pending.encoded if self.pending else encode_tree([]),
            self.mailbox.encoded(),
        )

    @cached_property
    def header(self) -> bytes:
        """What the hash is of: the encoding with the entity state, the state after the
        frame in flight and the kept messages each by its hash or root (their headers),
        so a block hashes what changed, not every channel and kept message."""
        return self._encode(
            self.entity.header,
            self.pending.header if self.pending else encode_tree([]),
            self.mailbox.header(),
        )

    def _encode(self, entity: bytes, pending: bytes, mailbox: bytes) -> bytes:
        items = [
            encode_tree(int_bytes(self.version)),
            encode_tree(self.signer),
            encode_tree(self.genesis.to_tree()),
            entity,
            encode_tree(self.head),
            encode_tree(self.cert.to_tree() if self.cert else []),
            encode_tree(int_bytes(self.round)),
            encode_list(b.raw for b in self.pool),
            pending,
            self.lock.encoded if self.lock else encode_tree([]),
            encode_tree(list(self.changes)),
            encode_tree([[m, int_bytes(rd)] for m, rd in self.ahead]),
            encode_list(i.raw for i in self.inbox),
            mailbox,
            encode_tree([b.to_tree() for b in self.bindings]),
        ]
        return encode_list(items)

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.header)

    @classmethod
    def decode_agreed(cls, raw: bytes) -> Replica:
        """The agreed part only: signer, genesis, entity state, head, certificate and
        round; this signer's consensus state (pool, frame in flight, lock, round-change
        reports, inbox, signed messages) is left empty. For readers such as a wallet,
        which need the entity and not thousands of payments in flight."""
        f = _items(decode(raw), "replica")
        return cls(
            as_bytes(f[1], "replica signer", size=HASH_LEN),
            Genesis.from_item(f[2]),
            EntityState.from_item(f[3]),
            as_bytes(f[4], "head", size=HASH_LEN),
            Certificate.from_item(f[5]) if f[5] else None,
            as_int(f[6], "round", max_value=MAX_ROUND),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Replica:
        """The whole encoding (``encoded``: what READ_STATE returns)."""
        f = _items(decode(raw), "replica")
        entity = EntityState.from_item(f[3])

        def post(p: list[RlpItem], frame: Frame) -> EntityState:
            return EntityState.from_item(p[2])

        return cls._of(f, entity, post, Mailbox.from_item(f[13]))

    @classmethod
    def load(
        cls,
        raw: bytes,
        channels: ent.Channels,
        forwards: ent.Forwards,
        kept: MerkleMap[Kept],
        *,
        simulation: bool,
        outcomes: Outcomes | None = None,
        waiting: frozenset[bytes] | None = None,
    ) -> Replica:
        """The replica whose ``header`` is ``raw``, with its channels, forwards and kept
        messages read apart (as storage keeps them), each checked against its root. The state
        after a frame in flight is computed again from the frame, and checked against
        its hash (remembered in ``outcomes``, if given, for the commit that follows).
        ``waiting``: the agreed state's ``EntityState.waiting``, as storage keeps it, so
        that nothing looks at every channel to find it (None: look)."""
        f = _items(decode(raw), "replica header")
        entity = EntityState.from_header(f[3], channels, forwards)
        if waiting is not None:
            entity.__dict__["waiting"] = waiting  # the cached property, without a scan

        def post(p: list[RlpItem], frame: Frame) -> EntityState:
            expected = as_bytes(p[2], "pending post hash", size=HASH_LEN)
            state, _ = execute_frame(
                entity, frame, verify=False, simulation=simulation, outcomes=outcomes
            )
            if state.hash != expected:
                raise DecodeError("replica: the frame in flight does not give its state")
            return state

        return cls._of(f, entity, post, Mailbox.from_header(f[13], kept))

    @classmethod
    def _of(
        cls,
        f: list[RlpItem],
        entity: EntityState,
        post: Callable[[list[RlpItem], Frame], EntityState],
        mailbox: Mailbox,
    ) -> Replica:
        pending = None
        if f[8]:
            p = as_list(f[8], "pending", size=6)
            frame = Frame.decode(encode_tree(p[0]))
            pending = Pending(
                frame,
                as_int(p[1], "pending round"),
                post(p, frame),
                tuple(
                    (
                        as_int(s[0], "slot"),
                        Signatures(
                            as_bytes(s[1], "sig", size=ent.SIG_LEN),
                            tuple(
                                as_bytes(o, "outbox sig", size=ent.SIG_LEN)
                                for o in as_list(s[2], "outbox sigs", max_len=MAX_OUTBOX)
                            ),
                        ),
                    )
                    for s in (as_list(x, "slot sigs", size=3) for x in as_list(p[3], "sigs"))
                ),
                tuple(
                    (as_int(a[0], "slot"), as_bytes(a[1], "approval", size=ent.SIG_LEN))
                    for a in (as_list(x, "approval", size=2) for x in as_list(p[4], "approvals"))
                ),
                Polka.from_item(p[5]) if p[5] else None,
            )
        return cls(
            as_bytes(f[1], "replica signer", size=HASH_LEN),
            Genesis.from_item(f[2]),
            entity,
            as_bytes(f[4], "head", size=HASH_LEN),
            Certificate.from_item(f[5]) if f[5] else None,
            as_int(f[6], "round", max_value=MAX_ROUND),
            tuple(Batch.decode(encode_tree(b)) for b in as_list(f[7], "pool", max_len=MAX_POOL)),
            pending,
            Lock.from_item(f[9]) if f[9] else None,
            tuple(as_bytes(x, "change", size=HASH_LEN) for x in as_list(f[10], "changes")),
            tuple(
                (as_bytes(a[0], "ahead member", size=HASH_LEN), as_int(a[1], "ahead round"))
                for a in (as_list(x, "ahead", size=2) for x in as_list(f[11], "ahead"))
            ),
            tuple(accounts.input_from_item(x) for x in as_list(f[12], "inbox", max_len=MAX_INBOX)),
            mailbox,
            _bindings(f),
        )


def _items(item: RlpItem, what: str) -> list[RlpItem]:
    """A replica's items (15, version 3)."""
    f = as_list(item, what)
    version = as_int(f[0], "replica version") if f else None
    if version != STATE_VERSION:
        raise DecodeError(
            f"replica: version {version}; this node reads version {STATE_VERSION} (two-step voting)"
        )
    if len(f) != ITEMS:
        raise DecodeError(f"{what}: version {STATE_VERSION} has {ITEMS} items, not {len(f)}")
    return f


def _bindings(f: list[RlpItem]) -> tuple[Bound, ...]:
    bound = tuple(Bound.from_item(x) for x in as_list(f[14], "bindings", max_len=MAX_BINDINGS))
    if any(a.signer >= b.signer for a, b in pairwise(bound)):
        raise DecodeError("replica bindings: not in ascending signer id")
    return bound


def create(signer: bytes, genesis: Genesis) -> Replica:
    return Replica(signer, genesis, ent.genesis(genesis.config, genesis.salt))


def input_key(inp: FrameInput) -> tuple[bytes, ...]:
    """What tells two channel messages in the inbox apart (copies share it)."""
    return (inp.sender, inp.hash, inp.bits, inp.signature)
