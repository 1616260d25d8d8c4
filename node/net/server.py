"""The node's WebSocket endpoint: sessions, authentication, and request dispatch.

Two listeners share one handler:

- TCP (``--host``, default 127.0.0.1): the first message must be HELLO with an
  API token; every later request is checked against the token's scope.
- The control socket ``<data>/node.sock`` (POSIX): a Unix socket in the
  0700 data folder, so file permissions authenticate it; sessions there start
  with server scope. The CLI uses it while a running node holds LevelDB.

Three kinds of sender (see docs/PROTOCOL.md):

- clients authenticate with an API token; its scope is checked on every message;
- peer servers ask for a challenge (CHALLENGE) and answer it in their HELLO,
  signed with their node identity key (node/identity.py); they may only
  deliver entity inputs (or ``create_entity`` and ``join_entity`` to a signer,
  a ``join_entity`` only once the certified frame that added the signer checks
  out, ``node/join_proof.py``),
  proposals, and read certified frames; a round change only as
  ``signed_round_change``, from the server its member bound, and checked before
  it is queued;
- agents authenticate with a token whose scope reaches their signer; the node
  then sends them APPROVE and SIGN requests (and BIND, for its server binding) on that
  connection and they reply.

A bad frame gets an ERROR reply and changes nothing. Only authentication
failures close the connection (and, before HELLO, any error).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed

from node import entity_reads as reads
from node.agent import Refused
from node.codec import (
    HASH_LEN,
    DecodeError,
    Limits,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_bytes,
    encode_list,
    encode_tree,
    encode_uint,
    scan,
)
from node.coordinator import AgentUnavailable, Coordinator
from node.errors import Busy, NotFound, ShuttingDown, TooLarge, UnknownRoute
from node.identity import CHALLENGE_LEN, check_hello, new_challenge
from node.join_proof import JoinRefused, check_join
from node.machines import replica as rep
from node.machines import signer as sig
from node.machines.binding import ServerBinding
from node.machines.entity import SIG_LEN, EntityState
from node.machines.frames import MAX_OUTBOX, Polka, Signatures
from node.machines.governance import Config
from node.machines.refusal import Refusal
from node.memberships import MAX_PAGE as MAX_MEMBERSHIPS_PAGE
from node.net import limits, peer_auth
from node.net.protocol import (
    MAX_BLOCKS_PER_PAGE,
    MAX_TOKEN_BYTES,
    MAX_TXS_PER_SUBMIT,
    PROTOCOL_VERSION,
    Err,
    ProtocolError,
    Rep,
    Reply,
    Req,
    Request,
    Sender,
    SenderKind,
    Topic,
    decode_request,
    encode_error,
    encode_reply,
    encode_request_raw,
    is_reply,
    reply_from,
    request_from,
)
from node.net.sliced_decode import decode_sliced, scan_sliced
from node.net.tls import plain_token_refusal
from node.restore import FindRefused, find_entities
from node.runtime import Ack, BlockEvent, CommitEvent, FrameEvent, Node, Priority, Subscription
from node.tokens import Scope, TokenStore
from node.txs import REGISTRIES, Level, Tx, registry_for_depth

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS_PER_SESSION = limits.MAX_SUBSCRIPTIONS_PER_SESSION
MAX_BLOCKS_REPLY_BYTES = 8 * 1024 * 1024
UNIX_PATH_MAX = 100
SERVER_WIDE = frozenset(
    {
        Req.HELLO,
        Req.CHALLENGE,
        Req.STATUS,
        Req.UNSUBSCRIBE,
        Req.GET_BLOCKS,
        Req.METRICS,
        Req.DELIVER,
        Req.PROPOSAL,
        Req.GET_FRAMES,
        Req.PEER_INFO,
        Req.MEMBERSHIPS,
    }
)
PEER_REQUESTS = frozenset(
    {
        Req.HELLO,
        Req.CHALLENGE,
        Req.STATUS,
        Req.DELIVER,
        Req.PROPOSAL,
        Req.GET_FRAMES,
        Req.PEER_INFO,
        Req.MEMBERSHIPS,
    }
)
# What a connection may send before its HELLO (TCP): a peer server asks its challenge.
PRE_HELLO_REQUESTS = frozenset({Req.HELLO, Req.CHALLENGE})
# What a peer may deliver: entity inputs except the node's own (its clock's timeouts,
# its replicas' unsigned round changes): a batch only if a member signed it, a round
# change only signed by the server bound to its member (and sent by that server);
# and create_entity and join_entity to a signer (a join with its proof).
PEER_ENTITY_INPUTS = frozenset(
    {
        rep.SubmitBatch.TYPE,
        rep.Approve.TYPE,
        rep.PolkaNotice.TYPE,
        rep.Precommit.TYPE,
        rep.Commit.TYPE,
        rep.SeenLock.TYPE,
        rep.SignedRoundChange.TYPE,
        rep.AnnounceBinding.TYPE,  # a member's binding of its server (a revocation too)
        rep.Deliver.TYPE,  # a channel message for an entity hosted here, from its counterparty
        rep.RefusalInput.TYPE,  # a member's signed refusal: kept beside the replicas, not queued
    }
)
PEER_SIGNER_INPUTS = frozenset({sig.CreateEntity.TYPE, sig.JoinEntity.TYPE})
# What a peer may deliver only while it speaks for a member of the entity
# (``peer_auth``): everything but the inputs that prove their sender themselves (a
# round change names its bound server; a channel message carries the counterparty's
# quorum signature) and a server's introduction of its own binding.
PEER_MEMBER_INPUTS = frozenset(
    {
        rep.SubmitBatch.TYPE,
        rep.Approve.TYPE,
        rep.PolkaNotice.TYPE,
        rep.Precommit.TYPE,
        rep.Commit.TYPE,
        rep.SeenLock.TYPE,
        rep.AnnounceBinding.TYPE,
        rep.RefusalInput.TYPE,
    }
)
MAX_FRAMES_PER_PAGE = 256
SIGN_TIMEOUT_S = 30.0
# How long closing waits for a connection's owed replies (a client that reads nothing).
CLOSE_TIMEOUT_S = 10.0
SHUTDOWN_NOTICE = "the node is shutting down; requests not answered before this were not applied"


@dataclass(eq=False)
class Session:
    local: bool
    tls: bool = False  # a TCP connection over TLS (wss://)
    remote_host: str | None = None  # a TCP connection's peer address
    scope: Scope | None = None
    token_id: str | None = None
    sender: Sender | None = None
    next_sub_id: int = 1
    subs: dict[int, tuple[Subscription, asyncio.Task[None]]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    peer: bytes | None = None  # a peer server's identity key
    # The members a peer server's bindings it introduced on this connection speak for.
    bindings: peer_auth.PeerBindings | None = None
    agent: RemoteAgent | None = None
    awaiting_hello: bool = False  # a TCP connection that has not yet authenticated
    hello_deadline: float = float("inf")  # time.monotonic() by which HELLO must succeed
    # The challenge a peer asked for on this connection (CHALLENGE); a HELLO uses it up.
    challenge: bytes | None = None

    @property
    def authenticated(self) -> bool:
        return self.scope is not None or self.peer is not None

    receipts: set[asyncio.Task[None]] = field(default_factory=set)  # RECEIPTS still owed
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # no request being handled
    closing: bool = False  # the node is closing it: read no more requests

    def __post_init__(self) -> None:
        self.idle.set()


class RemoteAgent:
    """The agent of one signer, on the far side of its WebSocket (the egg-agent protocol)."""

    def __init__(self, ws: ServerConnection, signer: bytes, node_id: bytes) -> None:
        self.ws = ws
        self.signer = signer
        self.node_id = node_id
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[Rep, list[RlpItem]]]] = {}

    async def _ask(self, req: Req, route: tuple[bytes, ...], body: list[bytes]) -> list[RlpItem]:
        """Send ``req`` to the agent and wait for its answer's body; raises
        AgentUnavailable (no answer) or Refused (an ERROR)."""
        rid = next(self._ids)
        future: asyncio.Future[tuple[Rep, list[RlpItem]]] = (
            asyncio.get_running_loop().create_future()
        )
        if len(self._waiting) >= limits.MAX_PENDING_SIGN_REQUESTS:
            raise AgentUnavailable(
                f"agent has {len(self._waiting)} requests unanswered, the most a node"
                " keeps waiting on one agent"
            )
        self._waiting[rid] = future
        frame = encode_request_raw(req, rid, Sender(SenderKind.SERVER, self.node_id), route, body)
        try:
            await self.ws.send(frame)
            async with asyncio.timeout(SIGN_TIMEOUT_S):
                rep_type, reply = await future
        except (ConnectionClosed, TimeoutError) as exc:
            raise AgentUnavailable(f"agent did not answer: {exc!r}") from None
        finally:
            self._waiting.pop(rid, None)
        if rep_type is Rep.ERROR:
            raise Refused(as_bytes(reply[1], "message").decode("utf-8", "replace"))
        if rep_type is Rep.REFUSAL:
            try:
                if len(reply) != 1:
                    raise DecodeError("REFUSAL body is [refusal]")
                refusal = Refusal.from_item(reply[0])
            except DecodeError as exc:
                raise Refused(f"agent sent a malformed refusal: {exc}") from None
            raise Refused(f"refused by its agent: {refusal.reason}", refusal)
        return reply

    async def approve(
        self, entity: bytes, frame_raw: bytes, round_: int, config: Config, valid: Polka | None
    ) -> bytes:
        """The signer's approval of the frame at ``round_`` (APPROVE): its person or
        accountant decides; a refusal comes back as Refused with the signed refusal."""
        body = await self._ask(
            Req.APPROVE,
            (self.signer, entity),
            [
                frame_raw,
                encode_uint(round_),
                encode_tree(config.to_tree()),
                valid.raw if valid is not None else encode_tree([]),
            ],
        )
        try:
            if len(body) != 1:
                raise DecodeError("APPROVAL body is [signature]")
            return as_bytes(body[0], "approval", size=SIG_LEN)
        except DecodeError as exc:
            raise Refused(f"agent sent a malformed approval: {exc}") from None

    async def sign_precommit(
        self,
        entity: bytes,
        height: int,
        round_: int,
        frame_hash: bytes,
        polka: Polka,
        config: Config,
    ) -> Signatures:
        """The signer's pre-commit of the frame it approved at (height, round), named by
        its hash (SIGN): the agent signs what its own approval recorded."""
        body = await self._ask(
            Req.SIGN,
            (self.signer, entity),
            [
                encode_uint(height),
                encode_uint(round_),
                encode_bytes(frame_hash),
                polka.raw,
                encode_tree(config.to_tree()),
            ],
        )
        try:
            if len(body) != 2:
                raise DecodeError("SIGNATURE body is [signature, [outgoing signature...]]")
            return Signatures(
                as_bytes(body[0], "signature", size=SIG_LEN),
                tuple(
                    as_bytes(x, "outgoing signature", size=SIG_LEN)
                    for x in as_list(body[1], "outgoing signatures", max_len=MAX_OUTBOX)
                ),
            )
        except (DecodeError, IndexError) as exc:
            raise Refused(f"agent sent a malformed signature: {exc}") from None

    async def bind_server(self, server_key: bytes) -> ServerBinding:
        """The signer's binding of ``server_key`` (BIND); the coordinator checks it."""
        body = await self._ask(Req.BIND, (self.signer,), [encode_bytes(server_key)])
        try:
            if len(body) != 1:
                raise DecodeError("BINDING body is [binding]")
            return ServerBinding.from_item(body[0])
        except DecodeError as exc:
            raise Refused(f"agent sent a malformed binding: {exc}") from None

    async def set_floor(self, entity: bytes, height: int, binding_serial: int) -> int:
        """Tell the agent its floor for ``entity`` after a restore (FLOOR); the floor
        it now holds."""
        body = await self._ask(
            Req.FLOOR,
            (self.signer, entity),
            [encode_uint(height), encode_uint(binding_serial)],
        )
        try:
            if len(body) != 1:
                raise DecodeError("FLOOR reply body is [floor]")
            floor = as_int(body[0], "floor")
        except DecodeError as exc:
            raise Refused(f"agent sent a malformed floor: {exc}") from None
        if floor < height:
            raise Refused(f"agent holds floor {floor}, below {height}")
        return floor

    def on_reply(self, reply: Reply) -> None:
        future = self._waiting.get(reply.request_id)
        if future is not None and not future.done():
            future.set_result((reply.type, reply.body))

    def fail_all(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionClosed(None, None))


