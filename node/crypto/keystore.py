"""EIP-2335 keystores: a BLS12-381 secret key encrypted under a password.

A keystore is a JSON object (version 4): the password goes through a KDF
(scrypt or PBKDF2-HMAC-SHA256) to a 32-byte decryption key; its first 16 bytes
are the AES-128-CTR key for the secret, and SHA-256(key[16:32] || ciphertext)
is the checksum that tells a wrong password. Passwords are NFKD-normalized,
stripped of C0, C1 and Delete control codes, and UTF-8 encoded, as EIP-2335
requires, so the same password opens the file in any compliant tool.

Default KDF costs are EIP-2335's (scrypt n=2**18 r=8 p=1: ~1 s and 256 MiB;
PBKDF2 c=2**18). ``fast=True`` uses n=2**14 / c=2**14: for tests and
simulations only, never for a key that guards anything.

A keystore can also be made under a random 32-byte key instead of a password
(:func:`wrap`, :func:`unwrap`): the wallet keeps its keys so, under one key that
its password opens, so that an unlock runs the slow KDF once.

A keystore may also hold a small non-key secret (1 to 256 bytes, say an API
token): :func:`encrypt_data` and :func:`decrypt_data` make and open one. It is
the same version-4 format with no ``pubkey``; :func:`decrypt`, and
:func:`validate` and :func:`save` unless given ``data=True``, still accept only
32-byte secrets, so nothing expecting a key can be handed such a keystore.

Everything read from a file is validated before use: a malformed keystore
raises :class:`KeystoreError` (never KeyError or TypeError), and so does a KDF
cost beyond what this module will spend (scrypt over ~1 GiB, PBKDF2 over 2**24
rounds). A wrong password raises :class:`WrongPassword`. File-system failures
in :func:`save` and :func:`load` are OSErrors.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from Crypto.Cipher import AES

from node.crypto import bls

type Kdf = Literal["scrypt", "pbkdf2"]

VERSION: Final = 4
SECRET_LEN: Final = 32
MAX_DATA_LEN: Final = 256  # a non-key secret: 1 to this many bytes
DKLEN: Final = 32
SALT_LEN: Final = 32
IV_LEN: Final = 16
CHECKSUM_LEN: Final = 32
SCRYPT_N: Final = 2**18
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
PBKDF2_C: Final = 2**18
FAST_SCRYPT_N: Final = 2**14  # tests and simulations only
FAST_PBKDF2_C: Final = 2**14  # tests and simulations only
# What a keystore read from a file may make us spend.
MAX_SCRYPT_MEMORY: Final = 2**30 + 2**20  # bytes: n=2**20 with r=8 still fits
MAX_PBKDF2_C: Final = 2**24
WRAP_KEY_LEN: Final = 32
WRAP_ROUNDS: Final = 1  # a keystore under a random key (see wrap), never a password's
MAX_FILE_BYTES: Final = 1 << 20

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


class KeystoreError(ValueError):
    """A malformed keystore, unacceptable parameters, or a secret that does not decrypt."""


class WrongPassword(KeystoreError):
    """The checksum does not match: a wrong password (or a tampered keystore)."""


def normalize_password(password: str) -> bytes:
    """EIP-2335: NFKD, then drop C0 (0x00-0x1F), Delete (0x7F) and C1 (0x80-0x9F), UTF-8."""
    if not isinstance(password, str):
        raise KeystoreError("password must be a str")
    nfkd = unicodedata.normalize("NFKD", password)
    return "".join(c for c in nfkd if not _is_control(c)).encode("utf-8")


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


@dataclass(frozen=True)
class _Parsed:
    kdf: str
    kdf_params: dict[str, Any]  # validated; salt as bytes
    checksum: bytes
    iv: bytes
    ciphertext: bytes
    pubkey: bytes


def encrypt(
    secret: bytes,
    password: str,
    *,
    kdf: Kdf = "scrypt",
    path: str = "",
    description: str = "",
    pubkey: bytes = b"",
    fast: bool = False,
) -> dict[str, Any]:
    """A version-4 keystore (the JSON object) holding ``secret`` under ``password``.

    ``pubkey``, if given, must be the BLS public key of ``secret``; it is stored
    and checked again on every decrypt. ``fast`` lowers the KDF cost ~16x: tests
    and simulations only.
    """
    if not isinstance(secret, bytes) or len(secret) != SECRET_LEN:
        raise KeystoreError(f"secret must be {SECRET_LEN} bytes")
    if not isinstance(path, str) or not isinstance(description, str):
        raise KeystoreError("path and description must be str")
    if not isinstance(pubkey, bytes):
        raise KeystoreError("pubkey must be bytes")
    if pubkey:
        _check_pubkey(secret, pubkey)
    return _encrypt(secret, password, kdf, path, description, pubkey, fast)


def encrypt_data(
    data: bytes,
    password: str,
    *,
    kdf: Kdf = "scrypt",
    description: str = "",
    fast: bool = False,
) -> dict[str, Any]:
    """A version-4 keystore holding a non-key secret of 1 to 256 bytes (no pubkey, no path).

    Open it with :func:`decrypt_data`; :func:`decrypt` refuses it unless it is 32 bytes.
    """
    if not isinstance(data, bytes) or not 1 <= len(data) <= MAX_DATA_LEN:
        raise KeystoreError(f"data must be 1 to {MAX_DATA_LEN} bytes")
    if not isinstance(description, str):
        raise KeystoreError("description must be str")
    return _encrypt(data, password, kdf, "", description, b"", fast)


def wrap(
    secret: bytes,
    key: bytes,
    *,
    pubkey: bytes = b"",
    path: str = "",
    description: str = "",
) -> dict[str, Any]:
    """A version-4 keystore holding ``secret`` (a key, or 1 to 256 bytes of data) under
    a random 32-byte ``key`` rather than a password: its "password" is ``key`` in hex
    and its KDF is PBKDF2 with ``WRAP_ROUNDS`` round, as a key of 256 random bits needs
    no slow KDF. Any EIP-2335 tool opens it with that hex string."""
    if not isinstance(key, bytes) or len(key) != WRAP_KEY_LEN:
        raise KeystoreError(f"a wrapping key is {WRAP_KEY_LEN} bytes")
    if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_DATA_LEN:
        raise KeystoreError(f"data must be 1 to {MAX_DATA_LEN} bytes")
    if pubkey:
        _check_pubkey(secret, pubkey)
    return _encrypt(secret, key.hex(), "pbkdf2", path, description, pubkey, False, WRAP_ROUNDS)


def is_wrapped(keystore: object) -> bool:
    """Whether ``keystore`` was made by :func:`wrap` (PBKDF2 of ``WRAP_ROUNDS`` round:
    never a password's keystore, whose KDF is slow)."""
    try:
        parsed = _parse(keystore, data=True)
    except KeystoreError:
        return False
    return parsed.kdf == "pbkdf2" and parsed.kdf_params.get("c") == WRAP_ROUNDS


def unwrap(keystore: object, key: bytes) -> bytes:
    """The secret in a keystore made by :func:`wrap`; WrongPassword if ``key`` is not its."""
    if not is_wrapped(keystore):
        raise KeystoreError("not a keystore wrapped under a key")
    return _decrypt(_parse(keystore, data=True), key.hex())


def _encrypt(
    secret: bytes,
    password: str,
    kdf: str,
    path: str,
    description: str,
    pubkey: bytes,
    fast: bool,
    rounds: int | None = None,
) -> dict[str, Any]:
    salt = secrets.token_bytes(SALT_LEN)
    params: dict[str, Any]
    if kdf == "scrypt":
        n = FAST_SCRYPT_N if fast else SCRYPT_N
        params = {"dklen": DKLEN, "n": n, "p": SCRYPT_P, "r": SCRYPT_R, "salt": salt}
    elif kdf == "pbkdf2":
        c = rounds if rounds is not None else FAST_PBKDF2_C if fast else PBKDF2_C
        params = {"dklen": DKLEN, "c": c, "prf": "hmac-sha256", "salt": salt}
    else:
        raise KeystoreError(f"unknown kdf {kdf!r}: scrypt or pbkdf2")
    key = _derive_key(kdf, params, normalize_password(password))
    iv = secrets.token_bytes(IV_LEN)
    ciphertext = _aes_128_ctr(key[:16], iv, secret)
    checksum = hashlib.sha256(key[16:32] + ciphertext).digest()
    return {
        "crypto": {
            "kdf": {"function": kdf, "params": {**params, "salt": salt.hex()}, "message": ""},
            "checksum": {"function": "sha256", "params": {}, "message": checksum.hex()},
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": iv.hex()},
                "message": ciphertext.hex(),
            },
        },
        "description": description,
        "pubkey": pubkey.hex(),
        "path": path,
        "uuid": str(uuid.uuid4()),
        "version": VERSION,
    }


