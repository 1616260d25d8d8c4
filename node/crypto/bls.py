"""BLS12-381 signatures: the IETF proof-of-possession ciphersuite, as Ethereum uses it.

Public keys are 48-byte compressed G1 points, signatures 96-byte compressed G2
points, secret keys ints in ``[1, r)``. Messages are hashed to G2 with the DST
``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``; proofs of possession sign the
public key's bytes under ``BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``.
Aggregating public keys over one message (:func:`fast_aggregate_verify`) is
only safe for keys whose proof of possession was checked (:func:`pop_verify`),
once, when the key was registered.

Two backends do the curve arithmetic; the scheme's rules live once, in
:class:`Backend`, so both behave identically:

- ``blst``: `pyblst` (Rust bindings to supranational's blst), ~1 ms a verify.
  Its ``uncompress`` checks the encoding, the curve and the subgroup itself.
- ``py_ecc``: the Ethereum Foundation's pure-Python reference, ~0.5 s a verify;
  imported only when chosen, as it takes ~0.5 s to import.

The active backend is ``blst`` when `pyblst` imports, ``py_ecc`` otherwise; the
environment variable ``XLN_BLS_BACKEND=blst|py_ecc`` forces one (an unknown or
unavailable name fails at import). :func:`get_backend` returns either one by
name, with the same methods as this module's functions.

Rules both backends keep (some bindings relax them; this module does not):

- a secret key outside ``[1, r)`` is refused with :class:`BLSError`;
- a public key must decode, lie on the curve and in the subgroup, and not be
  the point at infinity (KeyValidate);
- a signature must decode, lie on the curve and in the subgroup; the point at
  infinity is a well-formed signature (it verifies against no valid key);
- the verify functions return ``False``, never raise, for any malformed input,
  an empty key set, or a key set that sums to the point at infinity;
- :func:`aggregate` raises :class:`BLSError` for an empty list or any
  malformed signature.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

CURVE_ORDER: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
SIG_DST: Final = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
POP_DST: Final = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
PUBKEY_LEN: Final = 48
SIGNATURE_LEN: Final = 96
BACKEND_ENV: Final = "XLN_BLS_BACKEND"
BACKEND_NAMES: Final = ("blst", "py_ecc")
KEY_CACHE_SIZE: Final = 8192  # deserialized public keys kept per backend
VERIFY_CACHE: Final = 16384  # signature-check outcomes kept (they are pure; see verify)

# The G1 generator, compressed (the public key of secret key 1).
_G1_GENERATOR: Final = bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905"
    "a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)
_KEYGEN_SALT: Final = b"BLS-SIG-KEYGEN-SALT-"
_KEYGEN_OKM_LEN: Final = 48  # ceil(3 * ceil(log2(r)) / 16)
_KEYGEN_MIN_IKM: Final = 32

# A deserialized curve point; its type depends on the backend.
type G1Point = Any
type G2Point = Any


class BLSError(ValueError):
    """An invalid secret key, key, signature or argument; or an unavailable backend."""


def secret_key_valid(sk: int) -> bool:
    """True for an int in ``[1, r)``, the only secret keys this module signs with."""
    return isinstance(sk, int) and not isinstance(sk, bool) and 0 < sk < CURVE_ORDER


def keygen(ikm: bytes, key_info: bytes = b"") -> int:
    """IETF KeyGen (draft-irtf-cfrg-bls-signature-05 section 2.3): a secret key from
    at least 32 bytes of secret input keying material. Backend-independent."""
    if not isinstance(ikm, bytes) or len(ikm) < _KEYGEN_MIN_IKM:
        raise BLSError(f"KeyGen needs at least {_KEYGEN_MIN_IKM} bytes of IKM")
    if not isinstance(key_info, bytes):
        raise BLSError("key_info must be bytes")
    salt = _KEYGEN_SALT
    sk = 0
    while sk == 0:
        salt = hashlib.sha256(salt).digest()
        prk = hmac.digest(salt, ikm + b"\x00", "sha256")
        okm = _hkdf_expand(prk, key_info + _KEYGEN_OKM_LEN.to_bytes(2, "big"), _KEYGEN_OKM_LEN)
        sk = int.from_bytes(okm, "big") % CURVE_ORDER
    return sk


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
        counter += 1
    return okm[:length]


def _check_secret_key(sk: int) -> None:
    if not secret_key_valid(sk):
        raise BLSError("secret key must be an int in [1, r)")


class PublicKey:
    """A validated public key, deserialized once (see :func:`load_public_key`).

    Equal and hashed by its 48 bytes. Holds the point of the backend that
    loaded it; another backend reloads it from the bytes.
    """

    __slots__ = ("_backend", "_point", "data")

    def __init__(self, data: bytes, point: G1Point, backend: Backend) -> None:
        self.data = data
        self._point = point
        self._backend = backend

    def __bytes__(self) -> bytes:
        return self.data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"PublicKey({self.data.hex()})"


class Backend(ABC):
    """One curve-arithmetic backend, and the BLS scheme written once on top of it.

    Subclasses implement the primitives (decode, encode, add, multiply, hash to
    G2, pairing check); the scheme's methods and their validation rules are
    shared, which is what keeps the two backends' behaviour identical.
    """

    name: str

    def __init__(self) -> None:
        self._key_cache = functools.lru_cache(maxsize=KEY_CACHE_SIZE)(self._load_public_key)
        self._generator = self.decode_g1(_G1_GENERATOR)

    # -- primitives -------------------------------------------------------

    @abstractmethod
    def decode_g1(self, data: bytes) -> G1Point:
        """A compressed G1 point on the curve and in the subgroup (infinity allowed)."""

    @abstractmethod
    def decode_g2(self, data: bytes) -> G2Point:
        """A compressed G2 point on the curve and in the subgroup (infinity allowed)."""

    @abstractmethod
    def encode_g1(self, point: G1Point) -> bytes: ...

    @abstractmethod
    def encode_g2(self, point: G2Point) -> bytes: ...

    @abstractmethod
    def g1_mul(self, point: G1Point, scalar: int) -> G1Point: ...

    @abstractmethod
    def g2_mul(self, point: G2Point, scalar: int) -> G2Point: ...

    @abstractmethod
    def g1_sum(self, points: Sequence[G1Point]) -> G1Point:
        """The sum of the points; infinity for none."""

    @abstractmethod
    def g2_sum(self, points: Sequence[G2Point]) -> G2Point:
        """The sum of the points; infinity for none."""

    @abstractmethod
    def g1_is_infinity(self, point: G1Point) -> bool: ...

    @abstractmethod
    def hash_to_g2(self, msg: bytes, dst: bytes) -> G2Point:
        """hash_to_curve, BLS12381G2_XMD:SHA-256_SSWU_RO_ (RFC 9380)."""

    @abstractmethod
    def pairing_check(self, pairs: Sequence[tuple[G1Point, G2Point]], sig: G2Point) -> bool:
        """Whether the product of e(P_i, Q_i) equals e(generator of G1, sig)."""

    # -- decoding with the module's error type ----------------------------

    def load_public_key(self, pk: bytes) -> PublicKey:
        """``pk`` validated (KeyValidate) and deserialized, through an LRU cache keyed by
        its bytes; BLSError if it is invalid."""
        return self._key_cache(_bytes(pk, PUBKEY_LEN, "public key"))

    def _load_public_key(self, data: bytes) -> PublicKey:
        point = self.decode_g1(data)
        if self.g1_is_infinity(point):
            raise BLSError("public key is the point at infinity")
        return PublicKey(data, point, self)

    def _key_point(self, key: PublicKey) -> G1Point:
        if not isinstance(key, PublicKey):
            raise BLSError("not a PublicKey (load it with load_public_key)")
        if key._backend is self:
            return key._point
        return self.load_public_key(key.data)._point

    def _loaded(self, pks: Sequence[bytes]) -> list[PublicKey] | None:
        try:
            return [self.load_public_key(pk) for pk in pks]
        except (BLSError, TypeError):  # TypeError: pks is no sequence
            return None

    def _signature_point(self, sig: bytes) -> G2Point | None:
        try:
            return self.decode_g2(_bytes(sig, SIGNATURE_LEN, "signature"))
        except BLSError:
            return None

    def _core_verify(self, pk: G1Point, msg: bytes, sig: bytes, dst: bytes) -> bool:
        if not _is_bytes(msg):
            return False
        sig_point = self._signature_point(sig)
        if sig_point is None:
            return False
        return self.pairing_check([(pk, self.hash_to_g2(msg, dst))], sig_point)

    # -- the scheme -------------------------------------------------------

    def keygen(self, ikm: bytes, key_info: bytes = b"") -> int:
        """See :func:`keygen` (backend-independent)."""
        return keygen(ikm, key_info)

    def secret_key_valid(self, sk: int) -> bool:
        """See :func:`secret_key_valid` (backend-independent)."""
        return secret_key_valid(sk)

    def sk_to_pk(self, sk: int) -> bytes:
        """The 48-byte public key of ``sk``."""
        _check_secret_key(sk)
        return self.encode_g1(self.g1_mul(self._generator, sk))

    def sign(self, sk: int, msg: bytes) -> bytes:
        """The 96-byte signature of ``msg`` under ``sk``."""
        _check_secret_key(sk)
        if not isinstance(msg, bytes):
            raise BLSError("message must be bytes")
        return self.encode_g2(self.g2_mul(self.hash_to_g2(msg, SIG_DST), sk))

    def verify(self, pk: bytes, msg: bytes, sig: bytes) -> bool:
        """Whether ``sig`` is ``pk``'s signature of ``msg``; False for anything malformed."""
        keys = self._loaded([pk])
        if keys is None:
            return False
        return self._core_verify(keys[0]._point, msg, sig, SIG_DST)

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        """The sum of the signatures; BLSError for none or any malformed one."""
        if not sigs:
            raise BLSError("nothing to aggregate")
        points = [self.decode_g2(_bytes(sig, SIGNATURE_LEN, "signature")) for sig in sigs]
        return self.encode_g2(self.g2_sum(points))

    def fast_aggregate_verify(self, pks: Sequence[bytes], msg: bytes, sig: bytes) -> bool:
        """Whether ``sig`` aggregates every key's signature of the one message ``msg``.

        Only sound for keys with a verified proof of possession.
        """
        keys = self._loaded(pks)
        if keys is None:
            return False
        return self.fast_aggregate_verify_keys(keys, msg, sig)

    def fast_aggregate_verify_keys(self, keys: Sequence[PublicKey], msg: bytes, sig: bytes) -> bool:
        """:meth:`fast_aggregate_verify` over loaded keys: sums their cached points."""
        if not keys:
            return False
        try:
            points = [self._key_point(key) for key in keys]
        except BLSError:  # not a PublicKey: a loaded key is valid in every backend
            return False
        aggregate = self.g1_sum(points)
        if self.g1_is_infinity(aggregate):
            return False
        return self._core_verify(aggregate, msg, sig, SIG_DST)

    def aggregate_verify(self, pks: Sequence[bytes], msgs: Sequence[bytes], sig: bytes) -> bool:
        """Whether ``sig`` aggregates ``pks[i]``'s signature of ``msgs[i]``, for every i.

        Messages need not be distinct (this is the proof-of-possession suite).
        """
        if not pks or len(pks) != len(msgs):
            return False
        if not all(_is_bytes(msg) for msg in msgs):
            return False
        keys = self._loaded(pks)
        if keys is None:
            return False
        sig_point = self._signature_point(sig)
        if sig_point is None:
            return False
        pairs = [
            (key._point, self.hash_to_g2(msg, SIG_DST)) for key, msg in zip(keys, msgs, strict=True)
        ]
        return self.pairing_check(pairs, sig_point)

    def pop_prove(self, sk: int) -> bytes:
        """The proof of possession of ``sk``: its signature of its own public key."""
        pk = self.sk_to_pk(sk)
        return self.encode_g2(self.g2_mul(self.hash_to_g2(pk, POP_DST), sk))

    def pop_verify(self, pk: bytes, proof: bytes) -> bool:
        """Whether ``proof`` proves possession of ``pk``'s secret key."""
        keys = self._loaded([pk])
        if keys is None:
            return False
        return self._core_verify(keys[0]._point, pk, proof, POP_DST)

    def key_validate(self, pk: bytes) -> bool:
        """KeyValidate: decodes, on the curve, in the subgroup, not infinity."""
        return self._loaded([pk]) is not None

    def signature_valid(self, sig: bytes) -> bool:
        """Whether ``sig`` decodes to a point of the G2 subgroup (infinity included)."""
        return self._signature_point(sig) is not None