class ApiServer:
    """Serves one :class:`Node` over WebSocket."""

    def __init__(
        self,
        node: Node,
        tokens: TokenStore,
        node_id: bytes,
        hello_timeout_s: float = limits.HELLO_TIMEOUT_S,
        coordinator: Coordinator | None = None,
        max_connections: int = limits.MAX_CONNECTIONS,
        receiver_id: bytes | None = None,
        challenges: Callable[[], bytes] = new_challenge,
    ) -> None:
        """``receiver_id``: this server's id in the challenges it gives peers (its
        identity key's id; ``node_id`` when it has none). ``challenges``: where the
        challenges come from (random; the protocol document's replay fixes them)."""
        self.node = node
        self.receiver_id = node_id if receiver_id is None else receiver_id
        self.challenges = challenges
        self.max_connections = max_connections
        self.gate = limits.HeavyGate()
        self.joins = limits.JoinQuota()
        # The join_entity proofs being checked, by (signer, entity, height).
        self._join_checks: dict[tuple[bytes, bytes, int], asyncio.Task[None]] = {}
        self.quotas = limits.Quotas()
        # Proposals each peer has being checked and answered (in the coordinator).
        self._proposals: dict[bytes, int] = {}
        self.coordinator = coordinator
        self.hello_timeout_s = hello_timeout_s
        self.tokens = tokens
        self.node_id = node_id
        self._servers: list[Server] = []
        self._sessions: dict[Session, ServerConnection] = {}
        self._closing = False
        self._handlers: dict[
            Req, Callable[[ServerConnection, Session, Request], Awaitable[None]]
        ] = {
            Req.HELLO: self._hello,
            Req.CHALLENGE: self._challenge,
            Req.SUBMIT: self._submit,
            Req.STATUS: self._status,
            Req.READ_STATE: self._read_state,
            Req.READ_ENTITY: self._read_entity,
            Req.SUBSCRIBE: self._subscribe,
            Req.UNSUBSCRIBE: self._unsubscribe,
            Req.GET_BLOCKS: self._get_blocks,
            Req.METRICS: self._metrics,
            Req.DELIVER: self._deliver,
            Req.PROPOSAL: self._proposal,
            Req.GET_FRAMES: self._get_frames,
            Req.PEER_INFO: self._peer_info,
            Req.SIGN: self._sign,
            Req.APPROVE: self._sign,
            Req.BIND: self._sign,
            Req.FLOOR: self._sign,
            Req.MEMBERSHIPS: self._memberships,
            Req.FIND_ENTITIES: self._find_entities,
        }

    async def listen_tcp(self, host: str, port: int, ssl: SSLContext | None = None) -> int:
        """Start listening, over TLS (``wss://``) with ``ssl``; returns the bound port
        (useful with port 0)."""
        server = await serve(
            lambda ws: self._serve(ws, local=False),
            host,
            port,
            ssl=ssl,
            max_size=limits.PRE_HELLO_WS_BYTES,  # raised for the connection by its HELLO
            max_queue=limits.MAX_QUEUED_FRAMES,
            compression=None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def listen_unix(self, path: Path) -> None:
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise OSError(f"control socket path too long for a Unix socket: {path}")
        # We hold the LevelDB lock, so a socket file left here is a crashed node's.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = await unix_serve(
            lambda ws: self._serve(ws, local=True),
            str(path),
            max_size=limits.MAX_FRAME_BYTES,
            max_queue=limits.MAX_QUEUED_FRAMES,
            compression=None,
        )
        os.chmod(path, 0o600)
        self._servers.append(server)

    def refresh_tokens(self) -> None:
        """Reload tokens.json if it changed, and cut off sessions whose token was revoked.

        Called on every tick, so a revocation takes effect within one tick.
        """
        self.tokens.refresh()
        for session, ws in list(self._sessions.items()):
            if session.token_id is not None and not self.tokens.is_live(session.token_id):
                session.token_id = None
                session.scope = None
                self._spawn(session, self._close_revoked(ws))

    async def _close_revoked(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.UNAUTHORIZED, "token revoked"))
            await ws.close(1008, "token revoked")

    async def close(self) -> None:
        """Stop serving, once the node has stopped (docs/PROTOCOL.md § 6).

        No new connections. On each open one: read no more requests, finish the
        one being handled, send the RECEIPTS still owed, then ERROR SHUTTING_DOWN
        with request id 0 (a request without a reply by then was not applied) and
        close with 1001.
        """
        self._closing = True
        for server in self._servers:
            server.close(close_connections=False)
        for check in list(self._join_checks.values()):
            check.cancel()
        sessions = list(self._sessions.items())
        await asyncio.gather(*(self._close_session(session, ws) for session, ws in sessions))
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._closing = False  # it may listen again

    async def _close_session(self, session: Session, ws: ServerConnection) -> None:
        session.closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await session.idle.wait()
                while session.receipts:
                    await asyncio.wait(set(session.receipts))
                await ws.send(encode_error(Err.SHUTTING_DOWN, SHUTDOWN_NOTICE))
        except TimeoutError:
            # Owed replies could not be sent; without the notice the client cannot
            # take silence to mean "not applied".
            log.warning("replies owed to a client not sent in %.0f s; closing", CLOSE_TIMEOUT_S)
        except ConnectionClosed:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.close(1001, "the node is shutting down")

    # Connection -------------------------------------------------------------

    async def _serve(self, ws: ServerConnection, *, local: bool) -> None:
        session = Session(local=local, scope=Scope("server") if local else None)
        if not local:
            session.tls = ws.transport.get_extra_info("ssl_object") is not None
            address = ws.remote_address
            session.remote_host = str(address[0]) if address else None
        if self._closing:  # opened while the node was closing the others
            await self._close_session(session, ws)
            return
        if not local:
            refusal = self._admit()
            if refusal is not None:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(encode_error(Err.BUSY, refusal))
                    await ws.close(1013, refusal)
                return
            session.awaiting_hello = True
            session.hello_deadline = time.monotonic() + self.hello_timeout_s
            self._spawn(session, self._require_hello(ws, session))
        self._sessions[session] = ws
        try:
            async for frame in ws:
                # websockets hands over already-buffered frames without yielding;
                # let the tick (and other connections) in between requests.
                await asyncio.sleep(0)
                if session.closing:
                    continue  # unread: the shutdown notice covers it
                wait = self.quotas.pace(session.peer, session.token_id)
                if wait > 0:
                    # Past its party's rate: this connection waits, nobody else does.
                    await asyncio.sleep(wait)
                if isinstance(frame, str):
                    await ws.send(
                        encode_error(
                            Err.MALFORMED, "text frames are not supported; send binary RLP"
                        )
                    )
                    continue
                session.idle.clear()
                try:
                    if not await self._on_frame(ws, session, frame):
                        return
                finally:
                    session.idle.set()
                if len(session.tasks) >= limits.MAX_PENDING_REPLIES:
                    # A client that sends but does not read: stop reading it too.
                    await asyncio.wait(session.tasks, return_when=asyncio.FIRST_COMPLETED)
        except ConnectionClosed:
            pass
        finally:
            self._sessions.pop(session, None)
            if session.agent is not None:
                session.agent.fail_all()
                agents = self.coordinator.agents if self.coordinator else {}
                if agents.get(session.agent.signer) is session.agent:
                    del agents[session.agent.signer]
            for sub, task in session.subs.values():
                self.node.unsubscribe(sub)
                task.cancel()
            for task in session.tasks:
                task.cancel()

    def _admit(self) -> str | None:
        """Why a new TCP connection is refused, or None to take it."""
        tcp = sum(1 for s in self._sessions if not s.local)
        if tcp >= self.max_connections:
            return f"the node serves at most {self.max_connections} connections; try again later"
        if sum(1 for s in self._sessions if s.awaiting_hello) >= limits.MAX_UNAUTHENTICATED:
            return (
                f"at most {limits.MAX_UNAUTHENTICATED} connections may wait for their HELLO;"
                " try again later"
            )
        return None

    async def _on_frame(self, ws: ServerConnection, session: Session, frame: bytes) -> bool:
        """Handle one binary frame; False when the connection was closed for it.

        Before HELLO only a small frame shaped like a HELLO is read; anything else
        gets its error and the connection closes. After it, the frame is scanned
        against the link's caps before anything is decoded, and a heavy frame
        waits its turn at the gate.
        """
        authenticated = session.authenticated
        caps = limits.REQUEST if authenticated else limits.PRE_HELLO
        # Failures are kept as fresh exceptions, never the caught ones: a caught
        # exception's traceback holds this frame (and the bytes it read) in a cycle
        # that only the collector would free.
        failure: ProtocolError | None = None
        try:
            if not self.gate.is_heavy(len(frame)):
                scan(frame, caps)
                if session.agent is not None and is_reply(frame):
                    session.agent.on_reply(reply_from(decode(frame)))
                else:
                    await self._handle(ws, session, decode_request(frame, limits=None))
            else:
                async with self.gate.turn():
                    failure = await self._heavy(ws, session, frame, caps)
        except DecodeError as exc:  # the scan, or the envelope of a reply
            failure = ProtocolError(Err.MALFORMED, str(exc))
        except ProtocolError as exc:
            failure = ProtocolError(exc.code, exc.message, exc.request_id)
        if failure is None:
            if session.awaiting_hello and session.authenticated:
                session.awaiting_hello = False
                ws.protocol.max_message_size = limits.MAX_FRAME_BYTES
            return True
        await ws.send(encode_error(failure.code, failure.message, failure.request_id))
        if failure.code in (Err.UNAUTHORIZED, Err.UNSUPPORTED_SENDER) or not authenticated:
            await ws.close(1008, failure.message[:100])
            return False
        return True

    async def _heavy(
        self, ws: ServerConnection, session: Session, frame: bytes, caps: Limits
    ) -> ProtocolError | None:
        """A heavy frame, in its turn at the gate: scanned and decoded in slices,
        then handled. Its failure comes back without a traceback, so that nothing
        holds the decoded tree once this returns (see HeavyGate.turn)."""
        try:
            await scan_sliced(frame, caps)
            item, raws = await decode_sliced(frame)
            if session.agent is not None and is_reply(frame):
                session.agent.on_reply(reply_from(item))
            else:
                await self._handle(ws, session, request_from(item, raws))
        except DecodeError as exc:
            return ProtocolError(Err.MALFORMED, str(exc))
        except ProtocolError as exc:
            return ProtocolError(exc.code, exc.message, exc.request_id)
        return None

    async def _require_hello(self, ws: ServerConnection, session: Session) -> None:
        """Close a TCP connection that has not authenticated within the deadline."""
        await asyncio.sleep(self.hello_timeout_s)
        if not session.authenticated:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode_error(Err.UNAUTHORIZED, "no HELLO within the deadline"))
                await ws.close(1008, "no HELLO within the deadline")

    async def _handle(self, ws: ServerConnection, session: Session, req: Request) -> None:
        if not session.authenticated and req.type not in PRE_HELLO_REQUESTS:
            raise ProtocolError(
                Err.UNAUTHORIZED,
                "the first request must be HELLO with an API token",
                req.request_id,
            )
        if req.route and req.type in SERVER_WIDE:
            raise ProtocolError(
                Err.MALFORMED,
                f"{req.type.name} concerns the whole server; its route must be empty",
                req.request_id,
            )
        if session.peer is not None and req.type not in PEER_REQUESTS:
            raise ProtocolError(
                Err.FORBIDDEN, f"peer servers may not send {req.type.name}", req.request_id
            )
        if session.token_id is not None and not self.tokens.is_live(session.token_id):
            raise ProtocolError(Err.UNAUTHORIZED, "token revoked", req.request_id)
        if session.sender is not None and req.sender != session.sender:
            raise ProtocolError(
                Err.FORBIDDEN, "sender differs from the one given in HELLO", req.request_id
            )
        try:
            await self._handlers[req.type](ws, session, req)
        except (ProtocolError, ConnectionClosed):
            raise
        except Exception:  # a bug: answer it, log it, keep serving
            log.exception("%s request failed inside the node", req.type.name)
            raise ProtocolError(
                Err.INTERNAL, "internal error; see the node log", req.request_id
            ) from None

    # Requests ---------------------------------------------------------------

    async def _hello(self, ws: ServerConnection, session: Session, req: Request) -> None:
        rid = req.request_id
        if (session.scope is not None or session.peer is not None) and not session.local:
            raise ProtocolError(Err.FORBIDDEN, "already authenticated", rid)
        if req.sender.kind is SenderKind.SERVER:
            await self._peer_hello(ws, session, req)
            return
        token = _one_field(req, lambda item: as_bytes(item, "token", max_len=MAX_TOKEN_BYTES))
        if session.local:
            session.sender = req.sender
        else:
            if session.scope is not None:
                raise ProtocolError(Err.FORBIDDEN, "already authenticated", rid)
            try:
                text = token.decode("ascii")
            except UnicodeDecodeError:
                text = None
            record = None if text is None else self.tokens.authenticate(text)
            if record is None and text is not None and self.tokens.refresh():
                # A token made since the last tick's reload (xln-node token create,
                # then an agent at once) is not refused for a tick.
                record = self.tokens.authenticate(text)
            refusal = plain_token_refusal(session.tls, session.remote_host)
            if refusal is not None:
                if record is not None:
                    log.warning(
                        "token %s was sent over plain ws:// from %s and refused; it crossed "
                        "the network in clear: revoke it (xln-node token revoke)",
                        record.id,
                        session.remote_host,
                    )
                raise ProtocolError(Err.UNAUTHORIZED, refusal, rid)
            if record is None:
                raise ProtocolError(Err.UNAUTHORIZED, "invalid API token", rid)
            session.scope = Scope.parse(record.scope)
            session.token_id = record.id
            session.sender = req.sender
        assert session.scope is not None
        if req.sender.kind is SenderKind.AGENT:
            self._register_agent(ws, session, req)
        body = [PROTOCOL_VERSION, str(session.scope).encode(), self.node_id, self.node.state.height]
        await ws.send(encode_reply(Rep.WELCOME, rid, body))
        if session.agent is not None and self.coordinator is not None:
            # After WELCOME: the node asks the new agent for its server binding (BIND).
            self.coordinator.agent_connected(session.agent.signer)

    def _register_agent(self, ws: ServerConnection, session: Session, req: Request) -> None:
        signer = req.sender.id
        scope = session.scope
        if len(signer) != HASH_LEN or scope is None or not scope.allows((signer,)):
            session.scope = session.token_id = session.sender = None
            raise ProtocolError(
                Err.UNAUTHORIZED,
                "an agent's sender id is its signer id, and its token must reach that signer",
                req.request_id,
            )
        if self.coordinator is None:
            raise ProtocolError(
                Err.UNSUPPORTED_SENDER, "this node runs no consensus", req.request_id
            )
        session.agent = RemoteAgent(ws, signer, self.node_id)
        self.coordinator.agents[signer] = session.agent

    async def _challenge(self, ws: ServerConnection, session: Session, req: Request) -> None:
        """A peer server's first request: the challenge its HELLO must sign, kept for
        this connection only, used once, good until the HELLO deadline."""
        rid = req.request_id
        if session.authenticated and not session.local:
            raise ProtocolError(Err.FORBIDDEN, "already authenticated", rid)
        if req.sender.kind is not SenderKind.SERVER:
            raise ProtocolError(Err.FORBIDDEN, "CHALLENGE is for peer servers", rid)
        if self.coordinator is None:
            raise ProtocolError(Err.UNSUPPORTED_SENDER, "this node takes no peers", rid)
        _no_fields(req)
        if session.challenge is not None:
            raise ProtocolError(Err.FORBIDDEN, "this connection already has its challenge", rid)
        session.challenge = self.challenges()
        body = [PROTOCOL_VERSION, session.challenge, self.receiver_id]
        await ws.send(encode_reply(Rep.CHALLENGE, rid, body))

    async def _peer_hello(self, ws: ServerConnection, session: Session, req: Request) -> None:
        rid = req.request_id
        if self.coordinator is None:
            raise ProtocolError(Err.UNSUPPORTED_SENDER, "this node takes no peers", rid)
        given, session.challenge = session.challenge, None  # used once, whatever happens
        if len(req.body) == 3:  # [identity_key, timestamp_ms, signature]
            raise ProtocolError(
                Err.UNAUTHORIZED,
                f"peer HELLO of protocol version 3 (a signed timestamp); this server speaks"
                f" version {PROTOCOL_VERSION}, where a peer signs the challenge it asks for"
                " (update the older server)",
                rid,
            )
        try:
            if len(req.body) != 4:
                raise DecodeError(
                    "peer HELLO body is [identity_key, challenge, receiver_id, signature]"
                )
            pubkey = as_bytes(req.body[0], "identity key", size=48)
            challenge = as_bytes(req.body[1], "challenge", size=CHALLENGE_LEN)
            receiver = as_bytes(req.body[2], "receiver id", size=HASH_LEN)
            signature = as_bytes(req.body[3], "signature", size=SIG_LEN)
        except DecodeError as exc:
            raise ProtocolError(Err.UNAUTHORIZED, str(exc), rid) from None
        if given is not None and time.monotonic() > session.hello_deadline:
            raise ProtocolError(
                Err.UNAUTHORIZED, "the challenge expired with the HELLO deadline", rid
            )
        reason = check_hello(
            pubkey, challenge, receiver, signature, given=given, own_id=self.receiver_id
        )
        if reason is not None:
            raise ProtocolError(Err.UNAUTHORIZED, reason, rid)
        held = sum(1 for s in self._sessions if s.peer == pubkey)
        if held >= limits.MAX_CONNECTIONS_PER_PEER:
            raise ProtocolError(
                Err.BUSY,
                f"a peer may hold at most {limits.MAX_CONNECTIONS_PER_PEER} connections"
                " at once; close one first",
                rid,
            )
        session.peer = pubkey
        session.bindings = peer_auth.PeerBindings(pubkey)
        session.sender = req.sender
        body = [
            PROTOCOL_VERSION,
            b"peer",
            self.node_id,
            self.node.state.height,
            self.coordinator.hosted_signers(),
        ]
        await ws.send(encode_reply(Rep.WELCOME, rid, body))

    async def _submit(self, ws: ServerConnection, session: Session, req: Request) -> None:
        rid = req.request_id
        self._check_scope(session, req)
        if not req.body:
            raise ProtocolError(Err.MALFORMED, "SUBMIT carries no transactions", rid)
        if len(req.body) > MAX_TXS_PER_SUBMIT:
            raise ProtocolError(
                Err.MALFORMED,
                f"{len(req.body)} transactions exceed the cap of {MAX_TXS_PER_SUBMIT} per SUBMIT",
                rid,
            )
        self._check_route(req)
        registry = registry_for_depth(len(req.route))
        txs = []
        for i, item in enumerate(req.body):
            if i % 256 == 255:
                await asyncio.sleep(0)  # thousands of transactions: let the tick in
            try:
                tx = registry.decode(item, req.body_raws[i][0])
            except DecodeError as exc:
                raise ProtocolError(Err.INVALID_TX, f"transaction {i}: {exc}", rid) from None
            if registry.level is Level.ENTITY and tx.body.TYPE in rep.PEER_ONLY_INPUTS:
                raise ProtocolError(
                    Err.FORBIDDEN,
                    f"transaction {i}: a refusal comes from a member's agent, through its node",
                    rid,
                )
            if registry.level is Level.ENTITY and tx.body.TYPE in rep.INTERNAL_INPUTS:
                raise ProtocolError(
                    Err.FORBIDDEN, f"transaction {i}: {tx.body.NAME} comes only from the node", rid
                )
            if registry.level is Level.ENTITY and (why := rep.over_frame_budget(tx.body)):
                raise ProtocolError(Err.INVALID_TX, f"transaction {i}: {why}", rid)
            txs.append(tx)
        assert session.scope is not None
        priority = Priority.SERVER if session.scope.is_server else Priority.SCOPED
        share = None if session.local else self._share(peer=False)
        try:
            # Entity batches start a consensus round: no waiting for the tick.
            urgent = registry.level is Level.ENTITY
            future = self.node.submit(
                req.route, txs, priority, urgent=urgent, owner=session.token_id, share=share
            )
        except (Busy, TooLarge, ShuttingDown) as exc:
            raise _refusal(exc, rid) from None
        task = self._spawn(session, self._send_receipts(ws, rid, future))
        session.receipts.add(task)
        task.add_done_callback(session.receipts.discard)

    async def _send_receipts(
        self, ws: ServerConnection, rid: int, future: asyncio.Future[Ack]
    ) -> None:
        try:
            try:
                ack = await future
            except ShuttingDown as exc:
                await ws.send(encode_error(Err.SHUTTING_DOWN, str(exc), rid))
                return
            receipts = [
                [r.index, 0, b""] if r.error is None else [r.index, Err.TX_FAILED, r.error.encode()]
                for r in ack.receipts
            ]
            await ws.send(encode_reply(Rep.RECEIPTS, rid, [ack.height, ack.block_hash, receipts]))
        except ConnectionClosed:
            pass  # The client left; its transactions are durable all the same.

    async def _status(self, ws: ServerConnection, session: Session, req: Request) -> None:
        _no_fields(req)
        s = self.node.status()
        body = [s.height, s.head, s.state_hash, s.counter, s.timestamp, self.node.inbox_size]
        await ws.send(encode_reply(Rep.STATUS, req.request_id, body))

    async def _read_state(self, ws: ServerConnection, session: Session, req: Request) -> None:
        """Body ``[]``: the machine's state. Body ``[1]`` on the server route (server
        scope): also every signer and replica, ``[[route, state]...]``, read at once."""
        self._check_scope(session, req)
        self._check_route(req)
        snapshot = self.node.state  # one instant, read off the loop (records may be on disk)
        try:
            state = await asyncio.to_thread(self.node.read_state, req.route, snapshot)
        except NotFound as exc:
            raise _refusal(exc, req.request_id) from None
        body: list[object] = [list(req.route), state]
        if req.body:
            deep = _one_field(req, lambda item: as_int(item, "deep", max_value=1))
            if deep:
                self._require_server_scope(session, req, "reading every machine")
                if req.route:
                    raise ProtocolError(
                        Err.MALFORMED, "deep reads start at the server", req.request_id
                    )
                try:
                    tree = await asyncio.to_thread(self.node.read_tree, snapshot)
                except NotFound as exc:
                    raise _refusal(exc, req.request_id) from None
                body.append([[list(route), raw] for route, raw in tree])
        await ws.send(encode_reply(Rep.STATE, req.request_id, body))

    async def _read_entity(self, ws: ServerConnection, session: Session, req: Request) -> None:
        """Body ``[part, at, ...]`` on a replica's route: one part of an agreed state,
        with the header it is proven against (``node/entity_reads.py``)."""
        self._check_scope(session, req)
        self._check_route(req)
        rid = req.request_id
        try:
            part, at, rest = _entity_read_fields(req.body)
            genesis, state = self.node.read_entity(req.route, at)
        except (DecodeError, UnknownRoute, NotFound) as exc:
            raise _refusal(exc, rid) from None
        if part == reads.EVIDENCE:  # the node's own, beside the state (node/evidence.py)
            rest = [[e.to_tree() for e in self.node.evidence.of_entity(req.route[1])]]
        if part == reads.REFUSALS:  # the node's own too (node/refusals.py)
            rest = [[r.to_tree() for r in self.node.refusals.of_entity(req.route[1])]]
        # A page proves up to 256 records (tens of milliseconds at a million
        # channels): built off the loop, on the immutable state it was read from.
        try:
            reply = await asyncio.to_thread(_entity_reply, req.route, part, rest, genesis, state)
        except KeyError as exc:
            raise ProtocolError(Err.NOT_FOUND, exc.args[0], rid) from None
        await ws.send(encode_reply(Rep.ENTITY, rid, reply))

    async def _subscribe(self, ws: ServerConnection, session: Session, req: Request) -> None:
        rid = req.request_id
        topic_id = _one_field(req, lambda item: as_int(item, "topic", max_value=255))
        try:
            topic = Topic(topic_id)
        except ValueError:
            raise ProtocolError(Err.MALFORMED, f"unknown topic {topic_id}", rid) from None
        if topic is Topic.BLOCKS:
            if req.route:
                raise ProtocolError(Err.MALFORMED, "the blocks topic takes an empty route", rid)
            self._require_server_scope(session, req, "the blocks topic")
            route: tuple[bytes, ...] | None = None
        else:
            self._check_scope(session, req)
            self._check_route(req)
            route = req.route
        if len(session.subs) >= MAX_SUBSCRIPTIONS_PER_SESSION:
            raise ProtocolError(
                Err.BUSY,
                f"at most {MAX_SUBSCRIPTIONS_PER_SESSION} subscriptions per connection",
                rid,
            )
        if session.token_id is not None:
            held = sum(len(s.subs) for s in self._sessions if s.token_id == session.token_id)
            if held >= limits.MAX_SUBSCRIPTIONS_PER_CLIENT:
                raise ProtocolError(
                    Err.BUSY,
                    f"at most {limits.MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions per token,"
                    " over all its connections",
                    rid,
                )
        sub = self.node.subscribe(route)
        sub_id = session.next_sub_id
        session.next_sub_id += 1
        await ws.send(encode_reply(Rep.SUBSCRIBED, rid, [sub_id]))
        task = asyncio.create_task(self._forward(ws, session, sub_id, sub))
        session.subs[sub_id] = (sub, task)

    async def _forward(
        self, ws: ServerConnection, session: Session, sub_id: int, sub: Subscription
    ) -> None:
        try:
            while True:
                event = await sub.queue.get()
                if event is None:
                    session.subs.pop(sub_id, None)
                    await ws.send(
                        encode_error(
                            Err.SUBSCRIPTION_OVERFLOW,
                            "subscriber fell too far behind; events were dropped; subscribe again",
                            sub_id,
                        )
                    )
                    return
                match event:
                    case BlockEvent():
                        body = [
                            event.height,
                            event.hash,
                            event.state_hash,
                            event.timestamp,
                            event.tx_count,
                        ]
                        await ws.send(encode_reply(Rep.BLOCK_EVENT, sub_id, body))
                    case CommitEvent():
                        body = [list(event.route), event.height, event.hash, list(event.indexes)]
                        await ws.send(encode_reply(Rep.COMMIT_EVENT, sub_id, body))
                    case FrameEvent():
                        body = [
                            list(event.route),
                            event.height,
                            event.frame_hash,
                            event.cert.to_tree(),
                            list(event.batch_hashes),
                        ]
                        await ws.send(encode_reply(Rep.FRAME_EVENT, sub_id, body))
        except ConnectionClosed:
            pass

    async def _unsubscribe(self, ws: ServerConnection, session: Session, req: Request) -> None:
        sub_id = _one_field(req, lambda item: as_int(item, "subscription id"))
        entry = session.subs.pop(sub_id, None)
        if entry is None:
            raise ProtocolError(Err.NOT_FOUND, f"no subscription {sub_id}", req.request_id)
        self.node.unsubscribe(entry[0])
        entry[1].cancel()
        await ws.send(encode_reply(Rep.UNSUBSCRIBED, req.request_id, [sub_id]))

    async def _get_blocks(self, ws: ServerConnection, session: Session, req: Request) -> None:
        rid = req.request_id
        self._require_server_scope(session, req, "reading blocks")
        if len(req.body) != 2:
            raise ProtocolError(Err.MALFORMED, "GET_BLOCKS body is [from_height, max_count]", rid)
        try:
            start = as_int(req.body[0], "from_height", min_value=1)
            count = as_int(req.body[1], "max_count", min_value=1, max_value=MAX_BLOCKS_PER_PAGE)
        except DecodeError as exc:
            raise ProtocolError(Err.MALFORMED, str(exc), rid) from None
        blocks = await asyncio.to_thread(self.node.blocks, start, count, MAX_BLOCKS_REPLY_BYTES)
        await ws.send(encode_reply(Rep.BLOCKS, rid, [blocks]))

    async def _metrics(self, ws: ServerConnection, session: Session, req: Request) -> None:
        _no_fields(req)
        m = self.node.metrics
        body = [
            self.node.config.tick_ms,
            [max(0, v) for v in m.tick_lateness_us],
            list(m.write_us),
            m.blocks,
            m.txs,
        ]
        await ws.send(encode_reply(Rep.METRICS, req.request_id, body))

    # Peer servers ---------------------------------------------------------------

    def _require_peer(self, session: Session, req: Request) -> Coordinator:
        if session.peer is None or self.coordinator is None:
            raise ProtocolError(
                Err.FORBIDDEN, f"{req.type.name} is for peer servers", req.request_id
            )
        return self.coordinator

    async def _deliver(self, ws: ServerConnection, session: Session, req: Request) -> None:
        coordinator = self._require_peer(session, req)
        rid = req.request_id
        try:
            if len(req.body) != 3:
                raise DecodeError("DELIVER body is [to_signer, entity_id or empty, input]")
            to = as_bytes(req.body[0], "to signer", size=HASH_LEN)
            entity = as_bytes(req.body[1], "entity", max_len=HASH_LEN)
            level = Level.ENTITY if entity else Level.SIGNER
            tx = REGISTRIES[level].decode(req.body[2], req.body_raws[2][0])
        except DecodeError as exc:
            raise ProtocolError(Err.INVALID_TX, str(exc), rid) from None
        allowed = PEER_ENTITY_INPUTS if entity else PEER_SIGNER_INPUTS
        if tx.body.TYPE not in allowed:
            raise ProtocolError(Err.FORBIDDEN, f"peers may not send {tx.body.NAME}", rid)
        if entity and (why := rep.over_frame_budget(tx.body)):
            raise ProtocolError(Err.INVALID_TX, why, rid)
        if entity and len(entity) != HASH_LEN:
            raise ProtocolError(Err.MALFORMED, "entity id must be 32 bytes", rid)
        introduced = _introduction(session, tx.body)
        route = (to, entity) if entity else (to,)
        try:
            self.node.check_route(route)
        except UnknownRoute as exc:
            if entity and to in self.node.state.by_id:
                coordinator.request_sync(entity)  # maybe created here soon; catch up then
            raise ProtocolError(Err.UNKNOWN_ROUTE, str(exc), rid) from None
        replica = self.node.state.replica(to, entity) if entity else None
        if replica is not None and tx.body.TYPE in PEER_MEMBER_INPUTS and not introduced:
            self._authorise(session, replica, rid)
        if replica is not None and isinstance(tx.body, rep.Deliver):
            assert session.bindings is not None  # a peer's session
            why = peer_auth.channel_refusal(session.bindings, replica, tx.body.message.sender)
            if why is not None:
                raise ProtocolError(Err.FORBIDDEN, why, rid)
        if (
            introduced
            and replica is not None
            and isinstance(tx.body, rep.AnnounceBinding)
            and tx.body.binding.signer not in replica.entity.config.index
        ):
            # A counterparty's member's binding: held for the connection (its channel
            # messages), nothing for this replica to record.
            await ws.send(encode_reply(Rep.DELIVERED, rid, []))
            return
        if isinstance(tx.body, rep.RefusalInput) and replica is not None:
            refusal = tx.body.refusal
            why = (
                "a refusal about another entity"
                if refusal.entity != entity
                else self.node.refusals.observe(replica.entity.config, refusal)
            )
            if why is not None:
                raise ProtocolError(Err.FORBIDDEN, why, rid)
            await ws.send(encode_reply(Rep.DELIVERED, rid, []))
            return
        if (replica is not None and rep.stale(replica, tx.body)) or self.node.is_queued(route, tx):
            # About a height or round the replica has left, or the very bytes already
            # queued: it would change nothing in any block, so it costs none (a
            # resend, or a flood of old round changes).
            await ws.send(encode_reply(Rep.DELIVERED, rid, []))
            return
        if isinstance(tx.body, rep.SubmitBatch):
            reason = None if replica is None else rep.check_batch(replica, tx.body.batch)
            if reason is not None:
                raise ProtocolError(Err.FORBIDDEN, reason, rid)
        if isinstance(tx.body, rep.SignedRoundChange):
            # Only from the server the member bound (its connection's identity key),
            # and only if it would count: the transition's own rule, before any block.
            if tx.body.binding.server_key != session.peer:
                raise ProtocolError(
                    Err.FORBIDDEN,
                    "a round change comes only from the server its member's binding names",
                    rid,
                )
            reason = None if replica is None else rep.check_round_change(replica, tx.body)
            if reason is not None:
                raise ProtocolError(Err.FORBIDDEN, f"round change refused: {reason}", rid)
        commit = tx.body if isinstance(tx.body, rep.Commit) else None
        if commit is not None and replica is not None and commit.frame.height > replica.next_height:
            coordinator.request_sync(entity)
        if isinstance(tx.body, rep.PolkaNotice) and replica is not None:
            # The pre-commit it asks for goes out at once, off the block's path (the
            # block takes the notice too: its round, if later, moves the replica).
            coordinator.polka_received(to, entity, tx.body)
        peer = session.peer
        assert peer is not None  # _require_peer
        if isinstance(tx.body, sig.JoinEntity):
            self._take_join(ws, session, rid, to, tx, tx.body, peer)
            return
        try:
            self._queue_from_peer(route, tx, peer)
        except (Busy, TooLarge, ShuttingDown) as exc:
            raise ProtocolError(Err.BUSY, str(exc), rid) from None
        await ws.send(encode_reply(Rep.DELIVERED, rid, []))

    def _queue_from_peer(
        self, route: tuple[bytes, ...], tx: Tx, peer: bytes
    ) -> asyncio.Future[Ack]:
        """Queue a peer's input in the peers' class, within its share of the inbox, with
        an early block while this peer's quota of them lasts (consensus); the future of
        its receipt. Raises Busy, TooLarge or ShuttingDown."""
        return self.node.submit(
            route,
            [tx],
            Priority.PEER,
            owner=peer,
            share=self._share(peer=True),
            urgent=self.quotas.early_block(peer),
        )

    def _take_join(
        self,
        ws: ServerConnection,
        session: Session,
        rid: int,
        to: bytes,
        tx: Tx,
        join: sig.JoinEntity,
        peer: bytes,
    ) -> None:
        """A peer's join_entity: counted, its proof checked (``node/join_proof.py``, one
        check shared by the copies of one join), then queued; the reply (DELIVERED, or
        the refusal) follows once the check is done. Raises the refusals that cost no
        check."""
        if _holds(self.node.state.by_id.get(to), join):
            # The signer would ignore it (every replica of the entity invites):
            # no check, no block, and not counted against the peer.
            self._spawn(session, _send(ws, encode_reply(Rep.DELIVERED, rid, [])))
            return
        if join.height < 1:
            raise ProtocolError(
                Err.FORBIDDEN,
                "join_entity refused: a peer's join_entity must name the certified frame"
                " that added the signer ([config, salt, pops, height])",
                rid,
            )
        if (why := self.joins.refusal(peer)) is not None:
            raise ProtocolError(Err.BUSY, why, rid)
        key = (to, join.entity_id, join.height)
        check = self._join_checks.get(key)
        if check is None:
            if len(self._join_checks) >= limits.MAX_JOIN_PROOFS_AT_ONCE:
                raise ProtocolError(
                    Err.BUSY,
                    f"the node checks at most {limits.MAX_JOIN_PROOFS_AT_ONCE} join_entity"
                    " proofs at once; try again later",
                    rid,
                )
            assert self.coordinator is not None  # _require_peer
            check = asyncio.ensure_future(
                check_join(
                    to,
                    join,
                    self.node.store,
                    self.coordinator.peers,
                    peer,
                    simulation=self.node.state.simulation,
                )
            )
            self._join_checks[key] = check
            check.add_done_callback(functools.partial(self._join_checked, key))
        self.joins.take(peer)
        self._spawn(session, self._join(ws, rid, (to,), tx, join, peer, check))

    def _join_checked(self, key: tuple[bytes, bytes, int], check: asyncio.Task[None]) -> None:
        if self._join_checks.get(key) is check:
            del self._join_checks[key]
        if not check.cancelled() and check.exception() is not None:
            log.debug("join_entity %s refused: %s", key[1].hex()[:12], check.exception())

    async def _join(
        self,
        ws: ServerConnection,
        rid: int,
        route: tuple[bytes, ...],
        tx: Tx,
        join: sig.JoinEntity,
        peer: bytes,
        check: asyncio.Task[None],
    ) -> None:
        """Wait for the join's proof; queue it if it holds; answer the peer."""
        queued = False
        try:
            try:
                await asyncio.shield(check)
            except JoinRefused as exc:
                await ws.send(encode_error(Err.FORBIDDEN, f"join_entity refused: {exc}", rid))
                return
            except Exception:  # a fault of this node's: the peer is told, the log says what
                log.exception("checking a join_entity proof failed")
                message = "this node could not check the join_entity proof"
                await ws.send(encode_error(Err.INTERNAL, message, rid))
                return
            if not (
                _holds(self.node.state.by_id.get(route[0]), join) or self.node.is_queued(route, tx)
            ):
                try:
                    future = self._queue_from_peer(route, tx, peer)
                except (Busy, TooLarge, ShuttingDown) as exc:
                    await ws.send(encode_error(Err.BUSY, str(exc), rid))
                    return
                queued = True
                future.add_done_callback(lambda _: self.joins.done(peer))
            await ws.send(encode_reply(Rep.DELIVERED, rid, []))
        except ConnectionClosed:
            pass  # the peer left; a queued join is applied all the same
        finally:
            if not queued:
                self.joins.done(peer)

    def _authorise(self, session: Session, replica: rep.Replica, rid: int) -> None:
        """FORBIDDEN unless the peer speaks for a member of ``replica``'s entity."""
        assert session.bindings is not None  # a peer's session
        reason = peer_auth.refusal(session.bindings, replica)
        if reason is not None:
            raise ProtocolError(Err.FORBIDDEN, reason, rid)

    async def _proposal(self, ws: ServerConnection, session: Session, req: Request) -> None:
        coordinator = self._require_peer(session, req)
        rid = req.request_id
        try:
            if len(req.body) != 5:
                raise DecodeError(
                    "PROPOSAL body is [to_signer, frame, round, proposer_approval, polka or []]"
                )
            to = as_bytes(req.body[0], "to signer", size=HASH_LEN)
            frame_fields = as_list(req.body[1], "frame")
            frame_raw = req.body_raws[1][0]
            round_ = as_int(req.body[2], "round", max_value=2**32 - 1)
            proposer_sig = as_bytes(req.body[3], "proposer approval", size=SIG_LEN)
            valid = Polka.from_item(req.body[4]) if req.body[4] else None
        except DecodeError as exc:
            raise ProtocolError(Err.MALFORMED, str(exc), rid) from None
        replica = self._proposal_replica(to, frame_fields)
        if replica is not None:
            self._authorise(session, replica, rid)
        peer = session.peer
        assert peer is not None  # _require_peer
        if self._proposals.get(peer, 0) >= limits.MAX_PEER_PROPOSALS_IN_FLIGHT:
            raise ProtocolError(
                Err.BUSY,
                f"a peer may have at most {limits.MAX_PEER_PROPOSALS_IN_FLIGHT} proposals"
                " being checked at once; try again once they are answered",
                rid,
            )
        self._proposals[peer] = self._proposals.get(peer, 0) + 1
        task = coordinator.proposal_received(to, frame_raw, round_, proposer_sig, valid)
        task.add_done_callback(lambda _: self._proposal_done(peer))
        await ws.send(encode_reply(Rep.DELIVERED, rid, []))

    def _proposal_replica(self, to: bytes, frame_fields: list[RlpItem]) -> rep.Replica | None:
        """``to``'s replica of the entity a proposal's frame names, if it holds one (a
        frame whose entity id does not decode is refused later, and only logged)."""
        if not frame_fields or not isinstance(frame_fields[0], bytes):
            return None
        if len(frame_fields[0]) != HASH_LEN:
            return None
        return self.node.state.replica(to, frame_fields[0])

    def _proposal_done(self, peer: bytes) -> None:
        left = self._proposals.get(peer, 0) - 1
        if left > 0:
            self._proposals[peer] = left
        else:
            self._proposals.pop(peer, None)

    def _share(self, *, peer: bool) -> int:
        return limits.inbox_share(self.node.config.inbox_cap, peer=peer)

    async def _get_frames(self, ws: ServerConnection, session: Session, req: Request) -> None:
        """Peer servers (catch-up), and clients whose scope reaches a replica of the
        entity hosted here (a wallet reads the frames it was not asked to sign)."""
        if session.peer is not None:
            self._require_peer(session, req)
        rid = req.request_id
        try:
            if len(req.body) != 3:
                raise DecodeError("GET_FRAMES body is [entity_id, from_height, max_count]")
            entity = as_bytes(req.body[0], "entity", size=HASH_LEN)
            start = as_int(req.body[1], "from_height", min_value=1)
            count = as_int(req.body[2], "max_count", min_value=1, max_value=MAX_FRAMES_PER_PAGE)
        except DecodeError as exc:
            raise ProtocolError(Err.MALFORMED, str(exc), rid) from None
        scope = session.scope
        if session.peer is None and not (
            scope is not None and any(scope.allows((s, entity)) for s in self._holders(entity))
        ):
            raise ProtocolError(
                Err.FORBIDDEN,
                f"token scope {scope} reaches no replica of that entity here",
                rid,
            )
        page = await asyncio.to_thread(self._frames_page, entity, start, count)
        await ws.send(encode_list([encode_uint(Rep.FRAMES), encode_uint(rid), encode_list([page])]))

    def _holders(self, entity: bytes) -> frozenset[bytes]:
        """The signers hosted here with a replica of ``entity`` (from the coordinator's
        index; a node without consensus holds no certified frames to serve anyway)."""
        if self.coordinator is None:
            return frozenset()
        return self.coordinator.holders(entity)

    def _frames_page(self, entity: bytes, start: int, count: int) -> bytes:
        """The FRAMES page from the stored bytes, as many frames as fit the reply caps
        (at least one); runs off the loop."""
        parts: list[bytes] = []
        size = items = 0
        for raw, cert in self.node.store.frames(entity, start, count):
            cert_raw = cert.raw
            n = 1 + scan(raw, limits.BLOCK) + scan(cert_raw, limits.BLOCK)
            size += len(raw) + len(cert_raw)
            items += n
            if parts and (
                size > limits.MAX_FRAMES_REPLY_BYTES or items > limits.MAX_FRAMES_REPLY_ITEMS
            ):
                break
            parts.append(encode_list([raw, cert_raw]))
        return encode_list(parts)

    async def _sign(self, ws: ServerConnection, session: Session, req: Request) -> None:
        raise ProtocolError(
            Err.FORBIDDEN,
            f"{req.type.name} goes from a node to its agent, not to a node",
            req.request_id,
        )

    async def _memberships(self, ws: ServerConnection, session: Session, req: Request) -> None:
        """The entities hosted here whose config names a signer, a page at a time: for
        a client whose scope reaches the signer, or a peer that proves it hosts the
        signer (the signer's binding of the peer's identity key)."""
        rid = req.request_id
        if self.coordinator is None:
            raise ProtocolError(Err.UNSUPPORTED_SENDER, "this node runs no consensus", rid)
        size = 4 if session.peer is not None else 3
        try:
            if len(req.body) != size:
                raise DecodeError(
                    "MEMBERSHIPS body is [signer, after, limit"
                    + (", binding]" if size == 4 else "]")
                )
            signer = as_bytes(req.body[0], "signer", size=HASH_LEN)
            after = as_bytes(req.body[1], "after", max_len=HASH_LEN)
            if after and len(after) != HASH_LEN:
                raise DecodeError("after: an entity id (32 bytes) or empty")
            limit = as_int(req.body[2], "limit", min_value=1, max_value=MAX_MEMBERSHIPS_PAGE)
            binding = ServerBinding.from_item(req.body[3]) if size == 4 else None
        except DecodeError as exc:
            raise ProtocolError(Err.MALFORMED, str(exc), rid) from None
        if binding is not None:
            if binding.signer != signer or binding.server_key != session.peer:
                raise ProtocolError(
                    Err.FORBIDDEN,
                    "the binding must be the signer's, of this connection's identity key",
                    rid,
                )
            key = self.coordinator.member_key(signer)
            if key is None:  # a member of nothing hosted here: nothing to prove
                await ws.send(encode_reply(Rep.MEMBERSHIPS, rid, [[], b""]))
                return
            if not binding.verify(key):
                raise ProtocolError(
                    Err.FORBIDDEN, "the binding does not verify under the signer's key", rid
                )
        elif session.scope is None or not session.scope.allows((signer,)):
            raise ProtocolError(
                Err.FORBIDDEN, f"token scope {session.scope} does not reach that signer", rid
            )
        found, cursor = self.coordinator.memberships(signer, after, limit)
        body = [[m.to_tree() for m in found], cursor]
        await ws.send(encode_reply(Rep.MEMBERSHIPS, rid, body))

    async def _find_entities(self, ws: ServerConnection, session: Session, req: Request) -> None:
        """Find the route's signer's entities through this node's peers, set its agent's
        floors, join them (``node/restore.py``)."""
        rid = req.request_id
        self._check_scope(session, req)
        if self.coordinator is None:
            raise ProtocolError(Err.UNSUPPORTED_SENDER, "this node runs no consensus", rid)
        if len(req.route) != 1:
            raise ProtocolError(Err.MALFORMED, "FIND_ENTITIES route is [signer]", rid)
        _no_fields(req)
        try:
            result = await find_entities(self.coordinator, req.route[0])
        except FindRefused as exc:
            raise ProtocolError(Err.REFUSED, str(exc), rid) from None
        await ws.send(encode_reply(Rep.FOUND, rid, result.to_tree()))

    async def _peer_info(self, ws: ServerConnection, session: Session, req: Request) -> None:
        coordinator = self._require_peer(session, req)
        _no_fields(req)
        await ws.send(encode_reply(Rep.PEER_INFO, req.request_id, [coordinator.hosted_signers()]))

    # Helpers ----------------------------------------------------------------

    def _check_scope(self, session: Session, req: Request) -> None:
        if session.scope is None or not session.scope.allows(req.route):
            raise ProtocolError(
                Err.FORBIDDEN,
                f"token scope {session.scope} does not reach this route",
                req.request_id,
            )

    def _require_server_scope(self, session: Session, req: Request, what: str) -> None:
        if session.scope is None or not session.scope.is_server:
            raise ProtocolError(Err.FORBIDDEN, f"{what} needs server scope", req.request_id)

    def _check_route(self, req: Request) -> None:
        try:
            self.node.check_route(req.route)
        except UnknownRoute as exc:
            raise _refusal(exc, req.request_id) from None

    def _spawn(self, session: Session, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        return task


def _introduction(session: Session, body: object) -> bool:
    """Whether ``body`` is a peer server's introduction of its own binding, held then
    for the connection (``peer_auth``) whether or not the route is known here."""
    if not isinstance(body, rep.AnnounceBinding) or session.bindings is None:
        return False
    return session.bindings.introduce(body.binding) is None


def _holds(signer: sig.SignerState | None, join: sig.JoinEntity) -> bool:
    """True if ``signer`` already holds the entity ``join`` would make it a replica of."""
    if signer is None:
        return False
    return join.entity_id in signer.by_entity


async def _send(ws: ServerConnection, frame: bytes) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)


