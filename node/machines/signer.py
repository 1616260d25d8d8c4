"""The signer machine: one per BLS key hosted on a server; it holds entity replicas.

Created by the server transaction ``create_signer(pubkey, proof_of_possession)``;
its id is keccak-256 of the public key. Its mempool keys are entity ids. Its own
transactions are ``increment(n)`` and ``create_entity(config, salt, pops)``.

``create_entity`` makes this signer's replica of a new entity, if the signer is
a member, and sends the same transaction to every other member, so each of
them creates its replica too (it is idempotent: a signer that already holds the
entity ignores it). ``join_entity`` lets a new member, added by a proposal, build
its replica from genesis and catch up through certified frames; from a peer it
names the frame that added the signer, which the node verifies before it queues
the join (``node/join_proof.py``: I/O, so not here).

Its replicas sit in a :class:`node.machines.subs.Subs` by entity id; its encoding
``[version, pubkey, counter, replicas_root]`` holds their map's root, so a block
that changes one replica re-hashes one path, however many the signer holds.
READ_STATE on the signer returns that encoding's items followed by the list of its
replicas (``readable``, bounded by ``MAX_LISTED_REPLICAS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar, Self

from node.codec import (
    HASH_LEN,
    UINT64_MAX,
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
from node.machines import replica as rep
from node.machines.counter import Increment as Increment
from node.machines.entity import entity_id_for
from node.machines.governance import (
    PUBKEY_LEN,
    Config,
    ConfigError,
    check_new_key,
    signer_id,
)
from node.machines.outcomes import Outcomes
from node.machines.subs import Subs, read_refs
from node.mempool import Mempool
from node.txs import REGISTRIES, Level, Tx

STATE_VERSION = 2  # 2: the replicas by the root of a Merkle map, not a list

# READ_STATE on a signer lists at most this many of its replicas (about 70 bytes each).
MAX_LISTED_REPLICAS = 65_536

SIGNER_TXS = REGISTRIES[Level.SIGNER]


SIGNER_TXS.register(Increment)


@SIGNER_TXS.register
@dataclass(frozen=True, slots=True)
class CreateEntity:
    """Config with each member's proof of possession, and a 32-byte salt."""

    TYPE: ClassVar[int] = 2
    NAME: ClassVar[str] = "create_entity"
    genesis: rep.Genesis

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 3:
            raise DecodeError("create_entity: expected [config, salt, pops]")
        genesis = rep.Genesis.from_item(fields)
        if len(genesis.pops) != len(genesis.config.members):
            raise DecodeError("create_entity: one proof of possession per member")
        return cls(genesis)

    def to_fields(self) -> list[RlpItem]:
        return [
            decode(encode_tree(self.genesis.config.to_tree())),
            self.genesis.salt,
            list(self.genesis.pops),
        ]

    @property
    def entity_id(self) -> bytes:
        return entity_id_for(self.genesis.config, self.genesis.salt)


@SIGNER_TXS.register
@dataclass(frozen=True, slots=True)
class JoinEntity:
    """Sent by an entity's replicas to a signer that an executed ``add_signer``
    made a member: make a replica from genesis, then catch up through certified
    frames (each verified before it applies).

    ``height``: the certified frame whose execution made the signer a member. A
    peer's ``join_entity`` must name it (``[config, salt, pops, height]``): the
    node fetches and verifies the frames up to it before it queues the join
    (``node/join_proof.py``). 0 names none (``[config, salt, pops]``): only the
    node's own join after a restore (``node/restore.py``) is queued without one.
    The machine itself does not read it: the proof is the node's check, made
    before any block."""

    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "join_entity"
    genesis: rep.Genesis
    height: int = 0

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) not in (3, 4):
            raise DecodeError(
                "join_entity: expected [config, salt, pops] or [config, salt, pops, height]"
            )
        genesis = CreateEntity.from_fields(fields[:3]).genesis
        if len(fields) == 3:
            return cls(genesis)
        return cls(genesis, as_int(fields[3], "join_entity height", min_value=1))

    def to_fields(self) -> list[RlpItem]:
        fields = CreateEntity(self.genesis).to_fields()
        return fields if self.height == 0 else [*fields, int_bytes(self.height)]

    @property
    def entity_id(self) -> bytes:
        return entity_id_for(self.genesis.config, self.genesis.salt)


