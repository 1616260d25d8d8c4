"""Trust on first use, as a person sees it (Qt offscreen): the dialog shows the
certificate's fingerprint and says which button was pressed; Escape refuses. The
Settings view keeps the accepted certificate with its URL, shows it, and forgets
it when asked or when the URL changes."""

from __future__ import annotations

import asyncio

import pytest
from pytestqt.qtbot import QtBot

from node.net.tls import pretty
from wallet.flows.node_trust import CertificateQuestion
from wallet.qt import QApplication, QWidget
from wallet.settings import Settings
from wallet.views.certificate import CertificateDialog, ask_certificate
from wallet.views.settings import SettingsView

FINGERPRINT = "0f" * 32
QUESTION = CertificateQuestion("wss://127.0.0.1:8765", FINGERPRINT, "self-signed certificate")


pytestmark = pytest.mark.usefixtures("app_outlives_dialogs")


async def shown_dialog() -> CertificateDialog:
    async with asyncio.timeout(10):
        while True:
            for widget in QApplication.topLevelWidgets():
                if isinstance(widget, CertificateDialog) and widget.isVisible():
                    return widget
            await asyncio.sleep(0)  # one turn of the loop: the dialog opens in it


async def test_the_person_trusts_the_fingerprint_shown(qapp: QApplication) -> None:
    parent = QWidget()
    answer = asyncio.create_task(ask_certificate(QUESTION, parent))
    dialog = await shown_dialog()
    assert pretty(FINGERPRINT) in dialog.text()
    assert "self-signed certificate" in dialog.text()
    assert dialog.defaultButton() is dialog.refuse_button  # Enter does not trust
    dialog.trust_button.click()
    assert await asyncio.wait_for(answer, 10) is True
    parent.deleteLater()


async def test_refusing_or_escape_does_not_trust(qapp: QApplication, qtbot: QtBot) -> None:
    answer = asyncio.create_task(ask_certificate(QUESTION))
    dialog = await shown_dialog()
    dialog.refuse_button.click()
    assert await asyncio.wait_for(answer, 10) is False
    answer = asyncio.create_task(ask_certificate(QUESTION))
    dialog = await shown_dialog()
    dialog.reject()  # what Escape does
    assert await asyncio.wait_for(answer, 10) is False


def settings_view(qtbot: QtBot, settings: Settings, saved: list[Settings]) -> SettingsView:
    v = SettingsView(
        settings, lambda s, t: saved.append(s), backend_name="Secret Service", backend_system=True
    )
    qtbot.addWidget(v)
    return v


def test_settings_show_and_forget_the_accepted_certificate(qtbot: QtBot) -> None:
    url = "wss://hub.example:8765"
    accepted = Settings(node_mode="remote", node_url=url, node_cert_sha256=FINGERPRINT)
    saved: list[Settings] = []
    v = settings_view(qtbot, accepted, saved)
    assert v.cert.text() == pretty(FINGERPRINT)
    v.ca_file.setText("/etc/xln/ca.pem")
    assert v.save()
    assert saved[-1].node_cert_sha256 == FINGERPRINT  # kept with its URL
    assert saved[-1].node_ca_file == "/etc/xln/ca.pem"
    v.forget_cert.setChecked(True)
    assert v.save()
    assert saved[-1].node_cert_sha256 == ""
    v = settings_view(qtbot, accepted, saved)
    v.url.setText("wss://other.example:8765")
    assert v.save()
    assert saved[-1].node_cert_sha256 == ""  # another node: its certificate is asked anew
