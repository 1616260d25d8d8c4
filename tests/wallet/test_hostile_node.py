"""A hostile remote node cannot crash or freeze the wallet.

The node here is a real WebSocket server on loopback written for the test: it
speaks just enough of the protocol to be connected to (WELCOME, STATUS), then
answers with structural extremes: states nested 100,000 levels deep or holding
millions of items, replies whose length prefixes lie, unsolicited events that
are not RLP, and SIGN requests to the wallet's agent nested past every cap.
The wallet's session and agent must refuse each with an error, drop and
re-establish the connection where PROTOCOL.md § 1.3 says so, and keep their
event loop turning throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from node.codec import DecodeError, encode, encode_bytes, encode_list, encode_uint, nested_lists
from node.net import limits
from node.net.agent_client import AgentStats, serve_signer
from node.net.client import VersionMismatch
from node.net.protocol import (
    PROTOCOL_VERSION,
    Rep,
    Req,
    Sender,
    SenderKind,
    decode_request,
    encode_reply,
    encode_request_raw,
    is_reply,
)
from wallet.connection import NodeSession

DEADLINE_S = 20
SIGNER = b"\x33" * 32


DEEP = nested_lists(100_000)
WIDE = encode_list([b"\x80"] * (limits.STATE.max_items + 1))
LYING_REPLY = b"\xf9\xff\xff" + encode_reply(Rep.STATUS, 2, [])


@dataclass
class HostileNode:
    """Answers HELLO and STATUS honestly; everything else with ``state_blob``."""

    state_blob: bytes = DEEP
    version: int = PROTOCOL_VERSION  # what its WELCOME says
    push_after_status: bytes | None = None  # an unsolicited frame after the first STATUS
    connections: int = 0
    reconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, ws: ServerConnection) -> None:
        self.connections += 1
        if self.connections >= 2:
            self.reconnected.set()
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                assert isinstance(frame, bytes)
                req = decode_request(frame, limits=limits.REQUEST)
                rid = req.request_id
                if req.type is Req.HELLO:
                    await ws.send(
                        encode_reply(Rep.WELCOME, rid, [self.version, b"server", b"\0" * 32, 1])
                    )
                elif req.type is Req.STATUS:
                    status = [1, b"\1" * 32, b"\2" * 32, 0, 0, 0]
                    await ws.send(encode_reply(Rep.STATUS, rid, status))
                    if self.push_after_status is not None and self.connections == 1:
                        await ws.send(self.push_after_status)
                elif req.type is Req.READ_STATE:
                    await ws.send(_state(rid, req.route, self.state_blob))
                elif req.type is Req.READ_ENTITY:
                    await ws.send(_entity(rid, req.route, self.state_blob))
                else:
                    await ws.send(encode_reply(Rep.ERROR, rid, [7, b"not here"]))


def _state(rid: int, route: tuple[bytes, ...], blob: bytes) -> bytes:
    """A STATE reply carrying ``blob`` as the state, built without re-encoding it."""
    return encode_list(
        [
            encode_uint(Rep.STATE),
            encode_uint(rid),
            encode_list([encode(list(route)), encode_bytes(blob)]),
        ]
    )


def _entity(rid: int, route: tuple[bytes, ...], blob: bytes) -> bytes:
    """An ENTITY header reply whose genesis and header are ``blob`` (as byte strings:
    a client must never decode them as RLP, and must refuse them)."""
    header = encode_list([encode_bytes(blob), encode_bytes(blob)])
    return encode_list(
        [
            encode_uint(Rep.ENTITY),
            encode_uint(rid),
            encode_list([encode(list(route)), encode_uint(0), header]),
        ]
    )


@contextlib.asynccontextmanager
async def hostile(node: HostileNode) -> AsyncIterator[str]:
    async with serve(node.serve, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


class Heartbeat:
    """Counts turns of the event loop, to show it never stopped turning."""

    def __init__(self) -> None:
        self.beats = 0
        self._beat = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            async with self._beat:
                self.beats += 1
                self._beat.notify_all()

    async def still_beating(self) -> None:
        before = self.beats
        async with asyncio.timeout(DEADLINE_S), self._beat:
            await self._beat.wait_for(lambda: self.beats > before + 2)

    def stop(self) -> None:
        self._task.cancel()


async def test_a_node_of_another_protocol_version_is_refused_once() -> None:
    """A node whose WELCOME names another version: the session says which, and does
    not retry (its certified hashes would never agree with this wallet's)."""
    node = HostileNode(version=1)
    async with hostile(node) as url:
        session = NodeSession()
        try:
            with pytest.raises(
                VersionMismatch, match=f"protocol version 1; this client speaks {PROTOCOL_VERSION}"
            ):
                await session.connect(url, "token")
            assert not session.connected
            assert session.state.error is not None
            assert "version 1" in session.state.error
            assert node.connections == 1
        finally:
            await session.close()


@pytest.mark.parametrize("version", [3, 4])
async def test_a_node_of_an_earlier_version_still_serves_this_client(version: int) -> None:
    """Versions 4 and 5 changed only what passes between servers (the peer HELLO, then
    the bindings a peer's consensus traffic needs): this wallet goes on with a node of
    version 3 or 4."""
    node = HostileNode(version=version)
    async with hostile(node) as url:
        session = NodeSession()
        try:
            await session.connect(url, "token")
            assert session.connected
            assert session.state.error is None
        finally:
            await session.close()


@pytest.mark.parametrize(
    ("blob", "cap"),
    [(DEEP, "nested deeper than 16"), (WIDE, f"more than {limits.STATE.max_items} RLP items")],
    ids=["100,000 levels", "a million and one items"],
)
async def test_a_hostile_state_is_refused_before_it_is_decoded(blob: bytes, cap: str) -> None:
    node = HostileNode(state_blob=blob)
    beat = Heartbeat()
    async with hostile(node) as url:
        session = NodeSession()
        await session.connect(url, "token")
        try:
            with pytest.raises(DecodeError, match=cap):
                await session.entities_of(SIGNER)
            with pytest.raises(DecodeError, match="genesis: expected a list"):
                await session.read_entity_lazily(SIGNER, b"\x44" * 32)
            assert session.connected  # a bad state is the read's failure, not the link's
            assert (await session.status()).height == 1
            await beat.still_beating()
        finally:
            await session.close()
            beat.stop()


@pytest.mark.parametrize(
    "frame",
    [DEEP, LYING_REPLY, b"\xc3\x01\x02", encode_list([b"\x80"] * (limits.REPLY.max_items + 1))],
    ids=["100,000 levels", "a lying length prefix", "truncated", "too many items"],
)
async def test_a_malformed_frame_drops_the_link_and_the_wallet_reconnects(frame: bytes) -> None:
    node = HostileNode(push_after_status=frame)
    beat = Heartbeat()
    async with hostile(node) as url:
        session = NodeSession()
        await session.connect(url, "token")
        try:
            # The malformed push ends the first connection; the session comes back.
            await asyncio.wait_for(node.reconnected.wait(), DEADLINE_S)
            await session.wait_connected(DEADLINE_S)
            assert (await session.status()).height == 1
            await beat.still_beating()
        finally:
            await session.close()
            beat.stop()


async def test_the_wallets_agent_refuses_sign_requests_past_the_caps() -> None:
    """SIGN requests nested past the depth cap, too wide, lying or too large reach
    no signing code; the agent stays connected (or reconnects) and keeps serving."""
    sent = asyncio.Event()
    back = asyncio.Event()
    replies: list[bytes] = []
    connections = 0

    async def node(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        hello = decode_request(bytes(await ws.recv(decode=False)), limits=limits.REQUEST)
        welcome = [PROTOCOL_VERSION, b"signer", b"\0" * 32, 1]
        await ws.send(encode_reply(Rep.WELCOME, hello.request_id, welcome))
        if connections >= 2:
            back.set()
            await ws.wait_closed()
            return
        sender = Sender(SenderKind.SERVER, b"\0" * 32)
        route = (SIGNER, b"\x44" * 32)
        for rid, body in enumerate(
            [
                [DEEP, b"\x80"],
                [encode_list([b"\x80"] * limits.REQUEST.max_items), b"\x80"],
                [b"\xf9\xff\xff\xc0", b"\x80"],
            ],
            start=1,
        ):
            await ws.send(encode_request_raw(Req.SIGN, rid, sender, route, body))
        # And one beyond the agent link's 1 MiB: the agent's WebSocket layer closes.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(b"\0" * (limits.MAX_FRAME_BYTES + 1))
            async for frame in ws:
                if isinstance(frame, bytes) and is_reply(frame):
                    replies.append(frame)
        sent.set()

    signed: list[bytes] = []

    async def sign(entity: bytes, frame_raw: bytes, round_: int, *more: object) -> object:
        signed.append(frame_raw)
        raise AssertionError("no hostile SIGN may reach the signing code")

    stats = AgentStats()
    stop = asyncio.Event()
    beat = Heartbeat()
    async with serve(node, "127.0.0.1", 0, compression=None, max_size=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        agent = asyncio.create_task(
            serve_signer(url, "token", SIGNER, sign, sign, stop, stats=stats)  # type: ignore[arg-type]
        )
        try:
            await asyncio.wait_for(sent.wait(), DEADLINE_S)
            await asyncio.wait_for(back.wait(), DEADLINE_S)  # it came back after the close
            await beat.still_beating()
            assert not agent.done(), "the agent stopped"
        finally:
            stop.set()
            await asyncio.wait_for(agent, DEADLINE_S)
            beat.stop()
    assert signed == []
    assert stats.requests == 0
