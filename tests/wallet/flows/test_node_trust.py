"""Trust on first use of a remote node's certificate, headless: the wallet's
NodeSession against real in-process nodes serving wss:// on 127.0.0.1 with
certificates made here (self-signed, or signed by a CA made here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.net.agent_client import serve_signer
from node.net.tls import ClientTrust, pretty
from tests.conftest import LiveNode, start_live_node, stop_live_node
from tests.node.net.certs import CertFiles, make_ca, make_self_signed, make_signed
from wallet import settings as settings_io
from wallet.connection import NodeSession
from wallet.flows.node_trust import (
    CertificateChanged,
    CertificateNotTrusted,
    CertificateQuestion,
    connect_trusting,
    forget,
    trust_of,
)
from wallet.model import Link, WalletModel
from wallet.settings import Settings, SettingsError


@dataclass
class Person:
    """Answers the certificate question as told, and remembers what it was asked."""

    answer: bool
    asked: list[CertificateQuestion] = field(default_factory=list)

    async def __call__(self, question: CertificateQuestion) -> bool:
        self.asked.append(question)
        return self.answer


@dataclass
class Wallet:
    """What the service does around the flow: one session, settings saved to disk."""

    data: Path
    model: WalletModel = field(default_factory=WalletModel)
    session: NodeSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = NodeSession(self.model)

    async def connect(
        self, url: str, token: str, settings: Settings, ask: Person | None
    ) -> Settings:
        async def open_(trust: ClientTrust) -> None:
            await self.session.connect(url, token, trust=trust)

        return await connect_trusting(
            open_, url, settings, ask, lambda s: settings_io.save(self.data, s)
        )


@pytest.fixture
async def wallet(tmp_path: Path) -> AsyncIterator[Wallet]:
    data = tmp_path / "wallet"
    data.mkdir()
    w = Wallet(data)
    try:
        yield w
    finally:
        await w.session.close()


def remote(url: str, **fields: str) -> Settings:
    return Settings(node_mode="remote", node_url=url, **fields)  # type: ignore[arg-type]


async def test_first_use_shows_the_fingerprint_and_keeps_it_once_accepted(
    tls_node: LiveNode, self_signed: CertFiles, wallet: Wallet
) -> None:
    person = Person(answer=True)
    settings = await wallet.connect(tls_node.url, tls_node.token, remote(tls_node.url), person)
    assert [q.fingerprint for q in person.asked] == [self_signed.fingerprint]
    assert pretty(self_signed.fingerprint) in person.asked[0].text
    assert settings.node_cert_sha256 == self_signed.fingerprint
    assert settings_io.load(wallet.data).node_cert_sha256 == self_signed.fingerprint
    assert wallet.model.connection.link is Link.CONNECTED
    assert (await wallet.session.status()).height >= 0
    await wallet.session.close()
    # The next start trusts it without asking.
    again = Person(answer=True)
    await wallet.connect(tls_node.url, tls_node.token, settings_io.load(wallet.data), again)
    assert again.asked == []
    assert wallet.model.connection.link is Link.CONNECTED


async def test_a_refused_certificate_is_not_kept_and_nothing_connects(
    tls_node: LiveNode, self_signed: CertFiles, wallet: Wallet
) -> None:
    person = Person(answer=False)
    with pytest.raises(CertificateNotTrusted, match="was not accepted"):
        await wallet.connect(tls_node.url, tls_node.token, remote(tls_node.url), person)
    assert len(person.asked) == 1
    assert not settings_io.path_in(wallet.data).exists()
    assert wallet.model.connection.link is Link.DISCONNECTED
    # Headless, no one is asked: refused, with the fingerprint to check.
    with pytest.raises(CertificateNotTrusted) as refused:
        await wallet.connect(tls_node.url, tls_node.token, remote(tls_node.url), None)
    assert pretty(self_signed.fingerprint) in str(refused.value)


async def test_a_changed_certificate_is_refused_naming_both(
    tls_node: LiveNode, self_signed: CertFiles, wallet: Wallet, tmp_path: Path
) -> None:
    before = make_self_signed(tmp_path / "old", "old").fingerprint
    person = Person(answer=True)
    settings = remote(tls_node.url, node_cert_sha256=before)
    with pytest.raises(CertificateChanged) as changed:
        await wallet.connect(tls_node.url, tls_node.token, settings, person)
    assert pretty(before) in str(changed.value)
    assert pretty(self_signed.fingerprint) in str(changed.value)
    assert person.asked == []  # a mismatch is never a question
    assert wallet.model.connection.link is Link.DISCONNECTED
    assert wallet.model.connection.error is not None
    assert pretty(self_signed.fingerprint) in wallet.model.connection.error
    # Forgotten on purpose (Settings), the next connection asks again.
    await wallet.connect(tls_node.url, tls_node.token, forget(settings), person)
    assert len(person.asked) == 1


async def test_a_ca_file_trusts_without_asking(tmp_path: Path, wallet: Wallet) -> None:
    ca, ca_key = make_ca(tmp_path / "ca")
    certs = make_signed(tmp_path / "server", ca, ca_key)
    live = await start_live_node(tmp_path / "node", tls=certs.context())
    try:
        person = Person(answer=False)
        settings = remote(live.url, node_ca_file=str(ca.cert))
        assert trust_of(settings).ca_file == ca.cert
        kept = await wallet.connect(live.url, live.token, settings, person)
        assert person.asked == []
        assert kept.node_cert_sha256 == ""
        assert wallet.model.connection.link is Link.CONNECTED
    finally:
        await wallet.session.close()
        await stop_live_node(live)


async def test_a_token_never_goes_in_clear_to_another_machine(wallet: Wallet) -> None:
    with pytest.raises(ConnectionError, match="over plain ws://"):
        await wallet.connect("ws://hub.invalid:8765", "t", remote("ws://hub.invalid:8765"), None)
    assert wallet.model.connection.error is not None
    assert "plain ws://" in wallet.model.connection.error


def test_settings_hold_only_a_fingerprint() -> None:
    with pytest.raises(SettingsError, match="node_cert_sha256"):
        Settings(node_cert_sha256="AB:CD").validate()
    Settings(node_cert_sha256="ab" * 32).validate()


async def test_the_agents_trust_what_the_session_trusted(
    tls_node: LiveNode, self_signed: CertFiles
) -> None:
    """The flow's trust, handed to an agent's connection, reaches the node."""
    up = asyncio.Event()
    stop = asyncio.Event()

    async def never(*request: object) -> Any:
        raise AssertionError

    trust = trust_of(remote(tls_node.url, node_cert_sha256=self_signed.fingerprint))
    task = asyncio.create_task(
        serve_signer(
            tls_node.url,
            tls_node.token,
            b"\x05" * 32,
            never,
            never,
            stop,
            on_link=lambda ok: up.set(),
            trust=trust,
        )
    )
    async with asyncio.timeout(20):
        await up.wait()
    stop.set()
    await asyncio.wait_for(task, 20)
