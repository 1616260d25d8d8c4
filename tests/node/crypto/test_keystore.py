"""EIP-2335 keystores (node.crypto.keystore): the two official test vectors, round trips,
wrong passwords, tampering, every malformed field, password normalization, and the
file written atomically with mode 0600."""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from node.crypto import bls, keystore
from node.crypto.keystore import KeystoreError, WrongPassword

# The test vectors of EIP-2335 (ERC-2335, "Test Cases").
# "testpassword" in mathematical fraktur letters, then a key emoji.
VECTOR_PASSWORD = (
    "\U0001d531\U0001d522\U0001d530\U0001d531\U0001d52d\U0001d51e"  # noqa: S105
    "\U0001d530\U0001d530\U0001d534\U0001d52c\U0001d52f\U0001d521\U0001f511"
)
VECTOR_ENCODED_PASSWORD = bytes.fromhex("7465737470617373776f7264f09f9491")
VECTOR_SECRET = bytes.fromhex("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
VECTOR_PUBKEY = (
    "9612d7a727c9d0a22e185a1c768478dfe919cada9266988c"
    "b32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07"
)
VECTOR_SALT = "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
VECTORS: dict[str, dict[str, Any]] = {
    "scrypt": {
        "crypto": {
            "kdf": {
                "function": "scrypt",
                "params": {"dklen": 32, "n": 262144, "p": 1, "r": 8, "salt": VECTOR_SALT},
                "message": "",
            },
            "checksum": {
                "function": "sha256",
                "params": {},
                "message": "d2217fe5f3e9a1e34581ef8a78f7c9928e436d36dacc5e846690a5581e8ea484",
            },
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": "264daa3f303d7259501c93d997d84fe6"},
                "message": "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f",
            },
        },
        "description": "This is a test keystore that uses scrypt to secure the secret.",
        "pubkey": VECTOR_PUBKEY,
        "path": "m/12381/60/3141592653/589793238",
        "uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f",
        "version": 4,
    },
    "pbkdf2": {
        "crypto": {
            "kdf": {
                "function": "pbkdf2",
                "params": {"dklen": 32, "c": 262144, "prf": "hmac-sha256", "salt": VECTOR_SALT},
                "message": "",
            },
            "checksum": {
                "function": "sha256",
                "params": {},
                "message": "8a9f5d9912ed7e75ea794bc5a89bca5f193721d30868ade6f73043c6ea6febf1",
            },
            "cipher": {
                "function": "aes-128-ctr",
                "params": {"iv": "264daa3f303d7259501c93d997d84fe6"},
                "message": "cee03fde2af33149775b7223e7845e4fb2c8ae1792e5f99fe9ecf474cc8c16ad",
            },
        },
        "description": "This is a test keystore that uses PBKDF2 to secure the secret.",
        "pubkey": VECTOR_PUBKEY,
        "path": "m/12381/60/0/0",
        "uuid": "64625def-3331-4eea-ab6f-782f3ed16a83",
        "version": 4,
    },
}

SK = 0x2A2A2A2A_12345678_9ABCDEF0_0FEDCBA9_87654321_2A2A2A2A_2A2A2A2A_2A2A2A2A
SECRET = SK.to_bytes(32, "big")
PASSWORD = "correct horse battery staple"  # noqa: S105 - test data


@pytest.fixture(scope="module")
def fast_keystore() -> dict[str, Any]:
    """A cheap keystore (fast PBKDF2) with its pubkey, to mutate."""
    return keystore.encrypt(
        SECRET, PASSWORD, kdf="pbkdf2", pubkey=bls.sk_to_pk(SK), path="m/12381/3600/0/0", fast=True
    )


def test_password_encoding_of_the_vectors() -> None:
    assert keystore.normalize_password(VECTOR_PASSWORD) == VECTOR_ENCODED_PASSWORD


def test_vector_pubkey_is_the_secrets() -> None:
    assert bls.sk_to_pk(int.from_bytes(VECTOR_SECRET, "big")).hex() == VECTOR_PUBKEY


