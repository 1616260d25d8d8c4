"""The WebSocket API against an in-process node: auth, scopes, bad input, subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from node.block import Block
from node.codec import as_bytes, as_list, encode, encode_tree
from node.machines.server import Increment, ServerState
from node.mempool import Mempool
from node.net import limits
from node.net.client import NodeClient, NodeError
from node.net.protocol import (
    MAX_FRAME_BYTES,
    MAX_TXS_PER_SUBMIT,
    PROTOCOL_VERSION,
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    Topic,
    encode_request,
    error_of,
)
from node.runtime import NodeConfig
from node.tokens import Scope, TokenStore
from tests.conftest import LiveNode, recv_reply, start_live_node, stop_live_node

DEADLINE = 10
ME = Sender(SenderKind.CLIENT, b"tester")


class Raw:
    """A bare WebSocket speaking frames, so tests control every byte."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: bytes | str) -> None:
        await self.ws.send(frame)

    async def recv(self) -> Reply:
        return await recv_reply(self.ws, DEADLINE)

    async def ask(
        self,
        req: Req,
        rid: int,
        body: list[Any],
        route: tuple[bytes, ...] = (),
        sender: Sender = ME,
    ) -> Reply:
        await self.send(encode_request(req, rid, sender, route, body))
        return await self.recv()

    async def error(self, frame: bytes | str) -> tuple[Err, str, int]:
        await self.send(frame)
        reply = await self.recv()
        assert reply.type is Rep.ERROR, reply
        code, message = error_of(reply)
        return code, message, reply.request_id


@pytest.fixture
async def raw(live_node: LiveNode) -> AsyncIterator[Raw]:
    async with connect(live_node.url, compression=None, max_size=None) as ws:
        yield Raw(ws)


async def authed(live: LiveNode, token: str | None = None) -> Raw:
    ws = await connect(live.url, compression=None, max_size=None)
    r = Raw(ws)
    reply = await r.ask(Req.HELLO, 1, [(token or live.token).encode()])
    assert reply.type is Rep.WELCOME
    return r


async def test_hello_welcome(raw: Raw, live_node: LiveNode) -> None:
    reply = await raw.ask(Req.HELLO, 9, [live_node.token.encode()])
    assert reply.type is Rep.WELCOME
    assert reply.request_id == 9
    assert reply.body == [bytes([PROTOCOL_VERSION]), b"server", bytes(32), b""]


async def test_requests_before_hello_are_refused_and_closed(raw: Raw) -> None:
    code, message, rid = await raw.error(encode_request(Req.STATUS, 4, ME, (), []))
    assert (code, rid) == (Err.UNAUTHORIZED, 4)
    assert "HELLO" in message
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(raw.ws.recv(), DEADLINE)
    assert raw.ws.close_code == 1008


@pytest.mark.parametrize("token", [b"", b"xln_00000000_" + b"A" * 43, b"\xff\xfe", b"x" * 128])
async def test_bad_tokens_are_refused(raw: Raw, token: bytes) -> None:
    code, _, _ = await raw.error(encode_request(Req.HELLO, 1, ME, (), [token]))
    assert code is Err.UNAUTHORIZED
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(raw.ws.recv(), DEADLINE)


async def test_silent_connections_are_closed_after_the_hello_deadline(live_node: LiveNode) -> None:
    live_node.api.hello_timeout_s = 0.05
    async with connect(live_node.url, compression=None) as ws:
        reply = await recv_reply(ws, DEADLINE)
        assert reply.type is Rep.ERROR
        assert error_of(reply)[0] is Err.UNAUTHORIZED
        await asyncio.wait_for(ws.wait_closed(), DEADLINE)
        assert ws.close_code == 1008


async def test_oversize_token_is_malformed(raw: Raw) -> None:
    code, message, _ = await raw.error(encode_request(Req.HELLO, 1, ME, (), [b"x" * 129]))
    assert code is Err.MALFORMED
    assert "token" in message


async def test_a_peer_server_cannot_log_in_with_a_token(raw: Raw, live_node: LiveNode) -> None:
    peer = Sender(SenderKind.SERVER, b"\x01" * 32)
    code, _, _ = await raw.error(encode_request(Req.HELLO, 1, peer, (), [live_node.token.encode()]))
    assert code is Err.UNAUTHORIZED  # peers prove their identity key by signature


