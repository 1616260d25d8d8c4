"""BLS12-381 (node.crypto.bls): every public vector through both backends, and the rules
the vectors do not cover: secret-key range, the infinity key, empty key sets, keys that
cancel, rogue keys, proof-of-possession domain separation, malformed input.

The vectors (Ethereum consensus-spec BLS tests and the RFC 9380 hash-to-G2 ones) are a
copy of ``shared/vectors/bls`` in ``tests/vectors/bls``, so a fresh clone has them.
The py_ecc backend is slow (~0.5 s a verify): its part of this file takes ~30-40 s.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc.bls.ciphersuites import G2ProofOfPossession
from py_ecc.bls.g2_primitives import G2_to_signature
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2

from node.crypto import bls
from node.crypto.bls import CURVE_ORDER, POP_DST, SIG_DST, Backend, BLSError
from tests.conftest import run_python

TESTS = Path(__file__).resolve().parents[2]
VECTORS = TESTS / "vectors" / "bls"
SHARED_VECTORS = TESTS.parent.parent / "shared" / "vectors" / "bls"  # beside the repo
FAMILIES = {
    "aggregate",
    "aggregate_verify",
    "batch_verify",
    "deserialization_G1",
    "deserialization_G2",
    "fast_aggregate_verify",
    "hash_to_G2",
    "sign",
    "verify",
}
QUUX_DST = b"QUUX-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_"  # RFC 9380 J.10.1
INF_G1 = b"\xc0" + bytes(47)
INF_G2 = b"\xc0" + bytes(95)
MSG = b"\x12" * 32


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def cases(family: str) -> list[Any]:
    """Every ``{input, output}`` case of a vector family, named by its file."""
    files = sorted((VECTORS / family).glob("*.json"))
    assert files, f"no vectors in {VECTORS / family}"
    return [pytest.param(json.loads(f.read_text()), id=f.stem) for f in files]


@pytest.fixture(params=bls.BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    try:
        return bls.get_backend(request.param)
    except BLSError as exc:
        pytest.fail(f"both backends are installed by the project's set-up: {exc}")


def both_backends() -> tuple[Backend, Backend]:
    try:
        return bls.get_backend("blst"), bls.get_backend("py_ecc")
    except BLSError as exc:
        pytest.fail(f"both backends are installed by the project's set-up: {exc}")


def blst_backend() -> Backend:
    try:
        return bls.get_backend("blst")
    except BLSError as exc:
        pytest.fail(f"both backends are installed by the project's set-up: {exc}")


# -- the vectors -------------------------------------------------------------


def test_every_vector_family_is_tested() -> None:
    assert {d.name for d in VECTORS.iterdir() if d.is_dir()} == FAMILIES


# sha256 over (relative path, bytes) of every vector file, as copied from the
# public set in ../shared/vectors/bls: checks the copy where shared/ is absent.
VECTORS_DIGEST = "0c7c961fb8074b8f4da39c645f33b702099148faaba99dfd4b2e9d12840dc6cf"


def test_vector_copy_is_the_public_set() -> None:
    digest = hashlib.sha256()
    for path in sorted(VECTORS.rglob("*.json")):
        digest.update(path.relative_to(VECTORS).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    assert digest.hexdigest() == VECTORS_DIGEST
    if not SHARED_VECTORS.is_dir():
        return  # a checkout without the shared folder: the digest above is the check
    for family in FAMILIES:
        ours, theirs = VECTORS / family, SHARED_VECTORS / family
        names = sorted(p.name for p in theirs.iterdir())
        assert sorted(p.name for p in ours.iterdir()) == names, family
        _, mismatch, errors = filecmp.cmpfiles(ours, theirs, names, shallow=False)
        assert not mismatch, (family, mismatch)
        assert not errors, (family, errors)


@pytest.mark.parametrize("case", cases("sign"))
def test_sign_vectors(backend: Backend, case: dict[str, Any]) -> None:
    sk = int(case["input"]["privkey"], 16)
    msg = unhex(case["input"]["message"])
    if case["output"] is None:
        with pytest.raises(BLSError):
            backend.sign(sk, msg)
    else:
        assert backend.sign(sk, msg) == unhex(case["output"])


@pytest.mark.parametrize("case", cases("verify"))
def test_verify_vectors(backend: Backend, case: dict[str, Any]) -> None:
    inp = case["input"]
    result = backend.verify(unhex(inp["pubkey"]), unhex(inp["message"]), unhex(inp["signature"]))
    assert result is case["output"]


@pytest.mark.parametrize("case", cases("aggregate"))
def test_aggregate_vectors(backend: Backend, case: dict[str, Any]) -> None:
    sigs = [unhex(s) for s in case["input"]]
    if case["output"] is None:
        with pytest.raises(BLSError):
            backend.aggregate(sigs)
    else:
        assert backend.aggregate(sigs) == unhex(case["output"])


@pytest.mark.parametrize("case", cases("fast_aggregate_verify"))
def test_fast_aggregate_verify_vectors(backend: Backend, case: dict[str, Any]) -> None:
    inp = case["input"]
    pks = [unhex(pk) for pk in inp["pubkeys"]]
    msg, sig = unhex(inp["message"]), unhex(inp["signature"])
    assert backend.fast_aggregate_verify(pks, msg, sig) is case["output"]
    # The hot path, over loaded keys, agrees wherever every key loads.
    if all(backend.key_validate(pk) for pk in pks):
        keys = [backend.load_public_key(pk) for pk in pks]
        assert backend.fast_aggregate_verify_keys(keys, msg, sig) is case["output"]
    else:
        assert case["output"] is False


@pytest.mark.parametrize("case", cases("aggregate_verify"))
def test_aggregate_verify_vectors(backend: Backend, case: dict[str, Any]) -> None:
    inp = case["input"]
    pks = [unhex(pk) for pk in inp["pubkeys"]]
    msgs = [unhex(m) for m in inp["messages"]]
    assert backend.aggregate_verify(pks, msgs, unhex(inp["signature"])) is case["output"]


@pytest.mark.parametrize("case", cases("batch_verify"))
def test_batch_verify_vectors(backend: Backend, case: dict[str, Any]) -> None:
    """Batch verification is a shortcut for "every (key, message, signature) verifies";
    we have no batch function, so the vectors check exactly that, pair by pair."""
    inp = case["input"]
    triples = zip(inp["pubkeys"], inp["messages"], inp["signatures"], strict=True)
    result = all(backend.verify(unhex(pk), unhex(m), unhex(s)) for pk, m, s in triples)
    assert result is case["output"]


@pytest.mark.parametrize("case", cases("deserialization_G1"))
def test_deserialization_g1_vectors(backend: Backend, case: dict[str, Any]) -> None:
    """``output`` says whether the bytes decode to a G1 subgroup point. The point at
    infinity decodes, but KeyValidate still refuses it as a public key."""
    data = unhex(case["input"]["pubkey"])
    if case["output"]:
        backend.decode_g1(data)
    else:
        with pytest.raises(BLSError):
            backend.decode_g1(data)
    assert backend.key_validate(data) is (case["output"] and data != INF_G1)


def test_infinity_deserializes_but_is_no_public_key(backend: Backend) -> None:
    assert backend.g1_is_infinity(backend.decode_g1(INF_G1))
    assert backend.key_validate(INF_G1) is False
    with pytest.raises(BLSError, match="infinity"):
        backend.load_public_key(INF_G1)


@pytest.mark.parametrize("case", cases("deserialization_G2"))
def test_deserialization_g2_vectors(backend: Backend, case: dict[str, Any]) -> None:
    data = unhex(case["input"]["signature"])
    assert backend.signature_valid(data) is case["output"]
    if case["output"]:
        assert backend.encode_g2(backend.decode_g2(data)) == data
    else:
        with pytest.raises(BLSError):
            backend.decode_g2(data)


@pytest.mark.parametrize("case", cases("hash_to_G2"))
def test_hash_to_g2_vectors(backend: Backend, case: dict[str, Any]) -> None:
    """RFC 9380's BLS12381G2_XMD:SHA-256_SSWU_RO_ vectors. The expected affine point is
    compressed by py_ecc (which checks that it is on the curve); a compressed point
    fixes x and the sign of y, so equal encodings are equal points."""
    out = case["output"]
    x = FQ2([int(v, 16) for v in out["x"].split(",")])
    y = FQ2([int(v, 16) for v in out["y"].split(",")])
    expected = G2_to_signature((x, y, FQ2.one()))
    point = backend.hash_to_g2(case["input"]["msg"].encode(), QUUX_DST)
    assert backend.encode_g2(point) == expected


# -- both backends, byte for byte --------------------------------------------

secret_keys = st.integers(min_value=1, max_value=CURVE_ORDER - 1)


@settings(max_examples=5, deadline=None)
@given(sks=st.lists(secret_keys, min_size=1, max_size=3, unique=True), msg=st.binary(max_size=64))
def test_backends_agree_byte_for_byte(sks: list[int], msg: bytes) -> None:
    native, ref = both_backends()
    pks = [native.sk_to_pk(sk) for sk in sks]
    sigs = [native.sign(sk, msg) for sk in sks]
    pops = [native.pop_prove(sk) for sk in sks]
    aggregate = native.aggregate(sigs)
    assert [ref.sk_to_pk(sk) for sk in sks] == pks
    assert [ref.sign(sk, msg) for sk in sks] == sigs
    assert [ref.pop_prove(sk) for sk in sks] == pops
    assert ref.aggregate(sigs) == aggregate
    # ...and py_ecc's own ciphersuite, not just its curve arithmetic, agrees.
    assert G2ProofOfPossession.SkToPk(sks[0]) == pks[0]
    assert G2ProofOfPossession.Sign(sks[0], msg) == sigs[0]
    assert G2ProofOfPossession.PopProve(sks[0]) == pops[0]
    assert native.fast_aggregate_verify(pks, msg, aggregate)
    assert all(native.pop_verify(pk, pop) for pk, pop in zip(pks, pops, strict=True))


@settings(max_examples=50, deadline=None)
@given(
    sks=st.lists(secret_keys, min_size=1, max_size=8, unique=True),
    msgs=st.lists(st.binary(max_size=40), min_size=8, max_size=8),
)
def test_native_round_trips(sks: list[int], msgs: list[bytes]) -> None:
    native = blst_backend()
    pks = [native.sk_to_pk(sk) for sk in sks]
    msgs = msgs[: len(sks)]
    sigs = [native.sign(sk, m) for sk, m in zip(sks, msgs, strict=True)]
    assert all(native.verify(pk, m, s) for pk, m, s in zip(pks, msgs, sigs, strict=True))
    assert native.aggregate_verify(pks, msgs, native.aggregate(sigs))
    same = native.aggregate([native.sign(sk, msgs[0]) for sk in sks])
    assert native.fast_aggregate_verify(pks, msgs[0], same)
    keys = [native.load_public_key(pk) for pk in pks]
    assert native.fast_aggregate_verify_keys(keys, msgs[0], same)
    assert not native.fast_aggregate_verify_keys(keys, msgs[0] + b"x", same)


def test_keygen_is_ietf_keygen() -> None:
    for seed in range(3):
        ikm = hashlib.sha256(bytes([seed])).digest()
        sk = bls.keygen(ikm)
        assert sk == G2ProofOfPossession.KeyGen(ikm)
        assert bls.secret_key_valid(sk)
        assert bls.keygen(ikm, b"info") == G2ProofOfPossession.KeyGen(ikm, b"info")
    ikm = bytes(range(64))
    for backend_name in bls.available_backends():
        assert bls.get_backend(backend_name).keygen(ikm) == bls.keygen(ikm)
    with pytest.raises(BLSError):
        bls.keygen(bytes(31))
    with pytest.raises(BLSError):
        bls.keygen(bytearray(32))  # type: ignore[arg-type]


# -- rules the vectors do not cover ------------------------------------------

BAD_SECRET_KEYS: list[Any] = [0, -1, CURVE_ORDER, CURVE_ORDER + 1, 2**256, True, 1.0, "1", None]


@pytest.mark.parametrize("sk", BAD_SECRET_KEYS, ids=repr)
def test_secret_key_out_of_range_is_refused(backend: Backend, sk: Any) -> None:
    assert not backend.secret_key_valid(sk)
    with pytest.raises(BLSError):
        backend.sk_to_pk(sk)
    with pytest.raises(BLSError):
        backend.sign(sk, MSG)
    with pytest.raises(BLSError):
        backend.pop_prove(sk)


def test_secret_key_range_ends(backend: Backend) -> None:
    assert backend.sk_to_pk(1) == bytes.fromhex(
        "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905"
        "a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
    )
    # r - 1 is the generator's negation: same x, the other y (flag bit 0x20 flipped).
    top = backend.sk_to_pk(CURVE_ORDER - 1)
    assert top[1:] == backend.sk_to_pk(1)[1:]
    assert top[0] ^ backend.sk_to_pk(1)[0] == 0x20


def test_infinity_key_never_verifies(backend: Backend) -> None:
    assert not backend.verify(INF_G1, MSG, INF_G2)
    assert not backend.fast_aggregate_verify([INF_G1], MSG, INF_G2)
    assert not backend.aggregate_verify([INF_G1], [MSG], INF_G2)
    assert not backend.pop_verify(INF_G1, INF_G2)


def test_infinity_signature_is_well_formed_but_verifies_nothing(backend: Backend) -> None:
    pk = backend.sk_to_pk(7)
    assert backend.signature_valid(INF_G2)
    assert backend.aggregate([INF_G2]) == INF_G2
    assert not backend.verify(pk, MSG, INF_G2)


def test_empty_sets(backend: Backend) -> None:
    sig = backend.sign(7, MSG)
    assert not backend.fast_aggregate_verify([], MSG, sig)
    assert not backend.fast_aggregate_verify([], MSG, INF_G2)
    assert not backend.fast_aggregate_verify_keys([], MSG, INF_G2)
    assert not backend.aggregate_verify([], [], sig)
    assert not backend.aggregate_verify([], [], INF_G2)
    with pytest.raises(BLSError):
        backend.aggregate([])


def test_keys_that_cancel_never_verify(backend: Backend) -> None:
    """P and -P are both valid keys (secret keys sk and r - sk), but their sum is the
    point at infinity, which the pairing alone would accept with the infinity
    signature. FastAggregateVerify must refuse it, as KeyValidate of the sum does."""
    sk = 0x1234567890ABCDEF
    pks = [backend.sk_to_pk(sk), backend.sk_to_pk(CURVE_ORDER - sk)]
    total = backend.g1_sum([backend.decode_g1(pk) for pk in pks])
    assert backend.g1_is_infinity(total)
    hashed = backend.hash_to_g2(MSG, SIG_DST)
    assert backend.pairing_check([(total, hashed)], backend.decode_g2(INF_G2))
    assert not backend.fast_aggregate_verify(pks, MSG, INF_G2)
    keys = [backend.load_public_key(pk) for pk in pks]
    assert not backend.fast_aggregate_verify_keys(keys, MSG, INF_G2)


def test_rogue_key_is_stopped_by_proof_of_possession(backend: Backend) -> None:
    """A rogue key pk_r = x*G - pk_victim lets its maker alone produce a signature
    that fast-aggregate-verifies for {victim, rogue}. Its maker does not know the
    rogue key's secret, so cannot prove possession of it."""
    victim_sk, x = 0xDEADBEEF, 0xC0FFEE
    victim = backend.sk_to_pk(victim_sk)
    rogue = backend.sk_to_pk((x - victim_sk) % CURVE_ORDER)  # x*G - victim, built the easy way
    forged = backend.sign(x, MSG)  # made with x only
    assert backend.fast_aggregate_verify([victim, rogue], MSG, forged)  # why PoP is required
    assert not backend.pop_verify(rogue, backend.pop_prove(x))