@pytest.mark.parametrize("kdf", sorted(VECTORS))
def test_official_vectors(kdf: str) -> None:
    keystore.validate(VECTORS[kdf])
    assert keystore.decrypt(VECTORS[kdf], VECTOR_PASSWORD) == VECTOR_SECRET


def test_official_vector_wrong_password() -> None:
    with pytest.raises(WrongPassword):
        keystore.decrypt(VECTORS["pbkdf2"], "testpassword")  # without the key emoji


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_round_trip(kdf: keystore.Kdf) -> None:
    pubkey = bls.sk_to_pk(SK)
    ks = keystore.encrypt(
        SECRET, "pässwörd", kdf=kdf, path="m/1/2", description="d", pubkey=pubkey, fast=True
    )
    assert ks["version"] == 4
    assert str(uuid.UUID(ks["uuid"])) == ks["uuid"]
    assert (ks["path"], ks["description"], ks["pubkey"]) == ("m/1/2", "d", pubkey.hex())
    assert ks["crypto"]["kdf"]["function"] == kdf
    assert ks["crypto"]["checksum"]["function"] == "sha256"
    assert ks["crypto"]["cipher"]["function"] == "aes-128-ctr"
    assert keystore.decrypt(ks, "pässwörd") == SECRET
    assert keystore.decrypt(json.loads(json.dumps(ks)), "pässwörd") == SECRET
    # Fresh salt, IV and uuid every time.
    again = keystore.encrypt(SECRET, "pässwörd", kdf=kdf, fast=True)
    assert again["uuid"] != ks["uuid"]
    assert again["crypto"]["kdf"]["params"]["salt"] != ks["crypto"]["kdf"]["params"]["salt"]
    assert again["crypto"]["cipher"]["params"]["iv"] != ks["crypto"]["cipher"]["params"]["iv"]
    assert again["pubkey"] == ""
    assert keystore.decrypt(again, "pässwörd") == SECRET


def test_default_parameters_are_eip_2335s() -> None:
    scrypt = keystore.encrypt(SECRET, PASSWORD)  # ~1 s: the real cost
    params = scrypt["crypto"]["kdf"]["params"]
    assert scrypt["crypto"]["kdf"]["function"] == "scrypt"
    assert {k: params[k] for k in ("dklen", "n", "r", "p")} == {
        "dklen": 32,
        "n": 262144,
        "r": 8,
        "p": 1,
    }
    assert len(bytes.fromhex(params["salt"])) == 32
    pbkdf2 = keystore.encrypt(SECRET, PASSWORD, kdf="pbkdf2")
    params = pbkdf2["crypto"]["kdf"]["params"]
    assert (params["dklen"], params["c"], params["prf"]) == (32, 262144, "hmac-sha256")
    assert keystore.decrypt(pbkdf2, PASSWORD) == SECRET
    fast = keystore.encrypt(SECRET, PASSWORD, fast=True)["crypto"]["kdf"]["params"]
    assert fast["n"] == 2**14


def test_wrong_password(fast_keystore: dict[str, Any]) -> None:
    for wrong in ("", PASSWORD + " ", PASSWORD.upper(), "correct horse battery stapl"):
        with pytest.raises(WrongPassword):
            keystore.decrypt(fast_keystore, wrong)
    assert keystore.decrypt(fast_keystore, PASSWORD) == SECRET


def test_empty_password_is_a_password() -> None:
    ks = keystore.encrypt(SECRET, "", kdf="pbkdf2", fast=True)
    assert keystore.decrypt(ks, "") == SECRET
    assert keystore.decrypt(ks, "\x00\x7f") == SECRET  # only control codes: also empty
    with pytest.raises(WrongPassword):
        keystore.decrypt(ks, " ")


def flip_hex(text: str, index: int = 0) -> str:
    data = bytearray(bytes.fromhex(text))
    data[index] ^= 0x01
    return data.hex()


