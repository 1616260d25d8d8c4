"""A peer server's HELLO answers the receiver's challenge, for the receiver's id.

Real servers on 127.0.0.1 (with their coordinators) and real BLS: a HELLO that
answers this connection's CHALLENGE is welcomed; one captured and sent again on
another connection, or signed for another server, or sent without asking for a
challenge, or in the form of protocol version 3, is refused with UNAUTHORIZED
naming why, and the connection closes. A node's own peer link completes the
handshake against a real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from node.crypto import bls
from node.identity import HELLO_DOMAIN, Identity, check_hello, hello_message, load_or_create
from node.machines.server import CreateSigner
from node.net.client import NodeClient
from node.net.peers import PeerLink, PeerNetwork
from node.net.protocol import (
    PROTOCOL_VERSION,
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    encode_request,
    error_of,
)
from tests.conftest import LiveNode, NodeProcess, recv_reply, start_live_node, stop_live_node
from tests.node.net.peer_hello import challenge, handshake, sender_of

DEADLINE_S = 20
PEER = Identity(bls.keygen(b"\x0a" * 32))
ID_A = b"\xaa" * 32  # the receiver ids of the two servers
ID_B = b"\xbb" * 32


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    a = await start_live_node(tmp_path / "a")
    b = await start_live_node(tmp_path / "b")
    a.api.receiver_id, b.api.receiver_id = ID_A, ID_B
    try:
        yield a, b
    finally:
        await stop_live_node(a)
        await stop_live_node(b)


async def refused(ws: ClientConnection, frame: bytes) -> str:
    """Send ``frame``; the node answers UNAUTHORIZED and closes (1008): its message."""
    await ws.send(frame)
    reply = await recv_reply(ws, DEADLINE_S)
    code, message = error_of(reply)
    assert code is Err.UNAUTHORIZED, message
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), DEADLINE_S)
    assert ws.close_code == 1008
    return message


def hello_frame(body: list[bytes], rid: int = 2) -> bytes:
    return encode_request(Req.HELLO, rid, sender_of(PEER), (), body)


async def test_a_hello_answering_the_challenge_is_welcomed(
    servers: tuple[LiveNode, LiveNode],
) -> None:
    a, _ = servers
    async with connect(a.url) as ws:
        await ws.send(encode_request(Req.CHALLENGE, 7, sender_of(PEER), (), []))
        reply = await recv_reply(ws, DEADLINE_S)
        assert reply.type is Rep.CHALLENGE
        assert reply.request_id == 7
        version, given, receiver = reply.body
        assert (version, receiver) == (bytes([PROTOCOL_VERSION]), ID_A)
        assert isinstance(given, bytes)
        assert isinstance(receiver, bytes)
        assert len(given) == 32
        welcome = await _ask(ws, hello_frame(PEER.hello(given, receiver)))
        assert welcome.type is Rep.WELCOME
        assert welcome.body[:2] == [bytes([PROTOCOL_VERSION]), b"peer"]
        # Authenticated now: neither a second HELLO nor a new challenge.
        again = await _ask(ws, encode_request(Req.CHALLENGE, 3, sender_of(PEER), (), []))
        assert error_of(again) == (Err.FORBIDDEN, "already authenticated")
        status = await _ask(ws, encode_request(Req.STATUS, 4, sender_of(PEER), (), []))
        assert status.type is Rep.STATUS


async def _ask(ws: ClientConnection, frame: bytes) -> Reply:
    await ws.send(frame)
    return await recv_reply(ws, DEADLINE_S)


async def test_a_hello_replayed_on_a_new_connection_is_refused(
    servers: tuple[LiveNode, LiveNode],
) -> None:
    """As a listener on the wire would: the HELLO that opened one connection, sent
    again on a new one (after asking its own challenge, or without asking one), and
    on the first connection again once authenticated."""
    a, _ = servers
    async with connect(a.url) as first:
        given, receiver = await challenge(first, sender_of(PEER))
        captured = hello_frame(PEER.hello(given, receiver))
        assert (await _ask(first, captured)).type is Rep.WELCOME
        async with connect(a.url) as second:
            await challenge(second, sender_of(PEER))
            message = await refused(second, captured)
        assert message == (
            "peer HELLO answers another challenge than this connection's"
            " (a HELLO is good for one connection only)"
        )
        async with connect(a.url) as third:
            message = await refused(third, captured)
        assert message == "peer HELLO without a challenge: send CHALLENGE first on this connection"
        again = await _ask(first, captured)
        assert error_of(again) == (Err.FORBIDDEN, "already authenticated")


async def test_a_hello_for_another_server_is_refused(servers: tuple[LiveNode, LiveNode]) -> None:
    """A HELLO signed for server A is no good at server B: neither A's own HELLO
    relayed there, nor one answering B's challenge but naming A."""
    a, b = servers
    async with connect(a.url) as to_a, connect(b.url) as to_b:
        given_a, receiver_a = await challenge(to_a, sender_of(PEER))
        assert receiver_a == ID_A
        message = await refused(to_b, hello_frame(PEER.hello(given_a, receiver_a)))
        assert message.startswith("peer HELLO without a challenge")
    async with connect(b.url) as to_b:
        given_b, receiver_b = await challenge(to_b, sender_of(PEER))
        assert receiver_b == ID_B
        message = await refused(to_b, hello_frame(PEER.hello(given_b, ID_A)))
    assert message == (
        f"peer HELLO is meant for server {ID_A.hex()[:16]}, not this one ({ID_B.hex()[:16]})"
    )
    # A signature made for A's id, presented with B's id: the signature fails.
    async with connect(b.url) as to_b:
        given_b, _ = await challenge(to_b, sender_of(PEER))
        body = PEER.hello(given_b, ID_A)
        body[2] = ID_B
        message = await refused(to_b, hello_frame(body))
    assert message == "peer HELLO signature does not verify"


