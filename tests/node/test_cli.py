"""``xln-node`` as a user runs it: inspect and verify with the node up or down, run, stop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from node import cli
from node.block import Block
from node.chain_verify import Replayer
from node.codec import keccak
from node.machines.server import Increment
from node.net.client import NodeClient, NodeError, NodeStatus
from node.net.protocol import Err
from node.storage import BLOCK, Store, height_key
from tests.conftest import NodeProcess, create_token, run_python, xln_node

DEADLINE = 20


def inspect(data: Path) -> dict[str, object]:
    result = xln_node("inspect", "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr
    info: dict[str, object] = json.loads(result.stdout)
    return info


async def _wait_for_height(client: NodeClient, height: int) -> NodeStatus:
    _, blocks = await client.subscribe(1)  # type: ignore[arg-type]
    status = await client.status()
    while status.height < height:
        await asyncio.wait_for(blocks.get(), DEADLINE)
        status = await client.status()
    return status


async def test_inspect_and_verify_while_running_and_after(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    token = create_token(data)
    node = node_process("--demo-increments", "--tick-ms", "20", data=data)
    async with await NodeClient.connect(node.url, token=token) as client:
        await client.submit([Increment(1000)])
        await _wait_for_height(client, 5)
    running = inspect(data)
    assert running["source"] == "running node"
    assert isinstance(running["counter"], int)
    assert running["counter"] >= 1000
    height = running["height"]
    assert isinstance(height, int)
    assert height >= 5
    assert running["blocks"] == height
    verify = xln_node("verify", "--data", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "through the running node" in verify.stderr
    assert verify.stdout.startswith("ok:")
    # Tokens work with the node up.
    assert xln_node("token", "list", "--data", str(data)).returncode == 0

    assert node.terminate() == 0  # SIGTERM: finish the block, exit cleanly
    stopped = inspect(data)
    assert stopped["source"] == "store"
    assert isinstance(stopped["height"], int)
    assert stopped["height"] >= height
    # The running node's head is the hash of its block at that height, whose state
    # hash is the one it reported.
    with Store(data / "chain") as store:
        head = store.block_hash_at(height)
        assert head is not None
        raw = store.block(head)
        assert raw is not None
    assert running["head"] == head.hex()
    assert running["state_hash"] == Block.decode(raw).state_hash.hex()
    verify = xln_node("verify", "--data", str(data))
    assert verify.returncode == 0
    assert "blocks verified" in verify.stdout


async def test_online_verify_keeps_the_connection_alive_through_slow_pages(
    tmp_path: Path,
    node_process: Callable[..., NodeProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each page's replay takes longer than the keepalive's ping interval and timeout
    together; the event loop must keep serving the connection meanwhile."""
    data = tmp_path / "data"
    node = node_process("--empty-blocks", "--tick-ms", "10", data=data)
    await _until_height(node, data, 7)
    keepalive_s = 0.05
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    loop_ran: list[int] = []

    def slow_replay(replayer: Replayer, page: Sequence[bytes]) -> None:
        before = beats
        cli.replay_page(replayer, page)
        time.sleep(6 * keepalive_s)  # a heavy page, in whatever thread replays it
        loop_ran.append(beats - before)

    beating = asyncio.create_task(heartbeat())
    try:
        report = await cli._verify_running(
            data, page_blocks=2, keepalive_s=keepalive_s, replay=slow_replay
        )
    finally:
        beating.cancel()
    assert report.error is None
    height = report.blocks
    assert height >= 7
    pages = (height + 1) // 2
    assert len(loop_ran) == pages
    assert min(loop_ran) >= 5, loop_ran  # the loop ran while each page was replayed
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"verifying {height} blocks through the running node"
    done = [min(2 * i, height) for i in range(1, pages + 1)]
    assert err[1:] == [f"  {d}/{height} blocks ({100 * d / height:.0f}%)" for d in done]