def _is_bytes(data: object) -> bool:
    return isinstance(data, bytes)


def _bytes(data: bytes, length: int, what: str) -> bytes:
    if not isinstance(data, bytes):
        raise BLSError(f"{what} must be bytes")
    if len(data) != length:
        raise BLSError(f"{what} must be {length} bytes, not {len(data)}")
    return data


class _BlstBackend(Backend):
    """pyblst: ``uncompress`` rejects bad encodings, off-curve and non-subgroup points."""

    name = "blst"

    def __init__(self) -> None:
        try:
            import pyblst
        except ImportError as exc:
            raise BLSError(f"BLS backend blst unavailable: {exc}") from exc
        self._p1 = pyblst.BlstP1Element
        self._p2 = pyblst.BlstP2Element
        self._miller_loop = pyblst.miller_loop
        self._final_verify = pyblst.final_verify
        self._p1_infinity = self._p1()
        self._p2_infinity = self._p2()
        super().__init__()

    def decode_g1(self, data: bytes) -> G1Point:
        try:
            return self._p1.uncompress(_bytes(data, PUBKEY_LEN, "G1 point"))
        except (ValueError, TypeError) as exc:
            raise BLSError(f"invalid G1 point: {exc}") from exc

    def decode_g2(self, data: bytes) -> G2Point:
        try:
            return self._p2.uncompress(_bytes(data, SIGNATURE_LEN, "G2 point"))
        except (ValueError, TypeError) as exc:
            raise BLSError(f"invalid G2 point: {exc}") from exc

    def encode_g1(self, point: G1Point) -> bytes:
        encoded: bytes = point.compress()
        return encoded

    def encode_g2(self, point: G2Point) -> bytes:
        encoded: bytes = point.compress()
        return encoded

    def g1_mul(self, point: G1Point, scalar: int) -> G1Point:
        return point.scalar_mul(scalar)

    def g2_mul(self, point: G2Point, scalar: int) -> G2Point:
        return point.scalar_mul(scalar)

    def g1_sum(self, points: Sequence[G1Point]) -> G1Point:
        total = self._p1_infinity
        for point in points:
            total = total + point
        return total

    def g2_sum(self, points: Sequence[G2Point]) -> G2Point:
        total = self._p2_infinity
        for point in points:
            total = total + point
        return total

    def g1_is_infinity(self, point: G1Point) -> bool:
        return bool(point == self._p1_infinity)

    def hash_to_g2(self, msg: bytes, dst: bytes) -> G2Point:
        try:
            return self._p2.hash_to_group(msg, dst)
        except (ValueError, TypeError) as exc:
            raise BLSError(f"hash_to_g2: {exc}") from exc

    def pairing_check(self, pairs: Sequence[tuple[G1Point, G2Point]], sig: G2Point) -> bool:
        product = None
        for p, q in pairs:
            loop = self._miller_loop(p, q)
            product = loop if product is None else product * loop
        if product is None:
            return False
        return bool(self._final_verify(product, self._miller_loop(self._generator, sig)))


