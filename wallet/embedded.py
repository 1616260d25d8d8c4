"""The embedded light node: ``Node``, ``Coordinator`` and ``ApiServer`` in the wallet's process.

It listens on ``127.0.0.1`` on a free port, keeps its data in ``DATA/node``,
and is reached through the same protocol as a remote node. It runs on a thread
of its own with its own event loop, so a busy GUI (a repaint, a theme switch, a
long scroll) does not make its blocks late: the two loops share nothing but the
WebSocket between them (and the interpreter, which switches threads every few
milliseconds). :meth:`EmbeddedNode.call` runs a function on the node's loop, for
the few things done to the node object itself (tests, token refresh). Each run makes a
fresh server-scope token for the wallet and revokes the one of the previous
run (tokens are labelled :data:`TOKEN_LABEL`), so a token never outlives its
run by more than one start. :meth:`EmbeddedNode.stop` ends like ``xln-node
run`` on SIGTERM: the inbox is flushed in a last block before the store closes.

The wiring follows ``node.cli.run_node``; the node's own agents are not used
here (the wallet's agents connect through the protocol). ``simulation=True``
starts a new chain whose faucet may credit reserves (tests, demos).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from node import identity as node_identity
from node.codec import ZERO_HASH
from node.coordinator import Coordinator
from node.net.peers import PeerNetwork
from node.net.server import ApiServer
from node.runtime import Node, NodeConfig
from node.storage import Store, StoreLocked
from node.tokens import Scope, TokenStore

log = logging.getLogger(__name__)

NODE_DIR = "node"
CHAIN_DIR = "chain"
TOKEN_LABEL = "xln-wallet embedded"  # noqa: S105 (a label, not a secret)
STOP_TIMEOUT_S = 30.0


class EmbeddedNodeError(Exception):
    """The embedded node cannot start (its data is in use, peers without a password...)."""


class EmbeddedNode:
    def __init__(
        self,
        data_dir: Path,
        tick_ms: int = 100,
        peers: list[str] | None = None,
        identity_password: str | None = None,
        *,
        fast_kdf: bool = False,
        simulation: bool = False,
    ) -> None:
        self.data = data_dir / NODE_DIR
        # A new chain's genesis allows the faucet (kept for the chain's life).
        self.simulation = simulation
        self.tick_ms = tick_ms
        self.peer_urls = list(peers or [])
        self._identity_password = identity_password
        self._fast_kdf = fast_kdf  # tests: a weak KDF for a new identity key
        self.node: Node | None = None
        self.api: ApiServer | None = None
        self.coordinator: Coordinator | None = None
        self.peers: PeerNetwork | None = None
        self.port = 0
        self._stop: asyncio.Event | None = None  # on the node's loop
        self._loop: asyncio.AbstractEventLoop | None = None  # the node's own
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> tuple[str, str]:
        """Start serving on the node's own thread; returns the URL and this run's
        server-scope token once it listens (or raises why it could not start)."""
        if self._thread is not None:
            raise EmbeddedNodeError("the embedded node is already started")
        if self.peer_urls and not self._identity_password:
            raise EmbeddedNodeError("peers need the node identity key: give its password")
        ready: concurrent.futures.Future[tuple[str, str]] = concurrent.futures.Future()
        thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(ready)), name="xln-embedded-node", daemon=True
        )
        self._thread = thread
        thread.start()
        try:
            return await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(thread.join)
            self._thread = None
            raise

    async def call[T](self, fn: Callable[[], T]) -> T:
        """``fn()`` run on the node's loop (its thread), from any loop."""
        loop = self._loop
        if loop is None or not self.running:
            raise EmbeddedNodeError("the embedded node is not running")

        async def run() -> T:
            return fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    async def _serve(self, ready: concurrent.futures.Future[tuple[str, str]]) -> None:
        """The node's thread: start, serve until :meth:`stop`, close."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            started = await self._start_parts()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(started)
        assert self.node is not None
        try:
            await self.node.run(self._stop)
        except Exception:
            log.exception("the embedded node failed")
        finally:
            await self._close_parts()

    async def _start_parts(self) -> tuple[str, str]:
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            store = Store(self.data / CHAIN_DIR)
        except StoreLocked as exc:
            raise EmbeddedNodeError(
                f"the embedded node's data ({self.data}) is in use by another process"
            ) from exc
        try:
            node = Node(store, NodeConfig(tick_ms=self.tick_ms, simulation=self.simulation))
        except BaseException:
            store.close()
            raise
        self.node = node
        try:
            tokens = TokenStore(self.data)
            token = self._fresh_token(tokens)
            identity = None
            if self.peer_urls:
                assert self._identity_password is not None
                identity = await asyncio.to_thread(
                    node_identity.load_or_create,
                    self.data,
                    self._identity_password,
                    fast_kdf=self._fast_kdf,
                )
                self.peers = PeerNetwork(self.peer_urls, identity)
            self.coordinator = Coordinator(node, self.peers)
            self.api = ApiServer(
                node,
                tokens,
                node_id=ZERO_HASH,
                coordinator=self.coordinator,
                receiver_id=identity.id if identity is not None else None,
            )
            node.tick_hooks.append(self.api.refresh_tokens)
            self.port = await self.api.listen_tcp("127.0.0.1", 0)
            if self.peers is not None:
                self.peers.start()
        except BaseException:
            await self._close_parts()
            raise
        log.info(
            "embedded node listening on %s, height %d, data %s",
            self.url,
            node.state.height,
            self.data,
        )
        return self.url, token

    @staticmethod
    def _fresh_token(tokens: TokenStore) -> str:
        for record in tokens.records():
            if record.label == TOKEN_LABEL:
                tokens.revoke(record.id)
        token, _ = tokens.create(Scope("server"), TOKEN_LABEL)
        return token

    async def stop(self) -> None:
        """Flush the inbox in a last block, then close everything and end the node's
        thread; safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            # RuntimeError: its loop ended meanwhile (the node failed).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join, STOP_TIMEOUT_S)
        if thread.is_alive():
            # A daemon thread: it ends with the process; its store stays locked till then.
            log.error("the embedded node did not stop in %.0f s", STOP_TIMEOUT_S)
        self._thread = None
        self._loop = None

    async def _close_parts(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.close()
            self.coordinator = None
        if self.peers is not None:
            await self.peers.close()
            self.peers = None
        if self.api is not None:
            await self.api.close()
            self.api = None
        if self.node is not None:
            height = self.node.state.height
            self.node.close()
            self.node = None
            log.info("embedded node stopped at height %d", height)
