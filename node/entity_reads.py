"""An entity read in parts, each part proven against the entity's state hash.

A hub's replica holds a million channels: no reply may carry it whole. READ_ENTITY
(docs/PROTOCOL.md §9, "READ_ENTITY") reads one agreed state of a replica in parts:

- the **header**: the genesis and the entity header (every small field, and the
  Merkle roots of the channels and of the forwards). Its keccak is the entity's
  state hash, which the certified frame at its height names;
- one **record** of a map (a channel by counterparty, a forward by payment id), or
  proof that there is none;
- one **node** of a map's trie, by its first key, count and hash (as its parent
  names it): a subtree of at most :data:`SUBTREE` keys as its records, a bigger one
  as its branch (``merkle_store.encode_branch``). It proves itself: the client
  hashes it. A client walks a map lazily with these (:func:`check_node`), reading
  only the paths it needs, as the accountant does to check a frame;
- a **page** of a map: consecutive records after a key (or from the first), each
  with its proof, and the proof of the key it follows; the proofs also show that
  no record was left out between them (:func:`node.merkle_map.adjacent`), that the
  first is the map's first when the page starts at the beginning, and whether the
  last is the map's last.

Every part comes with the header it is proven against, so one reply is one
consistent read. The node builds parts here (:func:`header_part`,
:func:`record_part`, :func:`page_part`); the client checks them here
(:func:`EntityHeader.from_item`, :func:`check_record`, :func:`check_page`) and that
the header is certified (:func:`check_certified`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_tree,
    int_bytes,
    keccak,
)
from node.machines import entity as ent
from node.machines.accounts import ChannelRecord, Forwarded
from node.machines.entity import EntityState
from node.machines.frames import Certificate, Frame, verify_certificate_of
from node.machines.governance import Config
from node.merkle_map import (
    KEY_LEN,
    MerkleMap,
    Node,
    Proof,
    Stub,
    adjacent,
    is_edge,
    verify,
    verify_hash,
)
from node.merkle_store import BRANCH_LEN, decode_branch, encode_branch
from node.net import limits

HEADER: Final = 0
RECORD: Final = 1
PAGE: Final = 2
NODE: Final = 3
# Not part of the state: the node's equivocation evidence about the entity
# (node/evidence.py), each record checkable by its own signatures.
EVIDENCE: Final = 4
# Not part of the state either: the members' signed refusals the node has seen
# (node/refusals.py), each checkable by its signature.
REFUSALS: Final = 5
PART_NAMES: Final = {
    HEADER: "header",
    RECORD: "record",
    PAGE: "page",
    NODE: "node",
    EVIDENCE: "evidence",
    REFUSALS: "refusals",
}

CHANNELS: Final = 0  # channels by counterparty id
FORWARDS: Final = 1  # forwards by payment id
MAP_NAMES: Final = {CHANNELS: "channels", FORWARDS: "forwards"}

MAX_PAGE: Final = 256  # records a page may ask for
# A node read of a subtree of at most this many keys returns its records (one round
# trip for a trie's lowest levels); a bigger one comes as its branch.
SUBTREE: Final = 64
# A reply carries at most this many bytes of records, so it stays under 1 MiB with
# its header (at most ~300 KB: 1,024 members and 1,024 open proposals) and envelope.
# A page always holds at least one record; a lone record larger than this (a
# channel with thousands of queued payments) goes alone.
MAX_PAGE_BYTES: Final = 640 * 1024


class ProofError(DecodeError):
    """A part whose proof does not hold: the node that sent it is wrong or lying."""


class UnverifiedRead(Exception):
    """A header whose certification cannot be checked against a config this client
    trusts (see :func:`check_certified`)."""


# What the node sends ------------------------------------------------------------------


def header_part(genesis_tree: RlpTree, state: EntityState) -> list[RlpItem]:
    """``[genesis, entity_header]``: the header as its hash is taken."""
    return [genesis_tree, decode(state.header)]  # type: ignore[list-item]


def _map(state: EntityState, which: int) -> MerkleMap[ChannelRecord] | MerkleMap[Forwarded]:
    return state.channels if which == CHANNELS else state.forwards


def record_part(state: EntityState, which: int, key: bytes) -> list[RlpItem]:
    """``[[value] or [], proof]``: the record's canonical encoding, or nothing, and
    the proof of either."""
    m = _map(state, which)
    value = m.get(key)
    return [[] if value is None else [value.encoded], m.prove(key).to_tree()]


def page_part(state: EntityState, which: int, after: bytes, limit: int) -> list[RlpItem]:
    """``[anchor, [[key, value, proof]...]]``: up to ``limit`` records after the key
    ``after`` (empty: from the first), while their bytes fit :data:`MAX_PAGE_BYTES` (at
    least one). ``anchor`` is ``[value_hash, proof]`` of ``after``, which must be in
    the map (KeyError otherwise), or ``[]``: what shows that nothing between it and
    the page's first record was left out."""
    m = _map(state, which)
    anchor: list[RlpItem] = []
    if after:
        value = m.get(after)
        if value is None:
            raise KeyError(f"no {MAP_NAMES[which]} record at {after.hex()} to page after")
        anchor = [keccak(value.encoded), m.prove(after).to_tree()]
    out: list[RlpItem] = []
    size = 0
    for key, value in m.items_from(after or bytes(KEY_LEN)):
        if key == after:
            continue
        raw = value.encoded
        if out and (len(out) >= limit or size + len(raw) > MAX_PAGE_BYTES):
            break
        proof = m.prove(key)
        out.append([key, raw, proof.to_tree()])
        size += len(raw) + len(proof.steps) * (HASH_LEN + 3) + HASH_LEN
    return [anchor, out]


