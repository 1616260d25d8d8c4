"""Encrypted backups of the data folder (wallet/backup.py, wallet/flows/backup.py):
the file format and its encryption, what goes in, a restore from one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.crypto.keystore import WrongPassword
from wallet import backup
from wallet.backup import BackupError, Header, NodeOnlyEntity, Payload, SignedAt

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
