"""WalletService on a real embedded node, and the settings file."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from node.entity_reads import EntityHeader
from node.machines import entity as ent
from node.machines.governance import SetThreshold
from node.machines.replica import SubmitBatch
from node.txs import Tx
from tests.wallet.conftest import PASSWORD, Duo, Kit
from wallet import contacts
from wallet import settings as settings_io
from wallet.logsink import redact
from wallet.model import NewMember, WalletModel
from wallet.service import WalletError, WalletService, frame_summary
from wallet.settings import Settings, SettingsError

# Settings ------------------------------------------------------------------------------


def test_settings_round_trip(tmp_path: Path) -> None:
    assert settings_io.load(tmp_path) == Settings()
    saved = Settings(
        node_mode="remote",
        node_url="ws://127.0.0.1:8765",
        peers=["ws://10.0.0.2:8765"],
        theme="dark",
        accountant_on=True,
        rules_path="/etc/rules.toml",
        lock_timeout_min=5,
        tick_ms=50,
        listen_port=7001,
    )
    settings_io.save(tmp_path, saved)
    assert settings_io.load(tmp_path) == saved
    assert (tmp_path / "settings.json").stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"theme": "pink"}', "theme"),
        ('{"tick_ms": "fast"}', "tick_ms"),
        ('{"tick_ms": true}', "tick_ms"),
        ('{"node_mode": "remote"}', "node_url"),
        ('{"peers": ["http://x"]}', "peer"),
        ('{"listen_port": 65536}', "listen_port"),
        ('{"accountant_on": 1}', "accountant_on"),
    ],
)
def test_bad_settings_give_a_clear_error_and_defaults(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(SettingsError, match=message):
        settings_io.load(tmp_path)
    settings, error = settings_io.load_or_default(tmp_path)
    assert settings == Settings()
    assert error is not None
    assert message in error
    assert (tmp_path / "settings.json").read_text() == text, "the bad file is left alone"


def test_saving_bad_settings_changes_nothing(tmp_path: Path) -> None:
    settings_io.save(tmp_path, Settings(theme="light"))
    with pytest.raises(SettingsError):
        settings_io.save(tmp_path, Settings(theme="neon"))
    assert json.loads((tmp_path / "settings.json").read_text())["theme"] == "light"


# The service ------------------------------------------------------------------------------


async def test_batches_in_flight_take_consecutive_nonces(duo: Duo) -> None:
    await asyncio.gather(
        duo.service.increment(duo.alice, duo.entity, 1),
        duo.service.increment(duo.alice, duo.entity, 2),
        duo.service.increment(duo.alice, duo.entity, 4),
    )
    await duo.waiter.until(lambda: duo.counter() == 7)
    entry = duo.model.entities[(duo.alice, duo.entity)]
    assert entry.state.nonce_of(duo.alice) == 3
    assert set(entry.last_cert_signers) == {duo.alice, duo.bob}


async def test_a_batch_whose_nonce_was_taken_meanwhile_is_signed_again(duo: Duo) -> None:
    """Another holder of alice's key (a second wallet on her keys) takes her next nonce
    between this wallet's read of it and its submit: the node refuses the batch as
    "already used", which applied nothing, and the wallet signs it again with the next
    nonce. The race's timing cannot be made on purpose, so the wallet's next header read
    is answered with the one read before the other batch committed (the real read
    after it)."""
    start = duo.counter()
    stale = await duo.service.session.read_header(duo.alice, duo.entity)
    assert stale is not None
    sk = duo.service.vault.secret_key(duo.alice)
    nonce = stale.small.nonce_of(duo.alice) + 1
    other = ent.sign_batch(duo.entity, sk, duo.alice, nonce, [Tx.of(ent.Increment(1))])
    receipts = await duo.client.submit([SubmitBatch(other)], [duo.alice, duo.entity])
    assert receipts.receipts[0].error is None
    await duo.waiter.until(lambda: duo.counter() == start + 1)
    real = duo.service.session.read_header
    reads: list[int] = []

    async def stale_once(signer: bytes, entity: bytes) -> EntityHeader | None:
        reads.append(1)
        return stale if len(reads) == 1 else await real(signer, entity)

    duo.service.session.read_header = stale_once  # type: ignore[method-assign]
    await duo.service.increment(duo.alice, duo.entity, 2)
    await duo.waiter.until(lambda: duo.counter() == start + 3)
    assert len(reads) == 2
    entry = duo.model.entities[(duo.alice, duo.entity)]
    assert entry.state.nonce_of(duo.alice) == nonce + 1


async def test_lock_state_follows_the_vault_and_locked_actions_fail(duo: Duo) -> None:
    locks: list[bool] = []
    duo.model.lock_changed.connect(lambda: locks.append(duo.model.locked))
    duo.service.lock()
    assert locks == [True]
    with pytest.raises(WalletError, match="locked"):
        await duo.service.increment(duo.alice, duo.entity, 1)
    await duo.service.unlock(PASSWORD)
    assert duo.service.unlocked.is_set()
    assert locks == [True, False]


async def test_bad_entity_and_bad_increment(duo: Duo) -> None:
    key = duo.kit.key
    with pytest.raises(WalletError, match="valid entity"):
        await duo.service.create_entity(key.signer_id, [NewMember(key.pubkey, key.pop, 1)], 5, 0)
    with pytest.raises(WalletError, match="proposer"):
        await duo.service.create_entity(key.signer_id, [NewMember(key.pubkey, key.pop, 1)], 1, 3)
    with pytest.raises(WalletError, match=r"increment must be 1 \.\. "):
        await duo.service.increment(duo.alice, duo.entity, 0)
    # Checked against the entity as the wallet sees it, before anything is signed:
    # a threshold above the total shares (2), a vote on no proposal.
    with pytest.raises(WalletError, match="action: "):
        await duo.service.propose(duo.alice, duo.entity, SetThreshold(5), expires_at=100)
    with pytest.raises(WalletError, match="no open proposal 7"):
        await duo.service.vote(duo.alice, duo.entity, 7)
    assert duo.service._in_flight == {}, "nothing was signed or submitted"


async def test_a_second_entity_is_watched(duo: Duo) -> None:
    key = duo.kit.key
    solo = await duo.service.create_entity(key.signer_id, [NewMember(key.pubkey, key.pop, 1)], 1, 0)
    await duo.waiter.until(lambda: (duo.alice, solo) in duo.model.entities)
    await duo.service.increment(duo.alice, solo, 9)
    await duo.waiter.until(lambda: duo.model.entities[(duo.alice, solo)].state.counter == 9)


def test_logs_never_carry_tokens() -> None:
    token = "xln_0a1b2c3d_Zm9vYmFyYmF6cXV4LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # noqa: S105 (made up)
    assert redact(f"connecting with {token}") == "connecting with xln_0a1b2c3d_***"


async def test_log_lines_reach_the_model_masked(duo: Duo) -> None:
    logging.getLogger("wallet.test").warning("token xln_deadbeef_c2VjcmV0c2VjcmV0c2VjcmV0")
    line = next(line for line in duo.model.logs if line.source == "wallet.test")
    assert line.level == "WARNING"
    assert "c2VjcmV0" not in line.message
    assert "xln_deadbeef_***" in line.message


def test_idle_lock_follows_the_injected_clock(kit: Kit) -> None:
    now = [0.0]
    model = WalletModel()
    service = WalletService(
        kit.data, model, kit.vault, Settings(lock_timeout_min=1), clock=lambda: now[0]
    )

    def locked() -> bool:
        return kit.vault.locked

    kit.vault.unlock(PASSWORD)
    service.touch()
    now[0] = 59.0
    assert not service.check_idle()
    assert not locked()
    service.touch()
    now[0] = 59.0 + 60
    assert service.check_idle()
    assert locked()
    assert model.locked
    service.settings.lock_timeout_min = 0  # never
    kit.vault.unlock(PASSWORD)
    now[0] += 10_000
    assert not service.check_idle()


def test_a_frame_not_checked_here_says_how_many_batches() -> None:
    assert frame_summary(None, 1) == "1 batch"
    assert frame_summary(None, 3) == "3 batches"


async def test_co_signer_names_are_kept_and_forgotten(duo: Duo) -> None:
    await duo.service.name_signer(duo.bob, "Bob (ops)")
    assert duo.model.contacts == {duo.bob: "Bob (ops)"}
    assert contacts.load(duo.kit.data) == {duo.bob: "Bob (ops)"}
    with pytest.raises(WalletError, match="at most 40"):
        await duo.service.name_signer(duo.bob, "x" * 41)
    assert duo.model.contacts == {duo.bob: "Bob (ops)"}
    await duo.service.name_signer(duo.bob, " ")
    assert duo.model.contacts == {}
    assert contacts.load(duo.kit.data) == {}