def test_a_second_node_on_the_same_folder_is_refused(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    node_process(data=data)
    result = xln_node("run", "--data", str(data), "--port", "0")
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_verify_fails_on_a_tampered_block(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    node = node_process("--demo-increments", "--tick-ms", "10", "--empty-blocks", data=data)
    asyncio.run(_until_height(node, data, 3))
    assert node.terminate() == 0
    with Store(data / "chain") as store:
        block_hash = store.block_hash_at(2)
        assert block_hash is not None
        raw = store.block(block_hash)
        assert raw is not None
        b = Block.decode(raw)
        forged = Block.make(b.height, b.prev_hash, b.timestamp, b.mempool, keccak(b"forged"))
        store._db.put(BLOCK + block_hash, forged.raw)
        assert store.block_hash_at(2) == block_hash
        assert height_key(2)
    result = xln_node("verify", "--data", str(data))
    assert result.returncode == 2
    assert "FAILED" in result.stdout
    assert "block 2" in result.stdout


async def _until_height(node: NodeProcess, data: Path, height: int) -> None:
    async with await NodeClient.connect(unix_path=data / "node.sock") as client:
        await _wait_for_height(client, height)


def test_empty_data_folder(tmp_path: Path) -> None:
    info = inspect(tmp_path / "fresh")
    assert info["height"] == 0
    assert info["counter"] == 0
    assert xln_node("verify", "--data", str(tmp_path / "fresh")).returncode == 0


def test_port_zero_prints_the_bound_port(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    a = node_process(data=tmp_path / "a")
    b = node_process(data=tmp_path / "b")
    assert a.port
    assert b.port
    assert a.port != b.port


def test_key_create_and_an_agent_with_a_bad_token_exits_with_a_clear_error(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    node = node_process()
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "token").write_text("xln_00000000_" + "A" * 43)
    keystore = str(tmp_path / "key.json")
    made = xln_node(
        "key",
        "create",
        "--keystore",
        keystore,
        "--password-file",
        str(tmp_path / "pw"),
        "--fast-kdf",
    )
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    shown = xln_node("key", "show", "--keystore", keystore, "--password-file", str(tmp_path / "pw"))
    assert json.loads(shown.stdout) == info
    agent = xln_node(
        "agent",
        "--node",
        node.url,
        "--token-file",
        str(tmp_path / "token"),
        "--keystore",
        keystore,
        "--password-file",
        str(tmp_path / "pw"),
        "--guard",
        str(tmp_path / "guard"),
    )
    assert agent.returncode == 1
    assert "refused the agent: UNAUTHORIZED" in agent.stderr


async def test_inbox_cap_option_sets_the_cap_busy_answers_at(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    token = create_token(data)
    # A block period of an hour: what is queued stays queued while the test runs.
    node = node_process("--inbox-cap", "3", "--tick-ms", "3600000", data=data)
    async with await NodeClient.connect(node.url, token=token) as client:
        queued = asyncio.create_task(client.submit([Increment(1)] * 3))
        async with asyncio.timeout(DEADLINE):
            status = await client.status()
            while status.inbox < 3:
                await asyncio.sleep(0.01)
                status = await client.status()
        with pytest.raises(NodeError) as busy:
            await client.submit([Increment(1)])
        assert busy.value.code is Err.BUSY
        assert "inbox full (3 of 3 transactions queued)" in busy.value.message
        # SIGTERM: the last block takes the queued three (the loop keeps reading meanwhile).
        assert await asyncio.to_thread(node.terminate) == 0
        receipts = await asyncio.wait_for(queued, DEADLINE)
        assert [r.error for r in receipts.receipts] == [None, None, None]


def test_the_old_run_flags_are_refused(tmp_path: Path) -> None:
    for old in ("--simulate", "--simulation"):
        result = xln_node("run", "--data", str(tmp_path / "data"), old)
        assert result.returncode == 2
        assert f"unrecognized arguments: {old}" in result.stderr


async def test_a_token_created_while_the_node_runs_is_accepted_within_a_tick(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    node = node_process("--tick-ms", "20", data=data)
    token = create_token(data)  # while `run` holds the folder
    await asyncio.sleep(0.1)  # a few ticks
    async with await NodeClient.connect(node.url, token=token) as client:
        assert client.scope == "server"


def test_verify_refuses_a_synthetic_store_and_inspect_names_it(tmp_path: Path) -> None:
    """``bench/hub_store.py`` writes a hub's state directly (a real store, readable
    by the node, whose one block did not make it): ``verify`` refuses it with the
    reason, ``inspect`` reads it and says it is synthetic."""
    data = tmp_path / "hub"
    made = run_python("-m", "bench.hub_store", "--channels", "300", "--data", str(data))
    assert made.returncode == 0, made.stderr
    result = xln_node("verify", "--data", str(data))
    assert result.returncode == 1
    assert "synthetic store (bench/hub_store.py: a hub of 300 channels" in result.stderr
    assert "cannot be verified" in result.stderr
    info = inspect(data)
    assert info["synthetic"] == "bench/hub_store.py: a hub of 300 channels written directly"
    signers: Any = info["signers"]
    (entity,) = signers[0]["entities"]
    assert len(signers) == 1
    assert entity["channel_count"] == 300
    assert entity["height"] == 1