def node_part(state: EntityState, which: int, rep: bytes, count: int, h: bytes) -> list[RlpItem]:
    """``[0, [[key, value], ...]]``: the records of the subtree that starts at ``rep``,
    holds ``count`` keys and hashes to ``h``, if ``count`` is at most :data:`SUBTREE`;
    ``[1, branch]`` for a bigger one (KeyError: the map has no such subtree). With
    ``count`` 0, the map's top, whose hash is its root: ``[2, [first key, count]]``,
    or ``[2, []]`` for an empty map (``rep`` and ``h`` are not looked at)."""
    m = _map(state, which)
    if count == 0:
        top = m.top
        return [int_bytes(2), [] if top is None else [top.rep, int_bytes(top.count)]]
    sub = m.subtree(rep, count, h)
    if sub is None:
        raise KeyError(f"no {MAP_NAMES[which]} node {h.hex()} of {count} keys at {rep.hex()}")
    if count <= SUBTREE:
        return [int_bytes(0), [[key, value.encoded] for key, value in sub.items()]]
    top = sub.top
    node = top.open() if isinstance(top, Stub) else top
    return [int_bytes(1), encode_branch(node)]  # type: ignore[arg-type]


# What the client checks ---------------------------------------------------------------


@dataclass(frozen=True)
class EntityHeader:
    """An entity's agreed state without its channels and forwards: those are known
    here by their Merkle roots only, and read record by record or page by page."""

    genesis_config: Config
    raw: bytes  # the entity header's encoding; its keccak is the state hash
    small: EntityState  # every field but the maps (left empty: read them by part)
    channels_root: bytes
    forwards_root: bytes

    @property
    def hash(self) -> bytes:
        return keccak(self.raw)

    @property
    def entity_id(self) -> bytes:
        return self.small.entity_id

    @property
    def height(self) -> int:
        return self.small.height

    @property
    def config(self) -> Config:
        return self.small.config

    def root(self, which: int) -> bytes:
        return self.channels_root if which == CHANNELS else self.forwards_root

    @classmethod
    def from_item(cls, item: RlpItem, entity: bytes) -> EntityHeader:
        """Strictly, and only for ``entity``: its genesis must give that id (so the
        genesis config is the entity's own) and the header must name it."""
        from node.machines.replica import Genesis  # the replica module imports this one

        f = as_list(item, "entity header part", size=2)
        genesis = Genesis.from_item(f[0])
        if ent.entity_id_for(genesis.config, genesis.salt) != entity:
            raise ProofError("the genesis sent does not give this entity's id")
        raw = encode_tree(f[1])
        small, channels_root, forwards_root = EntityState.header_fields(f[1])
        if small.entity_id != entity:
            raise ProofError("the header sent is of another entity")
        if small.height == 0 and keccak(raw) != ent.genesis(genesis.config, genesis.salt).hash:
            raise ProofError("the header at height 0 is not the entity's genesis state")
        return cls(genesis.config, raw, small, channels_root, forwards_root)


def _decode_value(which: int, key: bytes, raw: bytes) -> ChannelRecord | Forwarded:
    if which == FORWARDS:
        return Forwarded.decode(raw)
    record = ChannelRecord.from_item(decode(raw, limits=limits.RECORD))
    if record.peer != key:
        raise ProofError("a channel record under another counterparty's key")
    return record


def check_record(
    header: EntityHeader, which: int, key: bytes, item: RlpItem
) -> ChannelRecord | Forwarded | None:
    """The record at ``key`` (None: there is none), once its proof holds under the
    header's root; ProofError otherwise."""
    f = as_list(item, "record part", size=2)
    present = as_list(f[0], "record value", max_len=1)
    raw = as_bytes(present[0], "record value") if present else None
    proof = Proof.from_item(f[1])
    if not verify(header.root(which), key, raw, proof):
        raise ProofError(f"the proof of {MAP_NAMES[which]} record {key.hex()} does not hold")
    return None if raw is None else _decode_value(which, key, raw)


