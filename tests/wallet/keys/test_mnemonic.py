"""BIP-39 mnemonics and EIP-2333/2334 derivation (wallet.keys.mnemonic): the EIP's four
official test vectors, checksums, normalization, paths, and the onboarding word check."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mnemonic import Mnemonic

from node.crypto import bls
from wallet.keys import mnemonic
from wallet.keys.mnemonic import MnemonicError

# EIP-2333 "Test Cases": seed, master_SK, child_index, child_SK (keys in decimal).
EIP_2333_VECTORS = [
    (
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e5349553"
        "1f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04",
        6083874454709270928345386274498605044986640685124978867557563392430687146096,
        0,
        20397789859736650942317412262472558107875392172444076792671091975210932703118,
    ),
    (
        "3141592653589793238462643383279502884197169399375105820974944592",
        29757020647961307431480504535336562678282505419141012933316116377660817309383,
        3141592653,
        25457201688850691947727629385191704516744796114925897962676248250929345014287,
    ),
    (
        "0099FF991111002299DD7744EE3355BBDD8844115566CC55663355668888CC00",
        27580842291869792442942448775674722299803720648445448686099262467207037398656,
        4294967295,
        29358610794459428860402234341874281240803786294062035874021252734817515685787,
    ),
    (
        "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
        19022158461524446591288038168518313374041767046816487870552872741050760015818,
        42,
        31372231650479070279774297061823572166496564838472787488249775572789064611981,
    ),
]
# EIP-2333 test case 0's seed is BIP-39's: this mnemonic with the passphrase "TREZOR".
CASE_0_MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
# A valid 24-word mnemonic (BIP-39's all-zero-entropy vector).
MNEMONIC_24 = " ".join(["abandon"] * 23 + ["art"])


@pytest.mark.parametrize(("seed", "master", "index", "child"), EIP_2333_VECTORS)
def test_eip_2333_vectors(seed: str, master: int, index: int, child: int) -> None:
    master_sk = mnemonic.derive_master_sk(bytes.fromhex(seed))
    assert master_sk == master
    assert mnemonic.derive_child_sk(master_sk, index) == child


def test_eip_2333_case_0_from_its_mnemonic() -> None:
    seed = Mnemonic.to_seed(CASE_0_MNEMONIC, passphrase="TREZOR")  # noqa: S106 - the BIP-39 vector's
    assert seed.hex() == EIP_2333_VECTORS[0][0]


def test_hkdf_mod_r_is_keygen() -> None:
    ikm = bytes(range(32))
    assert mnemonic.hkdf_mod_r(ikm) == bls.keygen(ikm)
    assert bls.secret_key_valid(mnemonic.hkdf_mod_r(ikm))


def test_lamport_pk_depends_on_parent_and_index() -> None:
    pk = mnemonic.parent_sk_to_lamport_pk(12345, 0)
    assert len(pk) == 32
    assert pk != mnemonic.parent_sk_to_lamport_pk(12345, 1)
    assert pk != mnemonic.parent_sk_to_lamport_pk(12346, 0)
    assert pk == mnemonic.parent_sk_to_lamport_pk(12345, 0)


@pytest.mark.parametrize("index", [-1, 2**32, True, 1.0])
def test_bad_child_index(index: object) -> None:
    with pytest.raises(ValueError, match="index"):
        mnemonic.derive_child_sk(12345, index)  # type: ignore[arg-type]


@pytest.mark.parametrize("parent", [0, bls.CURVE_ORDER, -1])
def test_bad_parent_key(parent: int) -> None:
    with pytest.raises(ValueError, match="parent"):
        mnemonic.derive_child_sk(parent, 0)


def test_short_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mnemonic.derive_master_sk(bytes(31))


def test_signing_path_is_eip_2334() -> None:
    assert mnemonic.signing_path(0) == "m/12381/3600/0/0/0"
    assert mnemonic.signing_path(7) == "m/12381/3600/7/0/0"
    assert mnemonic.path_indices("m/12381/3600/7/0/0") == [12381, 3600, 7, 0, 0]
    for bad in ("12381/3600", "m/-1", "m/01", "m/x", "m/4294967296", "m//0"):
        with pytest.raises(ValueError, match=r"path|index"):
            mnemonic.path_indices(bad)


def test_signer_key_follows_the_path() -> None:
    seed = Mnemonic.to_seed(MNEMONIC_24, passphrase="")
    sk = mnemonic.derive_master_sk(seed)
    for index in (12381, 3600, 2, 0, 0):
        sk = mnemonic.derive_child_sk(sk, index)
    assert mnemonic.signer_key(MNEMONIC_24, 2) == (sk, "m/12381/3600/2/0/0")
    assert mnemonic.signer_key(MNEMONIC_24, 0)[0] != sk


def test_generate_gives_24_valid_words() -> None:
    phrase = mnemonic.generate()
    assert len(phrase.split()) == mnemonic.WORDS == 24
    assert mnemonic.validate(phrase) == phrase
    assert mnemonic.generate() != phrase
    assert len(mnemonic.generate(12).split()) == 12
    with pytest.raises(MnemonicError):
        mnemonic.generate(13)


def test_checksum_rejects_a_changed_word() -> None:
    assert mnemonic.is_valid(MNEMONIC_24)
    words = MNEMONIC_24.split()
    for position, replacement in ((0, "ability"), (11, "zoo"), (23, "zoo")):
        changed = [*words]
        changed[position] = replacement
        with pytest.raises(MnemonicError, match="checksum"):
            mnemonic.validate(" ".join(changed))


def test_swapped_words_fail_the_checksum() -> None:
    words = mnemonic.validate(mnemonic.generate()).split()
    rng = random.Random(7)
    rejected = 0
    for _ in range(20):
        i, j = rng.sample(range(24), 2)
        if words[i] == words[j]:
            continue
        swapped = [*words]
        swapped[i], swapped[j] = swapped[j], swapped[i]
        rejected += not mnemonic.is_valid(" ".join(swapped))
    assert rejected >= 15  # each swap slips through the 8-bit checksum with p = 1/256


def test_errors_say_what_is_wrong_without_echoing_words() -> None:
    with pytest.raises(MnemonicError, match="this one has 3"):
        mnemonic.validate("abandon abandon about")
    words = MNEMONIC_24.split()
    words[4] = "notaword"
    with pytest.raises(MnemonicError, match="word 5 is not") as info:
        mnemonic.validate(" ".join(words))
    assert "notaword" not in str(info.value)
    with pytest.raises(MnemonicError):
        mnemonic.validate(None)  # type: ignore[arg-type]


@given(
    st.lists(st.sampled_from([" ", "  ", "\t", "\n"]), min_size=25, max_size=25),
    st.lists(st.booleans(), min_size=24, max_size=24),
)
def test_input_is_normalized(gaps: list[str], upper: list[bool]) -> None:
    words = [w.upper() if up else w for w, up in zip(MNEMONIC_24.split(), upper, strict=True)]
    messy = gaps[0] + "".join(w + g for w, g in zip(words, gaps[1:], strict=True))
    assert mnemonic.validate(messy) == MNEMONIC_24
    assert mnemonic.to_seed(messy) == Mnemonic.to_seed(MNEMONIC_24)


def test_check_positions_are_deterministic_and_distinct() -> None:
    first = mnemonic.check_positions(random.Random(42))
    assert first == mnemonic.check_positions(random.Random(42))
    assert first == sorted(set(first))
    assert len(first) == 3
    assert all(0 <= p < 24 for p in first)
    assert mnemonic.check_positions(random.Random(1), count=24) == list(range(24))
    seen = {tuple(mnemonic.check_positions(random.Random(seed))) for seed in range(20)}
    assert len(seen) > 1
    for bad in (0, 25):
        with pytest.raises(ValueError, match="count"):
            mnemonic.check_positions(random.Random(1), count=bad)
