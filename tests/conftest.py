"""Shared fixtures: real node processes and in-process nodes on real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings
from websockets.asyncio.client import ClientConnection

from node.codec import ZERO_HASH
from node.coordinator import Coordinator
from node.net.protocol import Reply, decode_reply
from node.net.server import ApiServer
from node.runtime import Node, NodeConfig
from node.storage import Store
from node.tokens import Scope, TokenStore
from tests.node.net.certs import CertFiles, make_self_signed

# Qt, when a test uses it, renders offscreen: there is no display here.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# This machine is shared and small: no per-example deadlines.
settings.register_profile("xln", deadline=None)
settings.load_profile("xln")

LISTEN_RE = re.compile(rb"listening on ws://127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 30


def run_python(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """This interpreter in a subprocess (``-c SCRIPT`` or ``-m MODULE ...``), output captured."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )


def xln_node(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    return run_python("-m", "node.cli", *args)


def create_token(data: Path, scope: str = "server") -> str:
    result = xln_node("token", "create", "--data", str(data), "--scope", scope)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class NodeProcess:
    """A real ``xln-node run`` process on a free loopback port."""

    data: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    output: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> NodeProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.cli",
                "run",
                "--data",
                str(self.data),
                "--port",
                "0",
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        # Blocking reads of the child's stdout, bounded by the child's own exit.
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"node exited before listening: {b''.join(self.output)!r}")
            self.output.append(line)
            match = LISTEN_RE.search(line)
            if match:
                self.port = int(match.group(1))
                return self

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind in the node."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=START_TIMEOUT_S)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=START_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Factory of started node processes, all killed at teardown."""
    started: list[NodeProcess] = []

    def start(*args: str, data: Path | None = None) -> NodeProcess:
        proc = NodeProcess(data or tmp_path / "data", args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@dataclass
class LiveNode:
    """A node running in this process, served on a real loopback socket."""

    node: Node
    api: ApiServer
    tokens: TokenStore
    data: Path
    port: int
    token: str
    stop: asyncio.Event
    task: asyncio.Task[None]
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"


async def start_live_node(
    data: Path,
    config: NodeConfig | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    **node_kwargs: object,
) -> LiveNode:
    """A node with its coordinator (so agents and peers are accepted) on a free port;
    over TLS (``wss://``) with ``tls``."""
    store = Store(data / "chain")
    node = Node(store, config or NodeConfig(tick_ms=10), **node_kwargs)  # type: ignore[arg-type]
    tokens = TokenStore(data)
    token, _ = tokens.create(Scope("server"), "test")
    api = ApiServer(node, tokens, ZERO_HASH, coordinator=Coordinator(node))
    node.tick_hooks.append(api.refresh_tokens)
    port = await api.listen_tcp("127.0.0.1", 0, ssl=tls)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    return LiveNode(node, api, tokens, data, port, token, stop, task, tls is not None)


async def stop_live_node(live: LiveNode) -> None:
    live.stop.set()
    await asyncio.wait_for(live.task, 30)
    if live.api.coordinator is not None:
        await live.api.coordinator.close()
    await live.api.close()
    live.node.close()


@pytest.fixture
async def live_node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    live = await start_live_node(tmp_path / "data")
    try:
        yield live
    finally:
        await stop_live_node(live)


@pytest.fixture
def self_signed(tmp_path: Path) -> CertFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    return make_self_signed(tmp_path / "certs")


@pytest.fixture
async def tls_node(tmp_path: Path, self_signed: CertFiles) -> AsyncIterator[LiveNode]:
    """A live node serving ``wss://`` with ``self_signed``."""
    live = await start_live_node(tmp_path / "data", tls=self_signed.context())
    try:
        yield live
    finally:
        await stop_live_node(live)


async def recv_reply(ws: ClientConnection, deadline_s: float = 20) -> Reply:
    """The next frame from the node, decoded; fails the test after ``deadline_s`` seconds."""
    frame = await asyncio.wait_for(ws.recv(), deadline_s)
    assert isinstance(frame, bytes), f"text frame from the node: {frame!r}"
    return decode_reply(frame)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # websockets honours proxy variables; loopback tests must never use one.
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
