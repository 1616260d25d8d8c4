"""TLS on the node's links, with real certificates (made here with ``cryptography``)
and real TLS servers on 127.0.0.1: ``wss://`` served and verified by a pinned
fingerprint or a CA; a wrong one refused before any HELLO; tokens only over TLS
or loopback; peers between two node processes over ``wss://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from node import cli
from node.cluster import Cluster, ServerTls
from node.crypto import bls
from node.identity import Identity
from node.machines import entity as ent
from node.machines.server import Increment
from node.net.agent_client import AgentRejected, serve_signer
from node.net.client import InsecureTransport, NodeClient
from node.net.peers import PeerNetwork
from node.net.tls import (
    CertificateRefused,
    ClientTrust,
    TlsConfigError,
    UntrustedCertificate,
    is_loopback,
    parse_fingerprint,
    plain_token_refusal,
    pretty,
    split_pin,
    token_transport_refusal,
)
from tests.conftest import LiveNode, start_live_node, stop_live_node
from tests.node.net.certs import CertFiles, make_ca, make_self_signed, make_signed

DEADLINE_S = 20.0
WRONG_PIN = "ab" * 32
A_TOKEN = "xln_00000000_" + "x" * 43
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (only ever refused here)


async def never(*request: object) -> Any:
    raise AssertionError("no APPROVE or SIGN expected")


@dataclass
class Listener:
    """A real TLS WebSocket server that reads what clients send and answers nothing:
    it shows whether a refused client sent anything (a HELLO) at all."""

    frames: list[bytes | str] = field(default_factory=list)
    connections: int = 0
    ended: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handler(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self.frames.append(frame)
        async with self.ended:
            self.connections += 1
            self.ended.notify_all()

    async def wait_connections(self, n: int) -> None:
        async with asyncio.timeout(DEADLINE_S), self.ended:
            await self.ended.wait_for(lambda: self.connections >= n)


@contextlib.asynccontextmanager
async def listening(certs: CertFiles) -> AsyncIterator[tuple[Listener, str]]:
    listener = Listener()
    async with serve(listener.handler, "127.0.0.1", 0, ssl=certs.context()) as server:
        port = server.sockets[0].getsockname()[1]
        yield listener, f"wss://127.0.0.1:{port}"


# wss:// served, and trusted by a pin or a CA ---------------------------------------------


async def test_wss_served_and_a_pinned_fingerprint_is_accepted(
    tls_node: LiveNode, self_signed: CertFiles
) -> None:
    url = f"{tls_node.url}#sha256={pretty(self_signed.fingerprint)}"  # colons allowed
    async with await NodeClient.connect(url, token=tls_node.token) as client:
        assert client.scope == "server"
        await client.submit([Increment(1)])
        assert (await client.status()).counter == 1
    trust = ClientTrust(fingerprint=self_signed.fingerprint)
    async with await NodeClient.connect(tls_node.url, token=tls_node.token, trust=trust) as c:
        assert (await c.status()).counter == 1


async def test_a_wrong_fingerprint_is_refused_before_hello(tmp_path: Path) -> None:
    certs = make_self_signed(tmp_path)
    async with listening(certs) as (listener, url):
        with pytest.raises(CertificateRefused) as refused:
            await NodeClient.connect(f"{url}#sha256={WRONG_PIN}", token=A_TOKEN)
        await listener.wait_connections(1)
    message = str(refused.value)
    assert pretty(certs.fingerprint) in message  # what it presented
    assert pretty(WRONG_PIN) in message  # and what was pinned
    assert refused.value.presented == certs.fingerprint
    assert listener.frames == []  # no HELLO, no token


async def test_a_ca_signed_certificate_is_accepted(tmp_path: Path) -> None:
    ca, ca_key = make_ca(tmp_path / "ca")
    certs = make_signed(tmp_path / "server", ca, ca_key)
    live = await start_live_node(tmp_path / "data", tls=certs.context())
    try:
        trust = ClientTrust(ca_file=ca.cert)
        async with await NodeClient.connect(live.url, token=live.token, trust=trust) as client:
            assert client.scope == "server"
        localhost = f"wss://localhost:{live.port}"  # the other name the certificate holds
        async with await NodeClient.connect(localhost, token=live.token, trust=trust) as client:
            assert client.scope == "server"
    finally:
        await stop_live_node(live)


async def test_a_certificate_of_another_ca_is_refused_with_its_fingerprint(
    tmp_path: Path,
) -> None:
    ca, ca_key = make_ca(tmp_path / "ca")
    other_ca, _ = make_ca(tmp_path / "other", "other")
    certs = make_signed(tmp_path / "server", ca, ca_key)
    async with listening(certs) as (listener, url):
        with pytest.raises(UntrustedCertificate) as refused:
            await NodeClient.connect(url, token=A_TOKEN, trust=ClientTrust(ca_file=other_ca.cert))
        # The TLS handshake failed, and the probe that read the fingerprint sent nothing.
        assert refused.value.presented == certs.fingerprint
        assert pretty(certs.fingerprint) in str(refused.value)
        assert "#sha256=" in str(refused.value)
        with pytest.raises(UntrustedCertificate):  # nor do the system's CAs know it
            await NodeClient.connect(url, token=A_TOKEN)
    assert listener.frames == []


async def test_an_agent_works_over_wss_with_a_pin_and_refuses_a_wrong_one(
    tls_node: LiveNode, self_signed: CertFiles
) -> None:
    stop = asyncio.Event()
    up = asyncio.Event()
    signer = b"\x07" * 32

    pinned = f"{tls_node.url}#sha256={self_signed.fingerprint}"
    task = asyncio.create_task(
        serve_signer(
            pinned, tls_node.token, signer, never, never, stop, on_link=lambda ok: up.set()
        )
    )
    try:
        async with asyncio.timeout(DEADLINE_S):
            await up.wait()
        assert signer in (tls_node.api.coordinator.agents if tls_node.api.coordinator else {})
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
    with pytest.raises(AgentRejected, match="not the pinned"):
        await asyncio.wait_for(
            serve_signer(
                f"{tls_node.url}#sha256={WRONG_PIN}", "t", signer, never, never, asyncio.Event()
            ),
            DEADLINE_S,
        )


async def test_agent_trusts_a_ca_file(tmp_path: Path) -> None:
    ca, ca_key = make_ca(tmp_path / "ca")
    certs = make_signed(tmp_path / "server", ca, ca_key)
    live = await start_live_node(tmp_path / "data", tls=certs.context())
    stop = asyncio.Event()
    up = asyncio.Event()

    try:
        task = asyncio.create_task(
            serve_signer(
                live.url,
                live.token,
                b"\x08" * 32,
                never,
                never,
                stop,
                on_link=lambda ok: up.set(),
                trust=ClientTrust(ca_file=ca.cert),
            )
        )
        async with asyncio.timeout(DEADLINE_S):
            await up.wait()
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
    finally:
        await stop_live_node(live)


# Tokens only over TLS or loopback -----------------------------------------------------------


async def test_client_refuses_a_token_over_plain_ws_to_another_host() -> None:
    # .invalid never resolves: had the client tried to connect, it would fail otherwise.
    with pytest.raises(InsecureTransport, match="over plain ws://"):
        await NodeClient.connect("ws://hub.invalid:8765", token=A_TOKEN)
    with pytest.raises(AgentRejected, match="over plain ws://"):
        await serve_signer(
            "ws://hub.invalid:8765", "t", b"\x01" * 32, never, never, asyncio.Event()
        )


def test_the_token_rules() -> None:
    assert token_transport_refusal("ws://127.0.0.1:8765") is None
    assert token_transport_refusal("ws://localhost:8765") is None
    assert token_transport_refusal("ws://[::1]:8765") is None
    assert token_transport_refusal("wss://hub.example:443") is None
    assert token_transport_refusal("ws://hub.example:8765") is not None
    assert token_transport_refusal("ws://10.0.0.5:8765") is not None
    # The server's side (the node's _hello applies it to the connection it got):
    # tested here as a function, since this workplace's tests may reach loopback only.
    assert plain_token_refusal(tls=True, remote_host="203.0.113.9") is None
    assert plain_token_refusal(tls=False, remote_host="127.0.0.1") is None
    assert plain_token_refusal(tls=False, remote_host="::1") is None
    assert plain_token_refusal(tls=False, remote_host="::ffff:127.0.0.1") is None
    refusal = plain_token_refusal(tls=False, remote_host="203.0.113.9")
    assert refusal is not None
    assert "only over TLS" in refusal
    assert plain_token_refusal(tls=False, remote_host=None) is not None
    assert not is_loopback(EVERY_INTERFACE)
    assert is_loopback("127.0.0.2")


async def test_a_plain_loopback_client_still_sends_its_token(live_node: LiveNode) -> None:
    async with await NodeClient.connect(live_node.url, token=live_node.token) as client:
        assert client.scope == "server"
        # What the node's rule is applied to: this session is plain, from loopback.
        (session,) = live_node.api._sessions
        assert not session.tls
        assert session.remote_host == "127.0.0.1"


async def test_the_node_knows_a_session_is_over_tls(
    tls_node: LiveNode, self_signed: CertFiles
) -> None:
    trust = ClientTrust(fingerprint=self_signed.fingerprint)
    async with await NodeClient.connect(tls_node.url, token=tls_node.token, trust=trust):
        (session,) = tls_node.api._sessions
        assert session.tls


def test_fingerprint_syntax() -> None:
    assert parse_fingerprint("SHA256=" + pretty(WRONG_PIN)) == WRONG_PIN
    assert split_pin("wss://h:1/x#sha256=" + WRONG_PIN) == ("wss://h:1/x", WRONG_PIN)
    assert split_pin("wss://h:1") == ("wss://h:1", None)
    with pytest.raises(TlsConfigError, match="64 hex"):
        split_pin("wss://h:1#sha256=abcd")
    with pytest.raises(TlsConfigError, match="needs a wss://"):
        split_pin("ws://h:1#sha256=" + WRONG_PIN)
    with pytest.raises(TlsConfigError, match="only thing"):
        split_pin("wss://h:1#other")


# xln-node run's options -------------------------------------------------------------------


def test_run_refuses_plain_listening_beyond_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], self_signed: CertFiles
) -> None:
    data = str(tmp_path / "data")
    assert cli.main(["run", "--data", data, "--host", EVERY_INTERFACE]) == 2
    err = capsys.readouterr().err
    assert f"refusing to listen on {EVERY_INTERFACE} without TLS" in err
    assert "--insecure-plain-listen" in err
    assert cli.main(["run", "--data", data, "--tls-cert", str(self_signed.cert)]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    key = str(self_signed.key)
    assert cli.main(["run", "--data", data, "--tls-cert", key, "--tls-key", key]) == 2
    assert "cannot use" in capsys.readouterr().err
    assert cli.listen_refusal(EVERY_INTERFACE, tls=False, insecure_plain=True) is None
    assert cli.listen_refusal(EVERY_INTERFACE, tls=True, insecure_plain=False) is None
    assert cli.listen_refusal("localhost", tls=False, insecure_plain=False) is None
    assert cli.listen_refusal("", tls=False, insecure_plain=False) is not None


# Peers ------------------------------------------------------------------------------


class _Seen(logging.Handler):
    def __init__(self, loop: asyncio.AbstractEventLoop, text: str) -> None:
        super().__init__(logging.ERROR)
        self.loop, self.text = loop, text
        self.event = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.text in message:
            self.loop.call_soon_threadsafe(self.event.set)


async def test_a_peer_with_a_wrong_certificate_is_refused_and_logged(tmp_path: Path) -> None:
    certs = make_self_signed(tmp_path)
    async with listening(certs) as (listener, url):
        seen = _Seen(asyncio.get_running_loop(), "not the pinned")
        logger = logging.getLogger("node.net.peers")
        logger.addHandler(seen)
        network = PeerNetwork([f"{url}#sha256={WRONG_PIN}"], Identity(bls.keygen(b"\x09" * 32)))
        network.start()
        try:
            async with asyncio.timeout(DEADLINE_S):
                await seen.event.wait()
            await listener.wait_connections(1)
        finally:
            await network.close()
            logger.removeHandler(seen)
    assert not network.links[0].connected
    assert listener.frames == []  # no peer HELLO was sent
    assert pretty(certs.fingerprint) in seen.messages[0]


@pytest.mark.slow
async def test_two_node_processes_peer_over_wss(tmp_path: Path) -> None:
    """Two xln-node run processes serving wss://, each pinning the other's self-signed
    certificate on --peer, with each signer's key in an xln-node agent process that
    reaches its node over wss:// pinned too: a batch is certified on both."""
    tls = []
    for i in range(2):
        certs = make_self_signed(tmp_path / "certs", f"server{i}")
        tls.append(ServerTls(certs.cert, certs.key, certs.fingerprint))
    cluster = Cluster(
        tmp_path / "cluster", servers=2, signers=2, tick_ms=50, tls=tls, external_agents=True
    )
    try:
        await cluster.start()
        assert all(s.url.startswith("wss://") for s in cluster.servers)
        a, b = cluster.keys  # one signer on each server
        assert a.server != b.server
        entity = await cluster.create_entity([a, b], [1, 1], 2)
        batch = await cluster.submit(a, entity, [ent.Increment(1)])
        when = await cluster.wait_committed(batch, [(a.id, entity), (b.id, entity)], DEADLINE_S)
        assert when is not None, "the batch was not certified on both servers"
    finally:
        await cluster.stop()