def decrypt(keystore: object, password: str) -> bytes:
    """The secret in ``keystore``.

    Raises WrongPassword when the checksum does not match, KeystoreError for a
    malformed keystore, and KeystoreError when a stored ``pubkey`` is not the
    public key of the decrypted secret.
    """
    return _decrypt(_parse(keystore), password)


def decrypt_data(keystore: object, password: str) -> bytes:
    """The secret in ``keystore``, a key or a non-key secret of 1 to 256 bytes (see encrypt_data).

    Raises as :func:`decrypt` does.
    """
    return _decrypt(_parse(keystore, data=True), password)


def _decrypt(parsed: _Parsed, password: str) -> bytes:
    key = _derive_key(parsed.kdf, parsed.kdf_params, normalize_password(password))
    checksum = hashlib.sha256(key[16:32] + parsed.ciphertext).digest()
    if not hmac.compare_digest(checksum, parsed.checksum):
        raise WrongPassword("wrong password (the keystore's checksum does not match)")
    secret = _aes_128_ctr(key[:16], parsed.iv, parsed.ciphertext)
    if parsed.pubkey:
        _check_pubkey(secret, parsed.pubkey)
    return secret


def validate(keystore: object, *, data: bool = False) -> None:
    """Check every field of ``keystore`` without the password; KeystoreError if malformed.

    ``data=True`` also accepts a keystore of a non-key secret (see encrypt_data).
    """
    _parse(keystore, data=data)


