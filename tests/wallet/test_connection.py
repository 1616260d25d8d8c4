"""NodeSession against a real in-process node on a loopback socket."""

from __future__ import annotations

import asyncio
import socket

import pytest

from node.crypto import bls
from node.machines.governance import signer_id
from node.machines.server import Increment
from node.net.client import NodeError
from node.net.protocol import Err, Rep, Reply, Topic
from tests.conftest import LiveNode
from tests.node.net.certs import CertFiles
from wallet.connection import BlockNews, KeyRef, NodeSession, NotConnected, connection_problem
from wallet.model import Link, WalletModel

SK = bls.keygen(bytes([9]) * 32)
KEY = KeyRef(signer_id(bls.sk_to_pk(SK)), bls.sk_to_pk(SK), bls.pop_prove(SK))


async def test_a_bad_token_is_refused_once(live_node: LiveNode) -> None:
    model = WalletModel()
    session = NodeSession(model)
    with pytest.raises(NodeError) as refused:
        await session.connect(live_node.url, "xln_00000000_wrong")
    assert refused.value.code is Err.UNAUTHORIZED
    assert model.connection.link is Link.DISCONNECTED
    assert model.connection.error is not None
    assert "UNAUTHORIZED" in model.connection.error
    with pytest.raises(NotConnected):
        await session.status()
    await session.close()


async def test_signers_entities_and_replicas(live_node: LiveNode) -> None:
    model = WalletModel()
    session = NodeSession(model)
    await session.connect(live_node.url, live_node.token)
    try:
        assert model.connection.link is Link.CONNECTED
        assert model.connection.tick_ms == 10
        assert session.scope == "server"
        assert not await session.signer_exists(KEY.signer_id)
        assert await session.ensure_signer(KEY)
        assert not await session.ensure_signer(KEY)  # already there: nothing submitted
        assert await session.entities_of(KEY.signer_id) == []
        assert await session.read_entity_lazily(KEY.signer_id, b"\x01" * 32) is None
        assert await session.read_header(KEY.signer_id, b"\x01" * 32) is None
    finally:
        await session.close()
    assert session.state.link is Link.DISCONNECTED


async def test_reconnects_and_subscribes_again(live_node: LiveNode) -> None:
    model = WalletModel()
    session = NodeSession(model)
    blocks: asyncio.Queue[Reply] = asyncio.Queue()
    states: list[Link] = []
    model.connection_changed.connect(lambda: states.append(model.connection.link))
    reconnected = asyncio.Event()

    async def on_connect() -> None:
        reconnected.set()

    session.on_connect.append(on_connect)
    await session.connect(live_node.url, live_node.token)
    await session.watch(Topic.BLOCKS, (), blocks.put_nowait)
    try:
        await session.submit([Increment(1)])
        first = BlockNews.of(await asyncio.wait_for(blocks.get(), 20))
        assert first.tx_count == 1
        # The node's listener goes away (its sessions are closed), then comes back.
        reconnected.clear()
        await live_node.api.close()
        await live_node.api.listen_tcp("127.0.0.1", live_node.port)
        await asyncio.wait_for(reconnected.wait(), 20)
        assert Link.DISCONNECTED in states
        assert model.connection.link is Link.CONNECTED
        await session.submit([Increment(1)])
        again = await asyncio.wait_for(blocks.get(), 20)
        assert again.type is Rep.BLOCK_EVENT
        assert BlockNews.of(again).height > first.height
        assert model.connection.height >= BlockNews.of(again).height
    finally:
        await session.close()


def test_metrics_add_the_worst_recent_lateness() -> None:
    now = [100.0]
    model = WalletModel()
    session = NodeSession(model, clock=lambda: now[0])
    session.record_metrics({"tick_ms": 100, "tick_lateness_us": [9_000, 1_000, 2_000]})
    assert list(model.tick_lateness_ms) == [(100.0, 2.0)]
    now[0] = 100.2  # two ticks later: the last two samples are new
    session.record_metrics({"tick_ms": 100, "tick_lateness_us": [9_000, 1_000, 2_000, 7_000]})
    assert list(model.tick_lateness_ms)[-1] == (100.2, 7.0)


async def test_connection_problem_says_what_is_wrong(live_node: LiveNode) -> None:
    url = f"ws://127.0.0.1:{live_node.port}"
    assert await connection_problem(url, live_node.token) is None
    assert await connection_problem(url, "not-a-token") == (
        "the node does not accept this API token"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    problem = await connection_problem(f"ws://127.0.0.1:{closed}", live_node.token)
    assert problem is not None
    assert problem.startswith(f"cannot reach the node at ws://127.0.0.1:{closed}")


async def test_connection_problem_with_an_untrusted_certificate_says_how_to_pin_it(
    tls_node: LiveNode, self_signed: CertFiles
) -> None:
    wss = f"wss://127.0.0.1:{tls_node.port}"
    untrusted = await connection_problem(wss, tls_node.token)
    assert untrusted is not None
    assert "not trusted" in untrusted
    assert f"#sha256={self_signed.fingerprint}" in untrusted
    pinned = f"{wss}#sha256={self_signed.fingerprint}"
    assert await connection_problem(pinned, tls_node.token) is None
