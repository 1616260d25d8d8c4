"""The runtime side of entity consensus: everything that is I/O or clock.

The pure replica machine (``node/machines/replica/``) decides; this module
carries its decisions out once the block that made them is durable:

- ``Send``: an input for another signer's replica, queued locally if that
  signer is hosted here, else delivered to the peer that hosts it;
- ``ProposeFrame``: ask this signer's agent to approve the frame, then send the
  proposal (with that approval, which authenticates it, and the polka of the lock
  it re-proposes, if any) to the members;
- proposals from others: re-execute on our replica (``check_proposal``); if
  the rules accept it, ask our signer's agent to approve it (its person or
  accountant decides), and send the approval to the round's proposer;
- ``PrecommitDue`` (a polka for a frame our signer approved): ask its agent to
  pre-commit, send the pre-commit to the round's proposer, and record the lock
  (the frame with its polka) on our replica;
- the round timer: a replica with work that makes no progress for
  ``round_timeout * (round + 1)`` gets a ``timeout`` input from our clock;
- catch-up: a replica behind its peers fetches certified frames (GET_FRAMES)
  and applies them as ``commit`` inputs; each is verified before it applies;
- ``Transmit``: a signed channel message for a member of a counterparty
  entity, routed like ``Send``; and the resend timer, per counterparty: while
  our channel frame waits for its ack, it goes out again (after our
  announcements, to that counterparty's members) every ``resend_ms``, and at once
  when a peer server (re)connects (each message is idempotent; an ack goes again
  when the frame it acks comes again). The counterparties waiting are noted as
  their frames go out; after a restart, a paced sweep of the kept messages (a
  page per entity per tick) finds the ones from before, so a hub's million
  channels are never all read at once.

Agents: a signer's key is held by its agent, either in this process (built-in,
loaded from an EIP-2335 keystore) or on the far side of the agent protocol.
Independent sign requests run concurrently (``asyncio.gather``).

Round changes between servers: when its agent connects (and whenever one is
needed and none is held), the node asks it for the signer's binding of this
server's identity key (``node/machines/binding.py``), checks it, and announces it
(``server_binding``) to every member of the signer's entities. A round change for
a member hosted on another server then goes as ``signed_round_change``: the round
change, that binding, and this server's signature over it, made here with the
identity key (a locked wallet does not hold it up). Round changes between replicas
hosted here stay the node's own ``round_change`` inputs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.agent import Agent, Refused
from node.codec import encode_tree
from node.crypto import bls
from node.identity import Identity
from node.machines import replica as rep
from node.machines import signer as sig
from node.machines.accounts import FRAME
from node.machines.binding import ServerBinding
from node.machines.frames import Certificate, Frame, Polka, Signatures, verify_polka
from node.machines.governance import Config
from node.machines.refusal import Refusal
from node.machines.replica import (
    AnnounceBinding,
    Approve,
    Commit,
    Lock,
    PolkaNotice,
    Precommit,
    RefusalInput,
    RoundChange,
    SeenLock,
    SignedRoundChange,
    Timeout,
)
from node.machines.server import Step
from node.memberships import MAX_PAGE_BYTES, MemberIndex, Membership, membership_of
from node.net.peers import PeerLink, PeerNetwork
from node.runtime import Node
from node.storage import Store
from node.txs import Tx

log = logging.getLogger(__name__)

DEFAULT_ROUND_TIMEOUT_MS = 2_000
DEFAULT_RESEND_MS = 1_000
SYNC_PAGE = 256
SWEEP_PAGE = 256  # kept entries looked at per entity per tick after a restart
CHECK_MEMO = 1024
FRAME_MEMO = 256  # frames our signers approved lately, for the pre-commit a polka asks
ANSWERED_MEMO = 16_384


class AgentUnavailable(Exception):
    """No agent is connected for this signer (or it went away mid-request)."""


class AgentLink(Protocol):
    async def approve(
        self, entity: bytes, frame_raw: bytes, round_: int, config: Config, valid: Polka | None
    ) -> bytes: ...

    async def sign_precommit(
        self,
        entity: bytes,
        height: int,
        round_: int,
        frame_hash: bytes,
        polka: Polka,
        config: Config,
    ) -> Signatures: ...

    async def bind_server(self, server_key: bytes) -> ServerBinding: ...

    async def set_floor(self, entity: bytes, height: int, binding_serial: int) -> int: ...


class LocalAgent:
    """A built-in agent, in this process; signing and its synced record run on a thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def approve(
        self, entity: bytes, frame_raw: bytes, round_: int, config: Config, valid: Polka | None
    ) -> bytes:
        return await asyncio.to_thread(self.agent.approve, frame_raw, round_, config, valid)

    async def sign_precommit(
        self,
        entity: bytes,
        height: int,
        round_: int,
        frame_hash: bytes,
        polka: Polka,
        config: Config,
    ) -> Signatures:
        return await asyncio.to_thread(
            self.agent.sign_precommit, entity, height, round_, frame_hash, polka, config
        )

    async def bind_server(self, server_key: bytes) -> ServerBinding:
        return await asyncio.to_thread(self.agent.bind_server, server_key)

    async def set_floor(self, entity: bytes, height: int, binding_serial: int) -> int:
        return await asyncio.to_thread(self.agent.set_floor, entity, height, binding_serial)


