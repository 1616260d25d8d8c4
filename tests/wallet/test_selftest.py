"""``xln-wallet --self-test`` in a real subprocess: embedded node, keyring round trip, and
the GUI's parts (Qt offscreen, fonts, style sheets, icons, text drawn)."""

from __future__ import annotations

import os

from keyring.backends import fail

from tests.conftest import run_python
from wallet.selftest import unsafe_backend


def test_self_test_exits_zero() -> None:
    result = run_python("-m", "wallet.cli", "--self-test", env={**os.environ}, timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert "embedded node: ok" in result.stdout
    assert "keyring backend: " in result.stdout
    assert "gui: ok (font " in result.stdout
    assert result.stdout.rstrip().endswith("self-test: ok")


def test_fail_backend_is_refused() -> None:
    assert unsafe_backend(fail.Keyring()) is not None  # type: ignore[no-untyped-call]