@dataclass(frozen=True, slots=True)
class SendToSigner:
    """A signer-level transaction for another signer (on whichever server hosts it)."""

    to: bytes
    tx: Tx


@dataclass(frozen=True)
class SignerState:
    """A signer's state: its key, counter, and its replicas in a :class:`Subs` by
    entity id, whose root (of the ``(entity id, replica hash)`` pairs) is what its
    encoding holds."""

    pubkey: bytes
    counter: int = 0
    held: Subs[rep.Replica] = field(default_factory=Subs)

    @classmethod
    def of(cls, pubkey: bytes, counter: int = 0, replicas: Iterable[rep.Replica] = ()) -> Self:
        return cls(pubkey, counter, Subs.of((r.entity_id, r) for r in replicas))

    @cached_property
    def id(self) -> bytes:
        return signer_id(self.pubkey)

    @cached_property
    def encoded(self) -> bytes:
        """``[version, pubkey, counter, replicas_root]``: what the hash is of, and what
        storage keeps under the signer's route."""
        return encode_tree(
            [int_bytes(STATE_VERSION), self.pubkey, int_bytes(self.counter), self.held.root]
        )

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.encoded)

    @property
    def by_entity(self) -> Subs[rep.Replica]:
        """The replicas by entity id: ``get``, ``in`` and ``[]`` walk one path."""
        return self.held

    @property
    def replicas(self) -> tuple[rep.Replica, ...]:
        """Every replica, in ascending entity id: a walk over all of them (views,
        reads, start-up), never a block's work."""
        return tuple(self.held.values())

    def readable(self, cap: int = MAX_LISTED_REPLICAS) -> bytes:
        """What READ_STATE returns for a signer: its encoding's four items, then its
        replicas ``[[entity_id, replica_hash], ...]`` (at most ``cap``, ascending) and
        1 if the list stopped at the cap, else 0."""
        refs, more = self.held.listed(cap)
        return encode_tree(
            [
                int_bytes(STATE_VERSION),
                self.pubkey,
                int_bytes(self.counter),
                self.held.root,
                refs,
                int_bytes(int(more)),
            ]
        )

    @staticmethod
    def decode_root(raw: bytes) -> tuple[bytes, int, bytes]:
        """``(pubkey, counter, replicas_root)`` of an encoded state (``encoded``)."""
        f = as_list(decode(raw), "signer state", size=4)
        return _fields(f)

    @staticmethod
    def decode_header(raw: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
        """``(pubkey, counter, [(entity_id, replica_hash)])`` from what READ_STATE
        returns for a signer (``readable``). A complete list is checked against the
        root; a list cut at the cap is the first part, unchecked."""
        f = as_list(decode(raw), "signer state as read", size=6)
        pubkey, counter, root = _fields(f[:4])
        refs = read_refs(f[4], f[5], root, "signer state", "replica", "entity id")
        return pubkey, counter, refs


def _fields(f: list[RlpItem]) -> tuple[bytes, int, bytes]:
    if as_int(f[0], "signer state version") != STATE_VERSION:
        raise DecodeError("signer state: unknown version")
    return (
        as_bytes(f[1], "pubkey", size=PUBKEY_LEN),
        as_int(f[2], "counter"),
        as_bytes(f[3], "replicas root", size=HASH_LEN),
    )


type ReplicaLoader = Callable[[tuple[bytes, bytes], bool], rep.Replica]


def load(
    signer_id: bytes,
    entities: Iterable[bytes],
    get: Callable[[tuple[bytes, ...]], bytes],
    load_replica: ReplicaLoader,
    *,
    simulation: bool,
) -> SignerState:
    """Rebuild a signer stored apart from the server state: ``get((signer,))`` returns
    its encoded state, ``load_replica((signer, entity), simulation)`` the replica of
    each of ``entities`` (the ids stored under the signer). The replicas' map is
    rebuilt and its root checked against the state's, so a replica missing, extra,
    altered or filed under another id is found."""
    pubkey, counter, root = SignerState.decode_root(get((signer_id,)))
    replicas = []
    for entity_id in entities:
        replica = load_replica((signer_id, entity_id), simulation)
        if replica.entity_id != entity_id or replica.signer != signer_id:
            raise DecodeError(f"the replica under {entity_id.hex()} is of another route")
        replicas.append(replica)
    state = SignerState.of(pubkey, counter, replicas)
    if state.id != signer_id:
        raise DecodeError(f"signer {signer_id.hex()} does not match its key")
    if state.held.root != root:
        raise DecodeError(f"the replicas of signer {signer_id.hex()} do not match its root")
    return state


@dataclass
class SignerStep:
    state: SignerState
    errors: list[tuple[tuple[bytes, ...], int, str]]  # (route below the server, index, error)
    replica_effects: list[tuple[bytes, rep.Effect]]  # (entity id, effect)
    sends: list[SendToSigner]
    changed: list[bytes]  # entity ids whose replica changed


def apply(
    state: SignerState,
    mempool: Mempool,
    *,
    simulation: bool = False,
    outcomes: Outcomes | None = None,
) -> SignerStep:
    """This signer's share of a block: its own transactions first, then its
    entities in key order. ``outcomes``: the runtime's cache of frame outcomes, for
    each replica's step (``replica.step``)."""
    out = SignerStep(state, [], [], [], [])
    for index, tx in enumerate(mempool.txs):
        error = _apply_tx(out, tx)
        if error is not None:
            out.errors.append(((state.id,), index, error))
    held = out.state.held
    replicas: dict[bytes, rep.Replica] = {}  # the ones that changed
    for entity_id, sub in zip(mempool.keys, mempool.subs, strict=True):
        replica = held[entity_id]  # the runtime never routes to a missing entity
        new, effects = rep.step(replica, sub.txs, simulation=simulation, outcomes=outcomes)
        if new is not replica:
            replicas[entity_id] = new
            out.changed.append(entity_id)
        for effect in effects:
            if isinstance(effect, rep.Note) and effect.index >= 0:
                out.errors.append(((state.id, entity_id), effect.index, effect.message))
            out.replica_effects.append((entity_id, effect))
    if replicas:
        out.state = replace(out.state, held=held.set_many(replicas))
    return out


def _apply_tx(out: SignerStep, tx: Tx) -> str | None:
    s = out.state
    match tx.body:
        case Increment(n=n):
            if s.counter + n > UINT64_MAX:
                return "counter overflow"
            out.state = replace(s, counter=s.counter + n)
            return None
        case CreateEntity(genesis=genesis) as create:
            return _create_entity(out, create.entity_id, genesis, tx)
        case JoinEntity(genesis=genesis):
            return _join_entity(out, genesis)
    return f"{tx.body.NAME} is not a signer transaction"


def _join_entity(out: SignerStep, genesis: rep.Genesis) -> str | None:
    entity_id = entity_id_for(genesis.config, genesis.salt)
    if entity_id in out.state.by_entity:
        return None  # every replica of the entity invites: idempotent
    return _add_replica(out, entity_id, genesis, "join_entity")


def _create_entity(out: SignerStep, entity_id: bytes, genesis: rep.Genesis, tx: Tx) -> str | None:
    s = out.state
    config: Config = genesis.config
    if s.id not in config.index:
        return "this signer is not a member of the entity"
    if entity_id in s.by_entity:
        return None  # already created (the other members echo it): idempotent
    error = _add_replica(out, entity_id, genesis, "create_entity")
    if error is None:
        out.sends.extend(SendToSigner(m, tx) for m in config.ids if m != s.id)
    return error


def _add_replica(out: SignerStep, entity_id: bytes, genesis: rep.Genesis, what: str) -> str | None:
    """This signer's replica of a new entity, once every member's key and proof check out."""
    try:
        for member, pop in zip(genesis.config.members, genesis.pops, strict=True):
            check_new_key(member.pubkey, pop)
    except ConfigError as exc:
        return f"{what}: {exc}"
    s = out.state
    replica = rep.create(s.id, genesis)
    out.state = replace(s, held=s.held.set(entity_id, replica))
    out.changed.append(entity_id)
    return None
