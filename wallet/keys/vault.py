"""The vault: the wallet's signer keys and small secrets, under one wallet password.

Each signer key is an EIP-2335 keystore (scrypt; ``fast_kdf`` only in tests)
kept in the chosen keyring backend under ``service`` / the signer id in hex.
Other secrets (a remote node's token, the embedded node's identity password)
are keystores of non-key data, under ``secret-<name>``. A small check entry,
a keystore of random bytes, tells whether a password is set and whether a
given one is right, even before any key exists; the first call that takes a
password on a vault with none sets it.

Entries belong to one wallet: each is named ``<wallet id>.<name>``, the wallet id
being 16 random hex digits kept in ``DATA/wallet-id``. So several wallets (a
second data folder, a restore with a new password) share one system keyring
without reading or overwriting each other's entries. A data folder from before
wallet ids (a ``keys.json`` and no ``wallet-id``) reads its entries under their
bare names until its first unlock, which copies them under a new wallet id and
only then writes ``wallet-id`` (a crash before leaves the folder as it was). The
bare entries are left in place: two such folders may share them.

``DATA/keys.json`` is the public index: each key's signer id, public key,
proof of possession, label and derivation path. It holds no secret and is
readable while locked. A mnemonic is never stored: it is the user's backup.

One KDF per unlock. The check entry's random 32 bytes are the **vault key**:
every key and secret entry is a keystore wrapped under it (``keystore.wrap``,
no slow KDF: the vault key is random), and only the check entry is under the
password (scrypt). So an unlock runs scrypt once, whatever the number of keys,
and a change of password rewrites the check entry alone. Entries from before
(each under the password) are opened with the password at the first unlock
and wrapped then. A key added from a recovery phrase keeps its phrase too, as
the secret ``phrase-<signer id>``, which :meth:`Vault.recovery_phrase` shows
after the password; :meth:`Vault.export_key` writes a key as a standard
EIP-2335 keystore under a password of the person's choice.

Unlocking decrypts every key into memory (slow: one KDF, so call it off the GUI
thread); locking drops them. ``on_change`` callbacks run, on the
thread that locked or unlocked, after each change of the locked state.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from node.crypto import bls, keystore
from node.crypto.keystore import WrongPassword
from node.machines.governance import signer_id as signer_id_of
from wallet.keys import mnemonic
from wallet.keys.backends import BackendChoice
from wallet.paths import write_atomic

INDEX_FILE: Final = "keys.json"
WALLET_ID_FILE: Final = "wallet-id"
# The secrets a wallet from before wallet ids may hold (copied at its migration).
LEGACY_SECRETS: Final = ("node-token",)
_WALLET_ID = re.compile(r"[0-9a-f]{16}")
INDEX_VERSION: Final = 1
CHECK_ENTRY: Final = "wallet-password-check"
SECRET_PREFIX: Final = "secret-"  # noqa: S105 - a name prefix, not a secret
PHRASE_PREFIX: Final = "phrase-"  # a key's recovery phrase: phrase-<signer id>
MAX_LABEL: Final = 64
_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

__all__ = ["KeyInfo", "Locked", "Vault", "VaultError", "WrongPassword"]


class VaultError(ValueError):
    """A request the vault refuses: a duplicate key, a bad label or name, a damaged index."""


class Locked(RuntimeError):
    """The vault is locked: unlock it with the wallet password first."""


@dataclass(frozen=True)
class KeyInfo:
    """One signer key's public record (an entry of ``keys.json``)."""

    signer_id: bytes
    pubkey: bytes
    pop: bytes
    label: str
    path: str