async def test_submit_status_read_state(live_node: LiveNode) -> None:
    r = await authed(live_node)
    reply = await r.ask(Req.SUBMIT, 2, [[1, 5], [1, 6], [1, 7]])
    assert reply.type is Rep.RECEIPTS
    assert reply.request_id == 2
    assert reply.body[2] == [[b"", b"", b""], [b"\x01", b"", b""], [b"\x02", b"", b""]]
    status = await r.ask(Req.STATUS, 3, [])
    assert status.body[0] == b"\x01"
    assert status.body[3] == b"\x12"
    state = await r.ask(Req.READ_STATE, 4, [])
    encoded, signers = ServerState.read_listing(as_bytes(state.body[1], "state"))
    assert encoded == live_node.node.state.encode()  # its keccak is the state hash
    assert signers == []
    blocks = await r.ask(Req.GET_BLOCKS, 5, [1, 10])
    block = Block.decode(as_bytes(as_list(blocks.body[0], "blocks")[0], "block"))
    assert [t.body for t in Mempool.decode(block.mempool).txs] == [
        Increment(5),
        Increment(6),
        Increment(7),
    ]
    await r.ws.close()


async def test_malformed_frames_get_errors_and_the_connection_survives(live_node: LiveNode) -> None:
    r = await authed(live_node)
    cases: list[tuple[bytes | str, Err]] = [
        (b"", Err.MALFORMED),
        (b"\xc0", Err.MALFORMED),
        ("hello", Err.MALFORMED),
        (b"\x81\x00", Err.MALFORMED),
        (
            encode_tree([b"\x02", b"\x07", [b"\x01", b"tester"], [], [[b"\x01", b"\x01"]]])
            + b"\x00",
            Err.MALFORMED,
        ),
        (encode([99, 5, [1, b"tester"], [], []]), Err.UNKNOWN_TYPE),
        (encode([2, 5, [9, b"tester"], [], [[1, 1]]]), Err.MALFORMED),
        (encode([2, 5, [1, b"tester"], [b"\x01" * 31], [[1, 1]]]), Err.MALFORMED),
        (encode([2, 5, [1, b"tester"], [b"\x01" * 32], [[1, 1]]]), Err.UNKNOWN_ROUTE),
        (encode([2, 5, [1, b"tester"], [], []]), Err.MALFORMED),
        (encode([2, 5, [1, b"tester"], [], [[1, 0]]]), Err.INVALID_TX),
        (encode([2, 5, [1, b"tester"], [], [[1, 2**32]]]), Err.INVALID_TX),
        (encode([2, 5, [1, b"tester"], [], [[2, 1]]]), Err.INVALID_TX),
        (encode([2, 5, [1, b"tester"], [], [[1, 1, 1]]]), Err.INVALID_TX),
        (encode([2, 5, [1, b"tester"], [], [[1, b"\x00\x01"]]]), Err.INVALID_TX),
        (encode([2, 5, [1, b"tester"], [], [[1, 1]] * (MAX_TXS_PER_SUBMIT + 1)]), Err.MALFORMED),
        (encode([3, 5, [1, b"tester"], [], [1]]), Err.MALFORMED),
        (encode([3, 5, [1, b"someone else"], [], []]), Err.FORBIDDEN),
        (encode([5, 5, [1, b"tester"], [], [9]]), Err.MALFORMED),
        (encode([6, 5, [1, b"tester"], [], [77]]), Err.NOT_FOUND),
        (encode([7, 5, [1, b"tester"], [], [0, 1]]), Err.MALFORMED),
        (encode([7, 5, [1, b"tester"], [], [1, 1001]]), Err.MALFORMED),
        (encode([1, 5, [1, b"tester"], [], [live_node.token.encode()]]), Err.FORBIDDEN),
    ]
    before = live_node.node.status()
    for frame, expected in cases:
        code, message, _ = await r.error(frame)
        assert code is expected, (frame, message)
    assert live_node.node.status() == before
    # Still open and serving.
    assert (await r.ask(Req.STATUS, 100, [])).type is Rep.STATUS
    await r.ws.close()


