"""Encrypted backups of the data folder (wallet/backup.py, wallet/flows/backup.py):
the file format and its encryption, what goes in, a restore from one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from node.crypto import bls, keystore
from node.crypto.keystore import WrongPassword
from tests.wallet.conftest import PASSWORD as WALLET_PASSWORD
from tests.wallet.conftest import Kit, Running, running_service
from wallet import backup, contacts
from wallet.backup import BackupError, Header, NodeOnlyEntity, Payload, SignedAt
from wallet.flows import backup as backup_flow
from wallet.flows import key_actions
from wallet.flows import restore as restore_flow
from wallet.keys.backends import choose_backend
from wallet.keys.vault import Vault
from wallet.model import NewMember
from wallet.service import WalletError
from wallet.settings import Settings

PASSWORD = "backup test password"  # noqa: S105 (a throwaway test wallet)
SIGNER = b"\x5a" * 32
ENTITY = b"\xe1" * 32


def sample_payload() -> Payload:
    return Payload(
        files={"settings.json": '{"theme": "dark"}\n', "contacts.json": "{}"},
        signing_record={SIGNER: {ENTITY: SignedAt(41, 2, b"\x0f" * 32)}},
        entities=[NodeOnlyEntity(ENTITY, b"\xc1genesis", (SIGNER,), ((b"frame1", b"cert1"),))],
    )


def sealed(password: str = PASSWORD, wallet_id: str = "0123456789abcdef") -> bytes:
    data_key, key = backup.new_data_key(password, fast=True)
    header = Header(1_765_000_000, wallet_id, (SIGNER,), {ENTITY: 40}, key)
    return backup.seal(header, sample_payload(), data_key)


def test_round_trip() -> None:
    raw = sealed()
    header = backup.read_header(raw)  # in clear: no password
    assert header.wallet_id == "0123456789abcdef"
    assert header.signers == (SIGNER,)
    assert header.heights == {ENTITY: 40}
    assert header.created == 1_765_000_000
    opened = backup.open_backup(raw, PASSWORD)
    assert opened.header == header
    assert opened.payload == sample_payload()
    # Nothing of the payload is in clear.
    assert b"dark" not in raw
    assert b"frame1".hex().encode() not in raw
    assert backup.file_name(1_765_000_000) == "xln-backup-2025-12-06-054640.json"


def test_wrong_password_is_refused() -> None:
    with pytest.raises(WrongPassword):
        backup.open_backup(sealed(), "not the password")


@pytest.mark.parametrize("keep", [0, 10, 200, -40, -2])
def test_a_truncated_file_is_refused(keep: int) -> None:
    raw = sealed()
    with pytest.raises(BackupError, match=r"truncated|not an xln-signer backup|damaged"):
        backup.open_backup(raw[:keep], PASSWORD)


def test_an_altered_payload_or_header_is_refused() -> None:
    doc = json.loads(sealed())
    payload = bytearray(doc["payload"].encode())
    payload[20] = ord("A") if payload[20] != ord("A") else ord("B")
    with pytest.raises(BackupError, match="does not authenticate"):
        backup.open_backup(json.dumps({**doc, "payload": payload.decode()}).encode(), PASSWORD)
    doc["header"]["heights"] = {ENTITY.hex(): 99}  # a header changed after the fact
    with pytest.raises(BackupError, match="does not authenticate"):
        backup.open_backup(json.dumps(doc).encode(), PASSWORD)


def test_another_wallets_file_is_refused() -> None:
    mine, theirs = json.loads(sealed()), json.loads(sealed("their password", "fedcba9876543210"))
    with pytest.raises(WrongPassword):
        backup.open_backup(json.dumps(theirs).encode(), PASSWORD)
    # Their payload under my header's key (or the reverse): the data key does not open it.
    spliced = {**theirs, "header": {**theirs["header"], "key": mine["header"]["key"]}}
    with pytest.raises(BackupError, match="does not authenticate"):
        backup.open_backup(json.dumps(spliced).encode(), PASSWORD)


def test_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not an xln-signer backup"):
        backup.read_header(b'{"crypto": {}}')
    with pytest.raises(BackupError, match="not a backup"):
        backup.read_header(b"\x89PNG")
    doc = json.loads(sealed())
    doc["header"]["version"] = 2
    with pytest.raises(BackupError, match="version 2"):
        backup.read_header(json.dumps(doc).encode())
    path = tmp_path / "b.json"
    backup.save(path, sealed())
    assert path.stat().st_mode & 0o777 == 0o600
    assert backup.read_header(backup.load(path)).signers == (SIGNER,)


# -- a wallet on its embedded node: what goes in, and a restore ---------------------------


async def one_of_one(run: Running, kit: Kit, increments: int) -> bytes:
    """A 1-of-1 entity of the wallet's key (held only on the embedded node), counted up."""
    key = kit.key
    entity = await run.service.create_entity(
        key.signer_id, [NewMember(key.pubkey, key.pop, 1)], threshold=1, proposer_index=0
    )
    await count_to(run, key.signer_id, entity, increments)
    return entity