def test_proof_of_possession_domain_separation(backend: Backend) -> None:
    sk, other = 0xABC, 0xDEF
    pk, other_pk = backend.sk_to_pk(sk), backend.sk_to_pk(other)
    pop = backend.pop_prove(sk)
    assert backend.pop_verify(pk, pop)
    assert not backend.pop_verify(other_pk, pop)  # a proof made for another key
    assert not backend.pop_verify(pk, backend.sign(sk, pk))  # signature DST, not PoP DST
    assert not backend.verify(pk, pk, pop)  # and a proof is no signature of the key
    assert pop == backend.encode_g2(backend.g2_mul(backend.hash_to_g2(pk, POP_DST), sk))


def test_malformed_input_gives_false_or_blserror(backend: Backend) -> None:
    pk = backend.sk_to_pk(5)
    sig = backend.sign(5, MSG)
    bad: Any
    for bad in (pk[:-1], pk + b"\x00", b"", pk.hex(), bytearray(pk), None):
        assert not backend.key_validate(bad)
        assert not backend.verify(bad, MSG, sig)
        assert not backend.pop_verify(bad, sig)
        assert not backend.fast_aggregate_verify([pk, bad], MSG, sig)
        assert not backend.aggregate_verify([bad], [MSG], sig)
        with pytest.raises(BLSError):
            backend.load_public_key(bad)
    for bad in (sig[:-1], sig + b"\x00", b"", sig.hex(), bytearray(sig), None):
        assert not backend.signature_valid(bad)
        assert not backend.verify(pk, MSG, bad)
        assert not backend.fast_aggregate_verify([pk], MSG, bad)
        assert not backend.aggregate_verify([pk], [MSG], bad)
        with pytest.raises(BLSError):
            backend.aggregate([sig, bad])
    for bad in ("text", bytearray(MSG), None, 5):
        assert not backend.verify(pk, bad, sig)
        assert not backend.fast_aggregate_verify([pk], bad, sig)
        assert not backend.aggregate_verify([pk], [bad], sig)
        with pytest.raises(BLSError):
            backend.sign(5, bad)
    assert not backend.fast_aggregate_verify_keys([pk], MSG, sig)  # type: ignore[list-item]
    assert not backend.fast_aggregate_verify(None, MSG, sig)  # type: ignore[arg-type]
    assert not backend.aggregate_verify([pk, pk], [MSG], sig)  # lengths differ
    assert not backend.aggregate_verify([pk], [MSG, MSG], sig)