@pytest.mark.parametrize(
    ("where", "key"),
    [
        (("crypto", "cipher"), "message"),
        (("crypto", "checksum"), "message"),
        (("crypto", "kdf", "params"), "salt"),
    ],
)
def test_tampering_is_a_checksum_failure(
    fast_keystore: dict[str, Any], where: tuple[str, ...], key: str
) -> None:
    ks = copy.deepcopy(fast_keystore)
    node = ks
    for name in where:
        node = node[name]
    node[key] = flip_hex(node[key], 5)
    with pytest.raises(WrongPassword):
        keystore.decrypt(ks, PASSWORD)


def test_tampered_kdf_cost_is_a_checksum_failure(fast_keystore: dict[str, Any]) -> None:
    ks = copy.deepcopy(fast_keystore)
    ks["crypto"]["kdf"]["params"]["c"] += 1
    with pytest.raises(WrongPassword):
        keystore.decrypt(ks, PASSWORD)


def test_tampered_iv_is_caught_by_the_pubkey(fast_keystore: dict[str, Any]) -> None:
    """EIP-2335's checksum does not cover the IV: a changed IV decrypts to another
    secret. The stored pubkey catches it; without one, nothing can."""
    ks = copy.deepcopy(fast_keystore)
    ks["crypto"]["cipher"]["params"]["iv"] = flip_hex(ks["crypto"]["cipher"]["params"]["iv"], 15)
    with pytest.raises(KeystoreError, match="pubkey") as info:
        keystore.decrypt(ks, PASSWORD)
    assert not isinstance(info.value, WrongPassword)
    ks["pubkey"] = ""
    assert keystore.decrypt(ks, PASSWORD) != SECRET


def test_pubkey_must_match_the_secret(fast_keystore: dict[str, Any]) -> None:
    other_pk = bls.sk_to_pk(SK + 1)
    with pytest.raises(KeystoreError, match="pubkey"):
        keystore.encrypt(SECRET, PASSWORD, pubkey=other_pk, fast=True)
    with pytest.raises(KeystoreError, match="not a BLS secret key"):
        keystore.encrypt(bytes(32), PASSWORD, pubkey=other_pk, fast=True)
    with pytest.raises(KeystoreError, match="not a BLS secret key"):
        keystore.encrypt(b"\xff" * 32, PASSWORD, pubkey=other_pk, fast=True)  # >= r
    ks = copy.deepcopy(fast_keystore)
    ks["pubkey"] = other_pk.hex()
    with pytest.raises(KeystoreError, match="pubkey"):
        keystore.decrypt(ks, PASSWORD)


def test_bad_arguments_to_encrypt() -> None:
    bad: Any
    for bad in (b"", bytes(31), bytes(33), bytearray(32), "00" * 32):
        with pytest.raises(KeystoreError):
            keystore.encrypt(bad, PASSWORD, fast=True)
    with pytest.raises(KeystoreError):
        keystore.encrypt(SECRET, PASSWORD, kdf="argon2", fast=True)  # type: ignore[arg-type]
    with pytest.raises(KeystoreError):
        keystore.encrypt(SECRET, b"bytes", fast=True)  # type: ignore[arg-type]
    with pytest.raises(KeystoreError):
        keystore.encrypt(SECRET, PASSWORD, path=None, fast=True)  # type: ignore[arg-type]
    with pytest.raises(KeystoreError):
        keystore.encrypt(SECRET, PASSWORD, pubkey="ab", fast=True)  # type: ignore[arg-type]


