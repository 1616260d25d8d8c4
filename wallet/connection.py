"""The wallet's side of the node protocol: one :class:`NodeSession` over ``NodeClient``.

It keeps a connection to one node (embedded or remote), reconnecting with
backoff, and pushes its :class:`~wallet.model.Connection` state to the
:class:`~wallet.model.WalletModel`. Subscriptions (``BLOCKS``, and
``COMMITS`` on each ``[signer, entity]``) are remembered and made again on every
new connection, so their handlers keep receiving events across reconnects; the
service reads what it missed with ``READ_ENTITY`` (in parts, each proven against
the entity's certified state: a node cannot make the wallet believe a channel,
reserve or nonce that no quorum certified). While connected it polls
``METRICS`` for the tick-lateness chart.

Requests made while disconnected raise :class:`NotConnected` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from node.codec import HASH_LEN, as_bytes, as_int, as_list, decode, encode_tree, keccak
from node.entity_reads import CHANNELS, EntityHeader, Page
from node.evidence import Evidence
from node.machines.accounts import ChannelRecord
from node.machines.entity import Batch, EntityState, entity_id_for
from node.machines.frames import Certificate, Frame
from node.machines.refusal import Refusal
from node.machines.replica import Commit, Genesis, SubmitBatch
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity, JoinEntity
from node.memberships import FindResult, Membership
from node.net.client import (
    InsecureTransport,
    NodeClient,
    NodeError,
    NodeStatus,
    Receipts,
    VersionMismatch,
)
from node.net.entity_client import EntityReader
from node.net.protocol import Err, Rep, Reply, Topic
from node.net.remote_map import is_partial, lazy_state
from node.net.tls import (
    CertificateRefused,
    ClientTrust,
    TlsConfigError,
    UntrustedCertificate,
    pretty,
)
from node.txs import Tx, TxBody
from wallet.model import Connection, Link, WalletModel

log = logging.getLogger(__name__)

# Entities of at most this many channels and forwards are read whole to check a frame
# (pages of 256: a hub's thousands of forwards in flight), larger ones node by node as
# the frame's execution walks them (whose reads cost more per record than pages).
WHOLE_UP_TO = 65_536


def holdable(state: EntityState, whole_up_to: int) -> bool:
    """Whether the wallet may keep ``state`` as it is: partial already, or whole with at
    most ``whole_up_to`` channels and forwards. An entity that grew past it while the
    wallet followed its frames on a whole state is read again, partially."""
    return is_partial(state) or len(state.channels) + len(state.forwards) <= whole_up_to


SENDER_ID = b"xln-wallet"
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
METRICS_EVERY_S = 1.0
CONNECT_TIMEOUT_S = 10.0
REPLAY_PAGE = 256  # commits per SUBMIT when an entity is rebuilt from a backup

type EventHandler = Callable[[Reply], object]
type ConnectHook = Callable[[], Awaitable[None]]


async def _or_none[T](read: Awaitable[T]) -> T | None:
    """``read``'s result, or None for UNKNOWN_ROUTE (the node holds no such replica)."""
    try:
        return await read
    except NodeError as exc:
        if exc.code is Err.UNKNOWN_ROUTE:
            return None
        raise


async def _own_part[T](read: Awaitable[tuple[EntityHeader, list[T]]]) -> list[T] | None:
    """The records of a part the node keeps beside its replicas (evidence, refusals), or
    None: no such replica, or a node from before that part (it answers MALFORMED)."""
    try:
        found = await _or_none(read)
    except NodeError as exc:
        if exc.code is Err.MALFORMED:
            return None
        raise
    return None if found is None else found[1]


class NotConnected(ConnectionError):
    """No connection to the node right now; the session is reconnecting."""


class SubmitRefused(Exception):
    """The node applied the transaction and it failed (its receipt carries the reason)."""


@dataclass(eq=False)
class _Watch:
    topic: Topic
    route: tuple[bytes, ...]
    handler: EventHandler
    sub_id: int | None = None
    pump: asyncio.Task[None] | None = None


