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
from wallet.keys.vault import Vault, WrongPassword

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

    name = f"{vault.wallet_id}.{info.signer_id.hex()}"
    text = secret_service.keyring.get_password(secret_service.service, name)
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


def wallet_id_of(vault: Vault) -> str | None:
    return vault.wallet_id  # read anew: unlock may change it


def test_two_wallets_live_side_by_side_in_one_keyring(
    tmp_path: Path, secret_service: BackendChoice
) -> None:
    """A second wallet (or a restore of the same phrase into a new folder, with a new
    password) on the same system keyring: each reads and unlocks its own entries.
    Before wallet ids, the second one's Finish failed with "Wrong password"."""
    words = mnemonic.generate()
    first = Vault(tmp_path / "first", secret_service, fast_kdf=True)
    info = first.add_mnemonic(words, PASSWORD, "main")
    first.put_secret("node-token", b"first token", PASSWORD)
    second = Vault(tmp_path / "second", secret_service, fast_kdf=True)
    assert not second.has_password()
    again = second.add_mnemonic(words, "another password", "restored")
    second.put_secret("node-token", b"second token", "another password")
    assert again.signer_id == info.signer_id
    assert first.wallet_id != second.wallet_id

    for vault, password, token in (
        (Vault(tmp_path / "first", secret_service, fast_kdf=True), PASSWORD, b"first token"),
        (
            Vault(tmp_path / "second", secret_service, fast_kdf=True),
            "another password",
            b"second token",
        ),
    ):
        vault.unlock(password)
        assert vault.secret_key(info.signer_id) == mnemonic.signer_key(words)[0]
        assert vault.get_secret("node-token", password) == token
        vault.lock()


def test_a_wallet_from_before_wallet_ids_migrates_at_its_first_unlock(
    data_dir: Path, secret_service: BackendChoice
) -> None:
    """A folder whose entries have bare names (no ``wallet-id``) still unlocks; its
    first unlock copies them under a new wallet id, then saves the id."""
    words = mnemonic.generate()
    made = Vault(data_dir, secret_service, fast_kdf=True)
    info = made.add_mnemonic(words, PASSWORD, "main")
    made.put_secret("node-token", b"token", PASSWORD)
    # Make it a folder of before: the same entries under their bare names, no id.
    keyring, service = secret_service.keyring, secret_service.service
    for name in ("wallet-password-check", info.signer_id.hex(), "secret-node-token"):
        text = keyring.get_password(service, f"{made.wallet_id}.{name}")
        assert text is not None
        keyring.set_password(service, name, text)
        keyring.delete_password(service, f"{made.wallet_id}.{name}")
    (data_dir / "wallet-id").unlink()

    old = Vault(data_dir, secret_service, fast_kdf=True)
    assert wallet_id_of(old) is None
    assert old.has_password()
    with pytest.raises(WrongPassword):
        old.unlock("wrong")
    assert not (data_dir / "wallet-id").exists()  # a wrong password migrates nothing
    old.unlock(PASSWORD)
    new_id = wallet_id_of(old)
    assert new_id is not None
    assert (data_dir / "wallet-id").read_text().strip() == new_id
    assert old.secret_key(info.signer_id) == mnemonic.signer_key(words)[0]
    assert old.get_secret("node-token", PASSWORD) == b"token"
    for name in ("wallet-password-check", info.signer_id.hex(), "secret-node-token"):
        assert keyring.get_password(service, f"{new_id}.{name}") is not None

    later = Vault(data_dir, secret_service, fast_kdf=True)
    assert later.wallet_id == new_id
    later.unlock(PASSWORD)
    assert later.get_secret("node-token", PASSWORD) == b"token"