# (path to the field, new value); DELETE removes it.
DELETE = object()
MALFORMED: list[tuple[tuple[str, ...], Any]] = [
    (("version",), DELETE),
    (("version",), 3),
    (("version",), "4"),
    (("version",), True),
    (("version",), 4.0),
    (("uuid",), DELETE),
    (("uuid",), 123),
    (("uuid",), "not-a-uuid"),
    (("uuid",), "{1d85ae20-35c5-4611-98e8-aa14a633906f}"),
    (("path",), DELETE),
    (("path",), None),
    (("description",), 5),
    (("pubkey",), "zz" * 48),
    (("pubkey",), "00" * 47),
    (("pubkey",), "0x" + "00" * 47),
    (("pubkey",), None),
    (("crypto",), DELETE),
    (("crypto",), []),
    (("crypto",), "crypto"),
    (("crypto", "kdf"), DELETE),
    (("crypto", "kdf"), "pbkdf2"),
    (("crypto", "kdf", "function"), "argon2id"),
    (("crypto", "kdf", "function"), None),
    (("crypto", "kdf", "params"), DELETE),
    (("crypto", "kdf", "params"), []),
    (("crypto", "kdf", "message"), DELETE),
    (("crypto", "kdf", "message"), 0),
    (("crypto", "kdf", "params", "c"), DELETE),
    (("crypto", "kdf", "params", "c"), 0),
    (("crypto", "kdf", "params", "c"), 2**30),
    (("crypto", "kdf", "params", "c"), "16384"),
    (("crypto", "kdf", "params", "c"), 16384.0),
    (("crypto", "kdf", "params", "prf"), "hmac-sha512"),
    (("crypto", "kdf", "params", "prf"), DELETE),
    (("crypto", "kdf", "params", "dklen"), 16),
    (("crypto", "kdf", "params", "dklen"), DELETE),
    (("crypto", "kdf", "params", "salt"), ""),
    (("crypto", "kdf", "params", "salt"), "abc"),
    (("crypto", "kdf", "params", "salt"), "0xabcd"),
    (("crypto", "kdf", "params", "salt"), "ab cd"),
    (("crypto", "kdf", "params", "salt"), "xyzw"),
    (("crypto", "kdf", "params", "salt"), DELETE),
    (("crypto", "checksum"), DELETE),
    (("crypto", "checksum", "function"), "keccak256"),
    (("crypto", "checksum", "params"), None),
    (("crypto", "checksum", "message"), "00" * 31),
    (("crypto", "checksum", "message"), DELETE),
    (("crypto", "cipher"), DELETE),
    (("crypto", "cipher", "function"), "aes-128-gcm"),
    (("crypto", "cipher", "params"), {}),
    (("crypto", "cipher", "params", "iv"), "00" * 15),
    (("crypto", "cipher", "params", "iv"), 0),
    (("crypto", "cipher", "message"), "00" * 31),
    (("crypto", "cipher", "message"), ""),
    (("crypto", "cipher", "message"), None),
]
SCRYPT_MALFORMED: list[tuple[str, Any]] = [
    ("n", 1),
    ("n", 1000),  # not a power of 2
    ("n", 2**40),  # ~128 TiB
    ("n", -16),
    ("r", 0),
    ("r", 2**20),  # too much memory
    ("p", 0),
    ("p", "1"),
    ("dklen", 64),
    ("salt", None),
]


def mutate(ks: dict[str, Any], where: tuple[str, ...], value: Any) -> dict[str, Any]:
    ks = copy.deepcopy(ks)
    node = ks
    for name in where[:-1]:
        node = node[name]
    if value is DELETE:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return ks


def assert_malformed(ks: object) -> None:
    with pytest.raises(KeystoreError) as info:
        keystore.validate(ks)
    assert not isinstance(info.value, WrongPassword)
    with pytest.raises(KeystoreError) as info:
        keystore.decrypt(ks, PASSWORD)
    assert not isinstance(info.value, WrongPassword)


@pytest.mark.parametrize(("where", "value"), MALFORMED, ids=lambda x: repr(x)[:40])
def test_malformed_fields(
    fast_keystore: dict[str, Any], where: tuple[str, ...], value: Any
) -> None:
    assert_malformed(mutate(fast_keystore, where, value))


@pytest.mark.parametrize(("name", "value"), SCRYPT_MALFORMED, ids=repr)
def test_malformed_scrypt_params(name: str, value: Any) -> None:
    assert_malformed(mutate(VECTORS["scrypt"], ("crypto", "kdf", "params", name), value))


@pytest.mark.parametrize("ks", [None, [], "keystore", 4, {"version": 4}, {1: 2}], ids=repr)
def test_not_a_keystore(ks: object) -> None:
    assert_malformed(ks)