def test_loaded_keys_are_cached_and_portable(backend: Backend) -> None:
    pk = backend.sk_to_pk(11)
    key = backend.load_public_key(pk)
    assert backend.load_public_key(pk) is key
    assert bytes(key) == key.data == pk
    assert key == backend.load_public_key(bytes(pk))
    assert hash(key) == hash(pk)
    assert repr(key) == f"PublicKey({pk.hex()})"
    # A key loaded by another backend works too (reloaded from its bytes).
    if backend.name != "blst" and "blst" in bls.available_backends():
        native = bls.get_backend("blst")
        assert native.fast_aggregate_verify_keys([key], MSG, native.sign(11, MSG))


# -- decoding under fuzz: both backends accept exactly the same bytes ------------

FLAG_BYTES = st.sampled_from([0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0])


def accepts(decode: Any, data: bytes) -> bool:
    try:
        decode(data)
    except BLSError:
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(flags=FLAG_BYTES, body=st.binary(min_size=48, max_size=48), zero=st.booleans())
def test_g1_decoding_agrees_under_fuzz(flags: int, body: bytes, zero: bool) -> None:
    native, ref = both_backends()
    data = bytes([flags | (body[0] & 0x1F)]) + (bytes(47) if zero else body[1:])
    assert accepts(native.decode_g1, data) is accepts(ref.decode_g1, data)


