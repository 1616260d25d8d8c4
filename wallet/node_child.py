"""The embedded node's own process: ``xln-wallet embedded-node`` (started by the wallet).

The wallet (:class:`wallet.embedded.EmbeddedNode`) starts this process with
three pipes, and nothing secret on its command line or in its environment:

- **stdin**: one JSON line with the settings (data folder, tick, peers, the
  identity key's password, ...). The pipe then stays open: when it closes (the
  wallet quit, or was killed) the node stops, as it does on SIGTERM. The parent's
  pid is polled too, in case something else holds the pipe open.
- **stdout**: one JSON line once the node listens, ``{"url", "token",
  "height"}``, or why it could not start, ``{"error", "in_use"}``. The token is
  this run's server-scope token, made here (stored hashed in ``tokens.json``
  like every token); the previous run's is revoked.
- **stderr**: the log, one JSON object a line (``t`` time, ``l`` level, ``n``
  logger, ``m`` message), which the wallet feeds into its own logging (the Logs
  view, its log file).

The node listens on ``127.0.0.1`` on the port given (0: a free one), and on the control socket
``node.sock`` in its data folder (so ``xln-node inspect`` works while the wallet
runs). A stop (SIGTERM, the closed pipe, the gone parent) flushes the inbox in a
last block before the store closes, as ``xln-node run`` does. SIGINT is left to
the wallet (a Ctrl+C in its terminal reaches both): the pipe says when to stop.

The wiring follows ``node.cli.run_node``; the node's own agents are not used
here (the wallet's agents connect through the protocol). This module imports
no Qt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import IO, Any

from node import collector
from node import identity as node_identity
from node.codec import ZERO_HASH
from node.coordinator import Coordinator
from node.net.peers import PeerNetwork
from node.net.server import ApiServer
from node.runtime import Node, NodeConfig
from node.storage import Store, StoreLocked
from node.tokens import Scope, TokenStore

log = logging.getLogger("wallet.node_child")

CHAIN_DIR = "chain"
CONTROL_SOCKET = "node.sock"
TOKEN_LABEL = "xln-wallet embedded"  # noqa: S105 (a label, not a secret)
PARENT_POLL_S = 0.5
SWITCH_INTERVAL_S = 0.001  # as xln-node run: the block writer thread gets the GIL soon
MAX_CONFIG_BYTES = 64 * 1024


class JsonLines(logging.Handler):
    """Log records as JSON lines on a stream (the wallet reads them back)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            line = {"t": record.created, "l": record.levelno, "n": record.name, "m": message}
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)


class StartFailed(Exception):
    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use


def fresh_token(tokens: TokenStore) -> str:
    """This run's server-scope token; the previous runs' are revoked."""
    for record in tokens.records():
        if record.label == TOKEN_LABEL:
            tokens.revoke(record.id)
    token, _ = tokens.create(Scope("server"), TOKEN_LABEL)
    return token


