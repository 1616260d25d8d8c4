"""LevelDB layout for one server's chain (plyvel-next).

Keys, each behind a one-byte prefix (docs/STORAGE.md gives every key's bytes, its
value's encoding, and when it is written and deleted):

- ``M``: meta, ``[format_version, server_id]``;
- ``B`` + block hash: the block; ``H`` + 8-byte height: the block hash there;
- ``R`` + server id: the root, ``[block_rlp, state_rlp]`` of the latest block;
- ``S`` + signer id: a signer's state; ``S`` + signer id + entity id: that signer's
  replica's ``header``. These keys are also the lists of signers and of each
  signer's replicas: the server state and a signer's state hold only their map's
  root;
- ``C``, ``W``, ``K`` + signer id + entity id + key: one record of that replica, a
  channel record, a forward in flight or kept messages, under the counterparty's
  id (the payment id for ``W``);
- ``F`` + entity id + 8-byte height: a committed frame, ``[frame_rlp, certificate]``;
- ``E`` + 8-byte sequence number: one record of equivocation evidence
  (``node/evidence.py``): the node's own, outside every state hash and block.

Every block's writes go in one ``write_batch(transaction=True, sync=True)``
(:func:`block_writes` lists them): all-or-nothing, and durable when
:meth:`Store.write_block` returns. A block writes what changed: the block, its
height index, the root (the block again, and the server state: a few dozen bytes,
the signers by their map's root), the changed signers' states and replicas' headers, and the channel
records, forwards and kept messages that changed (``server.Write``), never a whole
replica, nor anything of the signers and replicas it did not touch: an empty block
writes the same three keys whether the server hosts ten entities or a million.
Records are keyed under their replica's route, so two replicas on one server never
touch each other's. Nothing else is kept of a replica's past states: the chain of
blocks is the history (``xln-node verify`` replays it).

Loading lists the ``S`` keys (each signer, followed by its replicas, in key
order), reads each replica's header, then its records by prefix, rebuilds the
three Merkle maps and checks their roots against the header (so a missing,
extra or altered record is found), and re-executes a frame in flight to get
the state after it, checked against its hash; then it rebuilds each signer's map
of replicas and the server's map of signers and checks their roots against the
signer's state and the root's server state (so a missing, extra, altered or
misfiled ``S`` record is found too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import plyvel_next as plyvel

from node.block import Block
from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    DecodeError,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode,
)
from node.evidence import Evidence
from node.machines.accounts import ChannelRecord, Forwarded
from node.machines.frames import Certificate
from node.machines.mailbox import Kept, kept_from_raw
from node.machines.outcomes import Outcomes
from node.machines.replica import Replica
from node.machines.server import (
    RECORD_CHANNEL,
    RECORD_FORWARD,
    RECORD_KEPT,
    ServerState,
    Step,
)
from node.merkle_store import (
    DEFAULT_CACHE_BYTES,
    NODE,
    MapSource,
    NodeCache,
    node_writes,
)

# 2: entity states hashed with Merkle roots; records under C, W and K.
# 3: the server's signers and a signer's replicas by Merkle roots (server and signer
#    state version 2); their lists are the ``S`` keys.
# 4: each replica map's branches and top under ``N`` (node.merkle_store), read when
#    walked.
# 5: replicas vote in two steps (replica state version 3, protocol 6): a frame in
#    flight gathers approvals and a polka, a lock holds a polka.
FORMAT_VERSION = 5

META = b"M"
BLOCK = b"B"
HEIGHT = b"H"
ROOT = b"R"
SUB = b"S"
CHANNEL = RECORD_CHANNEL
FORWARD = RECORD_FORWARD
KEPT = RECORD_KEPT
FRAME = b"F"
WAITING = b"Q"  # a replica's channels waiting to propose: not hashed, kept for restarts
SYNTHETIC = b"Y"  # only in a store written by a generator (bench/hub_store.py), not by blocks
EVIDENCE = b"E"  # equivocation evidence by sequence number: not hashed, not in blocks
HEIGHT_END = bytes([HEIGHT[0] + 1])

log = logging.getLogger(__name__)


def _record[R: (ChannelRecord, Kept)](peer: bytes, record: R) -> R:
    if record.peer != peer:
        raise DecodeError(f"record under {peer.hex()} is of {record.peer.hex()}")
    return record


_DECODE: dict[bytes, Callable[[bytes, bytes], Any]] = {
    CHANNEL: lambda peer, raw: _record(peer, ChannelRecord.from_item(decode(raw))),
    FORWARD: lambda _pid, raw: Forwarded.decode(raw),
    KEPT: lambda peer, raw: _record(peer, kept_from_raw(raw)),
}


class _Raw:
    """A record by its bytes: what its leaf hashes (for the migration from format 3)."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded


