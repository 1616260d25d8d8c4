"""The proof a peer's ``join_entity`` needs: the certified frame that added the signer.

A peer server may tell a hosted signer to make a replica of an entity only with
proof that an executed ``add_signer`` made it a member (``docs/PROTOCOL.md``
§ 13.3). The ``join_entity`` names the height of that frame; before anything is
queued, :func:`check_join` rebuilds the entity in memory, as a new member's
catch-up would: a replica from the genesis the join carries (every member's key
and proof of possession checked first), then the certified frames from height 1
up to the named one, each applied by the pure replica machine (its certificate
verified against the config in force before it, the frame executed and its state
hash compared), a page at a time, off the event loop. The join holds only if the
signer is not in the config before the named frame and is in the config after it.

Where the frames come from (as catch-up fetches them, ``node/coordinator.py``):
this node's own store, then the peer that sent the join (the link whose server id
is the sender's), then each connected link hosting a member of the config
reached so far. A page that does not verify is asked of the next source, so a
source that lies costs time, not the join. Nothing is trusted but certificates.

Bounded: at most :data:`~node.net.limits.MAX_JOIN_PROOF_FRAMES` frames, within
:data:`~node.net.limits.JOIN_PROOF_TIMEOUT_S`; the server caps the checks per
peer and at once (``node/net/server.py``). Nothing here changes any state: a
refused join leaves the node as it was.

The check proves membership as the entity's own quorum decided it. An entity
anyone made up, whose quorum is its maker, can add a signer as well (as
``create_entity`` can name one): the proof rules out replicas of entities a
signer is not a member of, not entities a stranger made.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator

from node.codec import DecodeError
from node.machines import replica as rep
from node.machines.frames import Certificate, Frame
from node.machines.governance import Config, ConfigError, check_new_key, signer_id
from node.machines.signer import JoinEntity
from node.net import limits
from node.net.peers import PeerNetwork
from node.storage import Store
from node.txs import Tx

log = logging.getLogger(__name__)

PAGE = 256  # frames asked at once (GET_FRAMES allows 256)

type Page = list[tuple[bytes, Certificate]]
type Source = tuple[str, Callable[[int, int], Awaitable[Page]]]


class JoinRefused(Exception):
    """The join's proof does not hold; the message says why."""


async def check_join(
    signer: bytes,
    join: JoinEntity,
    store: Store,
    peers: PeerNetwork | None,
    sender: bytes | None,
    *,
    simulation: bool = False,
) -> None:
    """Raise JoinRefused unless the frames up to ``join.height`` certify that signer
    ``signer`` became a member of the join's entity there. ``sender``: the identity
    key of the peer that sent it, asked first for the frames."""
    height = join.height
    if height < 1:
        raise JoinRefused(
            "a peer's join_entity must name the certified frame that added the signer"
            " ([config, salt, pops, height])"
        )
    if height > limits.MAX_JOIN_PROOF_FRAMES:
        raise JoinRefused(
            f"the frame that added the signer is at height {height}; a join is checked"
            f" up to height {limits.MAX_JOIN_PROOF_FRAMES} (the signer can find its"
            " entities with FIND_ENTITIES)"
        )
    genesis = join.genesis
    try:
        await asyncio.to_thread(_check_keys, genesis)
    except ConfigError as exc:
        raise JoinRefused(f"genesis: {exc}") from None
    try:
        async with asyncio.timeout(limits.JOIN_PROOF_TIMEOUT_S):
            before, after = await _replay(signer, join, store, peers, sender, simulation)
    except TimeoutError:
        raise JoinRefused(
            f"the frames up to height {height} were not verified within"
            f" {limits.JOIN_PROOF_TIMEOUT_S:g} s"
        ) from None
    if signer in before.index:
        raise JoinRefused(f"the signer was a member before the frame at height {height}")
    if signer not in after.index:
        raise JoinRefused(f"the frame at height {height} does not make the signer a member")


def _check_keys(genesis: rep.Genesis) -> None:
    for member, pop in zip(genesis.config.members, genesis.pops, strict=True):
        check_new_key(member.pubkey, pop)


async def _replay(
    signer: bytes,
    join: JoinEntity,
    store: Store,
    peers: PeerNetwork | None,
    sender: bytes | None,
    simulation: bool,
) -> tuple[Config, Config]:
    """The configs before and after frame ``join.height``, from the frames verified."""
    replica = rep.create(signer, join.genesis)
    entity = replica.entity_id
    height = join.height
    before = replica.entity.config
    while replica.next_height <= height:
        start = replica.next_height
        # The named frame is applied on its own, so the config before it is seen.
        count = min(PAGE, height - start) or 1
        why = "no source has them"
        for name, fetch in _sources(entity, store, peers, sender, replica):
            try:
                page = await fetch(start, count)
                moved, reason = await asyncio.to_thread(
                    _apply, replica, page[:count], start, simulation
                )
            except (ConnectionError, TimeoutError, DecodeError, ValueError) as exc:
                why = f"{name}: {exc}"
                continue
            if moved is not None:
                replica = moved
                break
            why = f"{name}: {reason}"
        else:
            raise JoinRefused(f"no certified frame at height {start} of that entity: {why}")
        if replica.next_height == height:
            before = replica.entity.config
    return before, replica.entity.config


def _sources(
    entity: bytes,
    store: Store,
    peers: PeerNetwork | None,
    sender: bytes | None,
    replica: rep.Replica,
) -> Iterator[Source]:
    """Where the frames at a height may be, in the order asked."""

    async def local(start: int, count: int) -> Page:
        return await asyncio.to_thread(store.frames, entity, start, count)

    yield "this node", local
    if peers is None:
        return
    first = signer_id(sender) if sender is not None else None
    members = set(replica.entity.config.ids)
    links = [link for link in peers.links if link.connected]
    ordered = [link for link in links if link.server_id == first] + [
        link for link in links if link.server_id != first and link.hosted & members
    ]
    for link in ordered:
        yield link.url, functools.partial(peers.get_frames, link, entity)


def _apply(
    replica: rep.Replica, page: Page, start: int, simulation: bool
) -> tuple[rep.Replica | None, str]:
    """``replica`` with ``page``'s commits applied, if they take it past ``start``
    to the page's end; else None and why not."""
    if not page:
        return None, "none served"
    txs = [Tx.of(rep.Commit(Frame.decode(raw), cert)) for raw, cert in page]
    new, effects = rep.step(replica, txs, simulation=simulation)
    if new.next_height == start + len(page):
        return new, ""
    notes = [e.message for e in effects if isinstance(e, rep.Note)]
    return None, notes[0] if notes else "the frames do not follow on"
