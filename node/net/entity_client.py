"""Reading an entity in parts through a node, and believing only what is proven.

:class:`EntityReader` sends READ_ENTITY (``node/entity_reads.py``) and checks each
reply: the records against the header's Merkle roots, and the header against the
certified frame at its height (GET_FRAMES), whose certificate must verify under a
config the reader trusts. A node, local or remote, cannot make it believe a
channel, a reserve or a nonce that no quorum of the entity certified.

Trust starts at the entity's id, which commits to its genesis config. The reader
then keeps, per entity, the config of the last header it checked (``pins``), and
follows a change from it through the certified frame that made it. A config met
with nothing pinned is taken on first use (logged); a change it cannot follow
raises UnverifiedRead and unpins the entity (see
:func:`node.entity_reads.check_certified`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from node.codec import DecodeError, RlpItem, as_bytes, as_int, as_list, keccak
from node.entity_reads import (
    CHANNELS,
    EVIDENCE,
    FORWARDS,
    HEADER,
    MAX_PAGE,
    NODE,
    PAGE,
    RECORD,
    REFUSALS,
    EntityHeader,
    Page,
    ProofError,
    UnverifiedRead,
    check_certified,
    check_page,
    check_record,
    needs_change_frame,
)
from node.evidence import Evidence
from node.machines.accounts import ChannelRecord, Forwarded
from node.machines.entity import EntityState
from node.machines.frames import Certificate
from node.machines.governance import Config
from node.machines.refusal import Refusal
from node.merkle_map import MerkleMap
from node.net.client import NodeClient, NodeError
from node.net.protocol import Err, Rep, Req

__all__ = ["EntityReader", "ProofError", "UnverifiedRead"]

log = logging.getLogger(__name__)

CERTIFIED_MEMO = 4096  # state hashes already checked, most recent kept
# A whole state is read at one state hash; if frames move past it before the last
# page, the read starts again from the current state, at most this many times.
WHOLE_READ_ATTEMPTS = 4


class EntityReader:
    """Proven reads of entities, through whichever client ``client_of`` gives."""

    def __init__(
        self,
        client_of: Callable[[], NodeClient],
        pins: dict[bytes, Config] | None = None,
        on_pin: Callable[[dict[bytes, Config]], object] | None = None,
    ) -> None:
        """``pins``: configs trusted from an earlier run; ``on_pin(pins)`` is called
        when a pin changes (an entity's config changed, or was met for the first
        time), to keep them."""
        self._client_of = client_of
        self.pins: dict[bytes, Config] = dict(pins or {})
        self.on_pin = on_pin
        # state hash -> the certified frame's hash and certificate that proved it
        # (None: a genesis state)
        self._certified: OrderedDict[bytes, tuple[bytes, Certificate] | None] = OrderedDict()

    async def _read(
        self, signer: bytes, entity: bytes, body: list[Any]
    ) -> tuple[EntityHeader, RlpItem | None]:
        reply = await self._client_of().request(Req.READ_ENTITY, body, [signer, entity])
        if reply.type is not Rep.ENTITY:
            raise ProofError(f"READ_ENTITY answered with {reply.type.name}")
        size = 3 if body[0] == HEADER else 4
        f = reply.body
        if len(f) != size:
            raise ProofError(f"an ENTITY reply of {len(f)} items, expected {size}")
        route = [as_bytes(r, "route") for r in as_list(f[0], "route", max_len=2)]
        if route != [signer, entity] or as_int(f[1], "part") != body[0]:
            raise ProofError("an ENTITY reply for another route or part")
        header = EntityHeader.from_item(f[2], entity)
        at = body[1]
        if at and header.hash != at:
            raise ProofError("an ENTITY reply at another state than the one asked for")
        await self._certify(header)
        return header, (f[3] if size == 4 else None)

    async def _certify(self, header: EntityHeader) -> None:
        if header.hash in self._certified:
            self._certified.move_to_end(header.hash)
            return
        frame_raw = cert = None
        if header.height > 0:
            frames = await self._client_of().frames(header.entity_id, header.height, 1)
            if frames:
                frame_raw, cert = frames[0]
        entity = header.entity_id
        pinned = self.pins.get(entity)
        change = None
        if needs_change_frame(header, pinned):
            found = await self._client_of().frames(entity, header.small.config_height, 1)
            change = found[0] if found else None
        try:
            config, first_use = check_certified(header, frame_raw, cert, pinned, change)
        except UnverifiedRead:
            # A change this reader could not follow: the next read starts again from
            # first use rather than failing for ever.
            if self.pins.pop(entity, None) is not None and self.on_pin is not None:
                self.on_pin(self.pins)
            raise
        if first_use:
            log.warning(
                "entity %s: config of frame %d taken on first use (its changes since "
                "genesis are not traced)",
                entity.hex()[:12],
                header.small.config_height,
            )
        if self.pins.get(entity) != config:
            self.pins[entity] = config
            if self.on_pin is not None:
                self.on_pin(self.pins)
        self._certified[header.hash] = (
            None if frame_raw is None or cert is None else (keccak(frame_raw), cert)
        )
        while len(self._certified) > CERTIFIED_MEMO:
            self._certified.popitem(last=False)

    def certificate(self, state_hash: bytes) -> Certificate | None:
        """The certificate that proved a state this reader read lately (None: a
        genesis state, or one it has not read)."""
        proof = self._certified.get(state_hash)
        return None if proof is None else proof[1]

    def frame_hash(self, state_hash: bytes) -> bytes | None:
        """The hash of the certified frame that made that state (None likewise)."""
        proof = self._certified.get(state_hash)
        return None if proof is None else proof[0]

    async def header(self, signer: bytes, entity: bytes, at: bytes = b"") -> EntityHeader:
        """The entity's current agreed header as ``signer``'s replica holds it (or the
        one at state hash ``at``), certified."""
        header, _ = await self._read(signer, entity, [HEADER, at])
        return header

    async def channel(
        self, signer: bytes, entity: bytes, peer: bytes, at: bytes = b""
    ) -> tuple[EntityHeader, ChannelRecord | None]:
        """The channel with ``peer`` (None: there is none, proven), and its header."""
        header, item = await self._read(signer, entity, [RECORD, at, CHANNELS, peer])
        assert item is not None
        record = check_record(header, CHANNELS, peer, item)
        assert record is None or isinstance(record, ChannelRecord)
        return header, record

    async def page(
        self,
        signer: bytes,
        entity: bytes,
        which: int,
        after: bytes = b"",
        limit: int = MAX_PAGE,
        at: bytes = b"",
    ) -> tuple[EntityHeader, Page]:
        """Records of map ``which`` after the key ``after`` (empty: from the first; else
        the previous page's :attr:`~node.entity_reads.Page.next_after`), proven complete."""
        header, item = await self._read(signer, entity, [PAGE, at, which, after, limit])
        assert item is not None
        return header, check_page(header, which, after, item)

    async def node(
        self, signer: bytes, entity: bytes, at: bytes, which: int, rep: bytes, count: int, h: bytes
    ) -> tuple[EntityHeader, RlpItem]:
        """READ_ENTITY's node part, unchecked (``node.entity_reads.check_node`` and
        ``check_top`` check it; ``node/net/remote_map.py`` walks maps with it)."""
        header, item = await self._read(signer, entity, [NODE, at, which, rep, count, h])
        assert item is not None
        return header, item

    async def evidence(self, signer: bytes, entity: bytes) -> tuple[EntityHeader, list[Evidence]]:
        """The node's equivocation evidence about ``entity`` (READ_ENTITY's evidence
        part) with the entity's certified header. Each record is believed only if it
        names this entity and both its signatures verify under its key (a record that
        does not is logged and left out: the node is wrong or lying); whether that key
        is a member's is the caller's to see, against the header's config."""
        header, item = await self._read(signer, entity, [EVIDENCE, b""])
        assert item is not None
        found: list[Evidence] = []
        for raw in as_list(item, "evidence records"):
            try:
                record = Evidence.from_item(raw)
            except DecodeError as exc:
                log.warning(
                    "entity %s: an evidence record that does not decode: %s", entity.hex()[:12], exc
                )
                continue
            problem = (
                "it is about another entity" if record.entity_id != entity else record.problem()
            )
            if problem is not None:
                log.warning("entity %s: evidence refused: %s", entity.hex()[:12], problem)
                continue
            found.append(record)
        return header, found

    async def refusals(self, signer: bytes, entity: bytes) -> tuple[EntityHeader, list[Refusal]]:
        """The members' signed refusals the node has seen about ``entity`` (READ_ENTITY's
        refusals part), oldest first, with the entity's certified header. Each is
        believed only if it names this entity and a member of the header's config
        signed it (one that does not is logged and left out: the node is wrong or
        lying)."""
        header, item = await self._read(signer, entity, [REFUSALS, b""])
        assert item is not None
        config = header.small.config
        found: list[Refusal] = []
        for raw in as_list(item, "refusals"):
            try:
                refusal = Refusal.from_item(raw)
            except DecodeError as exc:
                log.warning("entity %s: a refusal that does not decode: %s", entity.hex()[:12], exc)
                continue
            slot = config.index.get(refusal.signer)
            if (
                refusal.entity != entity
                or slot is None
                or not refusal.verify(config.members[slot].pubkey)
            ):
                log.warning(
                    "entity %s: a refusal not signed by a member for it: left out",
                    entity.hex()[:12],
                )
                continue
            found.append(refusal)
        return header, found

    async def state(self, signer: bytes, entity: bytes) -> EntityState:
        """The whole agreed state, read page by page at one state hash: every record
        proven, and the maps rebuilt and checked against the header's roots. Costs
        what the entity holds: for entities whose channels a reader needs all of."""
        for _ in range(WHOLE_READ_ATTEMPTS):
            header = await self.header(signer, entity)
            try:
                channels = await self._whole_map(signer, entity, header, CHANNELS)
                forwards = await self._whole_map(signer, entity, header, FORWARDS)
            except NodeError as exc:
                if exc.code is Err.NOT_FOUND:  # frames moved past this state meanwhile
                    continue
                raise
            return replace(header.small, channels=channels, forwards=forwards)  # type: ignore[arg-type]
        raise ProofError(
            f"the entity moved past every state read in {WHOLE_READ_ATTEMPTS} attempts"
        )

    async def _whole_map(
        self, signer: bytes, entity: bytes, header: EntityHeader, which: int
    ) -> MerkleMap[ChannelRecord | Forwarded]:
        out: list[tuple[bytes, ChannelRecord | Forwarded]] = []
        after: bytes | None = b""
        while after is not None:
            _, page = await self.page(signer, entity, which, after, at=header.hash)
            out.extend(page.records)
            after = page.next_after
        records: MerkleMap[ChannelRecord | Forwarded] = MerkleMap.from_items(out)
        if records.root != header.root(which):  # the pages' proofs already say so
            raise ProofError("the records read do not give the header's root")
        return records