def save(path: str | os.PathLike[str], keystore: Mapping[str, Any], *, data: bool = False) -> None:
    """Write ``keystore`` to ``path`` atomically, readable by its owner only (mode 0600).

    The JSON goes to a temporary file in the same folder, is fsynced, and
    replaces ``path`` by rename; the folder is fsynced after (where the OS
    allows it). The keystore is validated first: a malformed one is never written.
    ``data=True`` also accepts a keystore of a non-key secret (see encrypt_data).
    """
    _parse(keystore, data=data)
    target = Path(path)
    text = json.dumps(dict(keystore), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.chmod(tmp, 0o600)  # mkstemp's default, but say it: this file holds a key
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keystore at ``path``, validated (KeystoreError if it is not one)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise KeystoreError(f"keystore file over {MAX_FILE_BYTES} bytes")
    try:
        keystore = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise KeystoreError(f"keystore is not JSON: {exc}") from exc
    if not isinstance(keystore, dict):
        raise KeystoreError("keystore must be a JSON object")
    _parse(keystore)
    return keystore


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def _check_pubkey(secret: bytes, pubkey: bytes) -> None:
    sk = int.from_bytes(secret, "big")
    if len(secret) != SECRET_LEN or not bls.secret_key_valid(sk):
        raise KeystoreError("the secret is not a BLS secret key, so not the pubkey's")
    if bls.sk_to_pk(sk) != pubkey:
        raise KeystoreError("the secret is not the pubkey's secret key")


def _derive_key(kdf: str, params: Mapping[str, Any], password: bytes) -> bytes:
    if kdf == "scrypt":
        n, r, p = params["n"], params["r"], params["p"]
        try:
            return hashlib.scrypt(
                password,
                salt=params["salt"],
                n=n,
                r=r,
                p=p,
                dklen=DKLEN,
                maxmem=_scrypt_memory(n, r, p) + (1 << 16),
            )
        except ValueError as exc:  # parameters OpenSSL refuses
            raise KeystoreError(f"scrypt: {exc}") from exc
    return hashlib.pbkdf2_hmac("sha256", password, params["salt"], params["c"], DKLEN)


def _scrypt_memory(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2)  # OpenSSL's accounting: V (128*r*(n+2)) plus B (128*r*p)


def _aes_128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    # The whole 16-byte IV is the initial counter block (a 128-bit big-endian counter).
    cipher = AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=iv)
    return cipher.encrypt(data)


# -- validation -------------------------------------------------------------


