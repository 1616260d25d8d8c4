"""A peer server that speaks another protocol version is not linked.

Version 2 changed how an entity's state hash is computed, so two servers of
different versions never agree on a certified frame. The peer here is a real
WebSocket server on loopback written for the test: it answers the HELLO with a
WELCOME naming the version it is given, and counts the HELLOs it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from node.crypto import bls
from node.identity import Identity
from node.net import limits
from node.net.peers import PeerLink, PeerNetwork
from node.net.protocol import PROTOCOL_VERSION, Rep, Req, decode_request, encode_reply

DEADLINE_S = 20
HOSTED = b"\x42" * 32


@dataclass
class FakePeer:
    version: int
    hellos: int = 0
    seen: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def serve(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                assert isinstance(frame, bytes)
                req = decode_request(frame, limits=limits.REQUEST)
                if req.type is Req.HELLO:
                    body = [self.version, b"peer", bytes(32), 1, [HOSTED]]
                    await ws.send(encode_reply(Rep.WELCOME, req.request_id, body))
                    async with self.seen:
                        self.hellos += 1
                        self.seen.notify_all()

    async def wait_hellos(self, n: int) -> None:
        async with asyncio.timeout(DEADLINE_S), self.seen:
            await self.seen.wait_for(lambda: self.hellos >= n)


@contextlib.asynccontextmanager
async def linked(
    peer: FakePeer,
) -> AsyncIterator[tuple[PeerNetwork, list[PeerLink], asyncio.Event]]:
    """A peer network with one link to ``peer``: the links its ``on_change`` reported
    (a link reports when it is up), and an event set on the first report."""
    async with serve(peer.serve, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        network = PeerNetwork([f"ws://127.0.0.1:{port}"], Identity(bls.keygen(b"\x09" * 32)))
        changes: list[PeerLink] = []
        up = asyncio.Event()

        def report(link: PeerLink) -> None:
            changes.append(link)
            up.set()

        network.on_change.append(report)
        network.start()
        try:
            yield network, changes, up
        finally:
            await network.close()


async def test_a_peer_of_the_same_version_is_linked() -> None:
    peer = FakePeer(PROTOCOL_VERSION)
    async with linked(peer) as (network, changes, up):
        link = network.links[0]
        await asyncio.wait_for(up.wait(), DEADLINE_S)
        assert link.connected
        assert link.hosted == frozenset({HOSTED})
        assert changes == [link]


@pytest.mark.parametrize("version", [1, PROTOCOL_VERSION + 1])
async def test_a_peer_of_another_version_is_never_linked(
    version: int, caplog: pytest.LogCaptureFixture
) -> None:
    peer = FakePeer(version)
    async with linked(peer) as (network, changes, up):
        # It tries again (the peer may be upgraded), and refuses each time.
        await peer.wait_hellos(2)
        link = network.links[0]
        assert not link.connected
        assert link.hosted == frozenset()
        assert changes == []
        assert not up.is_set()
    assert f"speaks protocol version {version}, this server {PROTOCOL_VERSION}" in caplog.text