class StoreError(Exception):
    """The data folder cannot be used as a chain store."""


class StoreLocked(StoreError):
    """Another process (usually a running node) holds the LevelDB lock."""


def height_key(height: int) -> bytes:
    return HEIGHT + height.to_bytes(8, "big")


def sub_key(route: tuple[bytes, ...]) -> bytes:
    return SUB + b"".join(route)


def record_key(kind: bytes, route: tuple[bytes, ...], peer: bytes) -> bytes:
    return kind + b"".join(route) + peer


def node_prefix(route: tuple[bytes, ...], tag: bytes) -> bytes:
    """Where a replica's map keeps its branches and top (``node.merkle_store``)."""
    return NODE + b"".join(route) + tag


def frame_key(entity_id: bytes, height: int) -> bytes:
    return FRAME + entity_id + height.to_bytes(8, "big")


def block_writes(step: Step, server_id: bytes) -> list[tuple[bytes, bytes | None]]:
    """Every ``(key, value)`` a block's batch holds, in order (None: a delete): the
    block, its height index, the changed signers and replicas with their changed
    records, committed frames, and the root. Its size follows what the block
    changed, not how much the server hosts."""
    block = step.block
    out: list[tuple[bytes, bytes | None]] = [
        (BLOCK + block.hash, block.raw),
        (height_key(block.height), block.hash),
    ]
    for write in step.changed:
        out.append((sub_key(write.route), write.raw))
        out.extend((record_key(kind, write.route, peer), raw) for kind, peer, raw in write.records)
        for m in write.maps:
            out.extend(node_writes(node_prefix(write.route, m.tag), m))
        if write.waiting is not None:
            out.append((WAITING + b"".join(write.route), write.waiting or None))
    out.extend(
        (
            frame_key(entity_id, committed.frame.height),
            encode([committed.frame.raw, committed.cert.to_tree()]),
        )
        for entity_id, committed in step.frames
    )
    out.append((ROOT + server_id, encode([block.raw, step.state.encode()])))
    return out


