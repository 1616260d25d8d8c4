"""Two wallets signing for one entity, each a real GUI process (offscreen) with its
own data folder and keyring, in remote mode against two peered node processes.

Wallet A keeps its key in the Secret Service (the unlocked GNOME Keyring that
``scripts/test.sh`` starts), wallet B in the encrypted files; the accountant is
off, so every frame waits for a click in each window's Approvals view.
``tests/wallet/wallet_process.py`` drives each window through its widgets.

Entity: A 2 shares, B 1, threshold 3, A proposes. A increments and approves;
B rejects, and the counter does not move while B refuses; the frame is asked
again at a later round, B approves, and it commits. A increments 7; B rejects,
and its signed refusal reaches A's window, which offers to withdraw A's batch; A
withdraws it, both approve the next frame (the withdrawal alone), and the
counter stays 1. A proposes threshold 2;
both approve that frame (a new proposal), B only after reading it for two rounds,
in which its request stays one entry that follows the rounds; B votes in its Proposals view; both
approve the next frame, whose effects show "threshold 3 -> 2" highlighted as
governance; both windows show threshold 2. Both wallets quit with code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import Cluster
from tests.wallet.keys.conftest import HOW_TO_GET_ONE
from wallet.flows.compose import SignerCard
from wallet.keys.backends import BackendError, choose_backend
from wallet.views.theme import LIGHT

STEP_S = 60.0  # the driver's own waits; the test allows a little more for the reply
REPLY_S = STEP_S + 15.0
ROOT = Path(__file__).resolve().parents[2]
SUBTITLE = re.compile(r"threshold (\d+)/(\d+) · height ([\d,]+) · counter ([\d,]+)")

pytestmark = pytest.mark.slow


class WalletProcess:
    """One ``tests.wallet.wallet_process`` child: send a command, get its reply."""

    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, stderr: Path, password: str
    ) -> None:
        self.name = name
        self.proc = proc
        self.stderr = stderr
        self.password = password

    @classmethod
    async def start(
        cls, name: str, tmp: Path, url: str, token: str, keyring: str, service: str
    ) -> WalletProcess:
        password = tmp / f"{name}.password"
        password.write_text(f"password of wallet {name} {secrets.token_hex(4)}\n")
        password.chmod(0o600)
        token_file = tmp / f"{name}.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        stderr = tmp / f"{name}.stderr"
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.wallet.wallet_process",
                *("--data", str(tmp / name), "--node", url, "--token-file", str(token_file)),
                *("--keyring", keyring, "--service", service),
                *("--password-file", str(password)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env=env,
                limit=1 << 22,
            )
        return cls(name, proc, stderr, password.read_text().strip())

    async def _read(self, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(REPLY_S):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise AssertionError(f"wallet {self.name}: no reply to {what} in {REPLY_S} s") from None
        if not line:
            code = await self.proc.wait()
            raise AssertionError(f"wallet {self.name} exited ({code}) before replying to {what}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise AssertionError(f"wallet {self.name}, {what}: {reply.get('error')}")
        return reply

    async def ready(self) -> dict[str, Any]:
        return await self._read("start")

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read(cmd)

    async def exit_code(self) -> int:
        async with asyncio.timeout(REPLY_S):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.stderr.read_text("utf-8", "replace").splitlines()
        except OSError as exc:
            return f"(no stderr: {exc})"
        return "\n".join(text[-lines:])


def numbers(subtitle: str) -> tuple[int, int, int, int]:
    """(threshold, total shares, height, counter) from the header's subtitle."""
    m = SUBTITLE.search(subtitle)
    assert m is not None, subtitle
    t, total, height, counter = (int(g.replace(",", "")) for g in m.groups())
    return t, total, height, counter


def effect(pending: dict[str, Any], contains: str) -> tuple[str, str]:
    """(plain text, rich text) of the effect line that contains ``contains``."""
    for text, rich in zip(pending["effects"], pending["effects_html"], strict=True):
        if contains in text:
            return text, rich
    raise AssertionError(f"no effect with {contains!r}: {pending['effects']}")


