"""The Settings view: validation refuses bad input and saves nothing; rules files
are checked with Rules.load; the keyring warning shows when not a system keyring."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from wallet.model import Connection, Link, WalletModel
from wallet.qt import QApplication
from wallet.settings import Settings
from wallet.views.settings import SettingsView, check_rules


def view(
    qtbot: QtBot, saved: list[tuple[Settings, str | None]], system: bool = False
) -> SettingsView:
    v = SettingsView(
        Settings(),
        lambda s, t: saved.append((s, t)),
        backend_name="encrypted files" if not system else "Secret Service",
        backend_system=system,
        backend_warning=None if system else "No system keyring: keys are in encrypted files.",
    )
    qtbot.addWidget(v)
    return v


def test_remote_needs_a_ws_url_and_saves_the_token(qtbot: QtBot) -> None:
    saved: list[tuple[Settings, str | None]] = []
    v = view(qtbot, saved)
    v.remote.setChecked(True)
    v.url.setText("http://nope")
    assert not v.save()
    assert "ws://" in v.result.text()
    assert saved == []
    v.url.setText("ws://127.0.0.1:8765")
    v.token.setText("secret-token")
    v.theme.setCurrentText("dark")
    assert v.save()
    settings, token = saved[0]
    assert settings.node_mode == "remote"
    assert settings.theme == "dark"
    assert token == "secret-token"  # noqa: S105
    assert v.token.text() == ""
    assert "next start" in v.result.text()


def test_rules_file_is_validated(qtbot: QtBot, tmp_path: Path) -> None:
    saved: list[tuple[Settings, str | None]] = []
    v = view(qtbot, saved)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nname = 1\n")
    v.rules_path.setText(str(bad))
    assert v.rules_result.text().startswith("✗")
    assert not v.save()
    assert saved == []
    assert check_rules("")[0]
    good = tmp_path / "good.toml"
    good.write_text('[[rule]]\nname = "routine"\napprove = ["counter"]\n')
    v.rules_path.setText(str(good))
    assert v.rules_result.text() == "✓ good.toml: 1 rule, valid"
    assert v.save()


def test_keyring_warning(qtbot: QtBot) -> None:
    v = view(qtbot, [], system=False)
    assert not v.backend_warning.isHidden()
    assert "encrypted files" in v.backend_warning.text()
    assert view(qtbot, [], system=True).backend_warning.isHidden()


def test_the_embedded_nodes_port_and_peers(qtbot: QtBot) -> None:
    """Listen port, This node (its address, copied with Copy address) and Peers:
    saved when valid, refused with the bad peer named; the change applies at the
    next start; peers without a fixed port are warned about."""
    model = WalletModel()
    model.set_connection(Connection(Link.CONNECTED, "embedded", "ws://127.0.0.1:40000"))
    saved: list[tuple[Settings, str | None]] = []
    v = SettingsView(
        Settings(),
        lambda s, t: saved.append((s, t)),
        backend_name="Secret Service",
        backend_system=True,
        model=model,
    )
    qtbot.addWidget(v)
    assert "a free port at each start (now ws://127.0.0.1:40000)" in v.address.text()
    v.peers.setText("ws://127.0.0.1:7002")
    assert not v.peering_warning.isHidden()
    assert "fixed port" in v.peering_warning.text()
    v.listen_port.setValue(7001)
    assert v.peering_warning.isHidden()
    assert v.address.text() == "ws://127.0.0.1:7001 from the next start (now ws://127.0.0.1:40000)"
    v.peers.setText("ws://127.0.0.1:7002 ws://127.0.0.1:7001")
    assert not v.save()
    assert "this node's own address" in v.result.text()
    v.peers.setText("ws://127.0.0.1:7002, ws://127.0.0.1:7002")
    assert v.save()
    ((settings, _),) = saved
    assert (settings.listen_port, settings.peers) == (7001, ["ws://127.0.0.1:7002"])
    assert "next start" in v.result.text()
    assert v.peers.text() == "ws://127.0.0.1:7002"
    v.copy_address.click()
    assert QApplication.clipboard().text() == "ws://127.0.0.1:7001"
    assert v.copy_address.text() == "Copied \u2713"
    assert "ws://127.0.0.1:7001" in v.copy_address.toolTip()
    # Started again on that port: the address is the one to give.
    model.set_connection(Connection(Link.CONNECTED, "embedded", "ws://127.0.0.1:7001"))
    assert v.address.text() == "ws://127.0.0.1:7001: each co-signer's wallet lists it in its Peers"
    assert v.copy_address.text() == "Copy address"
    v.theme.setCurrentText("dark")
    assert v.save()
    assert v.result.text() == "Saved."
    # Remote mode: the embedded node's fields are not for it.
    v.remote.setChecked(True)
    assert not v.peers.isEnabled()
    assert not v.listen_port.isEnabled()
