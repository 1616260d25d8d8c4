"""The node's WebSocket endpoint: sessions, authentication, and request dispatch.

Two listeners share one handler:

- TCP (``--host``, default 127.0.0.1): the first message must be HELLO with an
  API token; every later request is checked against the token's scope.
- The control socket ``<data>/node.sock`` (POSIX): a Unix socket in the
  0700 data folder, so file permissions authenticate it; sessions there start
  with server scope. The CLI uses it while a running node holds LevelDB.

A bad frame gets an ERROR reply and changes nothing. Only authentication
failures close the connection (see docs/PROTOCOL.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed

from node.codec import DecodeError, RlpItem, as_bytes, as_int
from node.errors import Busy, ShuttingDown, TooLarge, UnknownRoute
from node.net.protocol import (
    MAX_BLOCKS_PER_PAGE,
    MAX_FRAME_BYTES,
    MAX_TOKEN_BYTES,
    MAX_TXS_PER_SUBMIT,
    PROTOCOL_VERSION,
    Err,
    ProtocolError,
    Rep,
    Req,
    Request,
    Sender,
    SenderKind,
    Topic,
    decode_request,
    encode_error,
    encode_reply,
)
from node.runtime import Ack, BlockEvent, CommitEvent, Node, Subscription
from node.tokens import Scope, TokenStore
from node.txs import registry_for_depth

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS_PER_SESSION = 64
MAX_BLOCKS_REPLY_BYTES = 8 * 1024 * 1024
UNIX_PATH_MAX = 100
HELLO_TIMEOUT_S = 10.0
SERVER_WIDE = frozenset({Req.HELLO, Req.STATUS, Req.UNSUBSCRIBE, Req.GET_BLOCKS, Req.METRICS})


@dataclass(eq=False)
class Session:
    local: bool
    scope: Scope | None = None
    token_id: str | None = None
    sender: Sender | None = None
    next_sub_id: int = 1
    subs: dict[int, tuple[Subscription, asyncio.Task[None]]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class ApiServer:
    """Serves one :class:`Node` over WebSocket."""

    def __init__(
        self,
        node: Node,
        tokens: TokenStore,
        node_id: bytes,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
    ) -> None:
        self.node = node
        self.hello_timeout_s = hello_timeout_s
        self.tokens = tokens
        self.node_id = node_id
        self._servers: list[Server] = []
        self._sessions: dict[Session, ServerConnection] = {}
        self._handlers: dict[
            Req, Callable[[ServerConnection, Session, Request], Awaitable[None]]
        ] = {
            Req.HELLO: self._hello,
            Req.SUBMIT: self._submit,
            Req.STATUS: self._status,
            Req.READ_STATE: self._read_state,
            Req.SUBSCRIBE: self._subscribe,
            Req.UNSUBSCRIBE: self._unsubscribe,
            Req.GET_BLOCKS: self._get_blocks,
            Req.METRICS: self._metrics,
        }

    async def listen_tcp(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        server = await serve(
            lambda ws: self._serve(ws, local=False),
            host,
            port,
            max_size=MAX_FRAME_BYTES,
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
            max_size=MAX_FRAME_BYTES,
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
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    # Connection -------------------------------------------------------------

    async def _serve(self, ws: ServerConnection, *, local: bool) -> None:
        session = Session(local=local, scope=Scope("server") if local else None)
        if not local:
            self._spawn(session, self._require_hello(ws, session))
        self._sessions[session] = ws
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    await ws.send(
                        encode_error(
                            Err.MALFORMED, "text frames are not supported; send binary RLP"
                        )
                    )
                    continue
                # websockets hands over already-buffered frames without yielding;
                # let the tick (and other connections) in between requests.
                await asyncio.sleep(0)
                try:
                    await self._handle(ws, session, frame)
                except ProtocolError as exc:
                    await ws.send(encode_error(exc.code, exc.message, exc.request_id))
                    if exc.code in (Err.UNAUTHORIZED, Err.UNSUPPORTED_SENDER):
                        await ws.close(1008, exc.message[:100])
                        return
        except ConnectionClosed:
            pass
        finally:
            self._sessions.pop(session, None)
            for sub, task in session.subs.values():
                self.node.unsubscribe(sub)
                task.cancel()
            for task in session.tasks:
                task.cancel()

    async def _require_hello(self, ws: ServerConnection, session: Session) -> None:
        """Close a TCP connection that has not authenticated within the deadline."""
        await asyncio.sleep(self.hello_timeout_s)
        if session.scope is None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode_error(Err.UNAUTHORIZED, "no HELLO within the deadline"))
                await ws.close(1008, "no HELLO within the deadline")

    async def _handle(self, ws: ServerConnection, session: Session, frame: bytes) -> None:
        req = decode_request(frame)
        if req.route and req.type in SERVER_WIDE:
            raise ProtocolError(
                Err.MALFORMED,
                f"{req.type.name} concerns the whole server; its route must be empty",
                req.request_id,
            )
        if req.type is not Req.HELLO and session.scope is None:
            raise ProtocolError(
                Err.UNAUTHORIZED,
                "the first request must be HELLO with an API token",
                req.request_id,
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
        if req.sender.kind is not SenderKind.CLIENT:
            raise ProtocolError(
                Err.UNSUPPORTED_SENDER,
                f"{req.sender.kind.name.lower()} senders authenticate by signature, "
                "which this node does not accept yet",
                rid,
            )
        token = _one_field(req, lambda item: as_bytes(item, "token", max_len=MAX_TOKEN_BYTES))
        if session.local:
            session.sender = req.sender
        else:
            if session.scope is not None:
                raise ProtocolError(Err.FORBIDDEN, "already authenticated", rid)
            try:
                record = self.tokens.authenticate(token.decode("ascii"))
            except UnicodeDecodeError:
                record = None
            if record is None:
                raise ProtocolError(Err.UNAUTHORIZED, "invalid API token", rid)
            session.scope = Scope.parse(record.scope)
            session.token_id = record.id
            session.sender = req.sender
        assert session.scope is not None
        body = [PROTOCOL_VERSION, str(session.scope).encode(), self.node_id, self.node.state.height]
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
            try:
                txs.append(registry.decode(item, req.body_raws[i][0]))
            except DecodeError as exc:
                raise ProtocolError(Err.INVALID_TX, f"transaction {i}: {exc}", rid) from None
        try:
            future = self.node.submit(req.route, txs)
        except Busy as exc:
            raise ProtocolError(Err.BUSY, str(exc), rid) from None
        except TooLarge as exc:
            raise ProtocolError(Err.MALFORMED, str(exc), rid) from None
        except ShuttingDown as exc:
            raise ProtocolError(Err.SHUTTING_DOWN, str(exc), rid) from None
        self._spawn(session, self._send_receipts(ws, rid, future))

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
        _no_fields(req)
        self._check_scope(session, req)
        self._check_route(req)
        state = self.node.read_state(req.route)
        await ws.send(encode_reply(Rep.STATE, req.request_id, [list(req.route), state]))

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
            raise ProtocolError(Err.UNKNOWN_ROUTE, str(exc), req.request_id) from None

    def _spawn(self, session: Session, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)


def _no_fields(req: Request) -> None:
    if req.body:
        raise ProtocolError(
            Err.MALFORMED,
            f"{req.type.name} takes an empty body, got {len(req.body)} items",
            req.request_id,
        )


def _one_field[T](req: Request, parse: Callable[[RlpItem], T]) -> T:
    if len(req.body) != 1:
        raise ProtocolError(
            Err.MALFORMED, f"{req.type.name} body has 1 item, got {len(req.body)}", req.request_id
        )
    try:
        return parse(req.body[0])
    except DecodeError as exc:
        raise ProtocolError(Err.MALFORMED, str(exc), req.request_id) from None