def _parse(keystore: object, *, data: bool = False) -> _Parsed:
    ks = _mapping(keystore, "keystore")
    version = _int(ks, "version", "keystore")
    if version != VERSION:
        raise KeystoreError(f"keystore version {version}, expected {VERSION}")
    _uuid(_str(ks, "uuid", "keystore"))
    _str(ks, "path", "keystore")
    if "description" in ks:
        _str(ks, "description", "keystore")
    pubkey = _hex(ks, "pubkey", "keystore") if "pubkey" in ks else b""
    if pubkey and len(pubkey) != bls.PUBKEY_LEN:
        raise KeystoreError(f"keystore.pubkey must be {bls.PUBKEY_LEN} bytes")

    crypto = _mapping(_field(ks, "crypto", "keystore"), "crypto")
    kdf_fn, kdf_params, _ = _module(crypto, "kdf")
    sum_fn, _, checksum = _module(crypto, "checksum")
    cipher_fn, cipher_params, ciphertext = _module(crypto, "cipher")

    if kdf_fn == "scrypt":
        params = _scrypt_params(kdf_params)
    elif kdf_fn == "pbkdf2":
        params = _pbkdf2_params(kdf_params)
    else:
        raise KeystoreError(f"crypto.kdf.function {kdf_fn!r}: scrypt or pbkdf2")
    if sum_fn != "sha256":
        raise KeystoreError(f"crypto.checksum.function {sum_fn!r}: sha256")
    if len(checksum) != CHECKSUM_LEN:
        raise KeystoreError(f"crypto.checksum.message must be {CHECKSUM_LEN} bytes")
    if cipher_fn != "aes-128-ctr":
        raise KeystoreError(f"crypto.cipher.function {cipher_fn!r}: aes-128-ctr")
    iv = _hex(cipher_params, "iv", "crypto.cipher.params")
    if len(iv) != IV_LEN:
        raise KeystoreError(f"crypto.cipher.params.iv must be {IV_LEN} bytes")
    if data and not pubkey:
        if not 1 <= len(ciphertext) <= MAX_DATA_LEN:
            raise KeystoreError(f"crypto.cipher.message must be 1 to {MAX_DATA_LEN} bytes")
    elif len(ciphertext) != SECRET_LEN:
        raise KeystoreError(f"crypto.cipher.message must be {SECRET_LEN} bytes")
    return _Parsed(kdf_fn, params, checksum, iv, ciphertext, pubkey)


def _module(crypto: Mapping[str, Any], name: str) -> tuple[str, Mapping[str, Any], bytes]:
    where = f"crypto.{name}"
    module = _mapping(_field(crypto, name, "crypto"), where)
    function = _str(module, "function", where)
    params = _mapping(_field(module, "params", where), f"{where}.params")
    message = _hex(module, "message", where)
    return function, params, message


def _scrypt_params(params: Mapping[str, Any]) -> dict[str, Any]:
    where = "crypto.kdf.params"
    dklen = _int(params, "dklen", where)
    n = _int(params, "n", where)
    r = _int(params, "r", where)
    p = _int(params, "p", where)
    salt = _hex(params, "salt", where)
    if dklen != DKLEN:
        raise KeystoreError(f"{where}.dklen must be {DKLEN}")
    if n < 2 or n & (n - 1):
        raise KeystoreError(f"{where}.n must be a power of 2 above 1")
    if r < 1 or p < 1:
        raise KeystoreError(f"{where}: r and p must be positive")
    if _scrypt_memory(n, r, p) > MAX_SCRYPT_MEMORY:
        raise KeystoreError(f"{where}: scrypt would need over {MAX_SCRYPT_MEMORY} bytes")
    if not salt:
        raise KeystoreError(f"{where}.salt is empty")
    return {"n": n, "r": r, "p": p, "salt": salt}


def _pbkdf2_params(params: Mapping[str, Any]) -> dict[str, Any]:
    where = "crypto.kdf.params"
    dklen = _int(params, "dklen", where)
    c = _int(params, "c", where)
    prf = _str(params, "prf", where)
    salt = _hex(params, "salt", where)
    if dklen != DKLEN:
        raise KeystoreError(f"{where}.dklen must be {DKLEN}")
    if not 1 <= c <= MAX_PBKDF2_C:
        raise KeystoreError(f"{where}.c must be in [1, {MAX_PBKDF2_C}]")
    if prf != "hmac-sha256":
        raise KeystoreError(f"{where}.prf {prf!r}: hmac-sha256")
    if not salt:
        raise KeystoreError(f"{where}.salt is empty")
    return {"c": c, "salt": salt}


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise KeystoreError(f"{where} must be a JSON object")
    return value


def _field(obj: Mapping[str, Any], name: str, where: str) -> object:
    if name not in obj:
        raise KeystoreError(f"{where}.{name} is missing")
    value: object = obj[name]
    return value


def _str(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = _field(obj, name, where)
    if not isinstance(value, str):
        raise KeystoreError(f"{where}.{name} must be a string")
    return value


def _int(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = _field(obj, name, where)
    if not isinstance(value, int) or isinstance(value, bool):
        raise KeystoreError(f"{where}.{name} must be an integer")
    return value


def _hex(obj: Mapping[str, Any], name: str, where: str) -> bytes:
    value = _str(obj, name, where)
    if not _HEX.fullmatch(value):
        raise KeystoreError(f"{where}.{name} must be hex (an even number of digits, no 0x)")
    return bytes.fromhex(value)


def _uuid(value: str) -> None:
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise KeystoreError(f"keystore.uuid {value!r} is not a UUID") from exc
    if str(parsed) != value.lower():
        raise KeystoreError(f"keystore.uuid {value!r} is not in the 8-4-4-4-12 form")
