"""``xln-node`` as a user runs it: inspect and verify with the node up or down, run, stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from node.block import Block
from node.codec import keccak
from node.machines.server import Increment
from node.net.client import NodeClient, NodeError, NodeStatus
from node.net.protocol import Err
from node.storage import BLOCK, Store, height_key
from tests.conftest import NodeProcess, create_token, xln_node

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
    assert set(running) >= {"height", "head", "state_hash", "counter", "blocks"}
    assert isinstance(running["counter"], int)
    assert running["counter"] >= 1000
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
    assert stopped["height"] >= int(str(running["height"]))
    verify = xln_node("verify", "--data", str(data))
    assert verify.returncode == 0
    assert "blocks verified" in verify.stdout


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