class Vault:
    """The signer keys in a keyring backend, locked or unlocked (see the module's docstring)."""

    def __init__(self, data_dir: Path, backend: BackendChoice, *, fast_kdf: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.backend = backend
        self.on_change: list[Callable[[], None]] = []
        self._fast = fast_kdf
        self._mutex = threading.RLock()
        self._secret_keys: dict[bytes, int] | None = None
        self._vault_key: bytes | None = None  # while unlocked
        self._index_path = self.data_dir / INDEX_FILE
        self._id_path = self.data_dir / WALLET_ID_FILE
        self.keys()  # a damaged index is an error now, not at the first unlock
        # None: a folder from before wallet ids (migrated at its first unlock).
        self.wallet_id: str | None = self._read_wallet_id()
        self._id_saved = self.wallet_id is not None
        if self.wallet_id is None and not self._index_path.exists():
            self.wallet_id = secrets.token_hex(8)  # a new wallet: saved with its first entry

    # -- reading ---------------------------------------------------------

    @property
    def fast_kdf(self) -> bool:
        """Whether this vault's keystores use the tests' cheap KDF cost."""
        return self._fast

    def keys(self) -> list[KeyInfo]:
        """The public index, in the order the keys were added; readable while locked."""
        try:
            raw = self._index_path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(raw.decode("utf-8"))
            return _parse_index(doc)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise VaultError(f"{self._index_path} is damaged: {exc}") from exc

    def has_password(self) -> bool:
        """True once a wallet password is set (onboarding sets it)."""
        return self._entry(CHECK_ENTRY) is not None

    @property
    def locked(self) -> bool:
        return self._secret_keys is None

    def secret_key(self, signer_id: bytes) -> int:
        """The secret key of ``signer_id``; raises Locked when locked, VaultError if unknown."""
        keys = self._secret_keys
        if keys is None:
            raise Locked("the wallet is locked")
        try:
            return keys[signer_id]
        except KeyError:
            raise VaultError(f"no key for signer {signer_id.hex()}") from None

    # -- adding keys -----------------------------------------------------

    def add_mnemonic(self, words: str, password: str, label: str, index: int = 0) -> KeyInfo:
        """Derive the key at ``m/12381/3600/{index}/0/0`` from ``words`` and store it.

        Raises MnemonicError for a bad phrase, VaultError for a duplicate key or a
        bad label, WrongPassword if the password is not the wallet's.
        """
        phrase = mnemonic.validate(words)
        sk, path = mnemonic.signer_key(phrase, index)
        return self._add(sk, path, password, label, phrase)

    def add_keystore(
        self, keystore_json: Mapping[str, Any], keystore_password: str, password: str, label: str
    ) -> KeyInfo:
        """Import an EIP-2335 keystore (opened with ``keystore_password``) under the wallet's."""
        keystore.validate(keystore_json)
        secret = keystore.decrypt(keystore_json, keystore_password)
        sk = int.from_bytes(secret, "big")
        if not bls.secret_key_valid(sk):
            raise VaultError("the keystore does not hold a BLS secret key")
        path = keystore_json.get("path", "")
        return self._add(sk, path if isinstance(path, str) else "", password, label)

    def _add(
        self, sk: int, path: str, password: str, label: str, phrase: str | None = None
    ) -> KeyInfo:
        label = _check_label(label)
        pubkey = bls.sk_to_pk(sk)
        sid = signer_id_of(pubkey)
        with self._mutex:
            index = self.keys()
            for known in index:
                if known.signer_id == sid:
                    raise VaultError(f"this key is already in the wallet, as {known.label!r}")
            vault_key = self._ensure_password(password)
            entry = keystore.wrap(
                sk.to_bytes(keystore.SECRET_LEN, "big"),
                vault_key,
                pubkey=pubkey,
                path=path,
                description=f"xln-signer key {label}",
            )
            info = KeyInfo(sid, pubkey, bls.pop_prove(sk), label, path)
            self._store(sid.hex(), entry)
            if phrase is not None:
                self._store(
                    _phrase_username(sid),
                    keystore.wrap(
                        phrase.encode("utf-8"), vault_key, description="xln-signer phrase"
                    ),
                )
            self._write_index([*index, info])
            if self._secret_keys is not None:
                self._secret_keys = {**self._secret_keys, sid: sk}
        return info

    # -- lock and unlock -------------------------------------------------

    def unlock(self, password: str) -> None:
        """Decrypt every key into memory; WrongPassword (and nothing changes) if wrong."""
        with self._mutex:
            vault_key = self._open_vault_key(password)
            if self.wallet_id is None:
                self._migrate()
            keys = self._read_keys(vault_key, password)
            changed = self._secret_keys is None
            self._secret_keys = keys
            self._vault_key = vault_key
        if changed:
            self._fire()

    def lock(self) -> None:
        """Forget the decrypted keys."""
        with self._mutex:
            changed = self._secret_keys is not None
            self._secret_keys = None
            self._vault_key = None
        if changed:
            self._fire()

    def _fire(self) -> None:
        for callback in list(self.on_change):
            callback()

    # -- other secrets ---------------------------------------------------

    def put_secret(self, name: str, data: bytes, password: str) -> None:
        """Store ``data`` (1 to 256 bytes) encrypted under the wallet password as ``name``."""
        username = _secret_username(name)
        if not isinstance(data, bytes) or not 1 <= len(data) <= keystore.MAX_DATA_LEN:
            raise VaultError(f"a secret must be 1 to {keystore.MAX_DATA_LEN} bytes")
        with self._mutex:
            vault_key = self._ensure_password(password)
            self._store(
                username, keystore.wrap(data, vault_key, description=f"xln-signer secret {name}")
            )

    def get_secret(self, name: str, password: str) -> bytes | None:
        """The secret stored as ``name``, None if there is none; WrongPassword if wrong."""
        username = _secret_username(name)
        with self._mutex:
            if self._entry(username) is None:
                return None
            vault_key = self._open_vault_key(password)
            return self._read_entry(username, vault_key, password)

    def held_secret(self, name: str) -> bytes | None:
        """The secret ``name`` opened with the vault key held while unlocked (no KDF),
        None if there is none or it is still under the password; Locked if locked."""
        username = _secret_username(name)
        with self._mutex:
            if self._vault_key is None:
                raise Locked("the wallet is locked")
            entry = self._entry(username)
            if entry is None or not keystore.is_wrapped(entry):
                return None
            return keystore.unwrap(entry, self._vault_key)

    def delete_secret(self, name: str) -> bool:
        """Remove the secret ``name``; False if there was none."""
        username = _secret_username(name)
        with self._mutex:
            if self._entry(username) is None:
                return False
            self.backend.keyring.delete_password(self.backend.service, self._name(username))
        return True

    # -- the password, the phrase, export ---------------------------------

    def change_password(self, old: str, new: str) -> None:
        """Put the wallet under ``new``: WrongPassword (nothing changes) if ``old`` is
        wrong. Entries still under the old password are wrapped under the vault key
        first, so a crash at any point leaves a wallet that one of the two opens."""
        _check_new_password(new)
        with self._mutex:
            vault_key = self._open_vault_key(old)
            if self.wallet_id is None:
                self._migrate()
            self._read_keys(vault_key, old)
            for info in self.keys():
                self._read_entry(_phrase_username(info.signer_id), vault_key, old)
            for name in LEGACY_SECRETS:
                self._read_entry(_secret_username(name), vault_key, old)
            self._store(CHECK_ENTRY, self._check_entry(vault_key, new))

    def recovery_phrase(self, signer_id: bytes, password: str) -> str | None:
        """The recovery phrase the key ``signer_id`` was made from; None if it was
        imported from a keystore or added before phrases were kept."""
        self._info(signer_id)
        with self._mutex:
            vault_key = self._open_vault_key(password)
            data = self._read_entry(_phrase_username(signer_id), vault_key, password)
        return None if data is None else data.decode("utf-8")

    def export_key(self, signer_id: bytes, password: str, export_password: str) -> dict[str, Any]:
        """The key ``signer_id`` as an EIP-2335 keystore under ``export_password``
        (scrypt at EIP-2335's cost), for another EIP-2335 tool or wallet."""
        info = self._info(signer_id)
        _check_new_password(export_password)
        with self._mutex:
            vault_key = self._open_vault_key(password)
            secret_key = self._read_key(info, vault_key, password)
        return keystore.encrypt(
            secret_key.to_bytes(keystore.SECRET_LEN, "big"),
            export_password,
            pubkey=info.pubkey,
            path=info.path,
            description=f"xln-signer key {info.label}",
            fast=self._fast,
        )

    def _info(self, signer_id: bytes) -> KeyInfo:
        for info in self.keys():
            if info.signer_id == signer_id:
                return info
        raise VaultError(f"no key for signer {signer_id.hex()}")

    # -- the vault key ---------------------------------------------------

    def _open_vault_key(self, password: str) -> bytes:
        """The vault key, from the check entry (the one slow KDF); WrongPassword if wrong."""
        entry = self._entry(CHECK_ENTRY)
        if entry is None:
            raise VaultError("no wallet password is set yet")
        vault_key = keystore.decrypt_data(entry, password)
        if len(vault_key) != keystore.WRAP_KEY_LEN:
            raise VaultError("the wallet's password check entry is damaged")
        return vault_key

    def _ensure_password(self, password: str) -> bytes:
        """The vault key: opened with ``password``, or made with it if none is set."""
        if self.has_password():
            return self._open_vault_key(password)
        _check_new_password(password)
        vault_key = secrets.token_bytes(keystore.WRAP_KEY_LEN)
        self._store(CHECK_ENTRY, self._check_entry(vault_key, password))
        return vault_key

    def _check_entry(self, vault_key: bytes, password: str) -> dict[str, Any]:
        return keystore.encrypt_data(
            vault_key, password, description="xln-signer wallet password check", fast=self._fast
        )

    def _read_keys(self, vault_key: bytes, password: str) -> dict[bytes, int]:
        return {info.signer_id: self._read_key(info, vault_key, password) for info in self.keys()}

    def _read_key(self, info: KeyInfo, vault_key: bytes, password: str) -> int:
        username = info.signer_id.hex()
        entry = self._entry(username)
        if entry is None:
            raise VaultError(
                f"the key {info.label!r} is missing from the {self.backend.name} keyring"
            )
        if entry.get("pubkey") != info.pubkey.hex():
            raise VaultError(f"the stored key {info.label!r} is not the indexed one")
        secret = self._read_entry(username, vault_key, password)
        assert secret is not None
        return int.from_bytes(secret, "big")

    def _read_entry(self, username: str, vault_key: bytes, password: str) -> bytes | None:
        """An entry's secret: unwrapped with the vault key, or, for an entry from before
        vault keys, opened with the password and stored wrapped from now on."""
        entry = self._entry(username)
        if entry is None:
            return None
        if keystore.is_wrapped(entry):
            return keystore.unwrap(entry, vault_key)
        secret = keystore.decrypt_data(entry, password)
        pubkey = bytes.fromhex(entry.get("pubkey") or "")
        path = entry.get("path")
        description = entry.get("description")
        self._store(
            username,
            keystore.wrap(
                secret,
                vault_key,
                pubkey=pubkey,
                path=path if isinstance(path, str) else "",
                description=description if isinstance(description, str) else "",
            ),
        )
        return secret

    # -- storage ---------------------------------------------------------

    def _read_wallet_id(self) -> str | None:
        try:
            text = self._id_path.read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        if not _WALLET_ID.fullmatch(text):
            raise VaultError(f"{self._id_path} is damaged: not 16 hex digits")
        return text

    def _name(self, username: str) -> str:
        """The keyring entry's name: this wallet's own (see the module's docstring)."""
        return username if self.wallet_id is None else f"{self.wallet_id}.{username}"

    def _migrate(self) -> None:
        """Copy a pre-wallet-id folder's entries (its password check, its keys, its
        secrets) under a new wallet id, then save the id: from then on the folder reads
        its own entries only."""
        saved = self._read_wallet_id()
        if saved is not None:  # another Vault on this folder migrated it meanwhile
            self.wallet_id, self._id_saved = saved, True
            return
        new_id = secrets.token_hex(8)
        names = [
            CHECK_ENTRY,
            *(info.signer_id.hex() for info in self.keys()),
            *(_secret_username(n) for n in LEGACY_SECRETS),
        ]
        service = self.backend.service
        for name in names:
            text = self.backend.keyring.get_password(service, name)
            if text is not None:
                self.backend.keyring.set_password(service, f"{new_id}.{name}", text)
        self.wallet_id = new_id
        self._save_wallet_id()

    def _save_wallet_id(self) -> None:
        """Keep this wallet's id; adopt the folder's if another Vault saved one first
        (this one has stored nothing under its own yet)."""
        if self._id_saved:
            return
        saved = self._read_wallet_id()
        if saved is not None:
            self.wallet_id = saved
        else:
            assert self.wallet_id is not None
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self._id_path, (self.wallet_id + "\n").encode("utf-8"))
        self._id_saved = True

    def _entry(self, username: str) -> dict[str, Any] | None:
        text = self.backend.keyring.get_password(self.backend.service, self._name(username))
        if text is None:
            return None
        try:
            entry = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise VaultError(f"the keyring entry {username!r} is not a keystore") from exc
        if not isinstance(entry, dict):
            raise VaultError(f"the keyring entry {username!r} is not a keystore")
        return entry

    def _store(self, username: str, entry: Mapping[str, Any]) -> None:
        if self.wallet_id is not None:
            self._save_wallet_id()  # before the entry: an entry is never left unnamed
        self.backend.keyring.set_password(
            self.backend.service, self._name(username), json.dumps(dict(entry), sort_keys=True)
        )

    def _write_index(self, infos: list[KeyInfo]) -> None:
        doc = {
            "version": INDEX_VERSION,
            "keys": [
                {
                    "signer_id": k.signer_id.hex(),
                    "pubkey": k.pubkey.hex(),
                    "pop": k.pop.hex(),
                    "label": k.label,
                    "path": k.path,
                }
                for k in infos
            ],
        }
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._index_path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _parse_index(doc: object) -> list[KeyInfo]:
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
        raise ValueError(f"not a version-{INDEX_VERSION} key index")
    entries = doc["keys"]
    if not isinstance(entries, list):
        raise ValueError("keys must be a list")
    infos: list[KeyInfo] = []
    for entry in entries:
        pubkey = bytes.fromhex(entry["pubkey"])
        info = KeyInfo(
            bytes.fromhex(entry["signer_id"]),
            pubkey,
            bytes.fromhex(entry["pop"]),
            entry["label"],
            entry["path"],
        )
        if len(pubkey) != bls.PUBKEY_LEN or info.signer_id != signer_id_of(pubkey):
            raise ValueError(f"entry {info.label!r}: the signer id is not its pubkey's")
        if len(info.pop) != bls.SIGNATURE_LEN:
            raise ValueError(f"entry {info.label!r}: the proof of possession is malformed")
        if not isinstance(info.label, str) or not isinstance(info.path, str):
            raise ValueError("label and path must be strings")
        infos.append(info)
    return infos


def _check_label(label: str) -> str:
    if not isinstance(label, str):
        raise VaultError("the label must be text")
    label = unicodedata.normalize("NFC", label).strip()
    if not 1 <= len(label) <= MAX_LABEL:
        raise VaultError(f"a key's label has 1 to {MAX_LABEL} characters")
    if any(unicodedata.category(c) == "Cc" for c in label):
        raise VaultError("a key's label must not contain control characters")
    return label


def _check_new_password(password: str) -> None:
    if not isinstance(password, str) or not keystore.normalize_password(password):
        raise VaultError("the wallet password must not be empty")


def _phrase_username(signer_id: bytes) -> str:
    return f"{PHRASE_PREFIX}{signer_id.hex()}"


def _secret_username(name: str) -> str:
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        raise VaultError(f"secret name {name!r}: lower-case letters, digits, '_', '.', '-'")
    return SECRET_PREFIX + name
