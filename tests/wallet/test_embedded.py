"""The embedded node, a real child process: it starts on 127.0.0.1 and its token
works, stop flushes, the token is per run and never on its command line, a killed
wallet takes its node with it, a crashed child's lock is no obstacle, and the
node keeps time while the wallet's loop is blocked."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.machines.server import Increment
from node.net.client import NodeClient, NodeError
from node.net.protocol import Err
from node.storage import Store
from node.tokens import TokenStore
from wallet.embedded import TOKEN_LABEL, EmbeddedNode, EmbeddedNodeError, exit_text

WAIT_S = 30.0
REPO = Path(__file__).resolve().parents[2]


def pid_gone(pid: int) -> bool:
    """The process ended (a zombie not yet reaped by its parent counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def until(condition: object, timeout_s: float = WAIT_S) -> None:
    """Wait for ``condition()`` with a deadline (polling: it watches other processes)."""
    assert callable(condition)
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (another process's state)
            await asyncio.sleep(0.02)


def running(embedded: EmbeddedNode) -> bool:
    return embedded.running


def counter_of(data: Path) -> int:
    with Store(data / "node" / "chain") as store:
        state, _ = store.load()
    return state.counter


async def test_start_token_and_a_flushing_stop(tmp_path: Path) -> None:
    # A tick of a minute: the queued increment can only reach a block through the
    # stop's last block.
    embedded = EmbeddedNode(tmp_path, tick_ms=60_000)
    url, token = await embedded.start()
    assert url.startswith("ws://127.0.0.1:")
    assert running(embedded)
    assert embedded.pid is not None
    assert embedded.pid != os.getpid()
    assert (tmp_path / "node" / "chain").is_dir()
    assert (tmp_path / "node" / "node.sock").exists(), "xln-node inspect can ask it"
    async with await NodeClient.connect(url, token=token) as client:
        assert client.scope == "server"
        submitted = asyncio.ensure_future(client.submit([Increment(5)]))
        async with asyncio.timeout(WAIT_S):
            while not client._pending:  # noqa: ASYNC110 (a loop turn: the submit is sent)
                await asyncio.sleep(0)
        # Requests of one connection are served in order: once STATUS answers, the
        # increment is in the node's inbox.
        status = await client.status()
        assert status.counter == 0
        assert not submitted.done()
        await embedded.stop()
        receipts = await submitted
        assert receipts.receipts[0].error is None
    assert not embedded.running
    assert embedded.exit_code == 0
    assert not (tmp_path / "node" / "node.sock").exists()
    assert counter_of(tmp_path) == 5
    await embedded.stop()  # twice is harmless


async def test_each_run_revokes_the_previous_token(tmp_path: Path) -> None:
    first = EmbeddedNode(tmp_path, tick_ms=20)
    _, old = await first.start()
    await first.stop()
    second = EmbeddedNode(tmp_path, tick_ms=20)
    url, new = await second.start()
    try:
        labels = [r.label for r in TokenStore(tmp_path / "node").records()]
        assert labels.count(TOKEN_LABEL) == 1
        assert old not in (tmp_path / "node" / "tokens.json").read_text(), "stored hashed"
        with pytest.raises(NodeError) as refused:
            await NodeClient.connect(url, token=old)
        assert refused.value.code is Err.UNAUTHORIZED
        async with await NodeClient.connect(url, token=new) as client:
            assert client.scope == "server"
        extra = await second.new_token("test")
        async with await NodeClient.connect(url, token=extra) as client:
            assert client.scope == "server"
    finally:
        await second.stop()


async def test_no_secret_on_the_command_line_or_in_the_environment(tmp_path: Path) -> None:
    password = "the identity key's password"  # noqa: S105 (a throwaway)
    embedded = EmbeddedNode(
        tmp_path, tick_ms=20, peers=["ws://127.0.0.1:1"], identity_password=password, fast_kdf=True
    )
    _, token = await embedded.start()
    try:
        pid = embedded.pid
        assert pid is not None
        cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
        environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
        assert cmdline.split(b"\0")[-2:] == [b"embedded-node", b""]
        # A token is xln_<id>_<secret>, and the secret's base64url may hold "_" too.
        for secret in (token, token.split("_", 2)[2], password):
            assert secret.encode() not in cmdline
            assert secret.encode() not in environ
    finally:
        await embedded.stop()


async def test_data_in_use_and_peers_without_password(tmp_path: Path) -> None:
    running = EmbeddedNode(tmp_path, tick_ms=20)
    await running.start()
    try:
        started = time.monotonic()
        with pytest.raises(EmbeddedNodeError, match="in use"):
            await EmbeddedNode(tmp_path, tick_ms=20, in_use_wait_s=0.5).start()
        assert time.monotonic() - started >= 0.5, "waited for a previous child to end"
    finally:
        await running.stop()
    with pytest.raises(EmbeddedNodeError, match="password"):
        await EmbeddedNode(tmp_path, peers=["ws://127.0.0.1:1"]).start()


async def test_a_killed_child_is_reported_and_its_lock_is_free(tmp_path: Path) -> None:
    embedded = EmbeddedNode(tmp_path, tick_ms=20)
    url, token = await embedded.start()
    async with await NodeClient.connect(url, token=token) as client:
        assert (await client.submit([Increment(4)])).receipts[0].error is None
    ended: list[int] = []
    embedded.on_exit.append(ended.append)
    pid = embedded.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await until(lambda: bool(ended))
    assert ended == [-signal.SIGKILL]
    assert exit_text(ended[0]) == "killed by SIGKILL"
    assert not embedded.running
    # A new child on the same data: the crashed one's lock and socket file are no obstacle.
    again = EmbeddedNode(tmp_path, tick_ms=20)
    url, token = await again.start()
    try:
        async with await NodeClient.connect(url, token=token) as client:
            assert (await client.status()).counter == 4
    finally:
        await again.stop()
    assert ended == [-signal.SIGKILL], "a stop asked for is not reported as a crash"


WALLET_SCRIPT = """
import asyncio, sys
from pathlib import Path
from wallet.embedded import EmbeddedNode

async def main():
    node = EmbeddedNode(Path(sys.argv[1]), tick_ms=20)
    await node.start()
    print(node.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_node_does_not_outlive_a_killed_wallet(tmp_path: Path) -> None:
    """A process that started the embedded node (as the wallet does) is SIGKILLed:
    its child sees the pipe close, flushes and exits, and frees the data."""
    wallet = subprocess.Popen(  # noqa: ASYNC220 (the pipe is read on a thread)
        [sys.executable, "-c", WALLET_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert wallet.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(wallet.stdout.readline), WAIT_S)
        child = int(line)
        assert not pid_gone(child)
        wallet.kill()
        await asyncio.to_thread(wallet.wait, WAIT_S)
        await until(lambda: pid_gone(child), 10.0)
    finally:
        if wallet.poll() is None:
            wallet.kill()
            wallet.wait()
    again = EmbeddedNode(tmp_path, tick_ms=20)
    await again.start()
    await again.stop()


async def test_the_node_keeps_time_while_the_wallet_loop_is_blocked(tmp_path: Path) -> None:
    """Blocks keep coming while the wallet's loop is blocked (a long repaint, say):
    the node is another process."""
    embedded = EmbeddedNode(tmp_path, tick_ms=20)
    url, token = await embedded.start()
    try:
        async with await NodeClient.connect(url, token=token) as client:
            before = (await client.metrics())["tick_lateness_us"]
            time.sleep(0.5)  # noqa: ASYNC251 (the point: this loop is blocked)
            after = (await client.metrics())["tick_lateness_us"]
        assert len(after) - len(before) >= 10, "the node ticked while this loop was blocked"
    finally:
        await embedded.stop()


async def test_a_fixed_listen_port_and_one_taken(tmp_path: Path) -> None:
    """Settings' listen port: the node listens there (peers keep its address); a port
    taken by another process is said, with what to do."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    first = EmbeddedNode(tmp_path / "a", tick_ms=20, listen_port=port)
    url, _ = await first.start()
    try:
        assert url == f"ws://127.0.0.1:{port}"
        with pytest.raises(EmbeddedNodeError, match=f"cannot listen on 127.0.0.1:{port}"):
            await EmbeddedNode(tmp_path / "b", tick_ms=20, listen_port=port).start()
    finally:
        await first.stop()
