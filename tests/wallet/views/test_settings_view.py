"""The Settings view: validation refuses bad input and saves nothing; rules files
are checked with Rules.load; the keyring warning shows when not a system keyring."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

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