def test_optional_fields(fast_keystore: dict[str, Any]) -> None:
    ks = mutate(mutate(fast_keystore, ("description",), DELETE), ("pubkey",), DELETE)
    assert keystore.decrypt(ks, PASSWORD) == SECRET
    upper = mutate(fast_keystore, ("uuid",), fast_keystore["uuid"].upper())
    assert keystore.decrypt(upper, PASSWORD) == SECRET


def test_password_normalization() -> None:
    norm = keystore.normalize_password
    assert norm("caf\u00e9") == norm("cafe\u0301") == b"cafe\xcc\x81"  # NFKD
    assert norm("\uff50\uff41\uff53\uff53") == b"pass"  # fullwidth compatibility forms
    assert norm("pa\x00ss\x1f\x7fwo\x80rd\x9f") == b"password"  # C0, Delete, C1 stripped
    assert norm("pass word") == b"pass word"  # space is kept
    assert norm("\xa0") == b" "  # NBSP decomposes to a space; 0xA0 is no C1 code
    ks = keystore.encrypt(SECRET, "café\tpass", kdf="pbkdf2", fast=True)
    assert keystore.decrypt(ks, "cafe\u0301pass") == SECRET
    assert keystore.decrypt(ks, "\x7fcafépass\n") == SECRET
    with pytest.raises(KeystoreError):
        norm(b"password")  # type: ignore[arg-type]
    with pytest.raises(KeystoreError):
        keystore.decrypt(ks, None)  # type: ignore[arg-type]


