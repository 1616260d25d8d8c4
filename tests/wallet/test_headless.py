"""``xln-wallet agent``: argument errors, and a real run against a real node process."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from node.net.client import NodeClient
from tests.conftest import NodeProcess, create_token
from tests.wallet.conftest import PASSWORD, Kit
from wallet import cli


def test_missing_node_or_password(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("XLN_WALLET_PASSWORD", raising=False)
    monkeypatch.delenv("XLN_TOKEN", raising=False)
    assert cli.main(["agent", "--data", str(kit.data)]) == 2
    assert "--node URL and --token-file" in capsys.readouterr().err
    assert cli.main(["agent", "--node", "ws://127.0.0.1:1"]) == 2
    assert "--token-file FILE (or XLN_TOKEN)" in capsys.readouterr().err
    monkeypatch.setenv("XLN_TOKEN", "t")
    assert cli.main(["agent", "--node", "ws://127.0.0.1:1"]) == 2
    assert "XLN_WALLET_PASSWORD" in capsys.readouterr().err
    # A token is never taken on the command line, where ps shows it.
    with pytest.raises(SystemExit):
        cli.main(["agent", "--node", "ws://127.0.0.1:1", "--token", "t"])
    assert "unrecognized arguments: --token t" in capsys.readouterr().err


def test_wrong_password_and_bad_rules(
    kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    token = tmp_path / "token"
    token.write_text("t\n")
    args = ["--node", "ws://127.0.0.1:1", "--token-file", str(token), "--keyring", "file"]
    assert cli.main(["--data", str(kit.data), "agent", *args, "--password-file", str(wrong)]) == 1
    assert "wrong wallet password" in capsys.readouterr().err
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\nname = 1\n")
    good = tmp_path / "good"
    good.write_text(PASSWORD + "\n")
    code = cli.main(
        [
            *("agent", *args, "--data", str(kit.data), "--password-file", str(good)),
            *("--accountant", "--rules", str(rules)),
        ]
    )
    assert code == 2
    assert "rules.toml" in capsys.readouterr().err


async def test_serves_a_real_node_until_sigterm(
    kit: Kit, tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    node = node_process("--tick-ms", "20")
    token_text = create_token(node.data)
    token = tmp_path / "token"
    token.write_text(token_text + "\n")
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wallet.cli",
        "agent",
        "--node",
        node.url,
        "--token-file",
        str(token),
        "--data",
        str(kit.data),
        "--password-file",
        str(secret),
        "--keyring",
        "file",
        "--accountant",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert b"serving" in line, line
        # On connecting it registered the wallet's signer on the node.
        async with await NodeClient.connect(node.url, token=token_text) as client:
            state = await client.server_state()
        assert kit.key.signer_id in state.by_id
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert token_text.split("_", 2)[2] not in err, "the token never reaches the log"


def test_agent_keyring_choices_are_the_backends_prefer_values() -> None:
    from wallet.cli import KEYRING_CHOICES
    from wallet.keys.backends import PREFER_CHOICES

    assert KEYRING_CHOICES == PREFER_CHOICES
