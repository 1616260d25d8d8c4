"""The server machine: the root of the hierarchy, one per node process.

``apply_block(state, mempool, timestamp) -> Step`` is the whole transition. The
server's own transactions are ``increment(n)`` and ``create_signer(pubkey,
proof_of_possession)``; ``faucet(entity, asset, amount)`` is retired (it always
fails: the faucet is now an entity transaction in a member's signed batch) and
kept only so that older chains still decode. Its mempool keys are signer ids:
the server applies its own transactions first, then each signer's share in key
order, and each signer applies its own transactions and then its entities' in
key order.

The state hash covers ``[version, height, timestamp, counter, [[signer_id,
signer_hash]...], simulation]``; each signer's hash covers its replicas' hashes, so the
server's state hash covers the whole hierarchy.
"""

from __future__ import annotations

from collections.abc import Callable
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
from node.mempool import Mempool
from node.merkle_map import MerkleMap
from node.txs import REGISTRIES, Level, Tx

STATE_VERSION = 1

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
    signers: tuple[sig.SignerState, ...] = ()  # ascending id
    head: bytes = ZERO_HASH
    simulation: bool = False  # fixed at genesis: may frames apply the faucet?

    @property
    def subs(self) -> tuple[tuple[bytes, bytes], ...]:
        return tuple((s.id, s.hash) for s in self.signers)

    @cached_property
    def by_id(self) -> dict[bytes, sig.SignerState]:
        return {s.id: s for s in self.signers}

    def replica(self, signer: bytes, entity: bytes) -> rep.Replica | None:
        s = self.by_id.get(signer)
        return None if s is None else s.by_entity.get(entity)

    def encode(self) -> bytes:
        return encode_tree(
            [
                int_bytes(STATE_VERSION),
                int_bytes(self.height),
                int_bytes(self.timestamp),
                int_bytes(self.counter),
                [[sub_id, sub_hash] for sub_id, sub_hash in self.subs],
                int_bytes(int(self.simulation)),
            ]
        )

    def hash(self) -> bytes:
        return keccak(self.encode())

    @staticmethod
    def signer_refs(raw: bytes) -> list[tuple[bytes, bytes]]:
        """``(signer_id, signer_hash)`` of every signer named by an encoded state."""
        items = as_list(decode(raw), "server state", size=6)
        return [
            (
                as_bytes(as_list(s, "sub", size=2)[0], "sub id", size=HASH_LEN),
                as_bytes(as_list(s, "sub", size=2)[1], "sub hash", size=HASH_LEN),
            )
            for s in as_list(items[4], "subs")
        ]

    @classmethod
    def decode(
        cls,
        raw: bytes,
        head: bytes = ZERO_HASH,
        get: Callable[[tuple[bytes, ...]], bytes] | None = None,
        load_replica: sig.ReplicaLoader | None = None,
    ) -> ServerState:
        """``get(route)`` reads the signers stored apart (``node/storage.py``), and the
        replicas' whole encodings unless ``load_replica`` reads them another way."""
        items = as_list(decode(raw), "server state", size=6)
        version = as_int(items[0], "state version")
        if version != STATE_VERSION:
            raise DecodeError(f"server state version {version} is not {STATE_VERSION}")
        subs = cls.signer_refs(raw)
        if subs and get is None:
            raise DecodeError("server state has signers but no way to load them")
        simulation = bool(as_int(items[5], "simulation", max_value=1))
        signers: tuple[sig.SignerState, ...] = ()
        if get is not None:
            read = get

            def whole(route: tuple[bytes, bytes], simulation: bool) -> rep.Replica:
                return rep.Replica.decode(read(route))

            loader = load_replica or whole
            signers = tuple(sig.load(i, h, get, loader, simulation=simulation) for i, h in subs)
        return cls(
            height=as_int(items[1], "state height"),
            timestamp=as_int(items[2], "state timestamp"),
            counter=as_int(items[3], "state counter"),
            signers=signers,
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


RECORD_CHANNEL = b"C"  # a channel record, by counterparty
RECORD_FORWARD = b"W"  # a forward in flight, by payment id
RECORD_KEPT = b"K"  # kept signed messages, by counterparty


def replica_write(route: tuple[bytes, ...], new: rep.Replica, old: rep.Replica | None) -> Write:
    """What storage writes for a replica that changed from ``old`` (None: created):
    costs the records that changed, not the replica's size."""
    maps: list[tuple[bytes, MerkleMap[Any], MerkleMap[Any]]] = [
        (RECORD_CHANNEL, new.entity.channels, old.entity.channels if old else ent.NO_CHANNELS),
        (RECORD_FORWARD, new.entity.forwards, old.entity.forwards if old else ent.NO_FORWARDS),
        (RECORD_KEPT, new.mailbox.kept, old.mailbox.kept if old else NOTHING_KEPT),
    ]
    records = [
        (kind, key, None if value is None else value.encoded)
        for kind, after, before in maps
        for key, value in after.diff(before).items()
    ]
    return Write(route, new.header, tuple(records))


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


def apply_block(state: ServerState, mempool: Mempool, timestamp: int) -> Step:
    if timestamp < state.timestamp:
        raise InvalidBlock(
            f"timestamp {timestamp} is before the previous block's {state.timestamp}"
        )
    counter = state.counter
    signers = dict(state.by_id)
    receipts: list[Receipt] = []
    effects: list[Effect] = []
    changed: list[Write] = []
    frames: list[tuple[bytes, rep.Committed]] = []
    for index, tx in enumerate(mempool.txs):
        counter, error = _apply_tx(counter, signers, tx)
        receipts.append(Receipt((), index, error))
    for key, sub in zip(mempool.keys, mempool.subs, strict=True):
        signer = signers.get(key)
        if signer is None:
            raise InvalidBlock(f"mempool addresses unknown signer {key.hex()}")
        for entity_id in sub.keys:
            if entity_id not in signer.by_entity:
                raise InvalidBlock(f"mempool addresses unknown entity {entity_id.hex()}")
        out = sig.apply(signer, sub, simulation=state.simulation)
        signers[key] = out.state
        receipts.extend(Receipt(route, index, error) for route, index, error in out.errors)
        effects.extend(Effect(key, None, send) for send in out.sends)
        for entity_id, what in out.replica_effects:
            effects.append(Effect(key, entity_id, what))
            if isinstance(what, rep.Committed):
                frames.append((entity_id, what))
        replicas = out.state.by_entity
        changed.extend(
            replica_write((key, e), replicas[e], signer.by_entity.get(e)) for e in out.changed
        )
    new_signers = tuple(signers[k] for k in sorted(signers))
    for s in new_signers:
        if state.by_id.get(s.id) is not s:
            changed.append(Write((s.id,), s.encoded))
    height = state.height + 1
    body = ServerState(height, timestamp, counter, new_signers, simulation=state.simulation)
    block = Block.make(height, state.head, timestamp, mempool.raw, body.hash())
    new_state = replace(body, head=block.hash)
    return Step(new_state, block, tuple(receipts), tuple(effects), tuple(changed), tuple(frames))


FAUCET_RETIRED = (
    "the server faucet is retired: a member of the entity submits faucet(asset, amount) "
    "in a signed batch"
)


def _apply_tx(
    counter: int, signers: dict[bytes, sig.SignerState], tx: Tx
) -> tuple[int, str | None]:
    match tx.body:
        case Increment(n=n):
            if counter + n > UINT64_MAX:
                return counter, "counter overflow: the counter is a 64-bit unsigned integer"
            return counter + n, None
        case CreateSigner(pubkey=pubkey, pop=pop):
            sid = signer_id(pubkey)
            if sid in signers:
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
