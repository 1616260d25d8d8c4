"""The wallet's egg agent: one :class:`WalletAgent` per signer key.

It connects to the node as that signer's agent (``node.net.agent_client``) and
answers each SIGN request as ``docs/WALLET.md`` says:

1. decode the frame, read the entity's agreed state as the signer's replica holds
   it (``READ_ENTITY``, every part proven against its certified state hash) and
   ``analyze`` the frame on it;
2. a frame hash already approved is signed again at a later round without
   asking (the guard's lock allows nothing else at that height anyway);
3. accountant on: APPROVE signs, REJECT refuses, ASK goes to the human (a
   headless agent refuses);
4. otherwise the request waits in the :class:`ApprovalQueue` until approved,
   rejected, or expired (a little before the node's ``SIGN_TIMEOUT_S``);
5. while locked, an approved request waits for unlock or expires: nothing is
   signed while locked;
6. signing is :meth:`node.agent.Agent.sign_precommit` on a worker thread: the
   guard in ``DATA/guard/<signer hex>`` records the signature durably first; it
   returns the pre-commit and the signatures over the frame's outbox (its
   channel frames, acks, signer-set announcement), which ``analyze`` checked is
   exactly what the frame produces;
7. once signed, the frame's outgoing payments go in the spend ledger
   (``flows/payments.py``), which the accountant's period limits read.

The node also asks (``BIND``) for the signer's binding of its identity key, with
which it signs the signer's round changes to other servers: :meth:`WalletAgent.bind`
answers from the guard (the same binding for the same key), so a wallet locked
later never holds up a round change.

Every decision is logged (logger ``wallet.agent``) with its reason and appears
in the approval queue, automatic ones marked with their rule. The key is held
in a :class:`node.agent.Agent` only while the wallet is unlocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from node.agent import Agent, Refused, SignedAt
from node.entity_reads import ProofError, UnverifiedRead
from node.machines.binding import ServerBinding
from node.machines.entity import EntityState
from node.machines.frames import Frame, Polka, Signatures
from node.machines.governance import Config
from node.machines.refusal import Refusal
from node.net.agent_client import AgentRejected, serve_signer
from node.net.client import NodeError
from node.net.remote_map import ReadNeeded, assume_waiting, carry_reads, is_partial, read_at
from node.net.server import SIGN_TIMEOUT_S
from node.net.tls import ClientTrust
from wallet.connection import WHOLE_UP_TO, holdable
from wallet.flows.accountant import Rules, Verdict
from wallet.flows.approvals import YOU, ApprovalQueue, ApprovalRequest, Notifications, Status
from wallet.flows.effects import FrameAnalysis, analyze, short
from wallet.flows.payments import SpendLedger

log = logging.getLogger("wallet.agent")

GUARD_DIR = "guard"
# A human's answer must reach the node before it gives up on the request.
APPROVAL_MARGIN_S = 3.0
DEFAULT_TTL_S = SIGN_TIMEOUT_S - APPROVAL_MARGIN_S
APPROVED_MEMO = 4096
AFTER_MEMO = 8  # states after recently analyzed frames

type ReadEntity = Callable[[bytes, bytes], Awaitable[EntityState | None]]


class KeySource(Protocol):
    """Where the secret key comes from (the vault)."""

    @property
    def locked(self) -> bool: ...

    def secret_key(self, signer_id: bytes) -> int: ...


@dataclass
class Policy:
    """How requests are decided; shared by every agent of a wallet and changed live."""

    accountant_on: bool = False
    rules: Rules | None = None  # None: the accountant's default rules
    headless: bool = False  # no human: ASK means refuse
    ttl_s: float = DEFAULT_TTL_S  # how long a request may wait for a human or an unlock
    # Payments signed (period limits read it); None: judged as if nothing was spent.
    ledger: SpendLedger | None = None

    def judge_rules(self) -> Rules:
        if self.rules is None:
            self.rules = Rules.default()
        return self.rules


class WalletAgent:
    def __init__(
        self,
        signer: bytes,
        keys: KeySource,
        guard_root: Path,
        read_entity: ReadEntity,
        queue: ApprovalQueue,
        policy: Policy,
        unlocked: asyncio.Event,
        notifications: Notifications | None = None,
        label: str = "",
        known_state: Callable[[bytes], EntityState | None] | None = None,
        whole_up_to: int = WHOLE_UP_TO,
        restored: bool = False,
    ) -> None:
        """``known_state(entity)``: the signer's replica's state as the wallet already
        holds it (certified frames applied to a proven read), if any: tried before a
        read when the frame does not follow one this agent analyzed. A state after a
        frame is kept for the next frame if :func:`~wallet.connection.holdable` with
        ``whole_up_to``. ``restored``: the signer was restored from its phrase into
        this folder (``wallet/flows/restore.py``): its guard is marked so before it
        signs anything, and signs for an entity only above the floor the node gives."""
        self.signer = signer
        self.restored = restored
        self.whole_up_to = whole_up_to
        self.known_state = known_state
        self.label = label or signer.hex()[:12]
        self.keys = keys
        self.guard_dir = guard_root / signer.hex()
        self.read_entity = read_entity
        self.queue = queue
        self.policy = policy
        self.unlocked = unlocked  # set while the wallet is unlocked
        self.notifications = notifications
        self.connected = False
        self.on_link: list[Callable[[bool], None]] = []
        self._approved: OrderedDict[bytes, None] = OrderedDict()  # frame hashes
        self._analyses: OrderedDict[bytes, FrameAnalysis] = OrderedDict()  # not yet signed
        self._after: OrderedDict[bytes, EntityState] = OrderedDict()  # frame hash -> post
        self._agent: Agent | None = None
        self._signing = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False  # after stop(): the guard is not opened again

    # Running ------------------------------------------------------------------

    def start(self, url: str, token: str, trust: ClientTrust | None = None) -> None:
        """Serve the signer at ``url``; a ``wss://`` node's certificate is checked as
        ``trust`` says (the wallet's accepted fingerprint or CA file)."""
        if self._task is not None and not self._task.done():
            return
        self._stopped = False
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._serve(url, token, trust))

    async def _serve(self, url: str, token: str, trust: ClientTrust | None) -> None:
        try:
            await serve_signer(
                url,
                token,
                self.signer,
                self.approve,
                self.sign,
                self._stop,
                on_link=self._link,
                trust=trust,
                bind=self.bind,
                floor=self.set_floor,
            )
        except AgentRejected as exc:
            log.error("agent of %s: %s", self.label, exc)

    def _link(self, up: bool) -> None:
        self.connected = up
        for callback in list(self.on_link):
            callback(up)

    async def stop(self) -> None:
        self._stopped = True
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.forget_key()

    async def forget_key(self) -> None:
        """Close the signing agent (the wallet locked): the key leaves memory."""
        async with self._signing:
            agent, self._agent = self._agent, None
            if agent is not None:
                await asyncio.to_thread(agent.close)

    # Answering ----------------------------------------------------------------

    async def approve(
        self, entity: bytes, frame_raw: bytes, round_: int, config: Config, valid: Polka | None
    ) -> bytes:
        """The approving callback of the agent protocol (APPROVE): the person's or the
        accountant's decision, then the guard's approval; or Refused."""
        try:
            frame = Frame.decode(frame_raw)
        except ValueError as exc:
            log.warning("refused an APPROVE for %s: not a frame: %s", self.label, exc)
            raise Refused(f"not a frame: {exc}") from None
        if frame.entity_id != entity:
            raise Refused("the frame is for another entity than the route says")
        what = f"frame {frame.hash.hex()[:12]} height {frame.height} round {round_}"
        if frame.hash in self._approved:
            request = self.queue.again(self.signer, entity, frame, round_, self.policy.ttl_s)
            log.info(
                "%s: %s approved again (already approved at an earlier round)", self.label, what
            )
            return await self._sign_approved(request, config, valid, round_)
        analysis = await self._analyze(entity, frame)
        request = await self._decide(entity, frame, round_, analysis, what)
        return await self._sign_approved(request, config, valid)

    async def sign(
        self,
        entity: bytes,
        height: int,
        round_: int,
        frame_hash: bytes,
        polka: Polka,
        config: Config,
    ) -> Signatures:
        """The pre-commit callback of the agent protocol (SIGN, after a polka): the
        pre-commit and the frame's outgoing signatures of the frame this wallet
        approved at (height, round) (its guard checks the polka and its own approval
        record there, which holds the frame's hashes); nobody is asked again. Waits
        for an unlock, up to the request's time."""
        if frame_hash not in self._approved:
            raise Refused("this wallet did not approve that frame")
        await self._wait_unlocked()
        async with self._signing:
            agent = await self._open()
            signature = await asyncio.to_thread(
                agent.sign_precommit, entity, height, round_, frame_hash, polka, config
            )
        analysis = self._analyses.pop(frame_hash, None)
        if analysis is not None and self.policy.ledger is not None:
            self.policy.ledger.record(analysis)
        log.info(
            "%s: pre-committed frame %s at round %d (and %d outgoing channel messages)",
            self.label,
            frame_hash.hex()[:12],
            round_,
            len(signature.outbox),
        )
        return signature

    async def _analyze(self, entity: bytes, frame: Frame) -> FrameAnalysis | None:
        # The state after a frame we analyzed is the state before the next one if that
        # frame was certified (the next one names it as prev_hash): a hub's frames come
        # one after another, and reading the replica costs more than executing.
        state = self._after.get(frame.prev_hash)
        if not _before(state, entity, frame) and self.known_state is not None:
            # A frame this agent was not asked about came between (the others made its
            # quorum): the wallet applied it to the state it holds.
            state = self.known_state(entity)
        if not _before(state, entity, frame):
            try:
                read = await self.read_entity(self.signer, entity)
            except (ConnectionError, OSError, ProofError, UnverifiedRead) as exc:
                log.warning("%s: cannot read the entity to check a frame: %s", self.label, exc)
                return None
            if read is None:
                return None
            state = read
        assert state is not None  # _before held, or a read gave it
        try:
            analysis = await analyze_frame(state, frame)
        except (ConnectionError, OSError, TimeoutError, NodeError) as exc:
            log.warning("%s: cannot read the entity to check a frame: %s", self.label, exc)
            return None
        if analysis.new_state is not None and holdable(analysis.new_state, self.whole_up_to):
            self._after[frame.hash] = analysis.new_state
            while len(self._after) > AFTER_MEMO:
                self._after.popitem(last=False)
        return analysis

    async def _decide(
        self,
        entity: bytes,
        frame: Frame,
        round_: int,
        analysis: FrameAnalysis | None,
        what: str,
    ) -> ApprovalRequest:
        """Approved (auto or human) requests return; anything else raises Refused."""
        policy = self.policy
        if analysis is None:
            reason = "the wallet could not read this signer's replica to check the frame"
            await self._refuse_record(entity, frame, round_, None, "wallet", reason, what)
        if policy.accountant_on:
            decision = policy.judge_rules().judge(analysis, policy.ledger)
            by = f"accountant: {decision.rule}" if decision.rule else "accountant"
            if decision.verdict is Verdict.APPROVE:
                request = self.queue.record(
                    self.signer,
                    entity,
                    frame,
                    round_,
                    analysis,
                    Status.APPROVED,
                    by,
                    decision.reason,
                    policy.ttl_s,
                )
                log.info("%s: %s approved by %s: %s", self.label, what, by, decision.reason)
                self._remember(frame.hash, analysis)
                return request
            if decision.verdict is Verdict.REJECT:
                await self._refuse_record(
                    entity, frame, round_, analysis, by, decision.reason, what
                )
            log.info("%s: %s: the accountant asks: %s", self.label, what, decision.reason)
        if policy.headless:
            await self._refuse_record(
                entity,
                frame,
                round_,
                analysis,
                "headless",
                "needs a human and there is none (headless agent)",
                what,
            )
        known = len(self.queue.pending())
        request = self.queue.add(self.signer, entity, frame, round_, analysis, policy.ttl_s)
        log.info("%s: %s waits for your approval (request %d)", self.label, what, request.id)
        if self.notifications is not None and len(self.queue.pending()) > known:
            self.notifications.notify(
                "Approval needed", f"{self.label}: {what} of entity {short(entity)}"
            )
        status = await self.queue.wait(request, round_)
        if status is None:
            log.info("%s: %s: asked again at round %d", self.label, what, request.round)
            raise Refused(f"asked again at round {request.round}: this round is over")
        if status is Status.APPROVED:
            log.info("%s: %s approved by %s", self.label, what, request.decided_by)
            self._remember(frame.hash, analysis)
            return request
        log.info("%s: %s %s: %s", self.label, what, status.value, request.reason)
        message = f"{status.value} by the wallet: {request.reason}"
        if status is Status.REJECTED:
            by = "by hand" if request.decided_by == YOU else f"by {request.decided_by}"
            said = "" if request.reason == "rejected" else f": {request.reason}"
            raise Refused(
                message, await self._signed_refusal(frame, round_, f"rejected {by}{said}")
            )
        raise Refused(message)

    async def _signed_refusal(self, frame: Frame, round_: int, reason: str) -> Refusal | None:
        """This signer's signed refusal with ``reason``, which the node shows the proposer
        and the other members; None while the wallet is locked (a refusal is not worth
        waiting for an unlock: the frame is asked again)."""
        if not self.unlocked.is_set() or self.keys.locked:
            return None
        try:
            async with self._signing:
                agent = await self._open()
                return await asyncio.to_thread(agent.sign_refusal, frame.raw, round_, reason)
        except Refused as exc:
            log.warning("%s: could not sign the refusal: %s", self.label, exc)
            return None

    async def _refuse_record(
        self,
        entity: bytes,
        frame: Frame,
        round_: int,
        analysis: FrameAnalysis | None,
        by: str,
        reason: str,
        what: str,
    ) -> NoReturn:
        self.queue.record(self.signer, entity, frame, round_, analysis, Status.REJECTED, by, reason)
        log.info("%s: %s rejected by %s: %s", self.label, what, by, reason)
        refusal = await self._signed_refusal(frame, round_, f"rejected by {by}: {reason}")
        raise Refused(f"rejected by {by}: {reason}", refusal)

    def _remember(self, frame_hash: bytes, analysis: FrameAnalysis | None) -> None:
        self._approved[frame_hash] = None
        while len(self._approved) > APPROVED_MEMO:
            self._approved.popitem(last=False)
        if analysis is not None:  # its payments go in the ledger once pre-committed
            self._analyses[frame_hash] = analysis
            while len(self._analyses) > APPROVED_MEMO:
                self._analyses.popitem(last=False)

    # Signing ------------------------------------------------------------------

    async def _sign_approved(
        self,
        request: ApprovalRequest,
        config: Config,
        valid: Polka | None,
        round_: int | None = None,
    ) -> bytes:
        """Approve in the guard once unlocked (at ``round_``, default the request's);
        expire if the wallet stays locked past the request's time."""
        if not self.unlocked.is_set() or self.keys.locked:
            log.info("%s: request %d waits for the wallet to be unlocked", self.label, request.id)
            remaining = request.remaining(self.queue.clock())
            try:
                async with asyncio.timeout(remaining):
                    await self.unlocked.wait()
            except TimeoutError:
                self.queue.expire(request, "the wallet stayed locked")
                log.info("%s: request %d expired: the wallet stayed locked", self.label, request.id)
                raise Refused("the wallet is locked") from None
        try:
            at = request.round if round_ is None else round_
            async with self._signing:
                agent = await self._open()
                approval = await asyncio.to_thread(
                    agent.approve, request.frame.raw, at, config, valid
                )
        except Refused as exc:
            self.queue.update(request, signed=False)
            log.warning("%s: the guard refused request %d: %s", self.label, request.id, exc)
            raise
        self.queue.update(request, signed=True)
        log.info(
            "%s: approved frame %s at round %d",
            self.label,
            request.frame_hash.hex()[:12],
            at,
        )
        return approval

    async def _open(self) -> Agent:
        """The signing agent, made from the vault's key if it is not open (under
        ``_signing``); raises Refused when the key is not available."""
        if self._agent is None:
            if self._stopped:
                raise Refused("the agent is stopped")
            try:
                sk = self.keys.secret_key(self.signer)
            except Exception as exc:  # Locked raced us, or the key is gone
                raise Refused(f"the key is not available: {exc}") from None
            agent = await asyncio.to_thread(Agent, sk, self.guard_dir)
            if self.restored:
                try:
                    await asyncio.to_thread(agent.mark_restored)
                except BaseException:
                    await asyncio.to_thread(agent.close)
                    raise
            self._agent = agent
        return self._agent

    async def _wait_unlocked(self) -> None:
        """Until the wallet is unlocked, up to the request's time; Refused after."""
        if not self.unlocked.is_set() or self.keys.locked:
            try:
                async with asyncio.timeout(self.policy.ttl_s):
                    await self.unlocked.wait()
            except TimeoutError:
                raise Refused("the wallet is locked") from None

    async def floor_of(self, entity: bytes) -> int | None:
        """The floor the guard holds for ``entity`` (None: none). Waits for an unlock."""
        await self._wait_unlocked()
        async with self._signing:
            agent = await self._open()
            return await asyncio.to_thread(agent.floor, entity)

    async def signing_record(self) -> dict[bytes, SignedAt]:
        """What the guard pre-committed, per entity (``Agent.signing_record``: the
        highest height, its round and frame hash), for a backup. Waits for an unlock."""
        await self._wait_unlocked()
        async with self._signing:
            agent = await self._open()
            return await asyncio.to_thread(agent.signing_record)

    async def set_floor(self, entity: bytes, height: int, binding_serial: int = 0) -> int:
        """The agent protocol's FLOOR (after a restore): sign nothing for ``entity`` at
        or below ``height``, and bind servers above ``binding_serial``; recorded in the
        guard before the answer. The floor held now. Waits for an unlock like BIND."""
        await self._wait_unlocked()
        async with self._signing:
            agent = await self._open()
            floor = await asyncio.to_thread(agent.set_floor, entity, height, binding_serial)
        log.info("%s: signs nothing for %s at or below %d", self.label, entity.hex()[:12], floor)
        return floor

    async def bind(self, server_key: bytes) -> ServerBinding:
        """The agent protocol's BIND: this signer's binding of its node's identity key,
        so that node signs the signer's round changes to other servers (liveness only:
        a round change moves no money, and pre-commits stay with this wallet). The
        guard returns the same binding for the same key, so it is asked for the key
        once per node connection; while the wallet is locked the request waits for an
        unlock, up to the request's time. Not a human decision: logged."""
        await self._wait_unlocked()
        async with self._signing:
            agent = await self._open()
            binding = await asyncio.to_thread(agent.bind_server, server_key)
        log.info(
            "%s: bound its node's server key %s (serial %d)",
            self.label,
            server_key.hex()[:16],
            binding.serial,
        )
        return binding