async def test_oversize_frame_closes_with_1009(live_node: LiveNode) -> None:
    r = await authed(live_node)
    await r.send(b"\x00" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(r.ws.recv(), DEADLINE)
    assert r.ws.close_code == 1009


async def test_scopes_are_enforced(live_node: LiveNode) -> None:
    signer = b"\x05" * 32
    token, _ = live_node.tokens.create(Scope("signer", signer))
    r = await authed(live_node, token)
    for frame in (
        encode_request(Req.SUBMIT, 2, ME, (), [[1, 1]]),
        encode_request(Req.READ_STATE, 3, ME, (), []),
        encode_request(Req.GET_BLOCKS, 4, ME, (), [1, 1]),
        encode_request(Req.SUBSCRIBE, 5, ME, (), [Topic.BLOCKS]),
    ):
        code, _, _ = await r.error(frame)
        assert code is Err.FORBIDDEN
    # Its own subtree is reachable in principle; no signer exists there yet.
    code, _, _ = await r.error(encode_request(Req.SUBMIT, 6, ME, (signer,), [[1, 1]]))
    assert code is Err.UNKNOWN_ROUTE
    assert (await r.ask(Req.STATUS, 7, [])).type is Rep.STATUS
    await r.ws.close()


async def test_revoked_token_is_cut_off_within_a_tick(live_node: LiveNode) -> None:
    """No request needed: the node's next tick closes the session."""
    token, record = live_node.tokens.create(Scope("server"))
    r = await authed(live_node, token)
    TokenStore(live_node.data).revoke(record.id)  # as the CLI does, from outside
    reply = await r.recv()
    assert reply.type is Rep.ERROR
    assert error_of(reply) == (Err.UNAUTHORIZED, "token revoked")
    await asyncio.wait_for(r.ws.wait_closed(), DEADLINE)
    assert r.ws.close_code == 1008


async def test_a_token_made_since_the_last_tick_is_accepted_at_once(tmp_path: Path) -> None:
    """A token written from outside (the CLI) is accepted before the next tick reloads
    the file: no tick comes in this test's time (an hour's tick)."""
    live = await start_live_node(tmp_path / "data", NodeConfig(tick_ms=3_600_000))
    try:
        token, record = TokenStore(live.data).create(Scope("server"), "made now")
        assert not live.tokens.is_live(record.id)  # the node has not reloaded yet
        r = await authed(live, token)
        assert live.tokens.is_live(record.id)
        await r.ws.close()
        bad = await connect(live.url, compression=None, max_size=None)
        reply = await Raw(bad).ask(Req.HELLO, 1, [b"xln_00000000_nope"])
        assert error_of(reply) == (Err.UNAUTHORIZED, "invalid API token")
        await bad.close()
    finally:
        await stop_live_node(live)


async def test_a_bug_in_a_handler_is_answered_with_the_request_id(live_node: LiveNode) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    live_node.api._handlers[Req.METRICS] = broken
    r = await authed(live_node)
    code, _, rid = await r.error(encode_request(Req.METRICS, 42, ME, (), []))
    assert (code, rid) == (Err.INTERNAL, 42)
    assert (await r.ask(Req.STATUS, 43, [])).type is Rep.STATUS


async def test_subscriptions_deliver_events(live_node: LiveNode) -> None:
    async with await NodeClient.connect(live_node.url, token=live_node.token) as client:
        blocks_id, blocks = await client.subscribe(Topic.BLOCKS)
        commits_id, commits = await client.subscribe(Topic.COMMITS)
        receipts = await client.submit([Increment(3), Increment(4)])
        block_event = await asyncio.wait_for(blocks.get(), DEADLINE)
        commit_event = await asyncio.wait_for(commits.get(), DEADLINE)
        assert block_event.type is Rep.BLOCK_EVENT
        assert block_event.request_id == blocks_id
        assert block_event.body[1] == receipts.block_hash
        assert commit_event.type is Rep.COMMIT_EVENT
        assert commit_event.request_id == commits_id
        assert commit_event.body == [[], b"\x01", receipts.block_hash, [b"", b"\x01"]]
        await client.request(Req.UNSUBSCRIBE, [commits_id])
        with pytest.raises(NodeError) as info:
            await client.request(Req.UNSUBSCRIBE, [commits_id])
        assert info.value.code is Err.NOT_FOUND


async def test_control_socket_is_preauthorised(tmp_path: Path, live_node: LiveNode) -> None:
    sock = tmp_path / "n.sock"
    await live_node.api.listen_unix(sock)
    assert (sock.stat().st_mode & 0o777) == 0o600
    async with await NodeClient.connect(unix_path=sock) as client:
        assert client.scope == "server"
        status = await client.status()
        assert status.height == live_node.node.state.height
        receipts = await client.submit([Increment(1)])
        assert receipts.receipts[0].error is None


async def test_metrics(live_node: LiveNode) -> None:
    async with await NodeClient.connect(live_node.url, token=live_node.token) as client:
        await client.submit([Increment(1)])
        metrics = await client.metrics()
    assert metrics["tick_ms"] == 10
    assert metrics["blocks"] >= 1
    assert metrics["txs"] >= 1
    assert metrics["tick_lateness_us"]
    assert metrics["write_us"]


async def test_pipelined_requests_are_matched_by_id(live_node: LiveNode) -> None:
    async with await NodeClient.connect(live_node.url, token=live_node.token) as client:
        results = await asyncio.gather(*(client.submit([Increment(i + 1)]) for i in range(200)))
    assert sum(len(r.receipts) for r in results) == 200
    assert live_node.node.state.counter == sum(range(1, 201))


async def test_closing_answers_every_pending_submit(live_node: LiveNode) -> None:
    """Closing the API (the node still running): the SUBMITs it read get RECEIPTS, the
    ones sent once it was closing the connection-wide SHUTTING_DOWN; none is left to a
    dropped connection."""
    client = await NodeClient.connect(live_node.url, token=live_node.token)
    try:
        early = [asyncio.ensure_future(client.submit([Increment(n)])) for n in range(1, 201)]
        await asyncio.wait(early, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
        closing = asyncio.ensure_future(live_node.api.close())
        await asyncio.sleep(0)  # the node reads no more requests from here on
        late = [asyncio.ensure_future(client.submit([Increment(n)])) for n in range(201, 251)]
        await asyncio.wait_for(closing, DEADLINE)
        results = await asyncio.wait_for(
            asyncio.gather(*early, *late, return_exceptions=True), DEADLINE
        )
    finally:
        await client.close()
    receipted = [n for n, r in enumerate(results, 1) if not isinstance(r, BaseException)]
    refused = {n: r for n, r in enumerate(results, 1) if isinstance(r, BaseException)}
    assert receipted
    assert refused.keys() >= set(range(201, 251))
    for exc in refused.values():
        assert isinstance(exc, NodeError), repr(exc)
        assert exc.code is Err.SHUTTING_DOWN
    assert live_node.node.state.counter == sum(receipted)


async def _refused_busy(url: str) -> None:
    """The node refuses a new connection with ERROR BUSY and close 1013."""
    async with connect(url, compression=None) as ws:
        reply = await recv_reply(ws, DEADLINE)
        assert reply.type is Rep.ERROR
        assert error_of(reply)[0] is Err.BUSY
        await asyncio.wait_for(ws.wait_closed(), DEADLINE)
        assert ws.close_code == 1013


async def test_connections_waiting_for_hello_are_capped(live_node: LiveNode) -> None:
    hello = encode_request(Req.HELLO, 1, ME, (), [live_node.token.encode()])
    async with contextlib.AsyncExitStack() as stack:
        waiting = [
            await stack.enter_async_context(connect(live_node.url, compression=None))
            for _ in range(limits.MAX_UNAUTHENTICATED)
        ]
        await _refused_busy(live_node.url)
        # One of them authenticates: a place frees up.
        await waiting[0].send(hello)
        assert (await recv_reply(waiting[0], DEADLINE)).type is Rep.WELCOME
        async with connect(live_node.url, compression=None) as late:
            await late.send(hello)
            assert (await recv_reply(late, DEADLINE)).type is Rep.WELCOME


async def test_connections_are_capped_in_all(live_node: LiveNode) -> None:
    live_node.api.max_connections = 3
    hello = encode_request(Req.HELLO, 1, ME, (), [live_node.token.encode()])
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):
            ws = await stack.enter_async_context(connect(live_node.url, compression=None))
            await ws.send(hello)
            assert (await recv_reply(ws, DEADLINE)).type is Rep.WELCOME
        await _refused_busy(live_node.url)


async def test_a_connection_owed_too_many_replies_is_not_read_further(tmp_path: Path) -> None:
    """Past MAX_PENDING_REPLIES receipts owed, the node stops reading the connection:
    its later frames wait in the socket instead of queueing replies without bound.
    The node here never ticks, so no receipt is ever sent while the test looks."""
    live = await start_live_node(tmp_path / "data", NodeConfig(tick_ms=3_600_000))
    try:
        async with connect(live.url, compression=None) as ws:
            await ws.send(encode_request(Req.HELLO, 1, ME, (), [live.token.encode()]))
            assert (await recv_reply(ws, DEADLINE)).type is Rep.WELCOME
            sent = limits.MAX_PENDING_REPLIES + 50
            for i in range(sent):
                await ws.send(encode_request(Req.SUBMIT, 10 + i, ME, (), [[1, 1]]))
            await ws.send(encode_request(Req.STATUS, 9, ME, (), []))
            # Another connection sees the inbox stop at the cap.
            async with await NodeClient.connect(live.url, token=live.token) as other:
                async with asyncio.timeout(DEADLINE):
                    while live.node.inbox_size < limits.MAX_PENDING_REPLIES - 1:
                        await other.status()
                status = await other.status()
            assert status.inbox <= limits.MAX_PENDING_REPLIES
            assert live.node.inbox_size == status.inbox
            # The STATUS behind them was not read: nothing came back on this connection.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
    finally:
        await stop_live_node(live)