@dataclass
class _Timer:
    height: int
    round: int
    since: float
    fired: bool = False


class Coordinator:
    def __init__(
        self,
        node: Node,
        peers: PeerNetwork | None = None,
        round_timeout_ms: int = DEFAULT_ROUND_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
        resend_ms: int = DEFAULT_RESEND_MS,
        identity: Identity | None = None,
    ) -> None:
        """``identity``: the key with which this server signs its members' round changes
        to other servers, and which their agents bind (default: the peer network's)."""
        self.node = node
        self.peers = peers
        self.identity = identity if identity is not None or peers is None else peers.identity
        self.round_timeout_s = round_timeout_ms / 1000
        self.resend_s = resend_ms / 1000
        # entity -> counterparty -> when our pending frame for it last went out
        self._waiting: dict[bytes, dict[bytes, float]] = {}
        # entity -> the last kept entry swept (None: not started), until swept whole
        self._sweeps: dict[bytes, bytes | None] = {}
        self._swept: set[bytes] = set()
        self._clock = clock
        self.agents: dict[bytes, AgentLink] = {}
        # Each hosted signer's binding of this server's identity key, from its agent.
        self.bindings: dict[bytes, ServerBinding] = {}
        self._binding: dict[bytes, asyncio.Task[ServerBinding | None]] = {}
        self._timers: dict[tuple[bytes, bytes], _Timer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._syncing: set[bytes] = set()
        self._deferred: dict[tuple[bytes, bytes], tuple[bytes, int, bytes, Polka | None]] = {}
        self._frames: OrderedDict[bytes, Frame] = OrderedDict()  # by hash: FRAME_MEMO
        self._checked: dict[tuple[bytes, bytes, int, bytes, int, bytes], str | None] = {}
        self._answered: set[tuple[bytes, int, bytes]] = set()
        self._precommitted: set[tuple[bytes, int, bytes]] = set()  # (frame hash, round, signer)
        self._stepped = asyncio.Event()  # (frame hash, round, signer)
        # The replicas a tick has work for (a frame in flight, a pool, a lock, or
        # signed messages kept): kept up to date from each block's changes, so a tick
        # costs what is active, not every replica hosted here.
        self._active: set[tuple[bytes, bytes]] = set()
        # The signers hosted here that hold a replica of each entity: a proposal or a
        # catch-up looks its entity up here, not in every signer.
        self._holders: dict[bytes, set[bytes]] = {}
        # The entities held here that each signer is (or was) a member of: when a
        # peer's link changes, the entities that may have to catch up from it.
        self._by_member: dict[bytes, set[bytes]] = {}
        # The same, sorted per member, for MEMBERSHIPS pages (node/memberships.py).
        self.members = MemberIndex()
        for signer in node.state.signers:
            for replica in signer.replicas:
                self._note((signer.id, replica.entity_id), replica)
        node.durable_hooks.append(self.on_step)
        node.tick_hooks.append(self.on_tick)
        if peers is not None:
            peers.on_change.append(self._on_peer_change)

    @property
    def store(self) -> Store:
        return self.node.store

    def hosted_signers(self) -> list[bytes]:
        return list(self.node.state.hosted)  # the map's keys, ascending

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("consensus task failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Effects of a durable block ------------------------------------------------

    def holders(self, entity: bytes) -> frozenset[bytes]:
        """The signers hosted here that hold a replica of ``entity``."""
        return frozenset(self._holders.get(entity, ()))

    def on_step(self, step: Step) -> None:
        self._stepped.set()
        proposals = []
        # The height of the last frame each replica committed in this block: an
        # Invite follows the commit whose add_signer made the member, and the
        # join_entity names that frame (its proof, node/join_proof.py).
        committed: dict[tuple[bytes, bytes | None], int] = {}
        for effect in step.effects:
            what = effect.what
            match what:
                case rep.Send(to=to, tx=tx):
                    assert effect.entity is not None
                    if isinstance(tx.body, RoundChange) and to not in self.node.state.by_id:
                        self._send_round_change(to, effect.entity, tx.body)
                    elif self._needs_binding(effect.signer, to):
                        send = functools.partial(self.route_input, to, effect.entity, tx)
                        self._spawn(self._when_bound(effect.signer, send))
                    else:
                        self.route_input(to, effect.entity, tx)
                case rep.Transmit(entity=entity, to=to, tx=tx):
                    self._transmit(effect.signer, to, entity, tx)
                    body = tx.body
                    if isinstance(body, rep.Deliver) and body.message.kind == FRAME:
                        assert effect.entity is not None
                        self._waiting.setdefault(effect.entity, {})[entity] = self._clock()
                case sig.SendToSigner(to=to, tx=tx):
                    self.route_input(to, None, tx)
                case rep.ProposeFrame():
                    assert effect.entity is not None
                    proposals.append(self._propose(effect.signer, what))
                case rep.PrecommitDue():
                    assert effect.entity is not None
                    proposals.append(self._precommit(effect.signer, effect.entity, what))
                case rep.Note(message=message):
                    log.info(
                        "signer %s entity %s: %s",
                        effect.signer.hex()[:12],
                        (effect.entity or b"").hex()[:12],
                        message,
                    )
                case rep.Invite(to=to, genesis=genesis):
                    height = committed.get((effect.signer, effect.entity), 0)
                    self.route_input(to, None, Tx.of(sig.JoinEntity(genesis, height)))
                case rep.Committed(frame=frame):
                    # (published as a FrameEvent by the node)
                    committed[(effect.signer, effect.entity)] = frame.height
        for key, (frame_raw, round_, psig, valid) in list(self._deferred.items()):
            del self._deferred[key]
            proposals.append(self._fan_out(key[0], frame_raw, round_, psig, valid))
        for write in step.changed:
            route = write.route
            joined = self.node.state.replica(*route) if len(route) == 2 else None
            if joined is not None:
                new = route[0] not in self._holders.get(route[1], ())
                self._note((route[0], route[1]), joined)
                held = self.bindings.get(route[0])
                if new and held is not None:
                    # Its other members' servers take our traffic for it only under
                    # this binding (node/net/peer_auth.py).
                    self._announce_entity(joined, held)
                elif new and route[0] in self.agents and self.identity is not None:
                    # Asked now (a signer created after its agent connected has none):
                    # the answer is announced to this entity's members too.
                    self._spawn(self._bound(self._binding_task(route[0])))
            if (
                joined is not None
                and joined.entity.height == 0
                and joined.signer not in joined.entity.config.index
            ):
                self.request_sync(joined.entity_id)  # invited after genesis: catch up
        if proposals:
            self._spawn(_gather(proposals))

    # Memberships (a restore) ---------------------------------------------------------

    def memberships(
        self, signer: bytes, after: bytes, limit: int
    ) -> tuple[list[Membership], bytes]:
        """A page of the entities hosted here whose current config names ``signer``:
        up to ``limit`` entities of the index above ``after``, and the cursor to ask
        next (b"": the last page). Entities ``signer`` has left are skipped, but count
        against ``limit``, so a page costs at most ``limit`` look-ups."""
        entities, more = self.members.page(signer, after, limit)
        found: list[Membership] = []
        size = 0
        for i, entity in enumerate(entities):
            m = membership_of(self._replicas_of(entity), signer)
            if m is None:
                continue
            found.append(m)
            size += len(encode_tree(m.to_tree()))
            if size > MAX_PAGE_BYTES and i + 1 < len(entities):
                return found, entity
        return found, entities[-1] if more and entities else b""

    def member_key(self, signer: bytes) -> bytes | None:
        """``signer``'s public key, from the config of an entity hosted here that names
        it (the first few of the index), or None."""
        for entity in self.members.page(signer, b"", 8)[0]:
            for r in self._replicas_of(entity):
                at = r.entity.config.index.get(signer)
                if at is not None:
                    return r.entity.config.members[at].pubkey
        return None

    async def set_floor(self, signer: bytes, entity: bytes, height: int, serial: int) -> int:
        """Tell ``signer``'s agent to sign nothing for ``entity`` at or below ``height``,
        and to bind above ``serial``; the floor it holds. A binding held at or below
        that serial is asked for again. Raises AgentUnavailable or Refused."""
        agent = self.agents.get(signer)
        if agent is None:
            raise AgentUnavailable(f"no agent is connected for signer {signer.hex()[:12]}")
        floor = await agent.set_floor(entity, height, serial)
        held = self.bindings.get(signer)
        if held is not None and held.serial <= serial:
            del self.bindings[signer]
            self._spawn(self._bound(self._binding_task(signer)))
        return floor

    def proposal_received(
        self, signer: bytes, frame_raw: bytes, round_: int, psig: bytes, valid: Polka | None
    ) -> asyncio.Task[None]:
        """A proposal for our ``signer`` arrived: answer it, in the background, for
        every member of the entity hosted here (the proposer sends one proposal per
        server), each approval at most once. The task, so a caller can bound how
        many one peer has in flight."""
        return self._spawn(self._fan_out(signer, frame_raw, round_, psig, valid))

    async def _fan_out(
        self, signer: bytes, frame_raw: bytes, round_: int, psig: bytes, valid: Polka | None
    ) -> None:
        try:
            frame = Frame.decode(frame_raw)
        except ValueError:
            await self.on_proposal(signer, frame_raw, round_, psig, valid)  # refuses, logs
            return
        held = self._replicas_of(frame.entity_id)
        if held:
            # The proposer's approval: a second one for another frame at this height
            # and round is evidence (node/evidence.py), whether or not we approve.
            self.node.evidence.observe_proposal(held[0].entity.config, frame, round_, psig)
        targets = [
            r.signer
            for r in held
            if r.signer in r.entity.config.index
            and r.signer != r.entity.config.proposer_at(round_)
            and (frame.hash, round_, r.signer) not in self._answered
        ]
        if len(self._answered) > ANSWERED_MEMO:
            self._answered.clear()
        self._answered.update((frame.hash, round_, t) for t in targets)
        await asyncio.gather(
            *(self._answer(t, frame, frame_raw, round_, psig, valid) for t in targets)
        )

    async def _answer(
        self,
        signer: bytes,
        frame: Frame,
        frame_raw: bytes,
        round_: int,
        psig: bytes,
        valid: Polka | None,
    ) -> None:
        reason = await self.on_proposal(signer, frame_raw, round_, psig, valid)
        if reason is not None and (signer, frame.entity_id) in self._deferred:
            self._answered.discard((frame.hash, round_, signer))  # retried later

    def route_input(self, to: bytes, entity: bytes | None, tx: Tx) -> None:
        """An input for signer ``to`` (and its replica of ``entity``), wherever it is hosted."""
        local = self.node.state.by_id.get(to)
        if local is not None and entity is not None and isinstance(tx.body, PolkaNotice):
            self.polka_received(to, entity, tx.body)
        if local is not None:
            if entity is None:
                self.node.submit_internal((to,), [tx])
            elif entity in local.by_entity:
                self.node.submit_internal((to, entity), [tx])
            return
        if self.peers is None or not self.peers.deliver(to, entity, tx):
            log.debug("no route to signer %s", to.hex()[:12])

    # Server bindings and signed round changes -------------------------------------

    def agent_connected(self, signer: bytes) -> None:
        """``signer``'s agent is (re)connected: ask it for its binding of this server
        (the agent returns the same binding for the same key, or a newer serial). The
        binding held so far stays in use until the answer replaces it, so an agent
        that cannot answer now (a locked wallet) holds up no round change."""
        if self.identity is not None:
            self._spawn(self._bound(self._binding_task(signer)))

    async def _bound(self, task: asyncio.Task[ServerBinding | None]) -> None:
        await asyncio.shield(task)

    async def binding(self, signer: bytes) -> ServerBinding | None:
        """``signer``'s binding of this server's identity key: held, or asked of its
        agent (one request at a time), checked, and announced to the members of its
        entities. None without one (no agent, a refusal, no identity key)."""
        held = self.bindings.get(signer)
        if held is not None:
            return held
        return await asyncio.shield(self._binding_task(signer))

    def _binding_task(self, signer: bytes) -> asyncio.Task[ServerBinding | None]:
        """The request for ``signer``'s binding under way, or a new one."""
        task = self._binding.get(signer)
        if task is None or task.done():
            task = asyncio.ensure_future(self._ask_binding(signer))
            self._binding[signer] = task
        return task

    async def _ask_binding(self, signer: bytes) -> ServerBinding | None:
        agent = self.agents.get(signer)
        local = self.node.state.by_id.get(signer)
        if agent is None or self.identity is None or local is None:
            return None
        key = self.identity.pubkey
        try:
            binding = await agent.bind_server(key)
        except (Refused, AgentUnavailable) as exc:
            log.warning("agent of %s gave no server binding: %s", signer.hex()[:12], exc)
            return None
        if (
            binding.signer != signer
            or binding.server_key != key
            or not binding.verify(local.pubkey)
        ):
            log.warning(
                "agent of %s sent a binding that is not its signer's of this server",
                signer.hex()[:12],
            )
            return None
        self.bindings[signer] = binding
        log.info("signer %s bound this server (serial %d)", signer.hex()[:12], binding.serial)
        self._announce(signer, binding)
        return binding

    async def announce_binding(self, signer: bytes) -> None:
        """Announce ``signer``'s binding (asked of its agent if none is held) to the
        replicas of its entities elsewhere: after a restore joined them."""
        binding = await self.binding(signer)
        if binding is not None:
            self._announce(signer, binding)

    def _announce(self, signer: bytes, binding: ServerBinding) -> None:
        """Tell the replicas of the signer's entities hosted on other servers (a replica
        that has it already drops it on intake; those hosted here need none: round
        changes between them are this node's own)."""
        for entity, holders in sorted(self._holders.items()):
            if signer not in holders:
                continue
            replica = self.node.state.replica(signer, entity)
            if replica is not None:
                self._announce_entity(replica, binding)

    def _announce_entity(self, replica: rep.Replica, binding: ServerBinding) -> None:
        self._to_other_servers(replica, Tx.of(AnnounceBinding(binding)))

    def _to_other_servers(self, replica: rep.Replica, tx: Tx) -> None:
        """``tx`` to each member of ``replica``'s entity hosted on another server."""
        for member in replica.entity.config.ids:
            if member not in self.node.state.by_id:
                self.route_input(member, replica.entity_id, tx)

    def _introduce(self, link: PeerLink) -> None:
        """Our hosted signers' bindings, first on a (re)connected link, each on a route
        the peer holds (one of its members, in an entity the signer shares with it):
        the peer takes our consensus traffic for an entity only from a server bound to
        one of its members, and holds the bindings introduced on the connection
        (node/net/peer_auth.py)."""
        if self.peers is None:
            return
        for signer, binding in sorted(self.bindings.items()):
            route = self._shared_route(signer, link.hosted)
            if route is not None:
                link.introduced.add((signer, binding.serial))
                self.peers.deliver_first(link, *route, Tx.of(AnnounceBinding(binding)))

    def _shared_route(self, signer: bytes, hosted: frozenset[bytes]) -> tuple[bytes, bytes] | None:
        """A member among ``hosted`` (not hosted here) and an entity it shares with ``signer``."""
        for member in sorted(hosted - self.node.state.by_id.keys()):
            for entity in sorted(self._by_member.get(member, ())):
                if signer in self._holders.get(entity, ()):
                    return member, entity
        return None

    def _transmit(
        self, signer: bytes, to: bytes, entity: bytes, tx: Tx, *, waited: bool = False
    ) -> None:
        """A channel message of ``signer``'s entity for member ``to`` of a counterparty:
        the counterparty's servers take it only from a server bound by a member of our
        entity, so ``signer``'s binding is introduced first on each link it goes by
        (once per connection), waiting for the binding if none is held yet."""
        if self.peers is None or to in self.node.state.by_id:
            self.route_input(to, entity, tx)
            return
        binding = self.bindings.get(signer)
        if binding is None and not waited and self._needs_binding(signer, to):
            then = functools.partial(self._transmit, signer, to, entity, tx, waited=True)
            self._spawn(self._when_bound(signer, then))
            return
        if binding is not None:
            self.peers.introduce(to, entity, binding)
        self.route_input(to, entity, tx)

    def _needs_binding(self, signer: bytes, to: bytes) -> bool:
        """Whether ``signer``'s traffic to ``to`` should wait for its binding: ``to`` is on
        another server, and no binding of this server by ``signer`` is held yet."""
        return (
            to not in self.node.state.by_id
            and signer not in self.bindings
            and signer in self.agents
            and self.identity is not None
            and self.peers is not None
        )

    async def _when_bound(self, signer: bytes, send: Callable[[], None]) -> None:
        """``send`` once ``signer``'s binding is held (asked of its agent, and announced
        before what follows on the same links), or its agent could not give one."""
        await self.binding(signer)
        send()

    async def _bound_before_sending(self, signer: bytes) -> None:
        """Make sure ``signer``'s binding of this server is held (and so announced)
        before its consensus traffic leaves: other servers refuse it otherwise."""
        if signer not in self.bindings and self.identity is not None and self.peers is not None:
            await self.binding(signer)

    def _send_round_change(self, to: bytes, entity: bytes, rc: RoundChange) -> None:
        """A round change for a member on another server: signed here, under the
        member's binding of this server."""
        held = self.bindings.get(rc.signer)
        if held is not None:
            self._route_signed(to, entity, rc, held)
            return

        async def later() -> None:
            binding = await self.binding(rc.signer)
            if binding is None:
                log.warning(
                    "no server binding for signer %s: its round change %d/%d is not sent",
                    rc.signer.hex()[:12],
                    rc.height,
                    rc.round,
                )
                return
            self._route_signed(to, entity, rc, binding)

        self._spawn(later())

    def _route_signed(
        self, to: bytes, entity: bytes, rc: RoundChange, binding: ServerBinding
    ) -> None:
        assert self.identity is not None  # a binding is only asked with one
        signature = bls.sign(self.identity.secret_key, SignedRoundChange.message(entity, rc))
        self.route_input(to, entity, Tx.of(SignedRoundChange(rc, binding, signature)))

    async def _approve(
        self, signer: bytes, config: Config, frame: Frame, round_: int, valid: Polka | None
    ) -> bytes | None:
        """``signer``'s approval of ``frame`` at ``round_`` from its agent, or None (its
        signed refusal, if it gives one, goes to the other members' servers)."""
        agent = self.agents.get(signer)
        if agent is None:
            log.warning("no agent for signer %s; cannot approve", signer.hex()[:12])
            return None
        try:
            approval = await agent.approve(frame.entity_id, frame.raw, round_, config, valid)
        except Refused as exc:
            log.warning("agent of %s refused: %s", signer.hex()[:12], exc)
            if exc.refusal is not None:
                self._spread_refusal(signer, frame, round_, exc.refusal)
            return None
        except AgentUnavailable as exc:
            log.warning("agent of %s unavailable: %s", signer.hex()[:12], exc)
            return None
        self._frames[frame.hash] = frame
        self._frames.move_to_end(frame.hash)
        while len(self._frames) > FRAME_MEMO:
            self._frames.popitem(last=False)
        return approval

    def polka_received(self, signer: bytes, entity: bytes, notice: PolkaNotice) -> None:
        """A polka for ``signer``'s replica of ``entity`` arrived: if it is for the next
        height and verifies, ask for the pre-commit now, before the block that takes the
        notice (whose ``PrecommitDue`` then finds it answered): the member's block is
        off a frame's critical path."""
        replica = self.node.state.replica(signer, entity)
        if replica is None or notice.height != replica.next_height or notice.round < replica.round:
            return
        config = replica.entity.config
        if verify_polka(config, entity, notice.height, notice.frame_hash, notice.polka) is None:
            proposer = config.proposer_at(notice.round)
            due = rep.PrecommitDue(notice.height, notice.frame_hash, notice.polka, proposer)
            self._spawn(self._precommit(signer, entity, due))

    async def _precommit(self, signer: bytes, entity: bytes, due: rep.PrecommitDue) -> None:
        """A polka for a frame ``signer`` approved: its agent pre-commits (no person is
        asked: the approval was the decision), the pre-commit goes to the round's
        proposer, and the frame with its polka becomes our replica's lock."""
        round_ = due.polka.round
        key = (due.frame_hash, round_, signer)
        frame = self._frames.get(due.frame_hash)
        replica = self.node.state.replica(signer, entity)
        agent = self.agents.get(signer)
        if frame is None or replica is None or agent is None or key in self._precommitted:
            return  # not approved here lately (or answered): the round times out
        self._precommitted.add(key)
        if len(self._precommitted) > ANSWERED_MEMO:
            self._precommitted.clear()
        try:
            signed = await agent.sign_precommit(
                entity, due.height, round_, due.frame_hash, due.polka, replica.entity.config
            )
        except (Refused, AgentUnavailable) as exc:
            log.warning("agent of %s did not pre-commit: %s", signer.hex()[:12], exc)
            self._precommitted.discard(key)
            return
        await self._bound_before_sending(signer)
        pc = Precommit(frame.height, round_, frame.hash, signer, signed.precommit, signed.outbox)
        lock = Tx.of(SeenLock(Lock(round_, frame, due.polka)))
        if due.proposer == signer:
            self.node.submit_internal(
                (signer, entity),
                [Tx.of(pc), lock],
                urgent=self._holds_threshold(signer, entity),
            )
            return
        self.route_input(due.proposer, entity, Tx.of(pc))
        self.node.submit_internal((signer, entity), [lock], urgent=False)

    def _spread_refusal(self, signer: bytes, frame: Frame, round_: int, refusal: Refusal) -> None:
        """Keep ``signer``'s signed refusal of ``frame`` at ``round_`` and send it to the
        servers of the entity's other members (the proposer among them), whose wallets
        read it (node/refusals.py): a refusal that is not of this frame by this signer,
        or does not verify, goes nowhere."""
        replica = self.node.state.replica(signer, frame.entity_id)
        if replica is None:
            return
        asked = (frame.entity_id, frame.height, round_, frame.hash, signer)
        given = (refusal.entity, refusal.height, refusal.round, refusal.frame_hash, refusal.signer)
        why = (
            "it refuses another frame, round or signer than asked"
            if given != asked
            else self.node.refusals.observe(replica.entity.config, refusal)
        )
        if why is not None:
            log.warning("agent of %s sent a refusal that is not kept: %s", signer.hex()[:12], why)
            return
        self._to_other_servers(replica, Tx.of(RefusalInput(refusal)))

    async def _propose(self, signer: bytes, p: rep.ProposeFrame) -> None:
        log.debug(
            "signer %s proposes %s at %d/%d",
            signer.hex()[:12],
            p.frame.hash.hex()[:12],
            p.frame.height,
            p.round,
        )
        entity = p.frame.entity_id
        replica = self.node.state.replica(signer, entity)
        if replica is None:
            return
        approval = await self._approve(signer, replica.entity.config, p.frame, p.round, p.valid)
        if approval is None:
            return
        await self._bound_before_sending(signer)
        # Not urgent: the proposer's own approval alone completes nothing (unless
        # it holds the threshold itself; then the next tick makes the polka).
        self.node.submit_internal(
            (signer, entity),
            [Tx.of(Approve(p.frame.height, p.round, p.frame.hash, signer, approval))],
            urgent=self._holds_threshold(signer, entity),
        )
        others = [m for m in p.members if m != signer]
        remote = [m for m in others if m not in self.node.state.by_id]
        if remote and self.peers is not None:
            self.peers.proposals(remote, p.frame.raw, p.round, approval, p.valid)
        local = [m for m in others if m in self.node.state.by_id]
        if local:
            self.proposal_received(local[0], p.frame.raw, p.round, approval, p.valid)

    def _check(
        self, replica: rep.Replica, frame: Frame, round_: int, proposer_sig: bytes
    ) -> str | None:
        """``check_proposal``, once per proposal and replica state: the replicas of an
        entity's members hosted here are identical, so the first one's answer holds
        for the others (the key covers everything the check reads)."""
        key = (replica.entity.hash, replica.head, replica.round, frame.hash, round_, proposer_sig)
        if key not in self._checked:
            if len(self._checked) >= CHECK_MEMO:
                self._checked.clear()
            self._checked[key] = rep.check_proposal(
                replica,
                frame,
                round_,
                proposer_sig,
                simulation=self.node.state.simulation,
                outcomes=self.node.outcomes,
            )
        return self._checked[key]

    def _holds_threshold(self, signer: bytes, entity: bytes) -> bool:
        replica = self.node.state.replica(signer, entity)
        if replica is None:
            return False
        config = replica.entity.config
        return config.shares_of([signer]) >= config.threshold

    # Proposals from other signers --------------------------------------------------

    async def on_proposal(
        self,
        signer: bytes,
        frame_raw: bytes,
        round_: int,
        proposer_sig: bytes,
        valid: Polka | None = None,
    ) -> str | None:
        """Approve a proposal for our ``signer`` if the rules accept it (and its agent
        does); returns why not."""
        try:
            frame = Frame.decode(frame_raw)
        except ValueError as exc:
            return f"malformed frame: {exc}"
        replica = self.node.state.replica(signer, frame.entity_id)
        if replica is None:
            return "no such replica here"
        if frame.height > replica.next_height:
            # Usually the commit of the height before is in our inbox: the proposer
            # pipelines. Retry after the next block; if we are further behind, sync.
            self._deferred[(signer, frame.entity_id)] = (frame_raw, round_, proposer_sig, valid)
            if frame.height > replica.next_height + 1:
                self.request_sync(frame.entity_id)
            return "behind; retried after the next block"
        log.debug("signer %s checks %d/%d", signer.hex()[:8], frame.height, round_)
        reason = self._check(replica, frame, round_, proposer_sig)
        if reason is not None:
            log.warning("signer %s refuses a proposal: %s", signer.hex()[:12], reason)
            return reason
        approval = await self._approve(signer, replica.entity.config, frame, round_, valid)
        if approval is None:
            return "agent did not approve"
        log.debug("signer %s approved %d/%d", signer.hex()[:8], frame.height, round_)
        await self._bound_before_sending(signer)
        proposer = replica.entity.config.proposer_at(round_)
        self.route_input(
            proposer,
            frame.entity_id,
            Tx.of(Approve(frame.height, round_, frame.hash, signer, approval)),
        )
        return None

    # Timers --------------------------------------------------------------------------

    def _note(self, key: tuple[bytes, bytes], replica: rep.Replica) -> None:
        self._holders.setdefault(key[1], set()).add(key[0])
        for member in replica.entity.config.ids:
            entities = self._by_member.setdefault(member, set())
            if key[1] not in entities:
                entities.add(key[1])
                self.members.add(member, key[1])
        if replica.pool or replica.pending or replica.lock or replica.mailbox:
            self._active.add(key)
        else:
            self._active.discard(key)

    def _active_replicas(self) -> list[tuple[tuple[bytes, bytes], rep.Replica]]:
        state = self.node.state
        found = []
        for key in sorted(self._active):
            replica = state.replica(*key)
            if replica is not None:
                found.append((key, replica))
        return found

    def on_tick(self) -> None:
        now = self._clock()
        live = set()
        active = self._active_replicas()
        for key, replica in active:
            if not (replica.pool or replica.pending or replica.lock):
                continue
            live.add(key)
            timer = self._timers.get(key)
            at = (replica.next_height, replica.round)
            if timer is None or (timer.height, timer.round) != at:
                self._timers[key] = _Timer(*at, since=now)
                continue
            if timer.fired:
                continue
            if now - timer.since >= self.round_timeout_s * (replica.round + 1):
                timer.fired = True
                self.node.submit_internal(key, [Tx.of(Timeout(*at))])
        for key in list(self._timers):
            if key not in live:
                del self._timers[key]
        self._resend_due(now, active)

    def _resend_due(
        self,
        now: float,
        active: list[tuple[tuple[bytes, bytes], rep.Replica]],
        force: bool = False,
    ) -> None:
        """Send each pending channel frame again to its counterparty once it has waited
        ``resend_s`` (all of them if ``force``), one replica per entity doing it for
        this server; and take one more page of each unswept entity's kept messages.
        Costs the frames waiting and the pages, not the channels. ``active`` is
        :meth:`_active_replicas`."""
        seen: set[bytes] = set()
        for _, replica in active:
            entity = replica.entity_id
            if entity in seen or not replica.mailbox:
                continue
            seen.add(entity)
            waiting = self._waiting.setdefault(entity, {})
            if entity not in self._swept:
                self._sweep(entity, replica, waiting, now)
            due = sorted(p for p, at in waiting.items() if force or now - at >= self.resend_s)
            for peer in due:
                effects = rep.resend_to(replica, peer)
                if not effects:
                    del waiting[peer]  # acked: nothing pending for it
                    continue
                waiting[peer] = now
                for effect in effects:
                    assert isinstance(effect, rep.Transmit)
                    self._transmit(replica.signer, effect.to, effect.entity, effect.tx)

    def _sweep(
        self, entity: bytes, replica: rep.Replica, waiting: dict[bytes, float], now: float
    ) -> None:
        """One page of ``entity``'s kept messages: their pending frames are due now
        (they may have waited since before a restart)."""
        found, last = replica.mailbox.pending_page(self._sweeps.get(entity), SWEEP_PAGE)
        for peer in found:
            waiting.setdefault(peer, now - self.resend_s)
        if last is None:
            self._swept.add(entity)
            self._sweeps.pop(entity, None)
        else:
            self._sweeps[entity] = last

    # Catch-up ---------------------------------------------------------------------------

    def _on_peer_change(self, link: PeerLink) -> None:
        self._introduce(link)
        self._resend_due(self._clock(), self._active_replicas(), force=True)
        entities: set[bytes] = set()
        for member in link.hosted:
            entities |= self._by_member.get(member, set())
        for entity in sorted(entities):
            replicas = self._replicas_of(entity)
            if any(link.hosted & set(r.entity.config.ids) for r in replicas):
                self.request_sync(entity)

    def request_sync(self, entity: bytes) -> None:
        if entity in self._syncing:
            return
        self._syncing.add(entity)
        self._spawn(self._sync(entity))

    async def _sync(self, entity: bytes) -> None:
        try:
            while True:
                replicas = self._replicas_of(entity)
                if not replicas:
                    return
                start = min(r.next_height for r in replicas)
                frames = await self._fetch(entity, start, replicas[0])
                if not frames:
                    return
                for r in replicas:
                    txs = [
                        Tx.of(Commit(Frame.decode(raw), cert))
                        for raw, cert in frames
                        if Frame.decode(raw).height >= r.next_height
                    ]
                    if txs:
                        self.node.submit_internal((r.signer, entity), txs)
                target = start + len(frames)
                if not await self._wait_for(entity, target):
                    return
                if len(frames) < SYNC_PAGE:
                    return
        finally:
            self._syncing.discard(entity)

    def _replicas_of(self, entity: bytes) -> list[rep.Replica]:
        """This server's replicas of ``entity``, in ascending signer id."""
        state = self.node.state
        found = (state.replica(s, entity) for s in sorted(self._holders.get(entity, ())))
        return [r for r in found if r is not None]

    async def _fetch(
        self, entity: bytes, start: int, replica: rep.Replica
    ) -> list[tuple[bytes, Certificate]]:
        local = await asyncio.to_thread(self.store.frames, entity, start, SYNC_PAGE)
        if local:
            return local
        if self.peers is None:
            return []
        members = set(replica.entity.config.ids)
        for link in self.peers.links:
            if link.connected and link.hosted & members:
                try:
                    frames = await self.peers.get_frames(link, entity, start, SYNC_PAGE)
                except (ConnectionError, TimeoutError) as exc:
                    log.info("catch-up from %s failed: %r", link.url, exc)
                    continue
                if frames:
                    return frames
        return []

    async def _wait_for(self, entity: bytes, height: int, timeout_s: float = 10.0) -> bool:
        """Wait until every local replica of ``entity`` reached ``height`` (or gave up)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not all(r.next_height >= height for r in self._replicas_of(entity)):
                    self._stepped.clear()
                    await self._stepped.wait()  # set after every durable block
        except TimeoutError:
            return False
        return True


async def _gather(coros: Sequence[Awaitable[None]]) -> None:
    await asyncio.gather(*coros)
