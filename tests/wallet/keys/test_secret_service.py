"""The vault on a real Secret Service (GNOME Keyring on the private D-Bus session that
scripts/test.sh starts). These tests FAIL, never skip, when no Secret Service is
reachable: the keyring is what guards the keys, so it must be tested for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from keyring.backends import SecretService

from node.crypto import keystore
from tests.wallet.keys.conftest import HOW_TO_GET_ONE
from wallet.keys import mnemonic
from wallet.keys.backends import BackendChoice, BackendError, choose_backend
from wallet.keys.vault import Vault

PASSWORD = "correct horse battery staple"  # noqa: S105 - test data


def test_a_secret_service_is_reachable(data_dir: Path, service: str) -> None:
    try:
        choice = choose_backend(data_dir, prefer="system", service=service)
    except BackendError as exc:
        pytest.fail(f"{HOW_TO_GET_ONE}\n({exc})")
    assert choice.name == "Secret Service"


def test_choose_backend_picks_the_secret_service(
    data_dir: Path, service: str, secret_service: BackendChoice
) -> None:
    choice = choose_backend(data_dir, service=service)
    assert isinstance(choice.keyring, SecretService.Keyring)
    assert choice.name == "Secret Service"
    assert choice.system is True
    assert choice.warning is None
    assert choice.tried == ()
    assert not (data_dir / "keys").exists()  # the file backend was not touched


def test_vault_round_trip_through_the_secret_service(
    data_dir: Path, secret_service: BackendChoice
) -> None:
    words = mnemonic.generate()
    vault = Vault(data_dir, secret_service, fast_kdf=True)
    info = vault.add_mnemonic(words, PASSWORD, "main")
    vault.put_secret("node-token", b"token", PASSWORD)

    text = secret_service.keyring.get_password(secret_service.service, info.signer_id.hex())
    assert text is not None
    keystore.validate(json.loads(text))  # even inside the keyring, an EIP-2335 keystore

    again = Vault(data_dir, secret_service, fast_kdf=True)
    assert again.keys() == [info]
    assert again.has_password()
    again.unlock(PASSWORD)
    assert again.secret_key(info.signer_id) == mnemonic.signer_key(words)[0]
    assert again.get_secret("node-token", PASSWORD) == b"token"
    again.lock()
    assert again.locked

    sk = mnemonic.signer_key(words)[0].to_bytes(32, "big")
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert sk not in content
            assert sk.hex().encode() not in content
            assert words.encode() not in content
    assert not (data_dir / "keys").exists()
