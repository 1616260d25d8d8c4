"""A peer server's handshake as a test plays it: CHALLENGE, then a HELLO answering it."""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection

from node.codec import as_bytes
from node.identity import Identity
from node.net.protocol import Rep, Reply, Req, Sender, SenderKind, encode_request
from tests.conftest import recv_reply


def sender_of(identity: Identity) -> Sender:
    return Sender(SenderKind.SERVER, identity.id)


async def challenge(ws: ClientConnection, sender: Sender, rid: int = 1) -> tuple[bytes, bytes]:
    """Ask for this connection's challenge: (challenge, receiver id)."""
    await ws.send(encode_request(Req.CHALLENGE, rid, sender, (), []))
    reply = await recv_reply(ws)
    assert reply.type is Rep.CHALLENGE, reply
    return as_bytes(reply.body[1], "challenge"), as_bytes(reply.body[2], "receiver id")


async def handshake(
    ws: ClientConnection, identity: Identity, sender: Sender | None = None
) -> Reply:
    """CHALLENGE (id 1), then the HELLO that answers it (id 2); the HELLO's reply."""
    sender = sender or sender_of(identity)
    given, receiver = await challenge(ws, sender)
    await ws.send(encode_request(Req.HELLO, 2, sender, (), identity.hello(given, receiver)))
    return await recv_reply(ws)