async def count_to(run: Running, signer: bytes, entity: bytes, target: int) -> None:
    def counter() -> int:
        entry = run.model.entities.get((signer, entity))
        return -1 if entry is None else entry.state.counter

    await run.waiter.until(lambda: counter() >= 0)
    while counter() < target:
        before = counter()
        await run.service.increment(signer, entity, 1)
        await run.waiter.until(lambda: counter() > before)  # noqa: B023 - awaited here
    assert counter() == target


def new_kit(tmp_path: Path, name: str, sk: int) -> Kit:
    """A new data folder whose vault holds the same key (back from its phrase)."""
    data = tmp_path / name
    data.mkdir(mode=0o700)
    vault = Vault(data, choose_backend(data, prefer="file"), fast_kdf=True)
    stored = keystore.encrypt(sk.to_bytes(32, "big"), "import", pubkey=bls.sk_to_pk(sk), fast=True)
    key = vault.add_keystore(stored, "import", WALLET_PASSWORD, "alice")
    vault.unlock(WALLET_PASSWORD)
    return Kit(data, vault, key)


async def test_a_node_only_entity_is_backed_up_and_restored_into_a_new_folder(
    kit: Kit, tmp_path: Path
) -> None:
    signer = kit.key.signer_id
    target = tmp_path / "backups" / "first.json"
    async with running_service(kit) as run:
        entity = await one_of_one(run, kit, 3)
        await run.service.name_signer(signer, "me")
        with pytest.raises(WalletError, match="needs the wallet password"):
            await run.service.back_up(target)
        assert await run.service.back_up(target, WALLET_PASSWORD) == target
        header = await run.service.session.read_header(signer, entity)
        assert header is not None
        height = header.height
        record = await run.service.agents[signer].signing_record()
        sk = kit.vault.secret_key(signer)
    raw = backup.load(target)
    clear = backup.read_header(raw)
    assert clear.signers == (signer,)
    assert clear.heights == {entity: height}
    assert clear.wallet_id == kit.vault.wallet_id
    opened = backup.open_backup(raw, WALLET_PASSWORD)
    assert opened.payload.signing_record == {signer: record}
    assert record[entity].height == height  # a 1-of-1 signed every frame
    (only,) = opened.payload.entities
    assert (only.entity_id, only.members, len(only.frames)) == (entity, (signer,), height)
    # (settings.json is first written by the backup itself: these settings came in code)
    assert set(opened.payload.files) == {"contacts.json", "entity-configs.json"}

    # The folder is lost: the key comes back from its phrase into a new one.
    fresh = new_kit(tmp_path, "restored", sk)
    opened, report = await asyncio.to_thread(
        backup_flow.restore_offline, fresh.data, fresh.vault, raw, WALLET_PASSWORD
    )
    assert report.signers == [signer]
    assert report.missing == []
    assert report.floors == {signer: {entity: height}}
    assert contacts.load(fresh.data) == {signer: "me"}
    assert restore_flow.load(fresh.data).pending == [signer]
    async with running_service(fresh, restored_backup=opened) as run:
        agent = run.service.agents[signer]
        await run.waiter.until(lambda: (signer, entity) in run.model.entities)
        assert run.model.entities[(signer, entity)].state.counter == 3  # replayed
        for h in range(1, height + 1):  # its history: every certified frame is back
            assert await run.service.session.frame(entity, h) is not None
        assert await agent.floor_of(entity) == height
        await run.waiter.until(lambda: not run.service.restore.pending)  # the find ran
        await count_to(run, signer, entity, 4)  # signs above the floor
        assert (await agent.signing_record())[entity].height == height + 1