# -- files -----------------------------------------------------------------------


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_and_load(tmp_path: Path, fast_keystore: dict[str, Any]) -> None:
    path = tmp_path / "signer.json"
    keystore.save(path, fast_keystore)
    assert keystore.load(path) == fast_keystore
    assert keystore.load(str(path)) == fast_keystore
    assert keystore.decrypt(keystore.load(path), PASSWORD) == SECRET
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signer.json"]  # no temp left
    if sys.platform != "win32":
        assert file_mode(path) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_save_is_0600_whatever_the_umask_and_replaces(
    tmp_path: Path, fast_keystore: dict[str, Any]
) -> None:
    path = tmp_path / "signer.json"
    path.write_text("old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        keystore.save(path, fast_keystore)
    finally:
        os.umask(old_umask)
    assert file_mode(path) == 0o600
    assert keystore.load(path) == fast_keystore


def test_save_refuses_a_malformed_keystore(tmp_path: Path, fast_keystore: dict[str, Any]) -> None:
    path = tmp_path / "signer.json"
    with pytest.raises(KeystoreError):
        keystore.save(path, mutate(fast_keystore, ("version",), 3))
    assert list(tmp_path.iterdir()) == []


def test_save_leaves_no_temp_file_on_failure(tmp_path: Path, fast_keystore: dict[str, Any]) -> None:
    target = tmp_path / "a-folder"
    target.mkdir()
    with pytest.raises(OSError, match="a-folder"):
        keystore.save(target, fast_keystore)  # cannot replace a folder with a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1, 2]", b'"keystore"', b"\xff\xfe", b"[" * 100_000, b" " * (1 << 21)],
    ids=["empty", "text", "list", "string", "not-utf8", "deep", "huge"],
)
def test_load_refuses_what_is_no_keystore(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(KeystoreError):
        keystore.load(path)


def test_load_missing_file_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        keystore.load(tmp_path / "missing.json")


# -- non-key secrets (encrypt_data / decrypt_data) ---------------------------


@pytest.mark.parametrize("size", [1, 20, 32, keystore.MAX_DATA_LEN])
def test_data_round_trip(size: int) -> None:
    data = bytes(range(256))[:size]
    ks = keystore.encrypt_data(data, PASSWORD, kdf="pbkdf2", description="token", fast=True)
    assert ks["pubkey"] == ""
    assert ks["path"] == ""
    keystore.validate(ks, data=True)
    assert keystore.decrypt_data(ks, PASSWORD) == data
    assert keystore.decrypt_data(json.loads(json.dumps(ks)), PASSWORD) == data
    with pytest.raises(WrongPassword):
        keystore.decrypt_data(ks, PASSWORD + "!")


def test_data_keystore_is_no_key_keystore() -> None:
    """Only the data functions accept a secret that is not 32 bytes."""
    ks = keystore.encrypt_data(b"a token", PASSWORD, kdf="pbkdf2", fast=True)
    with pytest.raises(KeystoreError, match="32 bytes"):
        keystore.validate(ks)
    with pytest.raises(KeystoreError, match="32 bytes"):
        keystore.decrypt(ks, PASSWORD)


def test_data_bad_arguments() -> None:
    bad: Any
    for bad in (b"", bytes(keystore.MAX_DATA_LEN + 1), bytearray(5), "token"):
        with pytest.raises(KeystoreError):
            keystore.encrypt_data(bad, PASSWORD, fast=True)
    with pytest.raises(KeystoreError):
        keystore.encrypt_data(b"x", PASSWORD, kdf="argon2", fast=True)  # type: ignore[arg-type]
    with pytest.raises(KeystoreError):
        keystore.encrypt_data(b"x", PASSWORD, description=None, fast=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("message", ["", "00" * (keystore.MAX_DATA_LEN + 1)])
def test_data_keystore_length_limits(message: str) -> None:
    ks = keystore.encrypt_data(b"x", PASSWORD, kdf="pbkdf2", fast=True)
    ks["crypto"]["cipher"]["message"] = message
    with pytest.raises(KeystoreError, match="1 to"):
        keystore.validate(ks, data=True)
    with pytest.raises(KeystoreError):
        keystore.decrypt_data(ks, PASSWORD)


def test_data_with_a_pubkey_must_still_be_a_key(fast_keystore: dict[str, Any]) -> None:
    """With a pubkey the secret is a key: data=True does not relax its length."""
    ks = mutate(fast_keystore, ("crypto", "cipher", "message"), "00" * 31)
    with pytest.raises(KeystoreError, match="32 bytes"):
        keystore.validate(ks, data=True)
    assert keystore.decrypt_data(fast_keystore, PASSWORD) == SECRET


def test_save_data_keystore(tmp_path: Path) -> None:
    ks = keystore.encrypt_data(b"a token", PASSWORD, kdf="pbkdf2", fast=True)
    target = tmp_path / "token.json"
    with pytest.raises(KeystoreError):
        keystore.save(target, ks)
    assert not target.exists()
    keystore.save(target, ks, data=True)
    assert keystore.decrypt_data(json.loads(target.read_text()), PASSWORD) == b"a token"


def test_wrap_under_a_random_key() -> None:
    key = bytes(range(32))
    secret = bytes(range(1, 33))
    wrapped = keystore.wrap(secret, key, description="d")
    keystore.validate(wrapped, data=True)
    assert keystore.is_wrapped(wrapped)
    assert wrapped["crypto"]["kdf"]["function"] == "pbkdf2"
    assert wrapped["crypto"]["kdf"]["params"]["c"] == keystore.WRAP_ROUNDS
    assert keystore.unwrap(wrapped, key) == secret
    assert keystore.decrypt_data(wrapped, key.hex()) == secret  # EIP-2335 tools open it
    with pytest.raises(keystore.WrongPassword):
        keystore.unwrap(wrapped, bytes(32))
    by_password = keystore.encrypt_data(secret, "pw", fast=True)
    assert not keystore.is_wrapped(by_password)
    assert not keystore.is_wrapped({"not": "a keystore"})
    with pytest.raises(keystore.KeystoreError, match="not a keystore wrapped"):
        keystore.unwrap(by_password, key)
    with pytest.raises(keystore.KeystoreError, match="wrapping key"):
        keystore.wrap(secret, b"short")
    with pytest.raises(keystore.KeystoreError, match="data must be"):
        keystore.wrap(b"", key)
