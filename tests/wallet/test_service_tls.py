"""The wallet service on a remote node served over wss:// with a self-signed
certificate (real TLS on 127.0.0.1): the person is asked once, the accepted
fingerprint lands in the wallet's settings, and the signer's agent connects
pinned to it; a person who refuses leaves the wallet disconnected, saying why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import start_live_node, stop_live_node
from tests.node.net.certs import make_self_signed
from tests.wallet.conftest import PASSWORD, Kit
from wallet import settings as settings_io
from wallet.flows.node_trust import CertificateQuestion
from wallet.model import Link, WalletModel
from wallet.service import WalletError, WalletService
from wallet.settings import Settings

WAIT_S = 20.0


async def test_a_remote_wss_node_is_trusted_once_accepted(kit: Kit, tmp_path: Path) -> None:
    certs = make_self_signed(tmp_path / "certs")
    live = await start_live_node(tmp_path / "node", tls=certs.context())
    settings = Settings(node_mode="remote", node_url=live.url, lock_timeout_min=0)
    service = WalletService(kit.data, WalletModel(), kit.vault, settings, token=live.token)
    asked: list[CertificateQuestion] = []

    async def person(question: CertificateQuestion) -> bool:
        asked.append(question)
        return True

    service.confirm_certificate = person
    try:
        await service.start()
        await service.unlock(PASSWORD)
        assert [q.fingerprint for q in asked] == [certs.fingerprint]
        assert settings.node_cert_sha256 == certs.fingerprint  # the settings the app shares
        assert settings_io.load(kit.data).node_cert_sha256 == certs.fingerprint
        assert service.model.connection.link is Link.CONNECTED
        agent = service.agents[kit.key.signer_id]
        linked = asyncio.Event()
        agent.on_link.append(lambda up: linked.set() if up else None)
        if not agent.connected:
            async with asyncio.timeout(WAIT_S):
                await linked.wait()
        coordinator = live.api.coordinator
        assert coordinator is not None
        assert kit.key.signer_id in coordinator.agents
    finally:
        await service.stop()
        await stop_live_node(live)


async def test_a_refused_certificate_leaves_the_wallet_disconnected(
    kit: Kit, tmp_path: Path
) -> None:
    certs = make_self_signed(tmp_path / "certs")
    live = await start_live_node(tmp_path / "node", tls=certs.context())
    settings = Settings(node_mode="remote", node_url=live.url, lock_timeout_min=0)
    service = WalletService(kit.data, WalletModel(), kit.vault, settings, token=live.token)

    async def person(question: CertificateQuestion) -> bool:
        return False

    service.confirm_certificate = person
    try:
        with pytest.raises(WalletError, match="was not accepted"):
            await service.start()
        assert service.model.connection.link is Link.DISCONNECTED
        error = service.model.connection.error
        assert error is not None
        assert "was not accepted" in error
        assert settings.node_cert_sha256 == ""
        assert service.agents == {}
    finally:
        await service.stop()
        await stop_live_node(live)