def _no_fields(req: Request) -> None:
    if req.body:
        raise ProtocolError(
            Err.MALFORMED,
            f"{req.type.name} takes an empty body, got {len(req.body)} items",
            req.request_id,
        )


# What the node's own refusals mean on the wire.
_REFUSAL_CODES: tuple[tuple[type[Exception], Err], ...] = (
    (Busy, Err.BUSY),
    (TooLarge, Err.MALFORMED),
    (ShuttingDown, Err.SHUTTING_DOWN),
    (UnknownRoute, Err.UNKNOWN_ROUTE),
    (NotFound, Err.NOT_FOUND),
    (DecodeError, Err.MALFORMED),
)


def _refusal(exc: Exception, rid: int) -> ProtocolError:
    """The ERROR reply for a refusal by the node (or a body that does not decode)."""
    code = next(c for kind, c in _REFUSAL_CODES if isinstance(exc, kind))
    return ProtocolError(code, str(exc), rid)


def _entity_reply(
    route: tuple[bytes, ...], part: int, rest: list[Any], genesis: rep.Genesis, state: EntityState
) -> list[object]:
    """ENTITY's body: the route, the part, the header, and the record or page asked for
    (KeyError: a page after a key the map does not hold)."""
    body: list[object] = [list(route), part, reads.header_part(genesis.to_tree(), state)]
    if part == reads.RECORD:
        which, key = rest
        body.append(reads.record_part(state, which, key))
    elif part == reads.PAGE:
        which, after, limit = rest
        body.append(reads.page_part(state, which, after, limit))
    elif part == reads.NODE:
        which, rep, count, h = rest
        body.append(reads.node_part(state, which, rep, count, h))
    elif part in (reads.EVIDENCE, reads.REFUSALS):
        body.append(rest[0])
    return body