async def test_a_hello_without_a_challenge_is_refused(servers: tuple[LiveNode, LiveNode]) -> None:
    a, _ = servers
    async with connect(a.url) as ws:
        message = await refused(ws, hello_frame(PEER.hello(b"\x00" * 32, ID_A)))
    assert message == "peer HELLO without a challenge: send CHALLENGE first on this connection"


async def test_a_challenge_is_given_once_per_connection(
    servers: tuple[LiveNode, LiveNode],
) -> None:
    """A second CHALLENGE before HELLO is refused (and, before HELLO, closes); a
    client gets none."""
    a, _ = servers
    async with connect(a.url) as ws:
        await challenge(ws, sender_of(PEER))
        reply = await _ask(ws, encode_request(Req.CHALLENGE, 2, sender_of(PEER), (), []))
        assert error_of(reply) == (Err.FORBIDDEN, "this connection already has its challenge")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), DEADLINE_S)
    async with connect(a.url) as ws:
        client = Sender(SenderKind.CLIENT, b"wallet")
        reply = await _ask(ws, encode_request(Req.CHALLENGE, 1, client, (), []))
        assert error_of(reply) == (Err.FORBIDDEN, "CHALLENGE is for peer servers")


async def test_an_old_version_hello_names_both_versions(
    servers: tuple[LiveNode, LiveNode],
) -> None:
    """A server of protocol version 3 sends a signed timestamp, first thing, with
    request id 0: the refusal says which versions differ."""
    a, _ = servers
    now = time.time_ns() // 1_000_000
    old_message = b"XLN/peer-hello/v1" + PEER.pubkey + now.to_bytes(8, "big")
    body: list[object] = [PEER.pubkey, now, bls.sign(PEER.secret_key, old_message)]
    async with connect(a.url) as ws:
        message = await refused(ws, encode_request(Req.HELLO, 0, sender_of(PEER), (), body))
    assert message == (
        "peer HELLO of protocol version 3 (a signed timestamp); this server speaks version"
        f" {PROTOCOL_VERSION}, where a peer signs the challenge it asks for"
        " (update the older server)"
    )


async def test_a_node_links_to_a_real_server(servers: tuple[LiveNode, LiveNode]) -> None:
    """The node's own peer link: CHALLENGE, HELLO, WELCOME with the hosted signers."""
    a, _ = servers
    sk = bls.keygen(b"\x0b" * 32)
    async with await NodeClient.connect(a.url, token=a.token) as admin:
        receipts = await admin.submit([CreateSigner(bls.sk_to_pk(sk), bls.pop_prove(sk))])
        assert receipts.receipts[0].error is None
    network = PeerNetwork([a.url], PEER)
    up = asyncio.Event()

    def report(link: PeerLink) -> None:
        up.set()

    network.on_change.append(report)
    network.start()
    try:
        await asyncio.wait_for(up.wait(), DEADLINE_S)
        link = network.links[0]
        assert link.connected
        assert a.api.coordinator is not None
        assert link.hosted == frozenset(a.api.coordinator.hosted_signers())
        assert len(link.hosted) == 1
    finally:
        await network.close()


@settings(max_examples=20, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
)
def test_check_hello_accepts_only_its_own_challenge_and_receiver(
    challenge_: bytes, receiver: bytes, given_: bytes, own: bytes
) -> None:
    """A HELLO made for (challenge, receiver) passes only where both are the
    receiver's own; the message is the domain, the challenge, the receiver, the key."""
    body = PEER.hello(challenge_, receiver)
    assert hello_message(challenge_, receiver, PEER.pubkey) == (
        HELLO_DOMAIN + challenge_ + receiver + PEER.pubkey
    )
    pubkey, c, r, sig = body
    assert check_hello(pubkey, c, r, sig, given=challenge_, own_id=receiver) is None
    verdict = check_hello(pubkey, c, r, sig, given=given_, own_id=own)
    assert (verdict is None) == (given_ == challenge_ and own == receiver)
    assert check_hello(pubkey, c, r, sig, given=None, own_id=receiver) is not None


@pytest.mark.slow
async def test_a_node_process_names_itself_by_its_identity_key(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    """``xln-node run`` with an identity password (and no ``--peer``) gives its
    identity key's id as the receiver id, and welcomes a HELLO for it."""
    data = tmp_path / "data"
    data.mkdir()
    identity = load_or_create(data, "secret", fast_kdf=True)
    password = tmp_path / "password"
    password.write_text("secret\n")
    node = node_process("--identity-password-file", str(password), data=data)
    async with connect(node.url) as ws:
        _, receiver = await challenge(ws, sender_of(PEER))
    assert receiver == identity.id
    async with connect(node.url) as ws:
        assert (await handshake(ws, PEER)).type is Rep.WELCOME
    assert node.terminate() == 0
