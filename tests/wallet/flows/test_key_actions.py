"""Settings' key actions, headless, on a real vault (encrypted-file backend, real
keystores with the tests' faster KDF): change the password, show a phrase,
export a key."""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

import pytest

from node.crypto import keystore
from wallet.flows import key_actions
from wallet.flows.key_actions import KeyActionError
from wallet.keys import mnemonic
from wallet.keys.backends import choose_backend
from wallet.keys.vault import Vault, WrongPassword

PASSWORD = "correct horse battery"  # noqa: S105 - test data
WORDS = " ".join(["abandon"] * 23 + ["art"])


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    data = tmp_path / "wallet"
    data.mkdir(mode=0o700)
    backend = choose_backend(data, prefer="file", service=f"xln-test-{secrets.token_hex(6)}")
    return Vault(data, backend, fast_kdf=True)


async def test_change_password_rules(vault: Vault) -> None:
    vault.add_mnemonic(WORDS, PASSWORD, "k")
    with pytest.raises(KeyActionError, match="at least 8"):
        await key_actions.change_password(vault, PASSWORD, "short", "short")
    with pytest.raises(KeyActionError, match="differ"):
        await key_actions.change_password(vault, PASSWORD, "new password", "new passw0rd")
    with pytest.raises(KeyActionError, match="current one"):
        await key_actions.change_password(vault, PASSWORD, PASSWORD, PASSWORD)
    with pytest.raises(WrongPassword):
        await key_actions.change_password(vault, "wrong one", "new password", "new password")
    await key_actions.change_password(vault, PASSWORD, "new password", "new password")
    with pytest.raises(WrongPassword):
        vault.unlock(PASSWORD)
    vault.unlock("new password")
    assert not vault.locked


async def test_phrase_shown_only_where_kept(vault: Vault) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "k")
    assert await key_actions.recovery_phrase(vault, info.signer_id, PASSWORD) == WORDS
    sk = mnemonic.signer_key(WORDS, 5)[0].to_bytes(32, "big")
    imported = vault.add_keystore(keystore.encrypt(sk, "x", fast=True), "x", PASSWORD, "imp")
    with pytest.raises(KeyActionError, match="imported from a keystore"):
        await key_actions.recovery_phrase(vault, imported.signer_id, PASSWORD)


async def test_export_writes_a_private_keystore_once(vault: Vault, tmp_path: Path) -> None:
    info = vault.add_mnemonic(WORDS, PASSWORD, "k")
    path = tmp_path / "k.json"
    with pytest.raises(KeyActionError, match="differ"):
        await key_actions.export_key(vault, info.signer_id, PASSWORD, "file pass", "x", path)
    assert not path.exists()
    await key_actions.export_key(
        vault, info.signer_id, PASSWORD, "file password", "file password", path
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert keystore.decrypt(stored, "file password") == mnemonic.signer_key(WORDS, 0)[0].to_bytes(
        32, "big"
    )
    with pytest.raises(KeyActionError, match="exists already"):
        await key_actions.export_key(
            vault, info.signer_id, PASSWORD, "file password", "file password", path
        )