def _entity_read_fields(body: list[RlpItem]) -> tuple[int, bytes, list[Any]]:
    """READ_ENTITY's ``[0, at]``, ``[1, at, map, key]``, ``[2, at, map, after, limit]``,
    ``[3, at, map, first_key, count, hash]`` or ``[4, at]``, strictly; DecodeError
    naming what is wrong."""
    if not body:
        raise DecodeError("READ_ENTITY body is [part, at, ...]")
    part = as_int(body[0], "part", max_value=reads.REFUSALS)
    sizes = {
        reads.HEADER: 2,
        reads.RECORD: 4,
        reads.PAGE: 5,
        reads.NODE: 6,
        reads.EVIDENCE: 2,
        reads.REFUSALS: 2,
    }
    if len(body) != sizes[part]:
        raise DecodeError(
            f"READ_ENTITY {reads.PART_NAMES[part]} body has {sizes[part]} items, got {len(body)}"
        )
    at = as_bytes(body[1], "at", max_len=HASH_LEN)
    if at and len(at) != HASH_LEN:
        raise DecodeError("at: an entity state hash (32 bytes) or empty")
    if part in (reads.HEADER, reads.EVIDENCE, reads.REFUSALS):
        return part, at, []
    which = as_int(body[2], "map", max_value=reads.FORWARDS)
    if part == reads.RECORD:
        return part, at, [which, as_bytes(body[3], "key", size=HASH_LEN)]
    if part == reads.NODE:
        return (
            part,
            at,
            [
                which,
                as_bytes(body[3], "first_key", size=HASH_LEN),
                as_int(body[4], "count", max_value=(1 << 64) - 1),  # 0: the top
                as_bytes(body[5], "hash", size=HASH_LEN),
            ],
        )
    after = as_bytes(body[3], "after", max_len=HASH_LEN)
    if after and len(after) != HASH_LEN:
        raise DecodeError("after: a key (32 bytes) or empty")
    limit = as_int(body[4], "limit", min_value=1, max_value=reads.MAX_PAGE)
    return part, at, [which, after, limit]


def _one_field[T](req: Request, parse: Callable[[RlpItem], T]) -> T:
    if len(req.body) != 1:
        raise ProtocolError(
            Err.MALFORMED, f"{req.type.name} body has 1 item, got {len(req.body)}", req.request_id
        )
    try:
        return parse(req.body[0])
    except DecodeError as exc:
        raise ProtocolError(Err.MALFORMED, str(exc), req.request_id) from None