@settings(max_examples=20, deadline=None)
@given(flags=FLAG_BYTES, body=st.binary(min_size=96, max_size=96), clear_c0_top=st.booleans())
def test_g2_decoding_agrees_under_fuzz(flags: int, body: bytes, clear_c0_top: bool) -> None:
    """Mostly with the real part's top 3 bits clear, so x < p often enough to reach
    the square root and the subgroup check."""
    native, ref = both_backends()
    c0_first = body[48] & 0x1F if clear_c0_top else body[48]
    data = bytes([flags | (body[0] & 0x1F)]) + body[1:48] + bytes([c0_first]) + body[49:]
    assert accepts(native.decode_g2, data) is accepts(ref.decode_g2, data)


# -- the module's functions and backend selection --------------------------------


def test_module_functions_use_the_active_backend() -> None:
    active = bls.active_backend()
    assert active.name in bls.available_backends()
    sk = bls.keygen(bytes(32))
    pk = bls.sk_to_pk(sk)
    sig = bls.sign(sk, MSG)
    assert sig == active.sign(sk, MSG)
    assert bls.verify(pk, MSG, sig)
    assert bls.aggregate([sig]) == sig
    assert bls.fast_aggregate_verify([pk], MSG, sig)
    assert bls.fast_aggregate_verify_keys([bls.load_public_key(pk)], MSG, sig)
    assert bls.aggregate_verify([pk], [MSG], sig)
    assert bls.pop_verify(pk, bls.pop_prove(sk))
    assert bls.key_validate(pk)
    assert not bls.key_validate(INF_G1)
    assert bls.signature_valid(sig)
    assert not bls.signature_valid(sig[:-1])
    assert bls.secret_key_valid(sk)
    assert not bls.secret_key_valid(0)
    assert bls.load_public_key(pk) is active.load_public_key(pk)


def active_backend_in_subprocess(env_value: str | None, block_pyblst: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != bls.BACKEND_ENV}
    if env_value is not None:
        env[bls.BACKEND_ENV] = env_value
    script = (
        ("import sys; sys.modules['pyblst'] = None\n" if block_pyblst else "")
        + "from node.crypto import bls\n"
        + "print(bls.active_backend().name)\n"
    )
    result = run_python("-c", script, env=env, timeout_s=60)
    return result.stdout.strip() if result.returncode == 0 else "error: " + result.stderr


def test_backend_selection() -> None:
    expected_default = "blst" if "blst" in bls.available_backends() else "py_ecc"
    assert active_backend_in_subprocess(None) == expected_default
    assert active_backend_in_subprocess("py_ecc") == "py_ecc"
    assert active_backend_in_subprocess(None, block_pyblst=True) == "py_ecc"
    assert "unknown BLS backend" in active_backend_in_subprocess("openssl")
    assert "blst unavailable" in active_backend_in_subprocess("blst", block_pyblst=True)
    with pytest.raises(BLSError):
        bls.get_backend("openssl")