class SignerKey(Protocol):
    """What a signer's registration needs (``wallet.keys.vault.KeyInfo`` has it)."""

    @property
    def signer_id(self) -> bytes: ...

    @property
    def pubkey(self) -> bytes: ...

    @property
    def pop(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A :class:`SignerKey` made by hand."""

    signer_id: bytes
    pubkey: bytes
    pop: bytes


class NodeSession:
    def __init__(
        self,
        model: WalletModel | None = None,
        mode: str = "remote",
        *,
        metrics_every_s: float = METRICS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        whole_up_to: int = WHOLE_UP_TO,
    ) -> None:
        self.model = model
        self.mode = mode
        self.metrics_every_s = metrics_every_s
        self.whole_up_to = whole_up_to
        self.clock = clock
        self.url = ""
        self.scope = ""
        self.client: NodeClient | None = None
        # Proven reads; the configs it trusts outlive reconnections.
        self.reader = EntityReader(self._need)
        self.on_connect: list[ConnectHook] = []  # run after each (re)connection
        self._token = ""
        self.trust: ClientTrust | None = None  # how a wss:// node's certificate is checked
        self._watches: list[_Watch] = []
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._last_metrics: float | None = None  # the clock at the last METRICS
        self._state = Connection(mode=mode)

    # Lifecycle -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.client is not None

    @property
    def state(self) -> Connection:
        return self._state

    async def connect(
        self, url: str, token: str, *, wait: bool = True, trust: ClientTrust | None = None
    ) -> None:
        """Start the session; with ``wait``, return once the first connection is up.

        ``trust``: how a ``wss://`` node's certificate is checked (a pinned
        fingerprint, a CA file, else the system's CAs).

        A token the node refuses raises NodeError (UNAUTHORIZED) and the session
        does not retry: a wrong token stays wrong. Nor does it retry a refused
        certificate (CertificateRefused; UntrustedCertificate when no CA vouches
        for it, with its fingerprint, which the person may accept:
        ``wallet.flows.node_trust``) or a plain ``ws://`` URL to another machine
        (InsecureTransport: the token would go in clear).
        """
        if self._runner is not None and not self._runner.done():
            raise RuntimeError("the session is already started")
        self.url, self._token, self.trust = url, token, trust
        self._stop = asyncio.Event()
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(first))
        if wait:
            await first
        else:
            first.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    async def close(self) -> None:
        self._stop.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        await self._drop_client()
        self._set(Connection(Link.DISCONNECTED, self.mode, self.url))

    def set_starting(self, what: str) -> None:
        """Show the session as connecting while ``what`` happens (the node starts)."""
        self._set(Connection(Link.CONNECTING, self.mode, self.url, error=what))

    def set_error(self, error: str) -> None:
        """Show the session as disconnected for ``error`` (a refusal decided above it)."""
        self._set(Connection(Link.DISCONNECTED, self.mode, self.url, error=error))

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    def _set(self, state: Connection) -> None:
        self._state = state
        if self.model is not None:
            self.model.set_connection(state)

    async def _run(self, first: asyncio.Future[None]) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            self._set(Connection(Link.CONNECTING, self.mode, self.url, error=self._state.error))
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    client = await NodeClient.connect(
                        self.url, token=self._token, sender_id=SENDER_ID, trust=self.trust
                    )
            except NodeError as exc:
                self._set(Connection(Link.DISCONNECTED, self.mode, self.url, error=str(exc)))
                log.error("the node at %s refused the wallet: %s", self.url, exc)
                if not first.done():
                    first.set_exception(exc)
                if exc.code is Err.UNAUTHORIZED:
                    return
            except (CertificateRefused, InsecureTransport, TlsConfigError) as exc:
                # Nothing was sent; retrying the same certificate or URL cannot help.
                self._set(Connection(Link.DISCONNECTED, self.mode, self.url, error=str(exc)))
                log.error("not connecting to %s: %s", self.url, exc)
                if not first.done():
                    first.set_exception(exc)
                return
            except VersionMismatch as exc:
                # Like a wrong token: retrying cannot help.
                self._set(Connection(Link.DISCONNECTED, self.mode, self.url, error=str(exc)))
                log.error("cannot use the node at %s: %s", self.url, exc)
                if not first.done():
                    first.set_exception(exc)
                return
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as exc:
                error = f"cannot reach {self.url}: {exc}"
                self._set(Connection(Link.DISCONNECTED, self.mode, self.url, error=error))
                log.info("%s; retrying in %.1f s", error, backoff)
                if isinstance(exc, InvalidURI) and not first.done():
                    first.set_exception(exc)
                    return
            else:
                backoff = BACKOFF_START_S
                await self._serve(client, first)
            if self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stop.wait()
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _serve(self, client: NodeClient, first: asyncio.Future[None]) -> None:
        self.client = client
        self.scope = client.scope
        metrics: asyncio.Task[None] | None = None
        try:
            status = await client.status()
            tick_ms = 0
            with contextlib.suppress(NodeError):
                tick_ms = int((await client.metrics())["tick_ms"])
            self._set(Connection(Link.CONNECTED, self.mode, self.url, status.height, tick_ms))
            for watch in self._watches:
                await self._subscribe(watch)
            self._connected.set()
            log.info("connected to the node at %s (scope %s)", self.url, self.scope)
            for hook in list(self.on_connect):
                try:
                    await hook()
                except (NodeError, ConnectionError) as exc:
                    log.warning("after connecting: %s", exc)
            if not first.done():
                first.set_result(None)
            metrics = asyncio.create_task(self._poll_metrics(client))
            await client.ws.wait_closed()
        except (ConnectionError, ConnectionClosed) as exc:
            log.info("connection to %s lost: %s", self.url, exc)
        except NodeError as exc:
            # The node's last word before it closes the connection at shutdown.
            if exc.code is not Err.SHUTTING_DOWN:
                raise
            log.info("the node at %s is shutting down", self.url)
        finally:
            self._connected.clear()
            if metrics is not None:
                metrics.cancel()
            await self._drop_client()
            if not self._stop.is_set():
                self._set(
                    Connection(Link.DISCONNECTED, self.mode, self.url, error="connection lost")
                )

    async def _drop_client(self) -> None:
        client, self.client = self.client, None
        for watch in self._watches:
            if watch.pump is not None:
                watch.pump.cancel()
            watch.pump, watch.sub_id = None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    def _need(self) -> NodeClient:
        if self.client is None:
            raise NotConnected(f"not connected to the node at {self.url or '(none)'}")
        return self.client

    # Subscriptions ---------------------------------------------------------

    async def watch(self, topic: Topic, route: Sequence[bytes], handler: EventHandler) -> None:
        """Events of ``topic`` on ``route`` go to ``handler``, now and after reconnects."""
        key = (topic, tuple(route))
        if any((w.topic, w.route) == key for w in self._watches):
            return
        watch = _Watch(topic, tuple(route), handler)
        self._watches.append(watch)
        if self.client is not None:
            await self._subscribe(watch)

    def watching(self, topic: Topic, route: Sequence[bytes]) -> bool:
        return any((w.topic, w.route) == (topic, tuple(route)) for w in self._watches)

    async def _subscribe(self, watch: _Watch) -> None:
        client = self._need()
        sub_id, queue = await client.subscribe(watch.topic, watch.route)
        watch.sub_id = sub_id
        watch.pump = asyncio.create_task(self._pump(watch, queue))

    async def _pump(self, watch: _Watch, queue: asyncio.Queue[Reply]) -> None:
        while True:
            reply = await queue.get()
            if reply.type is Rep.ERROR:  # SUBSCRIPTION_OVERFLOW: subscribe again
                log.warning("events lost on %s; subscribing again", watch.topic.name)
                watch.pump = None
                with contextlib.suppress(NodeError, ConnectionError):
                    await self._subscribe(watch)
                return
            if reply.type is Rep.BLOCK_EVENT:
                self._on_block(reply)
            try:
                watch.handler(reply)
            except Exception:
                log.exception("an event handler failed")

    def _on_block(self, reply: Reply) -> None:
        height = as_int(reply.body[0], "height")
        if height > self._state.height and self._state.link is Link.CONNECTED:
            self._set(replace(self._state, height=height))

    # Metrics ----------------------------------------------------------------

    async def _poll_metrics(self, client: NodeClient) -> None:
        while True:
            try:
                self.record_metrics(await client.metrics())
            except (NodeError, ConnectionError):
                return
            await asyncio.sleep(self.metrics_every_s)

    def record_metrics(self, metrics: dict[str, Any]) -> None:
        """Add the worst tick lateness since the last poll to the model's chart."""
        now = self.clock()
        tick_ms = int(metrics["tick_ms"])
        samples: list[int] = list(metrics["tick_lateness_us"])
        if self._last_metrics is None:
            fresh = samples[-1:]
        else:
            # METRICS holds the most recent ticks: those since the last poll are at its end.
            elapsed_ms = (now - self._last_metrics) * 1000
            fresh = samples[-max(1, round(elapsed_ms / max(tick_ms, 1))) :]
        self._last_metrics = now
        if self.model is None or not fresh:
            return
        self.model.tick_lateness_ms.append((now, max(fresh) / 1000))
        if self._state.tick_ms != tick_ms and self._state.link is Link.CONNECTED:
            self._set(replace(self._state, tick_ms=tick_ms))
        self.model.metrics_changed.emit()

    # Requests ---------------------------------------------------------------

    async def status(self) -> NodeStatus:
        return await self._need().status()

    async def signer_exists(self, signer: bytes) -> bool:
        try:
            await self._need().read_state([signer])
        except NodeError as exc:
            if exc.code is Err.UNKNOWN_ROUTE:
                return False
            raise
        return True

    async def ensure_signer(self, key: SignerKey) -> bool:
        """Register the signer on the node if it lacks it (needs server scope).

        Returns True when this call created it.
        """
        if await self.signer_exists(key.signer_id):
            return False
        receipts = await self._need().submit([CreateSigner(key.pubkey, key.pop)])
        error = receipts.receipts[0].error
        if error is not None and "already exists" not in error:
            raise SubmitRefused(f"create_signer: {error}")
        log.info("signer %s registered on the node", key.signer_id.hex()[:12])
        return error is None

    async def memberships(
        self, signer: bytes, after: bytes = b""
    ) -> tuple[list[Membership], bytes]:
        """A page of the entities hosted on the node whose config names ``signer``,
        and the cursor of the next page (b"": the last)."""
        return await self._need().memberships(signer, after)

    async def find_entities(self, signer: bytes) -> FindResult:
        """Ask the node to find ``signer``'s entities through its peers, set its agent's
        floors and join them (FIND_ENTITIES, after a restore)."""
        return await self._need().find_entities(signer)

    async def entities_of(self, signer: bytes) -> list[bytes]:
        """The entity ids the signer holds a replica of, ascending."""
        _, _, refs = await self._need().signer_listing(signer)
        return [entity for entity, _ in refs]

    async def read_entity_lazily(self, signer: bytes, entity: bytes) -> EntityState | None:
        """The agreed state of ``signer``'s replica of ``entity`` (None: it holds none):
        its certified header now, its channels and forwards node by node as walks
        reach them, each node checked (``node/net/remote_map.py``). Walk it off the
        loop. Costs the paths walked, not what the entity holds. An entity of at most
        :attr:`whole_up_to` records is read whole (then nothing is read during walks)."""
        return await _or_none(lazy_state(self.reader, signer, entity, self.whole_up_to))

    async def read_header(self, signer: bytes, entity: bytes) -> EntityHeader | None:
        """The entity's certified header: every field but the channels and forwards."""
        return await _or_none(self.reader.header(signer, entity))

    async def read_evidence(self, signer: bytes, entity: bytes) -> list[Evidence] | None:
        """The node's equivocation evidence about ``entity`` (None: ``signer`` holds no
        replica of it, or the node is from before the evidence part), each record's
        signatures checked (``EntityReader.evidence``)."""
        return await _own_part(self.reader.evidence(signer, entity))

    async def read_refusals(self, signer: bytes, entity: bytes) -> list[Refusal] | None:
        """The members' signed refusals the node has seen about ``entity`` (None: as
        for the evidence, or a node from before the refusals part), each checked
        against the entity's config (``EntityReader.refusals``)."""
        return await _own_part(self.reader.refusals(signer, entity))

    async def read_channel(
        self, signer: bytes, entity: bytes, peer: bytes
    ) -> tuple[EntityHeader, ChannelRecord | None] | None:
        """The entity's certified header and its channel with ``peer`` (None: no such
        channel, proven), in one read."""
        return await _or_none(self.reader.channel(signer, entity, peer))

    async def read_channel_page(
        self, signer: bytes, entity: bytes, after: bytes, limit: int, at: bytes = b""
    ) -> Page:
        """Up to ``limit`` of the entity's channels after the counterparty ``after``
        (empty: from the first), at state hash ``at`` (empty: the current state),
        proven complete."""
        _, page = await self.reader.page(signer, entity, CHANNELS, after, limit, at)
        return page

    async def frame(self, entity: bytes, height: int) -> bytes | None:
        """The certified frame of ``entity`` at ``height`` (GET_FRAMES), or None."""
        frames = await self._need().frames(entity, height, 1)
        return frames[0][0] if frames else None

    async def hosted_signers(self) -> set[bytes]:
        """The signers the node hosts (its server listing: server scope)."""
        _, signers = await self._need().server_listing()
        return {s for s, _ in signers}

    async def certified_frames(
        self, entity: bytes, start: int, count: int
    ) -> list[tuple[bytes, bytes]]:
        """Certified frames of ``entity`` from ``start`` (GET_FRAMES): each frame's and
        its certificate's encodings."""
        return [(raw, cert.raw) for raw, cert in await self._need().frames(entity, start, count)]

    async def genesis_of(self, signer: bytes, entity: bytes) -> bytes | None:
        """The encoded genesis of ``entity`` as the node's replicas of ``signer`` hold it
        (MEMBERSHIPS), None if it holds none."""
        after = b""
        while True:
            page, after = await self.memberships(signer, after)
            for m in page:
                if m.entity_id == entity:
                    return encode_tree(m.genesis.to_tree())
            if not after:
                return None

    async def replay(
        self, signer: bytes, genesis: bytes, frames: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Rebuild ``signer``'s replica of an entity on the node: join it from
        ``genesis`` (``join_entity``), then submit each certified frame as a commit, in
        order (the node verifies each certificate as in any catch-up). Raises
        SubmitRefused, or DecodeError for a genesis or frame that is not one."""
        g = Genesis.from_item(decode(genesis))
        receipts = await self._need().submit([JoinEntity(g)], [signer])
        error = receipts.receipts[0].error
        if error is not None:
            raise SubmitRefused(f"join_entity: {error}")
        entity = entity_id_for(g.config, g.salt)
        for start in range(0, len(frames), REPLAY_PAGE):
            commits = [
                Commit(Frame.decode(raw), Certificate.from_item(decode(cert)))
                for raw, cert in frames[start : start + REPLAY_PAGE]
            ]
            receipts = await self._need().submit(commits, [signer, entity])
            for i, receipt in enumerate(receipts.receipts):
                if receipt.error is not None:
                    raise SubmitRefused(f"commit {start + i + 1}: {receipt.error}")

    async def find_entity(self, entity: bytes) -> EntityState | None:
        """The agreed state of ``entity`` (its small fields: config, height, reserves;
        the channels are not read) as the signer hosted on the node that is furthest
        along holds it, certified. Reads the server's and each signer's lists (server
        scope; for a one-off look-up such as another entity's channel card)."""
        client = self._need()
        _, signers = await client.server_listing()
        best: EntityHeader | None = None
        for signer, _ in signers:
            _, _, refs = await client.signer_listing(signer)
            if any(e == entity for e, _ in refs):
                header = await self.reader.header(signer, entity)
                if best is None or header.height > best.height:
                    best = header
        return None if best is None else best.small

    async def submit_batch(self, signer: bytes, entity: bytes, batch: Batch) -> bytes:
        """Submit a signed batch; returns its hash once the node's block holding it is
        durable. A batch the replica refused raises SubmitRefused."""
        receipts = await self._need().submit([SubmitBatch(batch)], [signer, entity])
        error = receipts.receipts[0].error
        if error is not None:
            raise SubmitRefused(f"batch refused: {error}")
        return keccak(batch.raw)

    async def create_entity(self, signer: bytes, tx: CreateEntity) -> Receipts:
        receipts = await self._need().submit([tx], [signer])
        error = receipts.receipts[0].error
        if error is not None:
            raise SubmitRefused(f"create_entity: {error}")
        return receipts

    async def submit(self, txs: Sequence[Tx | TxBody], route: Sequence[bytes] = ()) -> Receipts:
        return await self._need().submit(txs, route)


@dataclass(frozen=True, slots=True)
class FrameNews:
    """A FRAME_EVENT, decoded: a frame certified and applied on the replica at ``route``."""

    route: tuple[bytes, ...]
    height: int  # the entity's height
    frame_hash: bytes
    cert: Certificate
    batch_hashes: tuple[bytes, ...]

    @classmethod
    def of(cls, reply: Reply) -> FrameNews:
        body = reply.body
        return cls(
            tuple(as_bytes(r, "route", size=HASH_LEN) for r in as_list(body[0], "route")),
            as_int(body[1], "height"),
            as_bytes(body[2], "frame hash", size=HASH_LEN),
            Certificate.from_item(body[3]),
            tuple(as_bytes(h, "batch hash", size=HASH_LEN) for h in as_list(body[4], "batches")),
        )


@dataclass(frozen=True, slots=True)
class BlockNews:
    """A BLOCK_EVENT, decoded."""

    height: int
    hash: bytes
    state_hash: bytes
    timestamp: int
    tx_count: int

    @classmethod
    def of(cls, reply: Reply) -> BlockNews:
        b = reply.body
        return cls(
            as_int(b[0], "height"),
            as_bytes(b[1], "hash", size=HASH_LEN),
            as_bytes(b[2], "state hash", size=HASH_LEN),
            as_int(b[3], "timestamp"),
            as_int(b[4], "tx count"),
        )


CONNECT_TEST_S = 10.0


async def connection_problem(url: str, token: str, trust: ClientTrust | None = None) -> str | None:
    """Connect once with ``token`` (the HELLO answered) and close: None if that works,
    else what went wrong in words for the person (the node is down, the token is not
    one of the node's, the certificate is not trusted, ...)."""
    try:
        async with asyncio.timeout(CONNECT_TEST_S):
            client = await NodeClient.connect(url, token=token, trust=trust)
            await client.close()
    except UntrustedCertificate as exc:
        return (
            f"the node's certificate is not trusted ({exc.reason}); its SHA-256 fingerprint is "
            f"{pretty(exc.presented or '')}: if it is your node's, add "
            f"#sha256={exc.presented} to the URL"
        )
    except CertificateRefused as exc:
        return str(exc)
    except NodeError as exc:
        if exc.code is Err.UNAUTHORIZED:
            return "the node does not accept this API token"
        return f"the node refused the connection: {exc}"
    except TimeoutError:
        return f"no answer from {url} within {CONNECT_TEST_S:.0f} s"
    except (VersionMismatch, InsecureTransport) as exc:
        return str(exc)
    except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TlsConfigError) as exc:
        return f"cannot reach the node at {url}: {exc}"
    return None