def _before(state: EntityState | None, entity: bytes, frame: Frame) -> bool:
    """Whether ``state`` can be the state ``frame`` applies to (analyze checks it
    further: the frame's state hash after it)."""
    return state is not None and state.entity_id == entity and state.height + 1 == frame.height


async def analyze_frame(state: EntityState, frame: Frame) -> FrameAnalysis:
    """``analyze`` on the state before ``frame``, on the loop (a thread would only trade
    the interpreter's lock with the loop, slowing both). A partial state's maps are
    read from the node as the execution walks them (``node/net/remote_map.py``): a
    walk that reaches a node not read yet stops the execution (``ReadNeeded``), which
    then runs again off the loop while the loop runs those reads (the execution is
    pure: the first attempt changed nothing). A hub's frames mostly walk what earlier
    frames read or made, so most run on the loop. The outcome of a partial state is
    partial too. Raises what a read raises (ConnectionError, OSError, TimeoutError,
    NodeError)."""
    if not is_partial(state):
        return analyze(state, frame)
    read_at(state)
    assume_waiting(state, frame)
    try:
        analysis = analyze(state, frame)
    except ReadNeeded:
        analysis = await asyncio.to_thread(analyze, state, frame)
    if analysis.new_state is not None:
        carry_reads(analysis.new_state, state)
    return analysis
