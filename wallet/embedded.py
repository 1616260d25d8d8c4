"""The embedded node: a child process of the wallet (``wallet.node_child``).

The node runs in a process of its own, so nothing the GUI does (a theme switch
holding the interpreter for 200 ms, a repaint, a long scroll) makes its blocks
late. It keeps its data in ``DATA/node``, listens on ``127.0.0.1`` on a free
port (or the one Settings fix, so that peers keep its address), and is reached
through the same protocol as a remote node: the wallet never touches the node's
objects.

:class:`EmbeddedNode` starts it (``xln-wallet embedded-node``: ``python -m
wallet.cli embedded-node``, or the frozen app with that argument), writes its
settings (the identity key's password among them) to its stdin and keeps that
pipe open, and reads back one line on its stdout: the URL and this run's
server-scope token, made by the child and stored hashed in its ``tokens.json``
(the previous run's is revoked). No secret is on a command line or in an
environment. The child's log lines come back on its stderr and go into this
process's logging (the Logs view, the log file).

Lifecycle: :meth:`stop` sends SIGTERM (the child flushes its inbox in a last
block, then closes the store) and SIGKILL after :data:`STOP_TIMEOUT_S`. If the
wallet dies, the pipe closes and the child stops by itself. If the child dies,
``on_exit`` callbacks run on the wallet's loop with its exit code (the service
shows it and starts a new child). A store still locked at start (a previous
child that is still flushing after its wallet was killed) is waited for up to
``in_use_wait_s`` before the start fails with "in use".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from node.net.client import NodeClient, NodeError
from node.tokens import Scope, TokenStore
from wallet.node_child import TOKEN_LABEL

log = logging.getLogger(__name__)
child_log = logging.getLogger("wallet.node_child")

__all__ = ["TOKEN_LABEL", "EmbeddedNode", "EmbeddedNodeError", "child_command", "exit_text"]

NODE_DIR = "node"
CHAIN_DIR = "chain"
CHILD_COMMAND = "embedded-node"
STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0  # a new identity key's KDF takes seconds
IN_USE_WAIT_S = 10.0
IN_USE_RETRY_S = 0.25
TOKEN_LIVE_S = 10.0


class EmbeddedNodeError(Exception):
    """The embedded node cannot start (its data is in use, peers without a password...)."""


def child_command() -> list[str]:
    """How to start the child: this interpreter on ``wallet.cli``, or the frozen app."""
    if getattr(sys, "frozen", False):
        return [sys.executable, CHILD_COMMAND]
    return [sys.executable, "-m", "wallet.cli", CHILD_COMMAND]


def exit_text(code: int) -> str:
    """An exit code in words: ``exit code 1``, ``killed by SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


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
        in_use_wait_s: float = IN_USE_WAIT_S,
        listen_port: int = 0,
    ) -> None:
        """``listen_port``: the port on 127.0.0.1 (0: a free one), fixed when peers
        must reach this node at an address they keep."""
        self.data = data_dir / NODE_DIR
        self.listen_port = listen_port
        # A new chain's genesis allows the faucet (kept for the chain's life).
        self.simulation = simulation
        self.tick_ms = tick_ms
        self.peer_urls = list(peers or [])
        self._identity_password = identity_password
        self._fast_kdf = fast_kdf  # tests: a weak KDF for a new identity key
        self.in_use_wait_s = in_use_wait_s
        self.port = 0
        self.height_at_start = 0
        # Called on the loop that started the child, with its exit code, when it
        # ends without :meth:`stop` (it crashed, or was killed).
        self.on_exit: list[Callable[[int], None]] = []
        self.exit_code: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> tuple[str, str]:
        """Start the child; returns the URL and this run's server-scope token once it
        listens (or raises EmbeddedNodeError with why it could not start)."""
        if self._proc is not None:
            raise EmbeddedNodeError("the embedded node is already started")
        if self.peer_urls and not self._identity_password:
            raise EmbeddedNodeError("peers need the node identity key: give its password")
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.in_use_wait_s
        while True:
            reply = await self._spawn()
            if "url" in reply:
                break
            if not reply.get("in_use") or time.monotonic() >= deadline:
                raise EmbeddedNodeError(str(reply.get("error", "the embedded node did not start")))
            # A previous child (its wallet killed) may still be flushing: wait for it.
            await asyncio.sleep(IN_USE_RETRY_S)
        url, token = str(reply["url"]), str(reply["token"])
        self.port = int(url.rsplit(":", 1)[1])
        self.height_at_start = int(reply.get("height", 0))
        return url, token

    async def _spawn(self) -> dict[str, Any]:
        """One child, its settings written; its first line on stdout (the child is
        reaped when that line is an error)."""
        settings = {
            "data": str(self.data),
            "tick_ms": self.tick_ms,
            "peers": self.peer_urls,
            "identity_password": self._identity_password,
            "fast_kdf": self._fast_kdf,
            "simulation": self.simulation,
            "port": self.listen_port,
        }
        # A blocking call, but a fork and exec only: the pipes are read on threads.
        proc = subprocess.Popen(  # noqa: ASYNC220
            child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        self._proc = proc
        self.exit_code = None
        assert proc.stdin is not None
        assert proc.stderr is not None
        threading.Thread(
            target=_relay_logs, args=(proc.stderr,), name="xln-node-log", daemon=True
        ).start()
        try:
            proc.stdin.write(json.dumps(settings).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: its stdout says nothing, handled below
        first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        threading.Thread(
            target=self._watch,
            args=(proc, first, asyncio.get_running_loop()),
            name="xln-node-watch",
            daemon=True,
        ).start()
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await first
        except asyncio.CancelledError:
            # The wallet is quitting while its node starts: no child may stay behind.
            self._proc = None
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            raise
        except TimeoutError:
            self._proc = None
            await self._end(proc, "it did not start in time")
            return {"error": f"the embedded node did not start in {START_TIMEOUT_S:.0f} s"}
        try:
            reply = json.loads(line) if line else {}
        except ValueError:
            reply = {}
        if not isinstance(reply, dict) or "url" not in reply:
            self._proc = None  # its end is not a crash to report
        if not isinstance(reply, dict) or not reply:
            await asyncio.to_thread(proc.wait)
            code = proc.returncode
            reply = {"error": f"the embedded node ended at start ({exit_text(code)})"}
        elif "url" not in reply:
            await asyncio.to_thread(proc.wait)
        return reply

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        first: asyncio.Future[bytes],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """The child's stdout (its first line), then its end; on its own thread."""
        assert proc.stdout is not None
        line = b""
        with contextlib.suppress(OSError, ValueError):
            line = proc.stdout.readline()
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(_resolve, first, line)
        with contextlib.suppress(OSError, ValueError):
            while proc.stdout.read(4096):
                pass
        code = proc.wait()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._exited, proc, code)

    def _exited(self, proc: subprocess.Popen[bytes], code: int) -> None:
        if proc is not self._proc:
            return  # a failed start, or a child replaced since
        self.exit_code = code
        if self._stopping:
            return
        log.error("the embedded node (pid %d) ended: %s", proc.pid, exit_text(code))
        for callback in list(self.on_exit):
            callback(code)

    async def new_token(self, label: str, scope: str = "server") -> str:
        """A new token of this node (tools, tests, benchmarks), once the node takes it:
        it reads ``tokens.json`` again on its next tick."""
        token, _ = TokenStore(self.data).create(Scope(scope), label)
        async with asyncio.timeout(TOKEN_LIVE_S):
            while True:
                try:
                    client = await NodeClient.connect(self.url, token=token)
                except NodeError:
                    await asyncio.sleep(self.tick_ms / 1000)
                    continue
                await client.close()
                return token

    async def stop(self) -> None:
        """SIGTERM (the child flushes its inbox in a last block, then closes), SIGKILL
        after :data:`STOP_TIMEOUT_S`; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        try:
            await self._end(proc, "")
        finally:
            self._stopping = False
        self.exit_code = proc.returncode

    async def _end(self, proc: subprocess.Popen[bytes], why: str) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("the embedded node did not stop in %.0f s: killing it", STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
        elif why:
            log.error("the embedded node: %s", why)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def _resolve(future: asyncio.Future[bytes], line: bytes) -> None:
    if not future.done():
        future.set_result(line)


def _relay_logs(stream: IO[bytes]) -> None:
    """The child's log lines into this process's logging; on its own thread. A line
    that is not one of its records (a crash's traceback) is logged as a warning."""
    with contextlib.suppress(OSError, ValueError):
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if not text:
                continue
            try:
                record = json.loads(text)
                created, level = float(record["t"]), int(record["l"])
                name, message = str(record["n"]), str(record["m"])
            except (ValueError, KeyError, TypeError):
                child_log.warning("%s", text)
                continue
            logger = logging.getLogger(name)
            if not logger.isEnabledFor(level):
                continue
            out = logger.makeRecord(name, level, "(embedded node)", 0, "%s", (message,), None)
            out.created = created
            out.msecs = (created - int(created)) * 1000
            out.process = None
            logger.handle(out)
    with contextlib.suppress(OSError):
        stream.close()
