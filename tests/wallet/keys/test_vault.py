"""The vault (wallet.keys.vault) on the encrypted-file backend: adding keys from a
mnemonic or a keystore, the public index, lock and unlock, the one wallet password,
other secrets, and that no secret reaches the data folder unencrypted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.crypto import bls, keystore
from node.machines.governance import signer_id
from wallet.keys import mnemonic
from wallet.keys.backends import BackendChoice
from wallet.keys.mnemonic import MnemonicError
from wallet.keys.vault import KeyInfo, Locked, Vault, VaultError, WrongPassword

PASSWORD = "correct horse battery staple"  # noqa: S105 - test data
WORDS = " ".join(["abandon"] * 23 + ["art"])


def is_locked(vault: Vault) -> bool:
    """``vault.locked``, read afresh (mypy would keep a property narrowed across calls)."""
    return vault.locked


@pytest.fixture
def vault(data_dir: Path, file_choice: BackendChoice) -> Vault:
    return Vault(data_dir, file_choice, fast_kdf=True)


def test_a_new_vault_is_empty_and_locked(vault: Vault) -> None:
    assert vault.keys() == []
    assert is_locked(vault)
    assert not vault.has_password()
    with pytest.raises(VaultError, match="no wallet password"):
        vault.unlock(PASSWORD)


def test_add_lock_unlock_round_trip(data_dir: Path, vault: Vault) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "main key")
    sk, path = mnemonic.signer_key(WORDS, 0)
    assert info == KeyInfo(
        signer_id(bls.sk_to_pk(sk)), bls.sk_to_pk(sk), info.pop, "main key", path
    )
    assert path == "m/12381/3600/0/0/0"
    assert bls.pop_verify(info.pubkey, info.pop)
    assert vault.has_password()
    assert vault.keys() == [info]
    assert is_locked(vault)
    with pytest.raises(Locked):
        vault.secret_key(info.signer_id)

    vault.unlock(PASSWORD)
    assert not is_locked(vault)
    assert vault.secret_key(info.signer_id) == sk
    with pytest.raises(VaultError, match="no key"):
        vault.secret_key(bytes(32))
    vault.lock()
    assert is_locked(vault)
    with pytest.raises(Locked):
        vault.secret_key(info.signer_id)

    # Another vault on the same folder and backend sees the same keys.
    again = Vault(data_dir, vault.backend, fast_kdf=True)
    assert again.keys() == [info]
    again.unlock(PASSWORD)
    assert again.secret_key(info.signer_id) == sk


def test_the_key_is_an_eip_2335_keystore_under_its_signer_id(vault: Vault) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "k", index=3)
    wallet_id = (vault.data_dir / "wallet-id").read_text().strip()
    assert wallet_id == vault.wallet_id
    assert len(wallet_id) == 16
    name = f"{wallet_id}.{info.signer_id.hex()}"  # the entry is this wallet's own
    text = vault.backend.keyring.get_password(vault.backend.service, name)
    assert text is not None
    entry = json.loads(text)
    keystore.validate(entry)
    assert entry["pubkey"] == info.pubkey.hex()
    assert entry["path"] == "m/12381/3600/3/0/0" == info.path
    assert entry["crypto"]["kdf"]["function"] == "scrypt"
    assert keystore.decrypt(entry, PASSWORD) == mnemonic.signer_key(WORDS, 3)[0].to_bytes(32, "big")


def test_wrong_password_refuses_and_changes_nothing(vault: Vault) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "k")
    calls: list[bool] = []
    vault.on_change.append(lambda: calls.append(vault.locked))
    with pytest.raises(WrongPassword):
        vault.unlock("wrong")
    assert is_locked(vault)
    assert calls == []
    vault.unlock(PASSWORD)
    with pytest.raises(WrongPassword):
        vault.unlock("wrong")
    assert not is_locked(vault)  # still unlocked, with the same key
    assert vault.secret_key(info.signer_id) == mnemonic.signer_key(WORDS)[0]
    # A key added under another password is refused, and nothing is written.
    before = vault.keys()
    with pytest.raises(WrongPassword):
        vault.add_mnemonic(WORDS, "wrong", "second", index=1)
    assert vault.keys() == before
    assert calls == [False]


def test_on_change_fires_on_each_lock_change(vault: Vault) -> None:
    vault.add_mnemonic(WORDS, PASSWORD, "k")
    seen: list[bool] = []
    vault.on_change.append(lambda: seen.append(vault.locked))
    vault.lock()  # already locked: no change
    vault.unlock(PASSWORD)
    vault.unlock(PASSWORD)  # already unlocked: no change
    vault.lock()
    assert seen == [False, True]


def test_duplicates_are_refused(vault: Vault) -> None:
    vault.add_mnemonic(WORDS, PASSWORD, "first")
    with pytest.raises(VaultError, match="already in the wallet, as 'first'"):
        vault.add_mnemonic("  " + WORDS.upper() + " ", PASSWORD, "again")
    second = vault.add_mnemonic(WORDS, PASSWORD, "second", index=1)
    infos = vault.keys()
    assert [k.label for k in infos] == ["first", "second"]
    assert second.path == "m/12381/3600/1/0/0"


def test_bad_input_changes_nothing(data_dir: Path, vault: Vault) -> None:
    words = WORDS.split()
    words[0] = "ability"
    with pytest.raises(MnemonicError):
        vault.add_mnemonic(" ".join(words), PASSWORD, "k")
    for label in ("", "   ", "x" * 65, "tab\there"):
        with pytest.raises(VaultError, match="label"):
            vault.add_mnemonic(WORDS, PASSWORD, label)
    with pytest.raises(VaultError, match="empty"):
        vault.add_mnemonic(WORDS, "", "k")
    assert vault.keys() == []
    assert not vault.has_password()
    assert not (data_dir / "keys.json").exists()


def test_keys_added_while_unlocked_are_usable_at_once(vault: Vault) -> None:
    vault.add_mnemonic(WORDS, PASSWORD, "first")
    vault.unlock(PASSWORD)
    second = vault.add_mnemonic(WORDS, PASSWORD, "second", index=1)
    assert vault.secret_key(second.signer_id) == mnemonic.signer_key(WORDS, 1)[0]


def test_add_keystore_reencrypts_under_the_wallet_password(vault: Vault) -> None:
    sk = 0x1234567890ABCDEF
    imported = keystore.encrypt(
        sk.to_bytes(32, "big"),
        "keystore password",
        kdf="pbkdf2",
        pubkey=bls.sk_to_pk(sk),
        path="m/12381/3600/9/0/0",
        fast=True,
    )
    with pytest.raises(WrongPassword):
        vault.add_keystore(imported, "not it", PASSWORD, "imported")
    assert vault.keys() == []
    info = vault.add_keystore(imported, "keystore password", PASSWORD, "imported")
    assert info.path == "m/12381/3600/9/0/0"
    assert info.pubkey == bls.sk_to_pk(sk)
    vault.unlock(PASSWORD)
    assert vault.secret_key(info.signer_id) == sk
    with pytest.raises(keystore.KeystoreError):
        vault.add_keystore({"version": 4}, "x", PASSWORD, "bad")


def test_secrets_round_trip(vault: Vault) -> None:
    assert vault.get_secret("node-token", PASSWORD) is None
    vault.put_secret("node-token", b"token bytes", PASSWORD)
    assert vault.has_password()  # the first password-taking call set it
    assert vault.get_secret("node-token", PASSWORD) == b"token bytes"
    with pytest.raises(WrongPassword):
        vault.get_secret("node-token", "wrong")
    with pytest.raises(WrongPassword):
        vault.put_secret("node-token", b"other", "wrong")
    assert vault.get_secret("node-token", PASSWORD) == b"token bytes"
    vault.put_secret("node-token", b"new", PASSWORD)
    assert vault.get_secret("node-token", PASSWORD) == b"new"
    assert vault.delete_secret("node-token")
    assert not vault.delete_secret("node-token")
    assert vault.get_secret("node-token", PASSWORD) is None
    for bad in (b"", bytes(257)):
        with pytest.raises(VaultError, match="bytes"):
            vault.put_secret("x", bad, PASSWORD)
    for name in ("", "Upper", "a/b", "../x"):
        with pytest.raises(VaultError, match="secret name"):
            vault.put_secret(name, b"x", PASSWORD)
    # A secret entry is a keystore too, and no key: unlocking ignores it.
    vault.unlock(PASSWORD)
    assert vault.keys() == []


def test_a_damaged_index_is_a_clear_error(data_dir: Path, file_choice: BackendChoice) -> None:
    (data_dir / "keys.json").write_text('{"version": 1, "keys": [{"pubkey": "zz"}]}')
    with pytest.raises(VaultError, match="damaged"):
        Vault(data_dir, file_choice, fast_kdf=True)


def test_index_holds_no_secret(data_dir: Path, vault: Vault) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "main")
    doc = json.loads((data_dir / "keys.json").read_text())
    assert doc == {
        "version": 1,
        "keys": [
            {
                "signer_id": info.signer_id.hex(),
                "pubkey": info.pubkey.hex(),
                "pop": info.pop.hex(),
                "label": "main",
                "path": "m/12381/3600/0/0/0",
            }
        ],
    }


def test_no_secret_reaches_the_data_folder(data_dir: Path, vault: Vault) -> None:
    words = mnemonic.generate()
    info = vault.add_mnemonic(words, PASSWORD, "main")
    vault.put_secret("node-token", b"a remote node token", PASSWORD)
    vault.unlock(PASSWORD)
    sk = vault.secret_key(info.signer_id)
    raw = sk.to_bytes(32, "big")
    needles = [raw, raw.hex().encode(), raw.hex().upper().encode(), words.encode()]
    needles += [str(sk).encode(), b"a remote node token", PASSWORD.encode()]
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.parent.name == vault.backend.service for p in files)  # the keystores
    for path in files:
        content = path.read_bytes()
        for needle in needles:
            assert needle not in content, f"{path} holds a secret"
