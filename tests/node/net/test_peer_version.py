"""A peer server that speaks another protocol version is not linked.

Version 2 changed how an entity's state hash is computed, so two servers of
different versions never agree on a certified frame; version 4 changed the peer
HELLO (it answers a CHALLENGE), and version 5 what a peer's consensus traffic
needs (a member's binding of its key). The peer here is a real WebSocket server on
loopback written for the test: it answers CHALLENGE and HELLO naming the version
it is given (or, as a server of version 3 would, does not know CHALLENGE), and
records the requests it gets.
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
from node.net.protocol import (
    PROTOCOL_VERSION,
    Err,
    Rep,
    Req,
    Request,
    decode_request,
    encode_error,
    encode_reply,
)

DEADLINE_S = 20
HOSTED = b"\x42" * 32


@dataclass
class FakePeer:
    version: int
    knows_challenge: bool = True
    hellos: int = 0  # handshakes begun: CHALLENGEs (or HELLOs, for a peer without them)
    requests: list[Request] = field(default_factory=list)
    seen: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def serve(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                assert isinstance(frame, bytes)
                req = decode_request(frame, limits=limits.REQUEST)
                self.requests.append(req)
                if req.type is Req.CHALLENGE and not self.knows_challenge:
                    error = encode_error(Err.UNKNOWN_TYPE, "unknown request type 14", 0)
                    await ws.send(error)
                    await ws.close(1008)
                elif req.type is Req.CHALLENGE:
                    body = [self.version, b"\x01" * 32, bytes(32)]
                    await ws.send(encode_reply(Rep.CHALLENGE, req.request_id, body))
                elif req.type is Req.HELLO:
                    body = [self.version, b"peer", bytes(32), 1, [HOSTED]]
                    await ws.send(encode_reply(Rep.WELCOME, req.request_id, body))
                    continue
                else:
                    continue
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
    """CHALLENGE, then a HELLO answering it; neither with request id 0, which
    PROTOCOL.md § 5 keeps for the node's own errors."""
    peer = FakePeer(PROTOCOL_VERSION)
    async with linked(peer) as (network, changes, up):
        link = network.links[0]
        await asyncio.wait_for(up.wait(), DEADLINE_S)
        assert link.connected
        assert link.hosted == frozenset({HOSTED})
        assert changes == [link]
    challenge, hello = peer.requests[:2]
    assert (challenge.type, hello.type) == (Req.CHALLENGE, Req.HELLO)
    assert challenge.body == []
    assert hello.body == network.identity.hello(b"\x01" * 32, bytes(32))
    assert all(r.request_id != 0 for r in peer.requests)
    assert len({r.request_id for r in peer.requests}) == len(peer.requests)


async def test_a_peer_of_version_3_is_never_linked(caplog: pytest.LogCaptureFixture) -> None:
    """A server of version 3 does not know CHALLENGE (it answers UNKNOWN_TYPE): the
    log names both versions, and no HELLO is sent."""
    peer = FakePeer(3, knows_challenge=False)
    async with linked(peer) as (network, changes, _up):
        await peer.wait_hellos(2)
        assert not network.links[0].connected
        assert changes == []
    assert all(r.type is Req.CHALLENGE for r in peer.requests)
    assert (
        f"does not know CHALLENGE: it speaks a protocol version before 4, "
        f"this server {PROTOCOL_VERSION}: not linked"
    ) in caplog.text


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
