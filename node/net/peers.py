"""Outbound links to peer servers (``--peer URL``): introduce ourselves, learn
which signers each peer hosts, and carry consensus messages to them.

Each link keeps one WebSocket open, reconnecting with backoff. Messages for a
peer queue while it is away (bounded; the oldest go first). Losing one is safe:
consensus re-derives what matters (a replica that missed commits fetches them
with GET_FRAMES; batches are re-forwarded and frames re-proposed on timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    encode_bytes,
    encode_tree,
    encode_uint,
)
from node.identity import CHALLENGE_LEN, Identity
from node.machines.binding import ServerBinding
from node.machines.frames import Certificate, Polka
from node.machines.replica.inputs import AnnounceBinding
from node.memberships import MAX_PAGE, Membership
from node.net import limits, tls
from node.net.protocol import (
    PROTOCOL_VERSION,
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    decode_reply,
    encode_request,
    encode_request_raw,
    error_of,
)
from node.txs import Tx

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
PEER_INFO_INTERVAL_S = 1.0
RECONNECT_MAX_S = 2.0
REQUEST_TIMEOUT_S = 10.0


class PeerRefused(Exception):
    """A peer answered a request with an error, or with something malformed."""


@dataclass(eq=False)
class PeerLink:
    url: str
    hosted: frozenset[bytes] = frozenset()
    connected: bool = False
    queue: deque[bytes] = field(default_factory=lambda: deque(maxlen=MAX_QUEUED))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)
    ws: ClientConnection | None = None
    refusal: str | None = None  # the last certificate refusal logged as an error
    # (signer, serial) of the bindings introduced on this connection (reset on each).
    introduced: set[tuple[bytes, int]] = field(default_factory=set)
    # The id the peer gave in its CHALLENGE reply (claimed, not proved: used only to
    # ask it first for what it sent us, which carries its own proof).
    server_id: bytes = b""


class PeerNetwork:
    def __init__(
        self, urls: list[str], identity: Identity, trust: tls.ClientTrust | None = None
    ) -> None:
        """``urls``: ``ws://`` or ``wss://`` (a pinned fingerprint after ``#sha256=``);
        ``trust``: how a ``wss://`` peer without a pin is verified (CA file or the
        system's CAs)."""
        self.identity = identity
        self.trust = trust
        self.links = [PeerLink(url) for url in urls]
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        # Called with a link when it (re)connects or its hosted signers change.
        self.on_change: list[Callable[[PeerLink], object]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(link)) for link in self.links]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def hosts_of(self, signer: bytes) -> list[PeerLink]:
        """The peer hosting ``signer``; while no peer is known to, all of them (a peer
        that does not host it answers UNKNOWN_ROUTE, which is harmless)."""
        known = [link for link in self.links if signer in link.hosted]
        return known or self.links

    @property
    def sender(self) -> Sender:
        return Sender(SenderKind.SERVER, self.identity.id)

    def _send(self, link: PeerLink, req: Req, route: list[bytes], body: list[object]) -> None:
        self._queue(link, encode_request(req, next(self._ids), self.sender, tuple(route), body))

    def _queue(self, link: PeerLink, frame: bytes) -> None:
        link.queue.append(frame)
        link.wake.set()

    def deliver(self, to_signer: bytes, entity: bytes | None, tx: Tx) -> bool:
        links = self.hosts_of(to_signer)
        for link in links:
            self._queue(link, self._deliver_frame(to_signer, entity, tx))
        return bool(links)

    def _deliver_frame(self, to_signer: bytes, entity: bytes | None, tx: Tx) -> bytes:
        """A DELIVER request of ``tx`` for ``to_signer``'s replica of ``entity`` (or the
        signer itself), with a request id of its own."""
        body = [encode_bytes(to_signer), encode_bytes(entity or b""), tx.raw]
        return encode_request_raw(Req.DELIVER, next(self._ids), self.sender, (), body)

    def deliver_first(self, link: PeerLink, to_signer: bytes, entity: bytes, tx: Tx) -> None:
        """DELIVER ``tx`` on ``link`` ahead of what is queued there (a server's
        introduction of its binding, which the traffic behind it needs)."""
        link.queue.appendleft(self._deliver_frame(to_signer, entity, tx))
        link.wake.set()

    def introduce(self, to_signer: bytes, entity: bytes, binding: ServerBinding) -> None:
        """Introduce ``binding`` (of this server's key) on each link to ``to_signer``'s
        host that has not had it on its current connection, ahead of what is queued
        for it next (a channel message: node/net/peer_auth.py)."""
        key = (binding.signer, binding.serial)
        tx = Tx.of(AnnounceBinding(binding))
        for link in self.hosts_of(to_signer):
            if key not in link.introduced:
                link.introduced.add(key)
                self._queue(link, self._deliver_frame(to_signer, entity, tx))

    def proposals(
        self,
        members: list[bytes],
        frame_raw: bytes,
        round_: int,
        sig: bytes,
        valid: Polka | None = None,
    ) -> None:
        """Send a proposal (with the proposer's approval ``sig``, and ``valid``, the polka
        of the lock it re-proposes) to the servers hosting ``members``: one per server
        (it answers for all the members it hosts), or to every peer for members whose
        host is not known yet."""
        proof = valid.raw if valid is not None else encode_tree([])
        sent: set[int] = set()
        for member in members:
            for link in self.hosts_of(member):
                if member in link.hosted and id(link) in sent:
                    continue
                sent.add(id(link))
                body = [
                    encode_bytes(member),
                    frame_raw,
                    encode_uint(round_),
                    encode_bytes(sig),
                    proof,
                ]
                rid = next(self._ids)
                self._queue(link, encode_request_raw(Req.PROPOSAL, rid, self.sender, (), body))

    async def get_frames(
        self, link: PeerLink, entity: bytes, start: int, count: int
    ) -> list[tuple[bytes, Certificate]]:
        reply = await self._request(link, Req.GET_FRAMES, [entity, start, count])
        if reply.type is not Rep.FRAMES:
            return []
        out = []
        for item in as_list(reply.body[0], "frames"):
            pair = as_list(item, "frame", size=2)
            out.append((encode_tree(as_list(pair[0], "frame")), Certificate.from_item(pair[1])))
        return out

    async def memberships(
        self, link: PeerLink, signer: bytes, after: bytes, limit: int, binding: ServerBinding
    ) -> tuple[list[Membership], bytes]:
        """One MEMBERSHIPS page from ``link``'s server, proving with ``binding`` (the
        signer's binding of our identity key) that we host ``signer``; raises
        ConnectionError or TimeoutError, or PeerRefused with the peer's reason."""
        body = [signer, after, limit, binding.to_tree()]
        reply = await self._request(link, Req.MEMBERSHIPS, body)
        if reply.type is Rep.ERROR:
            raise PeerRefused(f"{link.url}: {error_of(reply)[1]}")
        if reply.type is not Rep.MEMBERSHIPS:
            raise PeerRefused(f"{link.url}: answered {reply.type.name}")
        try:
            if len(reply.body) != 2:
                raise DecodeError("MEMBERSHIPS body is [[membership...], next_after]")
            items = as_list(reply.body[0], "memberships", max_len=MAX_PAGE)
            found = [Membership.from_item(item) for item in items]
            cursor = as_bytes(reply.body[1], "next after", max_len=HASH_LEN)
        except (DecodeError, ValueError) as exc:
            raise PeerRefused(f"{link.url}: malformed MEMBERSHIPS: {exc}") from None
        return found, cursor

    async def _request(self, link: PeerLink, req: Req, body: list[object]) -> Reply:
        ws = link.ws
        if ws is None:
            raise ConnectionError(f"peer {link.url} is not connected")
        rid = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        link.waiting[rid] = future
        try:
            await ws.send(encode_request(req, rid, self.sender, (), body))
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await future
        finally:
            link.waiting.pop(rid, None)

    # The link's life ---------------------------------------------------------

    async def _run(self, link: PeerLink) -> None:
        backoff = 0.05
        while True:
            try:
                async with await tls.connect(
                    link.url,
                    self.trust,
                    max_size=limits.PEER_REPLY.max_bytes,
                    max_queue=limits.MAX_QUEUED_FRAMES,
                    compression=None,
                    open_timeout=5,
                ) as ws:
                    link.refusal = None
                    await self._session(link, ws)
                    backoff = 0.05
            except tls.CertificateRefused as exc:
                # No HELLO was sent. Logged as an error once, until it changes.
                if str(exc) != link.refusal:
                    log.error("peer %s not linked: %s", link.url, exc)
                    link.refusal = str(exc)
                else:
                    log.debug("peer %s not linked, again: %s", link.url, exc)
            except tls.TlsConfigError as exc:
                log.error("peer %s cannot be reached: %s; giving up on it", link.url, exc)
                return
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, DecodeError) as exc:
                log.debug("peer %s: %r", link.url, exc)
            except InvalidURI:
                log.error("peer URL %s is not a WebSocket URL; giving up on it", link.url)
                return
            finally:
                link.connected = False
                link.ws = None
                for future in link.waiting.values():
                    if not future.done():
                        future.set_exception(ConnectionError("peer connection lost"))
                link.waiting.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _session(self, link: PeerLink, ws: ClientConnection) -> None:
        reply = await self._handshake(link, ws, Req.CHALLENGE, [])
        challenge = as_bytes(reply.body[1], "challenge", size=CHALLENGE_LEN)
        receiver = as_bytes(reply.body[2], "receiver id", size=HASH_LEN)
        link.server_id = receiver
        reply = await self._handshake(link, ws, Req.HELLO, self.identity.hello(challenge, receiver))
        link.ws = ws
        link.connected = True
        link.introduced.clear()
        self._set_hosted(link, reply.body[4] if len(reply.body) > 4 else [], always=True)
        reader = asyncio.create_task(self._read(link, ws))
        info = asyncio.create_task(self._poll_info(link))
        try:
            while not reader.done():
                while link.queue:
                    await ws.send(link.queue[0])
                    link.queue.popleft()
                link.wake.clear()
                waiter = asyncio.ensure_future(link.wake.wait())
                await asyncio.wait([waiter, reader], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            reader.cancel()
            info.cancel()

    async def _handshake(
        self, link: PeerLink, ws: ClientConnection, req: Req, body: list[bytes]
    ) -> Reply:
        """Send CHALLENGE or HELLO (with an id of its own: § 5 keeps 0 for the node's
        errors) and read its answer, which must come from our protocol version."""
        rid = next(self._ids)
        await ws.send(encode_request(req, rid, self.sender, (), body))
        reply = decode_reply(await ws.recv(decode=False), limits.PEER_REPLY)
        if reply.type is Rep.ERROR:
            code, message = error_of(reply)
            if req is Req.CHALLENGE and code is Err.UNKNOWN_TYPE:
                message = (
                    f"it does not know CHALLENGE: it speaks a protocol version before 4,"
                    f" this server {PROTOCOL_VERSION}: not linked"
                )
            log.warning("peer %s refused us: %s %s", link.url, code.name, message)
            raise ConnectionError(message)
        version: int | None = None
        with contextlib.suppress(DecodeError, IndexError):
            version = as_int(reply.body[0], "protocol version")
        if version != PROTOCOL_VERSION:
            log.warning(
                "peer %s speaks protocol version %s, this server %d: not linked",
                link.url,
                version,
                PROTOCOL_VERSION,
            )
            raise ConnectionError(f"protocol version {version}")
        expected = Rep.CHALLENGE if req is Req.CHALLENGE else Rep.WELCOME
        if reply.type is not expected or reply.request_id != rid or len(reply.body) < 3:
            raise DecodeError(f"peer answered {req.name} with {reply.type.name}")
        return reply

    async def _read(self, link: PeerLink, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                if isinstance(frame, str):
                    continue
                try:
                    reply = decode_reply(frame, limits.PEER_REPLY)
                except DecodeError:
                    log.warning("peer %s sent an undecodable frame", link.url)
                    continue
                future = link.waiting.get(reply.request_id)
                if future is not None and not future.done():
                    future.set_result(reply)
                elif reply.type is Rep.ERROR:
                    code, message = error_of(reply)
                    log.info("peer %s: %s %s", link.url, code.name, message)

    async def _poll_info(self, link: PeerLink) -> None:
        while True:
            await asyncio.sleep(PEER_INFO_INTERVAL_S)
            try:
                reply = await self._request(link, Req.PEER_INFO, [])
            except (ConnectionError, TimeoutError, ConnectionClosed):
                return
            if reply.type is Rep.PEER_INFO:
                self._set_hosted(link, reply.body[0])

    def _set_hosted(self, link: PeerLink, item: RlpItem, *, always: bool = False) -> None:
        try:
            hosted = frozenset(
                as_bytes(s, "signer", size=HASH_LEN) for s in as_list(item, "signers")
            )
        except DecodeError:
            return
        if hosted == link.hosted and not always:
            return
        link.hosted = hosted
        for callback in self.on_change:
            callback(link)
