"""The server machine: the root of the hierarchy, one per node process.

``apply_block(state, mempool, timestamp) -> Step`` is the whole transition. The
server's own transactions are ``increment(n)`` and ``create_signer(pubkey,
proof_of_possession)``; ``faucet(entity, asset, amount)`` is retired (it always
fails: the faucet is now an entity transaction in a member's signed batch) and
kept only so that older chains still decode. Its mempool keys are signer ids:
the server applies its own transactions first, then each signer's share in key
order, and each signer applies its own transactions and then its entities' in
key order.

The state hash covers ``[version, height, timestamp, counter, signers_root,
simulation]``: the signers sit in a Merkle map by id (``node/machines/subs.py``)
whose root commits to each signer's hash, and each signer's hash to its replicas'
root likewise, so the server's state hash covers the whole hierarchy, while a
block that touches a few signers and replicas hashes a few paths of the two
tries: its cost does not grow with the number of signers and replicas hosted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar, Self

from node.block import Block
from node.codec import (
    HASH_LEN,
    UINT64_MAX,
    ZERO_HASH,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_tree,
    int_bytes,
    keccak,
)
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines import signer as sig
from node.machines.counter import Increment as Increment
from node.machines.governance import POP_LEN, PUBKEY_LEN, ConfigError, check_new_key, signer_id
from node.machines.mailbox import NOTHING_KEPT
from node.machines.outcomes import Outcomes
from node.machines.subs import Subs, read_refs
from node.mempool import Mempool
from node.merkle_map import MerkleMap
from node.merkle_store import MapWrite
from node.txs import REGISTRIES, Level, Tx

STATE_VERSION = 2  # 2: the signers by the root of a Merkle map, not a list
MAX_LISTED_SIGNERS = 65_536  # signers READ_STATE lists after the server's state

SERVER_TXS = REGISTRIES[Level.SERVER]


SERVER_TXS.register(Increment)


@SERVER_TXS.register
@dataclass(frozen=True, slots=True)
class CreateSigner:
    """Host a new signer. The proof of possession is checked; the key stays with its agent."""

    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "create_signer"
    pubkey: bytes
    pop: bytes

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 2:
            raise DecodeError("create_signer: expected [pubkey, proof_of_possession]")
        return cls(
            as_bytes(fields[0], "pubkey", size=PUBKEY_LEN),
            as_bytes(fields[1], "proof of possession", size=POP_LEN),
        )

    def to_fields(self) -> list[RlpItem]:
        return [self.pubkey, self.pop]


@SERVER_TXS.register
@dataclass(frozen=True, slots=True)
class Faucet:
    """Retired: always fails. It sent the entity an unsigned ``mint`` input, which
    only the server it was applied on could vouch for; older chains hold it."""

    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "faucet"
    entity: bytes
    asset: int
    amount: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 3:
            raise DecodeError("faucet: expected [entity, asset, amount]")
        return cls(
            as_bytes(fields[0], "entity", size=HASH_LEN),
            as_int(fields[1], "asset", max_value=2**32 - 1),
            as_int(fields[2], "amount", min_value=1, max_value=2**128 - 1),
        )

    def to_fields(self) -> list[RlpItem]:
        return [self.entity, int_bytes(self.asset), int_bytes(self.amount)]


@dataclass(frozen=True)
class ServerState:
    """What the state hash covers, plus ``head``: the hash of the block that made it.

    ``head`` is chain position, not state: it is not encoded (a block cannot
    commit to its own hash) and is restored from the root's block on load.
    """

    height: int = 0
    timestamp: int = 0
    counter: int = 0
    hosted: Subs[sig.SignerState] = field(default_factory=Subs)  # by signer id
    head: bytes = ZERO_HASH
    simulation: bool = False  # fixed at genesis: may frames apply the faucet?

    @property
    def by_id(self) -> Subs[sig.SignerState]:
        """The signers by id: ``get``, ``in`` and ``[]`` walk one path."""
        return self.hosted

    @property
    def signers(self) -> tuple[sig.SignerState, ...]:
        """Every signer, in ascending id: a walk over all of them (views, reads,
        start-up), never a block's work."""
        return tuple(self.hosted.values())

    def replica(self, signer: bytes, entity: bytes) -> rep.Replica | None:
        s = self.hosted.get(signer)
        return None if s is None else s.held.get(entity)

    @cached_property
    def encoded(self) -> bytes:
        return encode_tree(
            [
                int_bytes(STATE_VERSION),
                int_bytes(self.height),
                int_bytes(self.timestamp),
                int_bytes(self.counter),
                self.hosted.root,
                int_bytes(int(self.simulation)),
            ]
        )

    def encode(self) -> bytes:
        return self.encoded

    def hash(self) -> bytes:
        return keccak(self.encoded)

    def readable(self, cap: int = MAX_LISTED_SIGNERS) -> bytes:
        """What READ_STATE returns for the server: its encoding's six items, then its
        signers ``[[signer_id, signer_hash], ...]`` (at most ``cap``, ascending) and 1
        if the list stopped at the cap, else 0."""
        refs, more = self.hosted.listed(cap)
        items = decode(self.encoded)
        assert isinstance(items, list)
        return encode_tree([*items, refs, int_bytes(int(more))])

    @staticmethod
    def read_listing(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """From what READ_STATE returns for the server (``readable``): the state's own
        encoding (its keccak is the state hash) and the signers listed. A complete
        list is checked against the root; a list cut at the cap is its first part."""
        f = as_list(decode(raw), "server state as read", size=8)
        encoded = encode_tree(f[:6])
        root = ServerState.signers_root(encoded)
        refs = read_refs(f[6], f[7], root, "server state", "signer", "signer id")
        return encoded, refs

    @staticmethod
    def signers_root(raw: bytes) -> bytes:
        """The root of the signers' map named by an encoded state."""
        items = as_list(decode(raw), "server state", size=6)
        return as_bytes(items[4], "signers root", size=HASH_LEN)

    @classmethod
    def decode(
        cls,
        raw: bytes,
        head: bytes = ZERO_HASH,
        get: Callable[[tuple[bytes, ...]], bytes] | None = None,
        load_replica: sig.ReplicaLoader | None = None,
        routes: Iterable[tuple[bytes, ...]] = (),
    ) -> ServerState:
        """``routes`` names every signer (``(signer,)``) and replica (``(signer,
        entity)``) stored apart; ``get(route)`` reads their encodings (``node/storage.py``),
        the replicas' whole encodings unless ``load_replica`` reads them another way.
        The signers' and replicas' maps are rebuilt and checked against the roots."""
        items = as_list(decode(raw), "server state", size=6)
        version = as_int(items[0], "state version")
        if version != STATE_VERSION:
            raise DecodeError(f"server state version {version} is not {STATE_VERSION}")
        root = cls.signers_root(raw)
        simulation = bool(as_int(items[5], "simulation", max_value=1))
        entities: dict[bytes, list[bytes]] = {}
        routes = list(routes)
        for route in routes:
            if len(route) == 1:
                entities.setdefault(route[0], [])
        for route in routes:
            if len(route) == 2:
                if route[0] not in entities:
                    raise DecodeError(f"replica {route[1].hex()} of no stored signer")
                entities[route[0]].append(route[1])
            elif len(route) != 1:
                raise DecodeError(f"no machine has a route of {len(route)} ids")
        if entities and get is None:
            raise DecodeError("server state has signers but no way to load them")
        hosted: Subs[sig.SignerState] = Subs()
        if get is not None:
            read = get

            def whole(route: tuple[bytes, bytes], simulation: bool) -> rep.Replica:
                return rep.Replica.decode(read(route))

            loader = load_replica or whole
            hosted = Subs.of(
                (i, sig.load(i, sorted(es), get, loader, simulation=simulation))
                for i, es in sorted(entities.items())
            )
        if hosted.root != root:
            raise DecodeError("the signers do not match the server state's root")
        return cls(
            height=as_int(items[1], "state height"),
            timestamp=as_int(items[2], "state timestamp"),
            counter=as_int(items[3], "state counter"),
            hosted=hosted,
            head=head,
            simulation=simulation,
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """Outcome of one transaction: ``error`` is None when it applied."""

    route: tuple[bytes, ...]
    index: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Effect:
    """Something a block causes, done only once that block is durable.

    ``signer`` is the hosted signer it comes from; ``entity`` is set for a
    replica's effect; ``what`` is a replica effect or a signer-level send.
    """

    signer: bytes
    entity: bytes | None
    what: rep.Effect | sig.SendToSigner


@dataclass(frozen=True, slots=True)
class Write:
    """A changed sub-machine for storage: ``raw`` under its route (a replica's
    ``header``), and a replica's records that storage keeps apart, each under its own
    key, only those that changed: ``(kind, key, encoding or None: deleted)``, kind
    ``RECORD_CHANNEL``, ``RECORD_FORWARD`` or ``RECORD_KEPT``."""

    route: tuple[bytes, ...]
    raw: bytes
    records: tuple[tuple[bytes, bytes, bytes | None], ...] = ()
    # The changed maps with the nodes that differ, for storage to write and delete
    # (node.merkle_store): one per kind of record above that changed.
    maps: tuple[MapWrite, ...] = ()
    # A replica's channels waiting to propose (``EntityState.waiting``), sorted and
    # joined, if they changed (b"": none); None if unchanged. Not hashed: what a
    # restart would otherwise find by reading every channel.
    waiting: bytes | None = None


RECORD_CHANNEL = b"C"  # a channel record, by counterparty
RECORD_FORWARD = b"W"  # a forward in flight, by payment id
RECORD_KEPT = b"K"  # kept signed messages, by counterparty


def replica_write(route: tuple[bytes, ...], new: rep.Replica, old: rep.Replica | None) -> Write:
    """What storage writes for a replica that changed from ``old`` (None: created):
    costs the records and trie nodes that changed, not the replica's size."""
    maps: list[tuple[bytes, MerkleMap[Any], MerkleMap[Any]]] = [
        (RECORD_CHANNEL, new.entity.channels, old.entity.channels if old else ent.NO_CHANNELS),
        (RECORD_FORWARD, new.entity.forwards, old.entity.forwards if old else ent.NO_FORWARDS),
        (RECORD_KEPT, new.mailbox.kept, old.mailbox.kept if old else NOTHING_KEPT),
    ]
    records: list[tuple[bytes, bytes, bytes | None]] = []
    stored: list[MapWrite] = []
    for kind, after, before in maps:
        if after is before:
            continue
        changed, nodes = after.changes(before)
        if nodes.added or nodes.removed:
            records.extend(
                (kind, key, None if value is None else value.encoded)
                for key, value in changed.items()
            )
            stored.append(MapWrite(kind, after, nodes))
    waiting = new.entity.waiting
    if old is not None and old.entity.waiting == waiting:
        return Write(route, new.header, tuple(records), tuple(stored))
    return Write(route, new.header, tuple(records), tuple(stored), b"".join(sorted(waiting)))


@dataclass(frozen=True, slots=True)
class Step:
    state: ServerState
    block: Block
    receipts: tuple[Receipt, ...]
    effects: tuple[Effect, ...] = ()
    # What storage writes beside the block: changed signers and replicas.
    changed: tuple[Write, ...] = ()
    frames: tuple[tuple[bytes, rep.Committed], ...] = field(default=())  # (entity, committed)


class InvalidBlock(ValueError):
    """Inputs that no honest runtime would hand to the transition."""


def apply_block(
    state: ServerState, mempool: Mempool, timestamp: int, *, outcomes: Outcomes | None = None
) -> Step:
    """The block's transition. Costs what the mempool touches: the signers and
    replicas it addresses are read and replaced one path at a time, and the new
    state's hash re-hashes only those paths. ``outcomes``: the runtime's cache of frame
    outcomes (``node.machines.outcomes``); it changes nothing but the time."""
    if timestamp < state.timestamp:
        raise InvalidBlock(
            f"timestamp {timestamp} is before the previous block's {state.timestamp}"
        )
    counter = state.counter
    hosted = state.hosted
    signers: dict[bytes, sig.SignerState] = {}  # the ones this block made or changed
    receipts: list[Receipt] = []
    effects: list[Effect] = []
    changed: list[Write] = []
    frames: list[tuple[bytes, rep.Committed]] = []
    for index, tx in enumerate(mempool.txs):
        counter, error = _apply_tx(counter, hosted, signers, tx)
        receipts.append(Receipt((), index, error))
    for key, sub in zip(mempool.keys, mempool.subs, strict=True):
        signer = signers.get(key) or hosted.get(key)
        if signer is None:
            raise InvalidBlock(f"mempool addresses unknown signer {key.hex()}")
        for entity_id in sub.keys:
            if entity_id not in signer.held:
                raise InvalidBlock(f"mempool addresses unknown entity {entity_id.hex()}")
        out = sig.apply(signer, sub, simulation=state.simulation, outcomes=outcomes)
        if out.state is not signer:
            signers[key] = out.state
        receipts.extend(Receipt(route, index, error) for route, index, error in out.errors)
        effects.extend(Effect(key, None, send) for send in out.sends)
        for entity_id, what in out.replica_effects:
            effects.append(Effect(key, entity_id, what))
            if isinstance(what, rep.Committed):
                frames.append((entity_id, what))
        replicas = out.state.held
        changed.extend(
            replica_write((key, e), replicas[e], signer.held.get(e)) for e in out.changed
        )
    for key in sorted(signers):
        changed.append(Write((key,), signers[key].encoded))
    height = state.height + 1
    body = ServerState(
        height, timestamp, counter, hosted.set_many(signers), simulation=state.simulation
    )
    block = Block.make(height, state.head, timestamp, mempool.raw, body.hash())
    new_state = replace(body, head=block.hash)
    return Step(new_state, block, tuple(receipts), tuple(effects), tuple(changed), tuple(frames))


FAUCET_RETIRED = (
    "the server faucet is retired: a member of the entity submits faucet(asset, amount) "
    "in a signed batch"
)


def _apply_tx(
    counter: int, hosted: Subs[sig.SignerState], signers: dict[bytes, sig.SignerState], tx: Tx
) -> tuple[int, str | None]:
    match tx.body:
        case Increment(n=n):
            if counter + n > UINT64_MAX:
                return counter, "counter overflow: the counter is a 64-bit unsigned integer"
            return counter + n, None
        case CreateSigner(pubkey=pubkey, pop=pop):
            sid = signer_id(pubkey)
            if sid in signers or sid in hosted:
                return counter, "signer already exists on this server"
            try:
                check_new_key(pubkey, pop)
            except ConfigError as exc:
                return counter, f"create_signer: {exc}"
            signers[sid] = sig.SignerState(pubkey)
            return counter, None
        case Faucet():
            return counter, FAUCET_RETIRED
    return counter, f"{tx.body.NAME} is not a server transaction"
