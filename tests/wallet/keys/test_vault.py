"""The vault (wallet.keys.vault) on the encrypted-file backend: adding keys from a
mnemonic or a keystore, the public index, lock and unlock, the one wallet password,
other secrets, and that no secret reaches the data folder unencrypted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.crypto import bls, keystore
from node.machines.governance import signer_id
from wallet.keys import mnemonic
from wallet.keys.backends import BackendChoice
from wallet.keys.mnemonic import MnemonicError
from wallet.keys.vault import CHECK_ENTRY, KeyInfo, Locked, Vault, VaultError, WrongPassword

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
    # Wrapped under the vault key, which the password check entry holds under scrypt:
    # one slow KDF per unlock, whatever the number of keys.
    assert keystore.is_wrapped(entry)
    check = json.loads(
        vault.backend.keyring.get_password(vault.backend.service, f"{wallet_id}.{CHECK_ENTRY}")
        or "null"
    )
    assert check["crypto"]["kdf"]["function"] == "scrypt"
    vault_key = keystore.decrypt_data(check, PASSWORD)
    secret = mnemonic.signer_key(WORDS, 3)[0].to_bytes(32, "big")
    assert keystore.decrypt(entry, vault_key.hex()) == secret  # any EIP-2335 tool opens it
    with pytest.raises(WrongPassword):
        keystore.decrypt(entry, PASSWORD)


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


def _count_slow_kdfs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every scrypt or PBKDF2 run of more than one round, by its KDF's name."""
    calls: list[str] = []
    real = keystore._derive_key

    def counted(kdf: str, params: Any, password: bytes) -> bytes:
        if params.get("c") != keystore.WRAP_ROUNDS:
            calls.append(kdf)
        return real(kdf, params, password)

    monkeypatch.setattr(keystore, "_derive_key", counted)
    return calls


def test_an_unlock_runs_the_slow_kdf_once_whatever_the_keys(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        vault.add_mnemonic(WORDS, PASSWORD, f"k{i}", index=i)
    vault.put_secret("node-token", b"t", PASSWORD)
    calls = _count_slow_kdfs(monkeypatch)
    vault.unlock(PASSWORD)
    assert calls == ["scrypt"]
    infos = vault.keys()
    assert len({vault.secret_key(k.signer_id) for k in infos}) == 4


def test_change_password(vault: Vault, data_dir: Path, file_choice: BackendChoice) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "k")
    vault.put_secret("node-token", b"token", PASSWORD)
    with pytest.raises(WrongPassword):
        vault.change_password("wrong", "new password")
    with pytest.raises(VaultError, match="must not be empty"):
        vault.change_password(PASSWORD, "")
    vault.unlock(PASSWORD)  # still the old one after both refusals
    vault.change_password(PASSWORD, "new password")
    again = Vault(data_dir, file_choice, fast_kdf=True)
    with pytest.raises(WrongPassword):
        again.unlock(PASSWORD)
    again.unlock("new password")
    assert again.secret_key(info.signer_id) == mnemonic.signer_key(WORDS, 0)[0]
    assert again.get_secret("node-token", "new password") == b"token"
    assert again.recovery_phrase(info.signer_id, "new password") == WORDS


def test_the_phrase_is_shown_after_the_password_and_only_for_phrase_keys(
    vault: Vault, tmp_path: Path
) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "from words")
    assert vault.recovery_phrase(info.signer_id, PASSWORD) == WORDS
    with pytest.raises(WrongPassword):
        vault.recovery_phrase(info.signer_id, "wrong")
    sk = mnemonic.signer_key(WORDS, 7)[0]
    imported = vault.add_keystore(
        keystore.encrypt(sk.to_bytes(32, "big"), "other", fast=True), "other", PASSWORD, "imp"
    )
    assert vault.recovery_phrase(imported.signer_id, PASSWORD) is None
    with pytest.raises(VaultError, match="no key"):
        vault.recovery_phrase(bytes(32), PASSWORD)


def test_export_gives_a_standard_keystore_under_its_own_password(vault: Vault) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "k", index=2)
    with pytest.raises(WrongPassword):
        vault.export_key(info.signer_id, "wrong", "export")
    exported = vault.export_key(info.signer_id, PASSWORD, "export pass")
    keystore.validate(exported)
    assert not keystore.is_wrapped(exported)
    assert exported["pubkey"] == info.pubkey.hex()
    assert exported["path"] == info.path
    secret = keystore.decrypt(exported, "export pass")
    assert secret == mnemonic.signer_key(WORDS, 2)[0].to_bytes(32, "big")


def test_entries_from_before_the_vault_key_open_and_are_wrapped_at_unlock(
    vault: Vault, data_dir: Path, file_choice: BackendChoice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wallet whose key and token entries are each under the password (as this
    version's predecessor stored them) unlocks, and its entries are wrapped then."""
    info = vault.add_mnemonic(WORDS, PASSWORD, "k")
    vault.put_secret("node-token", b"old token", PASSWORD)
    ring, service = file_choice.keyring, file_choice.service
    sk = mnemonic.signer_key(WORDS, 0)[0].to_bytes(32, "big")
    old_key = keystore.encrypt(sk, PASSWORD, pubkey=info.pubkey, path=info.path, fast=True)
    old_token = keystore.encrypt_data(b"old token", PASSWORD, fast=True)
    ring.set_password(service, f"{vault.wallet_id}.{info.signer_id.hex()}", json.dumps(old_key))
    ring.set_password(service, f"{vault.wallet_id}.secret-node-token", json.dumps(old_token))
    old = Vault(data_dir, file_choice, fast_kdf=True)
    calls = _count_slow_kdfs(monkeypatch)
    old.unlock(PASSWORD)
    assert calls == ["scrypt", "scrypt"]  # the check entry, and the old key once
    assert old.secret_key(info.signer_id) == int.from_bytes(sk, "big")
    entry = json.loads(
        ring.get_password(service, f"{vault.wallet_id}.{info.signer_id.hex()}") or "null"
    )
    assert keystore.is_wrapped(entry)
    old.change_password(PASSWORD, "new")  # wraps the old token before the switch
    assert old.get_secret("node-token", "new") == b"old token"
    calls.clear()
    Vault(data_dir, file_choice, fast_kdf=True).unlock("new")
    assert calls == ["scrypt"]
