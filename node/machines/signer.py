"""The signer machine: one per BLS key hosted on a server; it holds entity replicas.

Created by the server transaction ``create_signer(pubkey, proof_of_possession)``;
its id is keccak-256 of the public key. Its mempool keys are entity ids. Its own
transactions are ``increment(n)`` and ``create_entity(config, salt, pops)``.

``create_entity`` makes this signer's replica of a new entity, if the signer is
a member, and sends the same transaction to every other member, so each of
them creates its replica too (it is idempotent: a signer that already holds the
entity ignores it). It also lets a new member, added by a proposal, build its
replica from genesis and catch up through certified frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
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
from node.mempool import Mempool
from node.txs import REGISTRIES, Level, Tx

STATE_VERSION = 1

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
    frames (each verified before it applies)."""

    TYPE: ClassVar[int] = 3
    NAME: ClassVar[str] = "join_entity"
    genesis: rep.Genesis

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        return cls(CreateEntity.from_fields(fields).genesis)

    def to_fields(self) -> list[RlpItem]:
        return CreateEntity(self.genesis).to_fields()


@dataclass(frozen=True, slots=True)
class SendToSigner:
    """A signer-level transaction for another signer (on whichever server hosts it)."""

    to: bytes
    tx: Tx


@dataclass(frozen=True)
class SignerState:
    pubkey: bytes
    counter: int = 0
    replicas: tuple[rep.Replica, ...] = ()  # ascending entity id

    @cached_property
    def id(self) -> bytes:
        return signer_id(self.pubkey)

    @cached_property
    def encoded(self) -> bytes:
        return encode_tree(
            [
                int_bytes(STATE_VERSION),
                self.pubkey,
                int_bytes(self.counter),
                [[r.entity_id, r.hash] for r in self.replicas],
            ]
        )

    @cached_property
    def hash(self) -> bytes:
        return keccak(self.encoded)

    @cached_property
    def by_entity(self) -> dict[bytes, rep.Replica]:
        return {r.entity_id: r for r in self.replicas}

    @staticmethod
    def decode_header(raw: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
        """``(pubkey, counter, [(entity_id, replica_hash)])``: replicas are stored apart."""
        f = as_list(decode(raw), "signer state", size=4)
        if as_int(f[0], "signer state version") != STATE_VERSION:
            raise DecodeError("signer state: unknown version")
        subs = [
            (
                as_bytes(as_list(x, "replica ref", size=2)[0], "entity id", size=HASH_LEN),
                as_bytes(as_list(x, "replica ref", size=2)[1], "replica hash", size=HASH_LEN),
            )
            for x in as_list(f[3], "replicas")
        ]
        return as_bytes(f[1], "pubkey", size=PUBKEY_LEN), as_int(f[2], "counter"), subs


type ReplicaLoader = Callable[[tuple[bytes, bytes], bool], rep.Replica]


def load(
    signer_id: bytes,
    expected: bytes,
    get: Callable[[tuple[bytes, ...]], bytes],
    load_replica: ReplicaLoader,
    *,
    simulation: bool,
) -> SignerState:
    """Rebuild a signer stored apart from the server state: ``get((signer,))`` returns
    its raw state, ``load_replica((signer, entity), simulation)`` each replica's. Hashes
    are checked."""
    pubkey, counter, refs = SignerState.decode_header(get((signer_id,)))
    replicas = []
    for entity_id, replica_hash in refs:
        replica = load_replica((signer_id, entity_id), simulation)
        if replica.hash != replica_hash:
            raise DecodeError(f"replica {entity_id.hex()} does not match its hash")
        replicas.append(replica)
    state = SignerState(pubkey, counter, tuple(replicas))
    if state.id != signer_id or state.hash != expected:
        raise DecodeError(f"signer {signer_id.hex()} does not match its hash")
    return state


@dataclass
class SignerStep:
    state: SignerState
    errors: list[tuple[tuple[bytes, ...], int, str]]  # (route below the server, index, error)
    replica_effects: list[tuple[bytes, rep.Effect]]  # (entity id, effect)
    sends: list[SendToSigner]
    changed: list[bytes]  # entity ids whose replica changed


def apply(state: SignerState, mempool: Mempool, *, simulation: bool = False) -> SignerStep:
    """This signer's share of a block: its own transactions first, then its
    entities in key order."""
    out = SignerStep(state, [], [], [], [])
    for index, tx in enumerate(mempool.txs):
        error = _apply_tx(out, tx)
        if error is not None:
            out.errors.append(((state.id,), index, error))
    replicas = dict(out.state.by_entity)
    for entity_id, sub in zip(mempool.keys, mempool.subs, strict=True):
        replica = replicas[entity_id]  # the runtime never routes to a missing entity
        new, effects = rep.step(replica, sub.txs, simulation=simulation)
        if new is not replica:
            replicas[entity_id] = new
            out.changed.append(entity_id)
        for effect in effects:
            if isinstance(effect, rep.Note) and effect.index >= 0:
                out.errors.append(((state.id, entity_id), effect.index, effect.message))
            out.replica_effects.append((entity_id, effect))
    if out.changed:
        out.state = replace(out.state, replicas=tuple(replicas[k] for k in sorted(replicas)))
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
    out.state = replace(
        s, replicas=tuple(sorted((*s.replicas, replica), key=lambda r: r.entity_id))
    )
    out.changed.append(entity_id)
    return None