class ChildNode:
    """The node's parts in this process, from start to close."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.data = Path(config["data"])
        self.tick_ms = int(config.get("tick_ms", 100))
        self.peer_urls: list[str] = [str(p) for p in config.get("peers", [])]
        self.identity_password: str | None = config.get("identity_password")
        self.fast_kdf = bool(config.get("fast_kdf", False))
        self.simulation = bool(config.get("simulation", False))
        self.port = int(config.get("port", 0))
        self.node: Node | None = None
        self.api: ApiServer | None = None
        self.coordinator: Coordinator | None = None
        self.peers: PeerNetwork | None = None

    async def start(self) -> tuple[str, str]:
        if self.peer_urls and not self.identity_password:
            raise StartFailed("peers need the node identity key: give its password")
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            store = Store(self.data / CHAIN_DIR)
        except StoreLocked as exc:
            raise StartFailed(
                f"the embedded node's data ({self.data}) is in use by another process", in_use=True
            ) from exc
        try:
            node = Node(store, NodeConfig(tick_ms=self.tick_ms, simulation=self.simulation))
        except BaseException:
            store.close()
            raise
        self.node = node
        try:
            tokens = TokenStore(self.data)
            token = fresh_token(tokens)
            identity = None
            if self.peer_urls:
                assert self.identity_password is not None
                identity = await asyncio.to_thread(
                    node_identity.load_or_create,
                    self.data,
                    self.identity_password,
                    fast_kdf=self.fast_kdf,
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
            try:
                port = await self.api.listen_tcp("127.0.0.1", self.port)
            except OSError as exc:  # the fixed port is taken (or not ours to take)
                raise StartFailed(
                    f"the embedded node cannot listen on 127.0.0.1:{self.port} ({exc.strerror}):"
                    " choose another listen port in Settings"
                ) from exc
            if hasattr(socket, "AF_UNIX"):
                try:
                    await self.api.listen_unix(self.data / CONTROL_SOCKET)
                except OSError as exc:  # a data path too long for a Unix socket
                    log.warning("no control socket: %s", exc)
            if self.peers is not None:
                self.peers.start()
        except BaseException:
            await self.close()
            raise
        url = f"ws://127.0.0.1:{port}"
        log.info(
            "embedded node (pid %d) listening on %s, height %d, data %s",
            os.getpid(),
            url,
            node.state.height,
            self.data,
        )
        return url, token

    async def close(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.close()
            self.coordinator = None
        if self.peers is not None:
            await self.peers.close()
            self.peers = None
        if self.api is not None:
            await self.api.close()
            self.api = None
            (self.data / CONTROL_SOCKET).unlink(missing_ok=True)
        if self.node is not None:
            height = self.node.state.height
            self.node.close()
            self.node = None
            log.info("embedded node stopped at height %d", height)


def _watch_stdin(fd: int, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block on the pipe from the wallet; its end (the wallet gone) stops the node.
    Raw reads: a buffered reader's lock would stall this process's exit."""
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass  # nothing more is expected after the settings line
    with contextlib.suppress(RuntimeError):  # the loop ended first
        loop.call_soon_threadsafe(stop.set)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the wallet (pid %d) is gone: stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PARENT_POLL_S):
                await stop.wait()


def _say(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def read_settings(fd: int) -> bytes:
    """The first line on the pipe (raw reads, so nothing is left in a buffer)."""
    line = b""
    while not line.endswith(b"\n") and len(line) < MAX_CONFIG_BYTES:
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


async def serve(config: dict[str, Any], stdin: int, out: IO[str]) -> int:
    parent = os.getppid()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    threading.Thread(
        target=_watch_stdin, args=(stdin, loop, stop), name="wallet-pipe", daemon=True
    ).start()
    child = ChildNode(config)
    try:
        url, token = await child.start()
    except StartFailed as exc:
        _say(out, {"error": str(exc), "in_use": exc.in_use})
        return 1
    except Exception as exc:
        log.exception("the embedded node could not start")
        _say(out, {"error": f"{type(exc).__name__}: {exc}", "in_use": False})
        return 1
    assert child.node is not None
    _say(out, {"url": url, "token": token, "height": child.node.state.height})
    collector.freeze_startup()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    watcher = asyncio.create_task(_watch_parent(parent, stop))
    try:
        await child.node.run(stop)
    except Exception:
        log.exception("the embedded node failed")
        return 1
    finally:
        watcher.cancel()
        await child.close()
    return 0


def main() -> int:
    """The child's entry point: settings from stdin, then serve until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [JsonLines(sys.stderr)]
    root.setLevel(logging.INFO)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    collector.tune()
    line = read_settings(sys.stdin.fileno())
    try:
        config = json.loads(line)
        if not isinstance(config, dict) or "data" not in config:
            raise ValueError("no data folder")
    except ValueError as exc:
        _say(sys.stdout, {"error": f"bad settings from the wallet: {exc}", "in_use": False})
        return 2
    return asyncio.run(serve(config, sys.stdin.fileno(), sys.stdout))