class Store:
    """The chain of one server in one LevelDB database."""

    def __init__(
        self, path: Path, server_id: bytes = ZERO_HASH, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        if len(server_id) != HASH_LEN:
            raise ValueError("server id must be 32 bytes")
        self.path = path
        self.server_id = server_id
        self.cache = NodeCache(cache_bytes)
        self._sources: dict[tuple[tuple[bytes, ...], bytes], MapSource[Any]] = {}
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db: Any = plyvel.DB(str(path), create_if_missing=True)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{path} is in use by another process (is the node running?)"
                ) from exc
            raise StoreError(f"cannot open {path}: {exc}") from exc
        except plyvel.CorruptionError as exc:
            raise StoreError(f"{path} is corrupt: {exc}") from exc
        self._check_meta()

    def _check_meta(self) -> None:
        raw = self._db.get(META)
        if raw is None:
            self._db.put(META, encode([FORMAT_VERSION, self.server_id]), sync=True)
            return
        try:
            items = as_list(decode(raw), "meta", size=2)
            version = as_int(items[0], "format version")
            server_id = as_bytes(items[1], "server id", size=HASH_LEN)
        except DecodeError as exc:
            raise StoreError(f"unreadable meta record: {exc}") from exc
        if version < FORMAT_VERSION:
            if version < 2:
                why = (
                    "an entity's state hash commits to its channels by a Merkle root, so the"
                    " old certificates do not carry over"
                )
            elif version < 3:
                why = (
                    "the server's and signers' state hashes commit to their signers and "
                    "replicas by Merkle roots, so the old chain's state hashes cannot be replayed"
                )
            else:
                why = (
                    "replicas vote in two steps (approvals, then pre-commits), so the old "
                    "chain's replica states cannot be replayed"
                )
            raise StoreError(
                f"this data folder was written by an older node (store format {version}); "
                f"this node reads format {FORMAT_VERSION}, where {why}, and there is no "
                "migration: start this node with a new data folder, and keep the old one "
                "for the older node"
            )
        if version != FORMAT_VERSION:
            raise StoreError(f"store format {version}, this node reads {FORMAT_VERSION}")
        if server_id != self.server_id:
            raise StoreError(f"store belongs to server {server_id.hex()}")

    def close(self) -> None:
        self._db.close()

    def _records(self, kind: bytes, route: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        prefix = kind + b"".join(route)
        for key, raw in self._db.iterator(prefix=prefix):
            yield key[len(prefix) :], raw

    def synthetic(self) -> str | None:
        """What generated this store, if its state was written directly rather than
        made by its blocks (a benchmark's hub of a million channels); None otherwise."""
        raw: bytes | None = self._db.get(SYNTHETIC)
        return None if raw is None else raw.decode("utf-8", "replace")

    def write_synthetic(self, note: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        """For generators of large test stores: mark this store synthetic (``note``
        says what made it; ``xln-node verify`` refuses such a store), then put ``items``
        (records and trie nodes, as a block would have written them) in batches."""
        self._db.put(SYNTHETIC, note.encode(), sync=True)
        batch = self._db.write_batch()
        for n, (key, raw) in enumerate(items, 1):
            batch.put(key, raw)
            if n % 10_000 == 0:  # a few MB: a batch is held whole in LevelDB's memtable
                batch.write()
                batch = self._db.write_batch()
        batch.write()
        self._db.compact_range()  # settled into tables, as a long-running node's store is

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def load(self, outcomes: Outcomes | None = None) -> tuple[ServerState, Block | None]:
        """The state and block at the root, or genesis for a new store. ``outcomes``:
        where a replica's frame in flight, executed again to load it, is remembered."""
        raw = self._db.get(ROOT + self.server_id)
        if raw is None:
            return ServerState(), None
        try:
            items = as_list(decode(raw), "root", size=2)
            block = Block.decode(as_bytes(items[0], "root block"))
            state_raw = as_bytes(items[1], "root state")
            state = ServerState.decode(
                state_raw,
                head=block.hash,
                get=self._get,
                load_replica=lambda route, simulation: self._load_replica(
                    route, simulation, outcomes
                ),
                routes=self._routes(),
            )
        except DecodeError as exc:
            raise StoreError(f"unreadable root: {exc}") from exc
        if state.hash() != block.state_hash or state.height != block.height:
            raise StoreError("root state does not match its block's state hash")
        return state, block

    def _routes(self) -> Iterator[tuple[bytes, ...]]:
        """The route of every stored signer and replica, in key order."""
        for key in self._db.iterator(prefix=SUB, include_value=False):
            ids = key[len(SUB) :]
            if len(ids) not in (HASH_LEN, 2 * HASH_LEN):
                raise DecodeError(f"a state key of {len(ids)} bytes after its prefix")
            yield tuple(ids[i : i + HASH_LEN] for i in range(0, len(ids), HASH_LEN))

    def _get(self, route: tuple[bytes, ...]) -> bytes:
        raw: bytes | None = self._db.get(sub_key(route))
        if raw is None:
            raise DecodeError(f"state of {b'/'.join(r.hex().encode() for r in route)!r} is missing")
        return raw

    def _load_replica(
        self, route: tuple[bytes, bytes], simulation: bool, outcomes: Outcomes | None
    ) -> Replica:
        raw: bytes = self._db.get(WAITING + b"".join(route), b"")
        if len(raw) % HASH_LEN:
            raise DecodeError(f"the waiting channels of a replica are {len(raw)} bytes")
        return Replica.load(
            self._get(route),
            self._source(route, CHANNEL).top(),
            self._source(route, FORWARD).top(),
            self._source(route, KEPT).top(),
            simulation=simulation,
            outcomes=outcomes,
            waiting=frozenset(raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN)),
        )

    def _source(self, route: tuple[bytes, ...], tag: bytes) -> MapSource[Any]:
        """The stored nodes of one map of a replica: read through the cache."""
        source = self._sources.get((route, tag))
        if source is None:
            source = self._sources[(route, tag)] = MapSource(
                self._db.get,
                lambda start, stop: self._db.iterator(start=start, stop=stop),
                node_prefix(route, tag),
                tag + b"".join(route),
                _DECODE[tag],
                self.cache,
            )
        return source

    def write_block(self, step: Step) -> None:
        """Persist a block, its height index, changed sub-machine states, committed
        entity frames and the root, in one batch (:func:`block_writes`). Returns only
        once it is synced."""
        maps = [(write.route, m) for write in step.changed for m in write.maps]
        with self._db.write_batch(transaction=True, sync=True) as batch:
            for key, raw in block_writes(step, self.server_id):
                if raw is None:
                    batch.delete(key)
                else:
                    batch.put(key, raw)
        for route, m in maps:
            self._source(route, m.tag).stored(m.map)

    def block(self, block_hash: bytes) -> bytes | None:
        raw: bytes | None = self._db.get(BLOCK + block_hash)
        return raw

    def block_hash_at(self, height: int) -> bytes | None:
        raw: bytes | None = self._db.get(height_key(height))
        return raw

    def blocks(self, start_height: int = 1) -> Iterator[bytes]:
        """Raw blocks in height order, from ``start_height`` to the last one written."""
        with self._db.snapshot() as snap:
            for _key, block_hash in snap.iterator(start=height_key(start_height), stop=HEIGHT_END):
                raw = snap.get(BLOCK + block_hash)
                if raw is None:
                    raise StoreError(f"height index names missing block {block_hash.hex()}")
                yield raw

    def frames(self, entity_id: bytes, start: int, count: int) -> list[tuple[bytes, Certificate]]:
        """Committed frames of an entity from height ``start``: ``(frame_rlp, certificate)``."""
        out: list[tuple[bytes, Certificate]] = []
        with self._db.snapshot() as snap:
            for height in range(start, start + count):
                raw = snap.get(frame_key(entity_id, height))
                if raw is None:
                    break
                items = as_list(decode(raw), "stored frame", size=2)
                out.append((as_bytes(items[0], "frame"), Certificate.from_item(items[1])))
        return out

    def evidence(self) -> list[tuple[int, Evidence]]:
        """The equivocation evidence kept (``E`` keys), ``(sequence, record)`` in
        order. A record that does not decode is left out and logged: evidence is the
        node's own note, not part of the chain."""
        out: list[tuple[int, Evidence]] = []
        for key, raw in self._db.iterator(prefix=EVIDENCE):
            seq = int.from_bytes(key[len(EVIDENCE) :], "big")
            try:
                out.append((seq, Evidence.decode(raw)))
            except DecodeError as exc:
                log.warning("evidence record %d does not decode (%s); left out", seq, exc)
        return out

    def write_evidence(self, writes: Iterable[tuple[int, bytes | None]]) -> None:
        """Put (``raw``) or delete (None) evidence records by sequence number, in one
        batch. Not synced by itself: the next block's synced batch makes it durable."""
        with self._db.write_batch(transaction=True) as batch:
            for seq, raw in writes:
                key = EVIDENCE + seq.to_bytes(8, "big")
                if raw is None:
                    batch.delete(key)
                else:
                    batch.put(key, raw)

    def block_count(self) -> int:
        state, _ = self.load()
        return state.height