@dataclass(frozen=True)
class Page:
    records: list[tuple[bytes, ChannelRecord | Forwarded]]
    last: bool  # the map holds nothing after these

    @property
    def next_after(self) -> bytes | None:
        """Where the next page starts (after this one's last record), or None."""
        return None if self.last or not self.records else self.records[-1][0]


def check_page(header: EntityHeader, which: int, after: bytes, item: RlpItem) -> Page:
    """The page of the records after ``after`` (empty: from the map's first), once
    every proof holds and nothing was left out before or between its records;
    ProofError otherwise."""
    root = header.root(which)
    name = MAP_NAMES[which]
    f = as_list(item, "page", size=2)
    anchor = as_list(f[0], "page anchor", max_len=2)
    entries: list[tuple[bytes, bytes, Proof]] = []
    if after:
        if len(anchor) != 2:
            raise ProofError("a page after a key without that key's proof")
        after_proof = Proof.from_item(anchor[1])
        value_hash = as_bytes(anchor[0], "anchor value hash", size=HASH_LEN)
        if not verify_hash(root, after, value_hash, after_proof):
            raise ProofError(f"the proof of the {name} record the page follows does not hold")
    elif anchor:
        raise ProofError("a first page with an anchor")
    for raw_entry in as_list(f[1], "page entries", max_len=MAX_PAGE):
        e = as_list(raw_entry, "page entry", size=3)
        key = as_bytes(e[0], "page key", size=KEY_LEN)
        value = as_bytes(e[1], "page value")
        proof = Proof.from_item(e[2])
        if not verify(root, key, value, proof):
            raise ProofError(f"the proof of {name} record {key.hex()} does not hold")
        entries.append((key, value, proof))
    if not entries:
        if after:
            if not is_edge(after, after_proof, 1):
                raise ProofError(f"an empty page after a {name} record that is not the last")
        elif root != bytes(HASH_LEN):
            raise ProofError(f"an empty first page of a non-empty {name} map")
        return Page([], True)
    first_key, _, first_proof = entries[0]
    if after:
        if not adjacent(after, after_proof, first_key, first_proof):
            raise ProofError(f"a page that leaves out records after {after.hex()}")
    elif not is_edge(first_key, first_proof, 0):
        raise ProofError("a first page that does not start at the map's first key")
    for (low, _, low_proof), (high, _, high_proof) in itertools.pairwise(entries):
        if not adjacent(low, low_proof, high, high_proof):
            raise ProofError(f"a page that leaves out records between {low.hex()} and {high.hex()}")
    last_key, _, last_proof = entries[-1]
    return Page(
        [(k, _decode_value(which, k, v)) for k, v, _ in entries],
        is_edge(last_key, last_proof, 1),
    )


def needs_change_frame(header: EntityHeader, pinned: Config | None) -> bool:
    """Whether :func:`check_certified` needs the certified frame that set the header's
    config: it changed at a frame the caller did not see, from a config it trusts."""
    small = header.small
    return (
        pinned is not None
        and 0 < small.config_height < header.height
        and small.config not in (pinned, header.genesis_config)
    )


def check_certified(
    header: EntityHeader,
    frame_raw: bytes | None,
    cert: Certificate | None,
    pinned: Config | None,
    change: tuple[bytes, Certificate] | None = None,
) -> tuple[Config, bool]:
    """Check that ``header`` is the state a quorum certified. Returns the entity's
    config as of the header (the one to pin from now on), and whether that config
    was taken on first use rather than traced to a config already trusted.

    At height 0 the header is the genesis state (checked when it was decoded). Above
    it, ``frame_raw`` and ``cert`` are the certified frame at the header's height:
    the frame must name the header's hash as its state, and the certificate must
    verify under the config in force before that frame: the header's own config,
    unless that frame set it (``config_height == height``: then the one before).

    That config must be trusted: the genesis config (the entity id commits to
    it), or ``pinned``, the config the caller checked last for this entity. A
    config set at a frame the caller did not see is trusted if ``change`` (the
    certified frame at ``config_height``, see :func:`needs_change_frame`) is
    certified by the pinned config; else UnverifiedRead. With nothing pinned (a
    first contact, or a client that restarted), a config that is not the genesis
    one is taken on first use, as SSH takes a host key: its certificate is checked
    under it, but the chain of changes from genesis is not (the node keeps no
    index of them); and the header of the very frame that changed it cannot be
    checked at all (UnverifiedRead: the next frame's can).
    """
    small = header.small
    if header.height == 0:
        return header.genesis_config, False
    if frame_raw is None or cert is None:
        raise ProofError(f"no certified frame at height {header.height} to prove the header")
    frame = Frame.decode_shallow(frame_raw)
    if frame.entity_id != header.entity_id or frame.height != header.height:
        raise ProofError("the certified frame sent is not at the header's height")
    if frame.state_hash != header.hash:
        raise ProofError("the certified frame does not name the header as its state")
    trusted = [c for c in (pinned, header.genesis_config) if c is not None]
    first_use = False
    if small.config_height < header.height:
        signers = [small.config]
        if small.config not in trusted:
            if pinned is None:
                first_use = True
            else:
                _check_change(header, pinned, change)
    else:  # this frame set the config: the one before it (pinned, or genesis) signed
        signers = trusted
    reasons = [
        verify_certificate_of(c, header.entity_id, header.height, frame.hash, cert) for c in signers
    ]
    if all(r is not None for r in reasons):
        if small.config_height == header.height and pinned is None:
            raise UnverifiedRead(
                f"frame {header.height} changed the entity's config, and the config before "
                "it is not known here: read again after the next frame"
            )
        raise ProofError(f"the certificate of frame {header.height}: {reasons[0]}")
    return small.config, first_use