def keyring_items(service: str, delete: bool = False) -> list[str]:
    """The usernames of the Secret Service's entries under ``service`` (deleted if asked)."""
    import secretstorage

    with contextlib.closing(secretstorage.dbus_init()) as connection:
        collection = secretstorage.get_default_collection(connection)
        items = list(collection.search_items({"service": service}))
        names = [item.get_attributes().get("username", "") for item in items]
        if delete:
            for item in items:
                item.delete()
    return names


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    # round_timeout_ms: a human has a few seconds to click before the round changes
    c = Cluster(
        tmp_path / "cluster",
        servers=2,
        signers=0,
        external_agents=True,
        tick_ms=50,
        round_timeout_ms=5000,
    )
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def both(a: WalletProcess, b: WalletProcess, cmd: str, **args: Any) -> list[dict[str, Any]]:
    return list(await asyncio.gather(a.call(cmd, **args), b.call(cmd, **args)))


async def test_two_wallets_change_the_threshold_together(cluster: Cluster, tmp_path: Path) -> None:
    service_a = f"xln-signer-test-{secrets.token_hex(6)}"
    service_b = f"xln-signer-test-{secrets.token_hex(6)}"
    try:
        choose_backend(tmp_path, prefer="system", service=service_a)
    except BackendError as exc:
        pytest.fail(f"{HOW_TO_GET_ONE}\n({exc})")
    node_a, node_b = cluster.servers
    wallets: list[WalletProcess] = []
    try:
        a = await WalletProcess.start("a", tmp_path, node_a.url, node_a.token, "system", service_a)
        wallets.append(a)
        b = await WalletProcess.start("b", tmp_path, node_b.url, node_b.token, "file", service_b)
        wallets.append(b)
        ready_a, ready_b = await asyncio.gather(a.ready(), b.ready())
        assert ready_a["backend"] == "Secret Service"
        assert ready_a["system"] is True
        assert ready_b["backend"] == "encrypted files"
        assert ready_b["system"] is False
        # A's key is an entry of the Secret Service; B's an encrypted file; never both.
        # Each entry is named for its own wallet (DATA/wallet-id).
        signer_a, signer_b = ready_a["signer"][2:], ready_b["signer"][2:]
        id_a = (tmp_path / "a" / "wallet-id").read_text().strip()
        id_b = (tmp_path / "b" / "wallet-id").read_text().strip()
        assert f"{id_a}.{signer_a}" in keyring_items(service_a)
        assert (tmp_path / "b" / "keys" / service_b / f"{id_b}.{signer_b}.json").is_file()
        assert not (tmp_path / "a" / "keys").exists()
        assert keyring_items(service_b) == []

        # A creates the entity from both signer cards; B's window shows it.
        card_a = (await a.call("card"))["card"]
        card_b = (await b.call("card"))["card"]
        assert SignerCard.decode(card_a).signer_id.hex() == signer_a
        assert SignerCard.decode(card_b).signer_id.hex() == signer_b
        created = await a.call(
            "create_entity", members=[card_a, card_b], shares=[2, 1], threshold=3, proposer=0
        )
        entity = created["entity"]
        for seen in await both(a, b, "wait_entity", entity=entity):
            assert "threshold 3 of 3 shares" in seen["summary"]
            assert "counter 0" in seen["numbers"]

        # Reject: A increments and approves; B refuses, so threshold 3 is out of reach.
        await a.call("increment", entity=entity, n=1)
        asked_a = await a.call("wait_pending", contains="counter +1 (0 -> 1)")
        frame = asked_a["hash"]
        await a.call("approve", frame=frame)
        asked_b = await b.call("wait_pending", frame=frame)
        effect(asked_b, "counter +1 (0 -> 1)")
        rejected = await b.call("reject", frame=frame)
        assert rejected["status"] == "Rejected"
        # The round times out and the same frame is asked again, uncommitted.
        again = await b.call("wait_pending", frame=frame, min_round=asked_b["round"] + 1)
        for shown in await both(a, b, "show"):
            assert numbers(shown["subtitle"])[3] == 0, shown["subtitle"]
        shown_b = await b.call("show")
        assert any("rejected by you" in row for row in shown_b["approvals"]), shown_b["approvals"]
        # B changes its mind at the later round: the frame commits in both windows.
        await b.call("approve", frame=again["hash"])
        for shown in await both(a, b, "wait_show", key="subtitle", contains="counter 1"):
            assert numbers(shown["subtitle"])[3] == 1

        # Withdraw: B refuses A's +7 with a signed refusal that A's window shows; A
        # withdraws its batch, and the next frame holds the withdrawal alone.
        await a.call("increment", entity=entity, n=7)
        asked_a = await a.call("wait_pending", contains="counter +7 (1 -> 8)")
        await a.call("approve", frame=asked_a["hash"])
        asked_b = await b.call("wait_pending", frame=asked_a["hash"])
        await b.call("reject", frame=asked_b["hash"])
        withdrawn = await a.call("withdraw", frame=asked_a["hash"])
        assert withdrawn["status"] == "Withdrawn: nonce 2", withdrawn
        assert "Refused by " in withdrawn["refused"], withdrawn
        assert "rejected by hand" in withdrawn["refused"], withdrawn
        asked_a = await a.call("wait_pending", contains="No effect")
        await a.call("approve", frame=asked_a["hash"])
        asked_b = await b.call("wait_pending", frame=asked_a["hash"])
        await b.call("approve", frame=asked_b["hash"])
        for shown in await both(a, b, "wait_show", key="subtitle", contains="height 2 "):
            _, _, height, counter = numbers(shown["subtitle"])
            assert (height, counter) == (2, 1), shown["subtitle"]

        # A proposes threshold 2 (default expiry); both approve the frame holding it.
        proposed = await a.call("propose_threshold", value=2)
        asked_a = await a.call("wait_pending", contains="set the threshold to 2")
        text, _ = effect(asked_a, "new proposal #")
        assert f"expires at height {proposed['expires_at']}" in text
        found = re.search(r"new proposal #(\d+)", text)
        assert found is not None
        pid = int(found.group(1))
        await a.call("approve", frame=asked_a["hash"])
        asked_b = await b.call("wait_pending", frame=asked_a["hash"])
        effect(asked_b, f"new proposal #{pid}")
        # B reads for two rounds (15 s): the request it reads follows the rounds, and
        # stays one entry of its list; then B approves, at the round of the moment.
        later = await b.call("wait_pending", frame=asked_b["hash"], min_round=asked_b["round"] + 2)
        pending = (await b.call("pending"))["pending"]
        assert [p["hash"] for p in pending] == [asked_b["hash"]], pending
        await b.call("approve", frame=later["hash"])

        # B votes in its Proposals view; the next frame executes the proposal.
        await b.call("wait_show", key="proposals", contains="set the threshold to 2")
        voted = await b.call("vote", proposal=pid)
        assert f"#{pid}" in voted["status"]
        # The proposer's pre-commit goes out with the frame: A first, then B is asked.
        asked_a = await a.call("wait_pending", contains="threshold 3 -> 2")
        await a.call("approve", frame=asked_a["hash"])
        asked_b = await b.call("wait_pending", frame=asked_a["hash"])
        for asked in (asked_a, asked_b):
            text, rich = effect(asked, "threshold 3 -> 2")
            assert f"proposal #{pid} executes" in text
            assert LIGHT.tag_bg in rich, "a governance change is highlighted"
            assert "governance" in asked["row"]
        await b.call("approve", frame=asked_b["hash"])

        # Both windows show the new threshold: header, entity card, closed proposal.
        for shown in await both(a, b, "wait_show", key="subtitle", contains="threshold 2/3"):
            threshold, total, _, counter = numbers(shown["subtitle"])
            assert (threshold, total, counter) == (2, 3, 1)
            (card,) = shown["cards"]
            assert card["entity"] == entity
            assert "threshold 2 of 3 shares" in card["summary"]
            assert "0 open proposals" in card["numbers"]
        for shown in await both(a, b, "wait_show", key="proposals", contains="executed"):
            (row,) = [p for p in shown["proposals"] if p["id"] == pid]
            assert not row["open"]
            assert any("set the threshold to 2" in label for label in row["labels"])

        # Both quit from their windows: exit code 0.
        await both(a, b, "quit")
        assert await a.exit_code() == 0, a.log_tail()
        assert await b.exit_code() == 0, b.log_tail()
        for w, server in ((a, node_a), (b, node_b)):
            log_text = w.stderr.read_text("utf-8", "replace")
            assert w.password not in log_text, "the wallet password never reaches the log"
            assert server.token.split("_", 2)[2] not in log_text, "nor does the node's token"
    except BaseException:
        for w in wallets:
            print(f"----- wallet {w.name} stderr ({w.stderr}) -----\n{w.log_tail()}")
        raise
    finally:
        for w in wallets:
            await w.kill()
        with contextlib.suppress(Exception):
            keyring_items(service_a, delete=True)
