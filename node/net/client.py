"""An asyncio client for the node's protocol, used by the CLI, the tests and the benchmarks.

It pipelines: many requests may be in flight, and replies are matched to
requests by id. Events go to the queue of their subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed

from node.block import Block
from node.codec import (
    HASH_LEN,
    DecodeError,
    Limits,
    as_bytes,
    as_int,
    as_list,
    as_text,
    decode,
    encode_tree,
    scan,
)
from node.machines.frames import Certificate
from node.machines.server import ServerState
from node.machines.signer import SignerState
from node.memberships import MAX_PAGE, FindResult, Membership
from node.net import limits, tls
from node.net.protocol import (
    CLIENT_VERSIONS,
    PROTOCOL_VERSION,
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    Topic,
    decode_reply,
    encode_request,
    error_of,
)
from node.txs import Tx, TxBody

log = logging.getLogger(__name__)
KEEPALIVE_S = 20.0  # websockets' default ping interval and timeout


class VersionMismatch(ConnectionError):
    """The node speaks another version of the protocol than this client."""


class InsecureTransport(ConnectionError):
    """A token would cross the network in clear (plain ``ws://`` to another machine)."""


class NodeError(Exception):
    """An ERROR reply from the node."""

    def __init__(self, code: Err, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TxReceipt:
    index: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Receipts:
    height: int
    block_hash: bytes
    receipts: tuple[TxReceipt, ...]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    height: int
    head: bytes
    state_hash: bytes
    counter: int
    timestamp: int
    inbox: int


class NodeClient:
    """One connection to a node."""

    def __init__(self, ws: ClientConnection, sender: Sender) -> None:
        self.ws = ws
        self.sender = sender
        self.scope = ""
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._subs: dict[int, asyncio.Queue[Reply]] = {}
        self._failure = "connection to the node closed"
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        unix_path: Path | None = None,
        token: str | None = None,
        sender_id: bytes = b"xln-client",
        ping_interval: float | None = KEEPALIVE_S,
        ping_timeout: float | None = KEEPALIVE_S,
        trust: tls.ClientTrust | None = None,
    ) -> Self:
        """Connect by ``ws://`` or ``wss://`` URL with a token, or to a data folder's
        control socket.

        A ``wss://`` node's certificate is checked as ``trust`` says (a pin on the
        URL, ``#sha256=<hex>``, overrides it; docs/PROTOCOL.md § 1.1): a refused one
        raises :class:`~node.net.tls.CertificateRefused` before HELLO. A token is
        never sent over plain ``ws://`` to a host that is not loopback: that raises
        :class:`InsecureTransport` before connecting.

        The connection pings the node every ``ping_interval`` seconds and closes if
        no pong comes within ``ping_timeout`` (websockets' keepalive).
        """
        options: dict[str, Any] = {
            "max_size": limits.MAX_REPLY_BYTES,
            "compression": None,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
        }
        if unix_path is not None:
            ws = await unix_connect(str(unix_path), "ws://localhost/", **options)
        elif url is not None:
            if token is not None:
                refusal = tls.token_transport_refusal(tls.split_pin(url)[0])
                if refusal is not None:
                    raise InsecureTransport(refusal)
            ws = await tls.connect(url, trust, **options)
        else:
            raise ValueError("connect needs a url or a unix_path")
        client = cls(ws, Sender(SenderKind.CLIENT, sender_id))
        try:
            if token is not None or unix_path is not None:
                await client.hello(token or "")
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # Requests ---------------------------------------------------------------

    async def request(self, req_type: Req, body: list[Any], route: Sequence[bytes] = ()) -> Reply:
        """Send one request and wait for its reply; an ERROR reply raises NodeError."""
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.ws.send(
                encode_request(req_type, request_id, self.sender, tuple(route), body)
            )
            reply = await future
        finally:
            self._pending.pop(request_id, None)
        if reply.type is Rep.ERROR:
            raise NodeError(*error_of(reply))
        return reply

    async def hello(self, token: str) -> str:
        reply = await self.request(Req.HELLO, [token.encode()])
        version = as_int(reply.body[0], "protocol version")
        if version not in CLIENT_VERSIONS:
            raise VersionMismatch(
                f"the node speaks protocol version {version}; this client speaks "
                f"{PROTOCOL_VERSION} (update the older of the two)"
            )
        self.scope = as_text(reply.body[1], "scope", max_len=200)
        return self.scope

    async def submit(self, txs: Sequence[Tx | TxBody], route: Sequence[bytes] = ()) -> Receipts:
        raws = [tx if isinstance(tx, Tx) else Tx.of(tx) for tx in txs]
        reply = await self.request(Req.SUBMIT, [decode(t.raw) for t in raws], route)
        return parse_receipts(reply)

    async def status(self) -> NodeStatus:
        b = (await self.request(Req.STATUS, [])).body
        return NodeStatus(
            height=as_int(b[0], "height"),
            head=as_bytes(b[1], "head", size=HASH_LEN),
            state_hash=as_bytes(b[2], "state hash", size=HASH_LEN),
            counter=as_int(b[3], "counter"),
            timestamp=as_int(b[4], "timestamp"),
            inbox=as_int(b[5], "inbox"),
        )

    async def read_state(self, route: Sequence[bytes] = ()) -> bytes:
        """The machine's encoded state, its structure already checked against
        ``limits.STATE`` (so decoding it is bounded, whatever the node sent)."""
        reply = await self.request(Req.READ_STATE, [], route)
        return _scanned(as_bytes(reply.body[1], "state"), limits.STATE)

    async def server_listing(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The server's encoded state (its keccak is the state hash) and its signers
        ``(id, state hash)``, listed by READ_STATE and checked against the root."""
        return ServerState.read_listing(await self.read_state())

    async def signer_listing(self, signer: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
        """A signer's ``(pubkey, counter, [(entity_id, replica_hash)])``, likewise."""
        return SignerState.decode_header(await self.read_state([signer]))

    async def server_state(self) -> ServerState:
        """The whole hierarchy (server, signers, replicas), with its ``head``; needs
        server scope.

        The state's encoding leaves out ``head`` (a block cannot commit to its own
        hash), so it is read as the hash of the block at the state's height, which
        must carry the state's hash.
        """
        reply = await self.request(Req.READ_STATE, [1])
        top, _ = ServerState.read_listing(_scanned(as_bytes(reply.body[1], "state"), limits.STATE))
        raws: dict[tuple[bytes, ...], bytes] = {}
        for item in as_list(reply.body[2], "sub-machines"):
            pair = as_list(item, "sub-machine", size=2)
            route = tuple(as_bytes(r, "route", size=HASH_LEN) for r in as_list(pair[0], "route"))
            raws[route] = _scanned(as_bytes(pair[1], "state"), limits.STATE)
        state = ServerState.decode(top, get=raws.__getitem__, routes=raws)
        if state.height == 0:
            return state
        page = await self.blocks(state.height, 1)
        block = Block.decode(page[0]) if page else None
        if block is None or block.height != state.height or block.state_hash != state.hash():
            raise DecodeError(f"the node's block {state.height} does not hold the state it sent")
        return replace(state, head=block.hash)

    async def frames(
        self, entity: bytes, start_height: int, max_count: int
    ) -> list[tuple[bytes, Certificate]]:
        """Certified frames of ``entity`` from ``start_height`` (a scope that reaches one
        of its replicas on this node)."""
        reply = await self.request(Req.GET_FRAMES, [entity, start_height, max_count])
        out = []
        for item in as_list(reply.body[0], "frames"):
            pair = as_list(item, "frame", size=2)
            out.append((encode_tree(as_list(pair[0], "frame")), Certificate.from_item(pair[1])))
        return out

    async def memberships(
        self, signer: bytes, after: bytes = b"", limit: int = MAX_PAGE
    ) -> tuple[list[Membership], bytes]:
        """A page of the entities hosted on this node whose config names ``signer``,
        and the cursor for the next page (b"": the last)."""
        reply = await self.request(Req.MEMBERSHIPS, [signer, after, limit])
        if len(reply.body) != 2:
            raise DecodeError("MEMBERSHIPS body is [[membership...], next_after]")
        found = [Membership.from_item(m) for m in as_list(reply.body[0], "memberships")]
        return found, as_bytes(reply.body[1], "next after", max_len=32)

    async def find_entities(self, signer: bytes) -> FindResult:
        """Ask the node to find ``signer``'s entities through its peers, set its agent's
        floors and join them (FIND_ENTITIES)."""
        reply = await self.request(Req.FIND_ENTITIES, [], route=(signer,))
        return FindResult.from_body(reply.body)

    async def blocks(self, start_height: int, max_count: int) -> list[bytes]:
        reply = await self.request(Req.GET_BLOCKS, [start_height, max_count])
        blocks = as_list(reply.body[0], "blocks")
        return [_scanned(as_bytes(b, "block"), limits.BLOCK) for b in blocks]

    async def subscribe(
        self, topic: Topic, route: Sequence[bytes] = ()
    ) -> tuple[int, asyncio.Queue[Reply]]:
        """Returns the subscription id and the queue its events arrive on."""
        reply = await self.request(Req.SUBSCRIBE, [topic], route)
        sub_id = as_int(reply.body[0], "subscription id")
        return sub_id, self._subs.setdefault(sub_id, asyncio.Queue())

    async def unsubscribe(self, sub_id: int) -> None:
        await self.request(Req.UNSUBSCRIBE, [sub_id])
        self._subs.pop(sub_id, None)

    async def metrics(self) -> dict[str, Any]:
        b = (await self.request(Req.METRICS, [])).body
        return {
            "tick_ms": as_int(b[0], "tick"),
            "tick_lateness_us": [as_int(v, "lateness") for v in as_list(b[1], "lateness")],
            "write_us": [as_int(v, "write") for v in as_list(b[2], "write")],
            "blocks": as_int(b[3], "blocks"),
            "txs": as_int(b[4], "txs"),
        }

    # Reader -----------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, str):
                    continue
                try:
                    reply = decode_reply(frame)
                except DecodeError as exc:
                    # A node that sends what is not a reply is not one to keep talking to.
                    log.warning("the node sent a malformed frame: %s", exc)
                    self._failure = f"the node sent a malformed frame: {exc}"
                    await self.ws.close(1002, "malformed frame")
                    return
                if reply.type in (Rep.BLOCK_EVENT, Rep.COMMIT_EVENT, Rep.FRAME_EVENT) or (
                    reply.type is Rep.ERROR
                    and error_of(reply)[0] is Err.SUBSCRIPTION_OVERFLOW
                    and reply.request_id in self._subs
                ):
                    self._subs.setdefault(reply.request_id, asyncio.Queue()).put_nowait(reply)
                    continue
                future = self._pending.get(reply.request_id)
                if future is not None and not future.done():
                    future.set_result(reply)
                elif reply.type is Rep.ERROR:
                    # An error that names no pending request (request id 0): fail them all.
                    for f in self._pending.values():
                        if not f.done():
                            f.set_result(reply)
        except ConnectionClosed:
            pass
        finally:
            for f in self._pending.values():
                if not f.done():
                    f.set_exception(ConnectionError(self._failure))


def parse_receipts(reply: Reply) -> Receipts:
    b = reply.body
    items = []
    for r in as_list(b[2], "receipts"):
        fields = as_list(r, "receipt", size=3)
        code = as_int(fields[1], "code")
        items.append(
            TxReceipt(
                as_int(fields[0], "index"),
                as_text(fields[2], "error", max_len=4096) if code else None,
            )
        )
    return Receipts(as_int(b[0], "height"), as_bytes(b[1], "hash", size=HASH_LEN), tuple(items))


def _scanned(raw: bytes, caps: Limits) -> bytes:
    """``raw``, once its structure is within ``caps`` (DecodeError otherwise)."""
    scan(raw, caps)
    return raw
