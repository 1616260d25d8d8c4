"""``xln-wallet agent``: argument errors, and a real run against a real node process."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from node.agent import Agent
from node.codec import keccak
from node.crypto import bls
from node.machines import entity as ent
from node.machines.governance import Config, Member
from node.machines.refusal import Refusal
from node.machines.replica import Genesis, SubmitBatch
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity
from node.net.agent_client import serve_agent
from node.net.client import NodeClient
from node.net.entity_client import EntityReader
from node.txs import Tx
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


async def start_agent(
    kit: Kit,
    tmp_path: Path,
    node: NodeProcess,
    token_text: str,
    *extra: str,
    stderr: int = asyncio.subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    """``xln-wallet agent --accountant`` for ``kit``'s wallet on ``node``, the token and
    the password in files (never on the command line); stdout piped."""
    (tmp_path / "token").write_text(token_text + "\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wallet.cli",
        "agent",
        "--node",
        node.url,
        "--token-file",
        str(tmp_path / "token"),
        "--data",
        str(kit.data),
        "--password-file",
        str(tmp_path / "password"),
        "--keyring",
        "file",
        "--accountant",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def test_serves_a_real_node_until_sigterm(
    kit: Kit, tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    node = node_process("--tick-ms", "20")
    token_text = create_token(node.data)
    proc = await start_agent(kit, tmp_path, node, token_text, stderr=asyncio.subprocess.PIPE)
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


RULES = """\
[[rule]]
name = "small counters"
approve = ["counter"]
max_counter = 1000
"""


async def test_a_headless_accountant_refuses_with_a_signed_reason_the_proposer_reads(
    kit: Kit, tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    """Issue 12's "a refusal is invisible": in a 2-of-2 whose other member B proposes
    +5000, the headless accountant (a real ``xln-wallet agent`` process) finds no rule
    that approves it, so it refuses, signed, with its reason; B's node keeps the
    refusal, and a reader (B's wallet) reads who refused which frame and why."""
    node = node_process("--tick-ms", "20")
    token_text = create_token(node.data)
    (tmp_path / "rules.toml").write_text(RULES)
    rules = ("--rules", str(tmp_path / "rules.toml"))
    proc = await start_agent(kit, tmp_path, node, token_text, *rules)
    assert proc.stdout is not None
    stop = asyncio.Event()
    sk_b = bls.keygen(secrets.token_bytes(32))
    b = Agent(sk_b, tmp_path / "b-guard")
    served: asyncio.Task[None] | None = None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert b"serving" in line, line
        async with await NodeClient.connect(node.url, token=token_text) as client:
            receipts = await client.submit([CreateSigner(b.pubkey, b.proof_of_possession())])
            assert receipts.receipts[0].error is None
            served = asyncio.create_task(serve_agent(node.url, token_text, b, stop))
            k = kit.key
            config = Config((Member(k.pubkey, 1), Member(b.pubkey, 1)), 2, b.signer_id)
            genesis = Genesis(config, keccak(b"headless refusal"), (k.pop, b.proof_of_possession()))
            receipts = await client.submit([CreateEntity(genesis)], [b.signer_id])
            assert receipts.receipts[0].error is None
            entity = ent.entity_id_for(config, genesis.salt)
            batch = ent.sign_batch(entity, sk_b, b.signer_id, 1, [Tx.of(ent.Increment(5000))])
            reader = EntityReader(lambda: client)
            refusals: list[Refusal] = []
            async with asyncio.timeout(60):
                # B's agent may connect after the batch: the proposer re-proposes on
                # each round until the refusal is read.
                receipts = await client.submit([SubmitBatch(batch)], [b.signer_id, entity])
                assert receipts.receipts[0].error is None
                while not refusals:
                    await asyncio.sleep(0.05)  # polls the node's refusals within the deadline
                    _, refusals = await reader.refusals(b.signer_id, entity)
        refusal = refusals[0]
        assert refusal.signer == k.signer_id
        assert refusal.verify(k.pubkey)
        assert (refusal.entity, refusal.height) == (entity, 1)
        assert refusal.reason == (
            "rejected by headless: needs a human and there is none (headless agent)"
        )
    finally:
        stop.set()
        if served is not None:
            await asyncio.gather(served, return_exceptions=True)
        b.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
