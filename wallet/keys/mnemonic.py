"""BIP-39 backup phrases and EIP-2333 key derivation for signer keys.

A new signer key starts as a 24-word BIP-39 mnemonic (trezor's ``mnemonic``
package and its English wordlist), which is the user's backup. The mnemonic
becomes a 64-byte seed (BIP-39, empty passphrase); EIP-2333 turns the seed
into a tree of BLS12-381 secret keys, and the signer key is the one on the
EIP-2334 signing path ``m/12381/3600/{index}/0/0``, as Ethereum validators do.

EIP-2333 in brief: ``HKDF_mod_r`` is the IETF BLS KeyGen, so it is
:func:`node.crypto.bls.keygen`; a child key comes from its parent through a
Lamport key pair derived with HKDF-SHA256, whose compressed public key is the
input keying material of the child. Everything here is pure and deterministic.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import unicodedata
from typing import Final

from mnemonic import Mnemonic

from node.crypto import bls

WORDS: Final = 24  # words in a new mnemonic (256 bits of entropy)
VALID_LENGTHS: Final = (12, 15, 18, 21, 24)
PURPOSE: Final = 12381  # EIP-2334
COIN_TYPE: Final = 3600  # EIP-2334: Ethereum's BLS keys
MAX_INDEX: Final = 2**32 - 1

_LAMPORT_CHUNKS: Final = 255
_HASH_LEN: Final = 32
_bip39 = Mnemonic("english")
WORDLIST: Final = tuple(_bip39.wordlist)  # the 2,048 English words, in order
_WORDSET: Final = frozenset(WORDLIST)


class MnemonicError(ValueError):
    """A phrase that is no valid BIP-39 mnemonic (wrong length, unknown word, checksum)."""


# -- BIP-39 ---------------------------------------------------------------


def generate(words: int = WORDS) -> str:
    """A new random mnemonic of ``words`` words (24 unless told), from the OS's CSPRNG."""
    if words not in VALID_LENGTHS:
        raise MnemonicError(f"a mnemonic has 12, 15, 18, 21 or 24 words, not {words}")
    return _bip39.generate(strength=words * 32 // 3)


def normalize(phrase: str) -> str:
    """The phrase as BIP-39 wants it: NFKD, lower case, single spaces, no edges."""
    if not isinstance(phrase, str):
        raise MnemonicError("the mnemonic must be text")
    return " ".join(unicodedata.normalize("NFKD", phrase).lower().split())


def validate(phrase: str) -> str:
    """The normalized phrase, or MnemonicError saying what is wrong with it."""
    words = normalize(phrase).split()
    if len(words) not in VALID_LENGTHS:
        raise MnemonicError(f"a mnemonic has 12, 15, 18, 21 or 24 words; this one has {len(words)}")
    for position, word in enumerate(words, start=1):
        if word not in _WORDSET:
            raise MnemonicError(f"word {position} is not in the BIP-39 English word list")
    text = " ".join(words)
    if not _bip39.check(text):
        raise MnemonicError("the checksum does not match: a word is wrong or out of place")
    return text


def is_valid(phrase: str) -> bool:
    """True when ``phrase`` is a valid mnemonic (after normalizing)."""
    try:
        validate(phrase)
    except MnemonicError:
        return False
    return True


def to_seed(phrase: str) -> bytes:
    """The 64-byte BIP-39 seed of a valid mnemonic (empty passphrase)."""
    return Mnemonic.to_seed(validate(phrase), passphrase="")


def check_positions(rng: random.Random, count: int = 3, words: int = WORDS) -> list[int]:
    """``count`` distinct word indexes (0-based, ascending) to ask back during onboarding.

    Show them to the user as index + 1. Deterministic for a given ``rng``: pass
    ``random.SystemRandom()`` in the app and a seeded ``random.Random`` in tests.
    """
    if not 1 <= count <= words:
        raise ValueError(f"count must be in [1, {words}]")
    return sorted(rng.sample(range(words), count))


# -- EIP-2333 -------------------------------------------------------------


def hkdf_mod_r(ikm: bytes, key_info: bytes = b"") -> int:
    """EIP-2333 ``HKDF_mod_r``: a secret key in ``[1, r)`` from at least 32 bytes of IKM.

    It is the same function as the IETF BLS KeyGen, which the node already has.
    """
    return bls.keygen(ikm, key_info)


def _hkdf(salt: bytes, ikm: bytes, length: int) -> bytes:
    prk = hmac.digest(salt, ikm, "sha256")
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.digest(prk, block + bytes([counter]), "sha256")
        okm += block
        counter += 1
    return okm[:length]


def _ikm_to_lamport_sk(ikm: bytes, salt: bytes) -> list[bytes]:
    okm = _hkdf(salt, ikm, _HASH_LEN * _LAMPORT_CHUNKS)
    return [okm[i * _HASH_LEN : (i + 1) * _HASH_LEN] for i in range(_LAMPORT_CHUNKS)]


def parent_sk_to_lamport_pk(parent_sk: int, index: int) -> bytes:
    """EIP-2333 ``parent_SK_to_lamport_PK``: the 32-byte compressed Lamport public key."""
    _check_sk(parent_sk)
    _check_index(index)
    salt = index.to_bytes(4, "big")
    ikm = parent_sk.to_bytes(32, "big")
    not_ikm = bytes(b ^ 0xFF for b in ikm)
    chunks = _ikm_to_lamport_sk(ikm, salt) + _ikm_to_lamport_sk(not_ikm, salt)
    lamport_pk = b"".join(hashlib.sha256(chunk).digest() for chunk in chunks)
    return hashlib.sha256(lamport_pk).digest()


def derive_master_sk(seed: bytes) -> int:
    """EIP-2333 ``derive_master_SK``: the root of the tree, from a seed of 32 bytes or more."""
    if not isinstance(seed, bytes) or len(seed) < 32:
        raise ValueError("the seed must be at least 32 bytes")
    return hkdf_mod_r(seed)


def derive_child_sk(parent_sk: int, index: int) -> int:
    """EIP-2333 ``derive_child_SK``: the child at ``index`` (0 .. 2**32-1) of a parent key."""
    return hkdf_mod_r(parent_sk_to_lamport_pk(parent_sk, index))


def signing_path(index: int) -> str:
    """The EIP-2334 signing key path of signer key ``index``."""
    _check_index(index)
    return f"m/{PURPOSE}/{COIN_TYPE}/{index}/0/0"


def path_indices(path: str) -> list[int]:
    """The child indices of an EIP-2334 path like ``m/12381/3600/0/0/0``."""
    parts = path.split("/")
    if not parts or parts[0] != "m":
        raise ValueError(f"a key path starts with 'm': {path!r}")
    indices: list[int] = []
    for part in parts[1:]:
        if not part.isdigit() or (len(part) > 1 and part[0] == "0"):
            raise ValueError(f"bad path component {part!r} in {path!r}")
        value = int(part)
        _check_index(value)
        indices.append(value)
    return indices


def derive_path(seed: bytes, path: str) -> int:
    """The secret key at ``path`` under the master key of ``seed``."""
    sk = derive_master_sk(seed)
    for index in path_indices(path):
        sk = derive_child_sk(sk, index)
    return sk


def signer_key(phrase: str, index: int = 0) -> tuple[int, str]:
    """The signer secret key ``index`` of a mnemonic, and its path."""
    path = signing_path(index)
    return derive_path(to_seed(phrase), path), path


def _check_sk(sk: int) -> None:
    if not bls.secret_key_valid(sk):
        raise ValueError("a parent key must be an int in [1, r)")


def _check_index(index: int) -> None:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
        raise ValueError(f"a key index must be an int in [0, {MAX_INDEX}]")