class _PyEccBackend(Backend):
    """py_ecc: decompression checks encoding and curve; the subgroup check is ours."""

    name = "py_ecc"

    def __init__(self) -> None:
        try:
            import py_ecc.bls.g2_primitives  # noqa: F401 - imported here, ~0.5 s
        except ImportError as exc:
            raise BLSError(f"BLS backend py_ecc unavailable: {exc}") from exc
        super().__init__()

    def decode_g1(self, data: bytes) -> G1Point:
        from py_ecc.bls.g2_primitives import pubkey_to_G1, subgroup_check

        data = _bytes(data, PUBKEY_LEN, "G1 point")
        try:
            point = pubkey_to_G1(data)  # type: ignore[arg-type]
        except (ValueError, AssertionError) as exc:
            raise BLSError(f"invalid G1 point: {exc}") from exc
        if not subgroup_check(point):
            raise BLSError("invalid G1 point: not in the subgroup")
        return point

    def decode_g2(self, data: bytes) -> G2Point:
        from py_ecc.bls.g2_primitives import signature_to_G2, subgroup_check

        data = _bytes(data, SIGNATURE_LEN, "G2 point")
        try:
            point = signature_to_G2(data)  # type: ignore[arg-type]
        except (ValueError, AssertionError) as exc:
            raise BLSError(f"invalid G2 point: {exc}") from exc
        if not subgroup_check(point):
            raise BLSError("invalid G2 point: not in the subgroup")
        return point

    def encode_g1(self, point: G1Point) -> bytes:
        from py_ecc.bls.g2_primitives import G1_to_pubkey

        return bytes(G1_to_pubkey(point))

    def encode_g2(self, point: G2Point) -> bytes:
        from py_ecc.bls.g2_primitives import G2_to_signature

        return bytes(G2_to_signature(point))

    def g1_mul(self, point: G1Point, scalar: int) -> G1Point:
        from py_ecc.optimized_bls12_381.optimized_curve import multiply

        return multiply(point, scalar)

    def g2_mul(self, point: G2Point, scalar: int) -> G2Point:
        from py_ecc.optimized_bls12_381.optimized_curve import multiply

        return multiply(point, scalar)

    def g1_sum(self, points: Sequence[G1Point]) -> G1Point:
        from py_ecc.optimized_bls12_381.optimized_curve import Z1, add

        total = Z1
        for point in points:
            total = add(total, point)
        return total

    def g2_sum(self, points: Sequence[G2Point]) -> G2Point:
        from py_ecc.optimized_bls12_381.optimized_curve import Z2, add

        total = Z2
        for point in points:
            total = add(total, point)
        return total

    def g1_is_infinity(self, point: G1Point) -> bool:
        from py_ecc.optimized_bls12_381.optimized_curve import is_inf

        return is_inf(point)

    def hash_to_g2(self, msg: bytes, dst: bytes) -> G2Point:
        from py_ecc.bls.hash_to_curve import hash_to_G2

        try:
            # py_ecc's hint says a hash object; it calls a constructor.
            return hash_to_G2(msg, dst, hashlib.sha256)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise BLSError(f"hash_to_g2: {exc}") from exc

    def pairing_check(self, pairs: Sequence[tuple[G1Point, G2Point]], sig: G2Point) -> bool:
        from py_ecc.fields import optimized_bls12_381_FQ12 as FQ12
        from py_ecc.optimized_bls12_381.optimized_curve import neg
        from py_ecc.optimized_bls12_381.optimized_pairing import final_exponentiate, pairing

        if not pairs:
            return False
        product = pairing(sig, neg(self._generator), final_exponentiate=False)
        for p, q in pairs:
            product = product * pairing(q, p, final_exponentiate=False)
        return bool(final_exponentiate(product) == FQ12.one())