async def test_a_restore_refuses_a_wrong_password_and_another_wallets_backup(
    kit: Kit, tmp_path: Path
) -> None:
    target = tmp_path / "b.json"
    async with running_service(kit) as run:
        await run.service.back_up(target, WALLET_PASSWORD)
    raw = backup.load(target)
    other = new_kit(tmp_path, "other", bls.keygen(b"\x01" * 32))
    with pytest.raises(BackupError, match="of another wallet"):
        await asyncio.to_thread(
            backup_flow.restore_offline, other.data, other.vault, raw, WALLET_PASSWORD
        )
    with pytest.raises(WrongPassword):
        await asyncio.to_thread(
            backup_flow.restore_offline, other.data, other.vault, raw, "not the password"
        )
    with pytest.raises(BackupError, match=r"truncated|damaged"):
        await asyncio.to_thread(
            backup_flow.restore_offline, other.data, other.vault, raw[:-50], WALLET_PASSWORD
        )
    # Nothing written: no file of the backup's, no guard.
    assert sorted(p.name for p in other.data.iterdir()) == ["keys", "keys.json", "wallet-id"]


async def test_an_old_backup_is_reported_and_the_schedule_backs_up_when_due(
    kit: Kit, tmp_path: Path
) -> None:
    signer = kit.key.signer_id
    now = [1_765_000_000.0]
    settings = Settings(tick_ms=20, accountant_on=True, backup_folder=str(tmp_path / "auto"))
    async with running_service(kit, settings=settings, wall_clock=lambda: now[0]) as run:
        service = run.service
        entity = await one_of_one(run, kit, 1)
        assert await service.backup_if_due() is None  # off
        service.settings.backup_schedule = "daily"
        assert await service.backup_if_due() is None  # no first backup made the key yet
        first = await service.back_up(password=WALLET_PASSWORD)
        assert first == tmp_path / "auto" / "xln-backup-2025-12-06-054640.json"
        assert service.settings.last_backup == int(now[0])
        now[0] += 86_400 - 1
        assert await service.backup_if_due() is None  # not due yet
        await count_to(run, signer, entity, 3)
        now[0] += 1
        service.lock()
        assert await service.backup_if_due() is None  # none while locked
        await service.unlock(WALLET_PASSWORD)
        second = await service.backup_if_due()  # due: made without asking the password
        assert second == tmp_path / "auto" / "xln-backup-2025-12-07-054640.json"
        assert backup.read_header(backup.load(second)).heights[entity] == (
            backup.read_header(backup.load(first)).heights[entity] + 2
        )
        # The old backup, restored into the live wallet: the entity moved on since.
        report = await service.restore_backup(backup.load(first), WALLET_PASSWORD)
        assert report.signers == [signer]
        assert (report.files, report.kept) == ([], ["entity-configs.json"])  # this folder's own
        assert report.replayed == []  # the node holds it already
        (line,) = report.notes
        assert "1 day older than entity" in line
        assert "2 frames since" in line
        await count_to(run, signer, entity, 4)  # the old record holds nothing back


async def test_after_a_change_of_password_backups_open_with_the_new_one(
    kit: Kit, tmp_path: Path
) -> None:
    new = "the new wallet password"
    async with running_service(kit) as run:
        first = await run.service.back_up(tmp_path / "1.json", WALLET_PASSWORD)
        await key_actions.change_password(kit.vault, WALLET_PASSWORD, new, new)
        second = await run.service.back_up(tmp_path / "2.json")  # the key held: no password
    assert backup.open_backup(backup.load(first), WALLET_PASSWORD).header.signers
    with pytest.raises(WrongPassword):
        backup.open_backup(backup.load(second), WALLET_PASSWORD)
    assert backup.open_backup(backup.load(second), new).header.signers == (kit.key.signer_id,)
