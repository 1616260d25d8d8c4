"""Find a restored signer's entities: ask the peers, set the agent's floors, join.

``FIND_ENTITIES`` (route ``[signer]``, ``docs/PROTOCOL.md`` § 9) runs
:func:`find_entities`: the node asks each of its peers ``MEMBERSHIPS`` for the
signer, proving it hosts the signer with the signer's binding of its own
identity key (the agent gives it on connect, ``BIND``), and reads its own
replicas the same way (a peer not connected now counts as one that did not
answer). The answers for each entity are merged (the highest certified height,
the highest height in flight, the highest binding serial).

Then, for each entity, in this order:

1. the signer's agent is told the floor (``FLOOR``): it signs nothing at or
   below the highest height in flight there (``node/agent.py``), and binds
   above the highest serial seen, so its next binding outranks the lost one;
2. only once the agent holds the floor does the node make a replica
   (``join_entity`` with the genesis), so no sign request can come first; the
   join is the node's own, for a client whose scope reaches the signer, so it
   names no frame (a peer's must, ``node/join_proof.py``);
3. the replica catches up through certified frames (``GET_FRAMES``, each
   certificate verified as in any catch-up).

A peer that answers wrongly can only name entities that never catch up (their
frames must carry certificates by the genesis config's members) or a floor too
high (which delays this signer's signatures, not the entity). At most
:data:`~node.memberships.MAX_FOUND` entities are joined per request.
"""

from __future__ import annotations

import logging

from node.agent import Refused
from node.coordinator import AgentUnavailable, Coordinator
from node.errors import Busy, ShuttingDown, TooLarge, UnknownRoute
from node.machines import signer as sig
from node.memberships import MAX_FOUND, MAX_PAGE, FindResult, Found, Membership
from node.net.peers import PeerRefused
from node.txs import Tx

log = logging.getLogger(__name__)

# Pages asked of one peer in one FIND_ENTITIES (with MAX_PAGE each: MAX_FOUND in all).
MAX_PAGES_PER_PEER = MAX_FOUND // MAX_PAGE


class FindRefused(Exception):
    """The node cannot look for the signer's entities (no agent, no binding)."""


async def find_entities(coordinator: Coordinator, signer: bytes) -> FindResult:
    """Find ``signer``'s entities through this node and its peers; raises FindRefused."""
    node = coordinator.node
    if signer not in node.state.by_id:
        raise FindRefused(f"signer {signer.hex()[:12]} is not hosted here")
    if signer not in coordinator.agents:
        raise FindRefused("the signer's agent is not connected: it must hold the floors first")
    result = FindResult()
    merged: dict[bytes, Membership] = {}

    def take(page: list[Membership]) -> None:
        for m in page:
            held = merged.get(m.entity_id)
            if held is None and len(merged) >= MAX_FOUND:
                continue
            merged[m.entity_id] = m if held is None else held.merged(m)

    after = b""
    for _ in range(MAX_PAGES_PER_PEER):
        page, after = coordinator.memberships(signer, after, MAX_PAGE)
        take(page)
        if not after:
            break
    peers = coordinator.peers
    links = list(peers.links) if peers is not None else []
    if links:
        assert peers is not None
        binding = await coordinator.binding(signer)
        if binding is None:
            raise FindRefused("the signer's agent gave no binding of this server")
        for link in links:
            result.asked += 1
            if not link.connected:
                # Counted as not answering: a find is final only once every peer answered.
                result.errors.append(f"{link.url}: not connected")
                continue
            after = b""
            try:
                for _ in range(MAX_PAGES_PER_PEER):
                    page, after = await peers.memberships(link, signer, after, MAX_PAGE, binding)
                    take(page)
                    if not after:
                        break
            except (ConnectionError, TimeoutError, PeerRefused) as exc:
                result.errors.append(str(exc) or repr(exc))
                continue
            result.answered += 1
    held = node.state.by_id[signer]
    joins: list[Membership] = []
    for entity in sorted(merged):
        m = merged[entity]
        try:
            floor = await coordinator.set_floor(signer, entity, m.in_flight, m.serial_of(signer))
        except (AgentUnavailable, Refused) as exc:
            raise FindRefused(f"the agent did not take the floor: {exc}") from None
        new = entity not in held.by_entity
        result.found.append(Found(m, floor, new))
        if new:
            joins.append(m)
    if joins:
        txs = [Tx.of(sig.JoinEntity(m.genesis)) for m in joins]
        try:
            await node.submit((signer,), txs, urgent=True)
        except (Busy, TooLarge, UnknownRoute, ShuttingDown) as exc:
            raise FindRefused(f"joining the entities failed: {exc}") from None
    for m in joins:
        coordinator.request_sync(m.entity_id)
    log.info(
        "signer %s: %d entities found (%d joined), %d of %d peers answered",
        signer.hex()[:12],
        len(result.found),
        len(joins),
        result.answered,
        result.asked,
    )
    return result