_BACKEND_CLASSES: Final[dict[str, type[Backend]]] = {
    "blst": _BlstBackend,
    "py_ecc": _PyEccBackend,
}
_backends: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``blst`` or ``py_ecc``), created once.

    Raises BLSError for an unknown name or a backend whose library is missing.
    """
    backend = _backends.get(name)
    if backend is None:
        cls = _BACKEND_CLASSES.get(name)
        if cls is None:
            raise BLSError(f"unknown BLS backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
        backend = _backends[name] = cls()
    return backend


def available_backends() -> list[str]:
    """The backends whose libraries import here."""
    names = []
    for name in BACKEND_NAMES:
        try:
            get_backend(name)
        except BLSError:
            continue
        names.append(name)
    return names


def _select_backend() -> Backend:
    forced = os.environ.get(BACKEND_ENV, "").strip()
    if forced:
        return get_backend(forced)
    try:
        return get_backend("blst")
    except BLSError:
        return get_backend("py_ecc")


_active: Backend = _select_backend()


def active_backend() -> Backend:
    """The backend this module's functions use."""
    return _active


def sk_to_pk(sk: int) -> bytes:
    """The 48-byte public key of ``sk``; BLSError unless ``0 < sk < r``."""
    return _active.sk_to_pk(sk)


def sign(sk: int, msg: bytes) -> bytes:
    """The 96-byte signature of ``msg`` under ``sk``; BLSError unless ``0 < sk < r``."""
    return _active.sign(sk, msg)


def verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is ``pk``'s signature of ``msg``; False for anything malformed.

    Outcomes are cached: a node checks the same batch and proposal signatures
    once per replica it hosts, and again when the frame commits."""
    return _verify_cached(_active, bytes(pk), bytes(msg), bytes(sig))


@functools.lru_cache(maxsize=VERIFY_CACHE)
def _verify_cached(backend: Backend, pk: bytes, msg: bytes, sig: bytes) -> bool:
    return backend.verify(pk, msg, sig)


def aggregate(sigs: Sequence[bytes]) -> bytes:
    """The aggregate of the signatures; BLSError for none or any malformed one."""
    return _active.aggregate(sigs)


def fast_aggregate_verify(pks: Sequence[bytes], msg: bytes, sig: bytes) -> bool:
    """Whether ``sig`` aggregates every key's signature of ``msg`` (PoP-checked keys only)."""
    return _active.fast_aggregate_verify(pks, msg, sig)


def fast_aggregate_verify_keys(keys: Sequence[PublicKey], msg: bytes, sig: bytes) -> bool:
    """:func:`fast_aggregate_verify` over loaded keys (the hot path: no deserialization).
    Cached like :func:`verify`: every local replica checks the same certificate."""
    return _fav_cached(_active, tuple(keys), bytes(msg), bytes(sig))


