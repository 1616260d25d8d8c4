"""The embedded light node: ``Node``, ``Coordinator`` and ``ApiServer`` in the wallet's process.

It listens on ``127.0.0.1`` on a free port, keeps its data in ``DATA/node``,
and is reached through the same protocol as a remote node. Each run makes a
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
import contextlib
import logging
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
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> tuple[str, str]:
        """Start serving; returns the URL and this run's server-scope token."""
        if self._task is not None:
            raise EmbeddedNodeError("the embedded node is already started")
        if self.peer_urls and not self._identity_password:
            raise EmbeddedNodeError("peers need the node identity key: give its password")
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
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(node.run(self._stop))
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
        """Flush the inbox in a last block, then close everything; safe to call twice."""
        if self._task is not None:
            self._stop.set()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.shield(self._task)
            except TimeoutError:
                log.error("the embedded node did not stop in %.0f s; cancelling", STOP_TIMEOUT_S)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:
                log.exception("the embedded node failed")
            self._task = None
        await self._close_parts()

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
