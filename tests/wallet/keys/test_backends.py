"""Keyring backends (wallet.keys.backends): the explicit ranking, the encrypted-file
fallback and its warning, ``prefer``, and that the file backend stores nothing but
EIP-2335 keystores."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import keyring.backend
import pytest
from keyring.errors import KeyringError, PasswordDeleteError

from node.crypto import keystore
from wallet.keys import backends
from wallet.keys.backends import (
    BackendChoice,
    BackendError,
    EncryptedFileKeyring,
    choose_backend,
)

PASSWORD = "wallet password"  # noqa: S105 - test data


def a_keystore_text() -> str:
    return json.dumps(keystore.encrypt_data(b"token", PASSWORD, kdf="pbkdf2", fast=True))


@pytest.mark.usefixtures("no_system_keyring")
def test_file_backend_when_no_system_keyring(data_dir: Path, service: str) -> None:
    choice = choose_backend(data_dir, service=service)
    assert isinstance(choice.keyring, EncryptedFileKeyring)
    assert choice.name == backends.FILE_BACKEND_NAME
    assert choice.system is False
    assert choice.service == service
    assert choice.warning is not None
    assert str(data_dir / "keys") in choice.warning
    assert "encrypted files" in choice.warning
    assert "not in the system keyring" in choice.warning
    # Why each system keyring was passed over, in rank order, for the log.
    assert [reason.split(":")[0] for reason in choice.tried] == [
        "Secret Service",
        "macOS Keychain",
        "Windows Credential Locker",
    ]


@pytest.mark.usefixtures("no_system_keyring")
def test_prefer_system_fails_clearly_without_one(data_dir: Path, service: str) -> None:
    with pytest.raises(BackendError, match="no system keyring works here: Secret Service"):
        choose_backend(data_dir, prefer="system", service=service)


def test_prefer_file_forces_the_file_backend(
    data_dir: Path, service: str, secret_service: BackendChoice
) -> None:
    """Even where the Secret Service works (it does here: see secret_service)."""
    choice = choose_backend(data_dir, prefer="file", service=service)
    assert isinstance(choice.keyring, EncryptedFileKeyring)
    assert choice.system is False
    assert choice.warning is not None
    assert choice.keyring.folder == data_dir / "keys"


def test_prefer_must_be_known(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="prefer"):
        choose_backend(data_dir, prefer="plaintext")


def test_keyrings_automatic_choice_never_picks_the_file_backend() -> None:
    assert EncryptedFileKeyring.viable is False
    viable = set(keyring.backend.KeyringBackend.get_viable_backends())
    assert EncryptedFileKeyring not in viable


def test_only_explicit_backends_are_ranked() -> None:
    names = [name for name, _ in backends.SYSTEM_BACKENDS]
    assert names == ["Secret Service", "macOS Keychain", "Windows Credential Locker"]
    for _, load in backends.SYSTEM_BACKENDS:
        try:
            cls = load()
        except ImportError:
            continue  # only imports on its own platform
        assert cls.__module__.startswith("keyring.backends.")
        assert "fail" not in cls.__module__
        assert "null" not in cls.__module__


@pytest.mark.parametrize(
    "value",
    [
        "plaintext secret",
        "",
        "[]",
        "{}",
        '{"version": 4}',
        "123",
        json.dumps({"crypto": "x"}),
    ],
)
def test_file_backend_refuses_what_is_no_keystore(tmp_path: Path, value: str) -> None:
    backend = EncryptedFileKeyring(tmp_path / "keys")
    with pytest.raises(ValueError, match="only"):
        backend.set_password("xln-signer", "entry", value)
    assert not (tmp_path / "keys" / "xln-signer" / "entry.json").exists()
    assert backend.get_password("xln-signer", "entry") is None


def test_file_backend_refuses_a_tampered_keystore(tmp_path: Path) -> None:
    ks = json.loads(a_keystore_text())
    ks["crypto"]["cipher"]["function"] = "none"
    backend = EncryptedFileKeyring(tmp_path / "keys")
    with pytest.raises(ValueError, match="only"):
        backend.set_password("xln-signer", "entry", json.dumps(ks))


def test_file_backend_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    backend = EncryptedFileKeyring(folder)
    text = a_keystore_text()
    backend.set_password("xln-signer", "entry", text)
    assert json.loads(backend.get_password("xln-signer", "entry") or "") == json.loads(text)
    assert backend.get_password("xln-signer", "other") is None
    assert backend.get_password("other-service", "entry") is None
    path = folder / "xln-signer" / "entry.json"
    assert keystore.decrypt_data(json.loads(path.read_text()), PASSWORD) == b"token"
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    backend.delete_password("xln-signer", "entry")
    assert backend.get_password("xln-signer", "entry") is None
    with pytest.raises(PasswordDeleteError):
        backend.delete_password("xln-signer", "entry")
    assert [p.name for p in path.parent.iterdir()] == []  # no temporary file left


def test_file_backend_overwrites_atomically(tmp_path: Path) -> None:
    backend = EncryptedFileKeyring(tmp_path)
    first, second = a_keystore_text(), a_keystore_text()
    backend.set_password("s", "u", first)
    backend.set_password("s", "u", second)
    assert json.loads(backend.get_password("s", "u") or "") == json.loads(second)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["u.json"]


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x" * 129, "a b"])
def test_file_backend_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    backend = EncryptedFileKeyring(tmp_path / "keys")
    with pytest.raises(ValueError, match=r"username|service"):
        backend.set_password("xln-signer", name, a_keystore_text())
    with pytest.raises(ValueError, match="service"):
        backend.get_password(name, "entry")
    assert not (tmp_path / "keys").exists()


def test_file_backend_reports_a_damaged_file(tmp_path: Path) -> None:
    backend = EncryptedFileKeyring(tmp_path)
    backend.set_password("s", "u", a_keystore_text())
    (tmp_path / "s" / "u.json").write_text("plaintext")
    with pytest.raises(KeyringError, match="not a keystore"):
        backend.get_password("s", "u")
