"""The embedded node: starts on 127.0.0.1, its token works, stop flushes, the token is per run."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from node.machines.server import Increment
from node.net.client import NodeClient, NodeError
from node.net.protocol import Err
from node.storage import Store
from node.tokens import TokenStore
from node.txs import Tx
from wallet.embedded import TOKEN_LABEL, EmbeddedNode, EmbeddedNodeError


async def test_start_token_and_a_flushing_stop(tmp_path: Path) -> None:
    embedded = EmbeddedNode(tmp_path, tick_ms=20)
    url, token = await embedded.start()
    assert url.startswith("ws://127.0.0.1:")
    assert (tmp_path / "node" / "chain").is_dir()
    async with await NodeClient.connect(url, token=token) as client:
        assert client.scope == "server"
        receipts = await client.submit([Increment(2)])
        assert receipts.receipts[0].error is None
    # Queued and not yet in a block when the stop comes: the stop flushes it.
    node = embedded.node
    assert node is not None
    queued = threading.Event()

    async def submit_five() -> bool:  # on the node's own loop
        pending = node.submit((), [Tx.of(Increment(5))])
        queued.set()
        ack = await pending
        return ack.receipts[0].error is None

    loop = embedded._loop
    assert loop is not None
    five = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(submit_five(), loop))
    assert await asyncio.to_thread(queued.wait, 10)
    await embedded.stop()
    assert await five
    assert not embedded.running
    with Store(tmp_path / "node" / "chain") as store:
        state, _ = store.load()
    assert state.counter == 7
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
        with pytest.raises(NodeError) as refused:
            await NodeClient.connect(url, token=old)
        assert refused.value.code is Err.UNAUTHORIZED
        async with await NodeClient.connect(url, token=new) as client:
            assert client.scope == "server"
    finally:
        await second.stop()


async def test_data_in_use_and_peers_without_password(tmp_path: Path) -> None:
    running = EmbeddedNode(tmp_path, tick_ms=20)
    await running.start()
    try:
        with pytest.raises(EmbeddedNodeError, match="in use"):
            await EmbeddedNode(tmp_path, tick_ms=20).start()
    finally:
        await running.stop()
    with pytest.raises(EmbeddedNodeError, match="password"):
        await EmbeddedNode(tmp_path, peers=["ws://127.0.0.1:1"]).start()


async def test_the_node_keeps_time_on_its_own_thread(tmp_path: Path) -> None:
    """A payment goes through while the wallet's loop is blocked (a long repaint, say):
    the node runs on a thread and loop of its own. (On the wallet's loop, the client
    thread below would wait for a block that never comes.)"""
    embedded = EmbeddedNode(tmp_path, tick_ms=20)
    url, token = await embedded.start()
    try:
        assert embedded._thread is not None
        assert embedded._thread is not threading.current_thread()
        assert await embedded.call(threading.current_thread) is embedded._thread
        outcome: list[str | None] = []

        async def submit() -> None:
            async with await NodeClient.connect(url, token=token) as client:
                receipts = await client.submit([Increment(3)])
                outcome.append(receipts.receipts[0].error)

        client = threading.Thread(target=lambda: asyncio.run(submit()))
        client.start()
        client.join(30)  # blocks this loop, as a long repaint would
        assert not client.is_alive()
        assert outcome == [None]
    finally:
        await embedded.stop()
    with Store(tmp_path / "node" / "chain") as store:
        state, _ = store.load()
    assert state.counter == 3