@functools.lru_cache(maxsize=VERIFY_CACHE)
def _fav_cached(backend: Backend, keys: tuple[PublicKey, ...], msg: bytes, sig: bytes) -> bool:
    return backend.fast_aggregate_verify_keys(keys, msg, sig)


def aggregate_verify(pks: Sequence[bytes], msgs: Sequence[bytes], sig: bytes) -> bool:
    """Whether ``sig`` aggregates ``pks[i]``'s signature of ``msgs[i]`` for every i."""
    return _active.aggregate_verify(pks, msgs, sig)


def pop_prove(sk: int) -> bytes:
    """The proof of possession of ``sk``; BLSError unless ``0 < sk < r``."""
    return _active.pop_prove(sk)


def pop_verify(pk: bytes, proof: bytes) -> bool:
    """Whether ``proof`` proves possession of ``pk``'s secret key."""
    return _active.pop_verify(pk, proof)


def key_validate(pk: bytes) -> bool:
    """KeyValidate: 48 bytes, decodes, on the curve, in the subgroup, not infinity."""
    return _active.key_validate(pk)


def signature_valid(sig: bytes) -> bool:
    """Whether ``sig`` is 96 bytes decoding to a G2 subgroup point (infinity included)."""
    return _active.signature_valid(sig)


def load_public_key(pk: bytes) -> PublicKey:
    """``pk`` validated and deserialized, from an LRU cache; BLSError if invalid."""
    return _active.load_public_key(pk)