def _check_change(
    header: EntityHeader, pinned: Config, change: tuple[bytes, Certificate] | None
) -> None:
    """The frame that set the header's config is certified by the pinned config."""
    height = header.small.config_height
    if change is None:
        raise UnverifiedRead(
            f"the entity's config changed at frame {height}, which this client has not "
            "seen certified"
        )
    frame = Frame.decode_shallow(change[0])
    if frame.entity_id != header.entity_id or frame.height != height:
        raise UnverifiedRead(f"the frame sent for the config change is not frame {height}")
    reason = verify_certificate_of(pinned, header.entity_id, height, frame.hash, change[1])
    if reason is not None:
        raise UnverifiedRead(
            f"the config change at frame {height} is not certified by the config this "
            f"client trusts: {reason}"
        )


def check_node(
    which: int,
    rep: bytes,
    count: int,
    h: bytes,
    item: RlpItem,
    stub_of: Callable[[bytes, bytes, int], Stub[Any]],
) -> Node[Any]:
    """The node that ``node_part`` sent for ``(rep, count, h)``, once it hashes to ``h``
    and fits its parent's description (a branch's children as ``stub_of(hash, first
    key, count)``); ProofError otherwise."""
    f = as_list(item, "node part", size=2)
    kind = as_int(f[0], "node kind", max_value=1)
    if count == 0:
        raise ProofError("a map's top is checked with check_top")
    try:
        if kind == 0:
            if count > SUBTREE:
                raise ProofError(f"records for a node of {count} keys")
            pairs = []
            for raw in as_list(f[1], "node records", max_len=SUBTREE):
                pair = as_list(raw, "node record", size=2)
                key = as_bytes(pair[0], "key", size=KEY_LEN)
                pairs.append((key, _decode_value(which, key, as_bytes(pair[1], "value"))))
            top = MerkleMap.from_items(pairs).top if len(pairs) == count else None
            if top is None or pairs[0][0] != rep or top.digest() != h:
                raise ProofError(f"the records sent for {MAP_NAMES[which]} node {h.hex()}")
            return top  # type: ignore[return-value]
        if count <= SUBTREE:
            raise ProofError(f"a branch for a node of {count} keys")
        node = decode_branch(as_bytes(f[1], "branch", size=BRANCH_LEN), rep, count, stub_of)
    except ProofError:
        raise
    except ValueError as exc:  # a record or branch that does not decode
        raise ProofError(f"{MAP_NAMES[which]} node {h.hex()}: {exc}") from None
    if node.digest() != h:
        raise ProofError(f"the branch sent for {MAP_NAMES[which]} node {h.hex()}")
    return node


def check_top(header: EntityHeader, which: int, item: RlpItem) -> tuple[bytes, int] | None:
    """The first key and count of the map's top that ``node_part`` sent for count 0
    (None: the map is empty, as its root says). Neither is committed to by the root:
    a node that lies about them makes the walks it feeds reach nodes that do not hash
    right (ProofError then), or a wrong size."""
    f = as_list(item, "node part", size=2)
    if as_int(f[0], "node kind") != 2:
        raise ProofError("a top read answered with a node")
    top = as_list(f[1], "top", max_len=2)
    empty = header.root(which) == MerkleMap.empty().root
    if not top:
        if not empty:
            raise ProofError(f"an empty top for a {MAP_NAMES[which]} root that is not")
        return None
    if len(top) != 2 or empty:
        raise ProofError(f"a {MAP_NAMES[which]} top that does not fit its root")
    return as_bytes(top[0], "first key", size=KEY_LEN), as_int(top[1], "count", min_value=1)
