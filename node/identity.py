"""The node's own identity key, with which it introduces itself to peer servers.

It is a BLS key, kept in ``<data>/identity.json`` as an EIP-2335 keystore (so
it is encrypted with a slow KDF); the password comes from the operator
(``--identity-password-file`` or ``XLN_NODE_PASSWORD``). It is not a signer's
key: signers' keys live with their agents, never in the node's data folder.

A peer's HELLO carries ``[pubkey, timestamp_ms, signature]``, the signature
over ``b"XLN/peer-hello/v1" + pubkey + timestamp``. It is accepted within
``HELLO_WINDOW_MS`` of the receiver's clock. What peers then send is
authenticated by its own content (signed batches, pre-commits, certificates),
so the identity only decides where messages for which signers go.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from node.crypto import bls, keystore
from node.machines.governance import signer_id

HELLO_DOMAIN = b"XLN/peer-hello/v1"
HELLO_WINDOW_MS = 60_000
IDENTITY_FILE = "identity.json"


@dataclass(frozen=True)
class Identity:
    secret_key: int

    @property
    def pubkey(self) -> bytes:
        return bls.sk_to_pk(self.secret_key)

    @property
    def id(self) -> bytes:
        return signer_id(self.pubkey)

    def hello(self, now_ms: int) -> list[bytes | int]:
        pubkey = self.pubkey
        sig = bls.sign(self.secret_key, _hello_message(pubkey, now_ms))
        return [pubkey, now_ms, sig]


def _hello_message(pubkey: bytes, timestamp_ms: int) -> bytes:
    return HELLO_DOMAIN + pubkey + timestamp_ms.to_bytes(8, "big")


def check_hello(pubkey: bytes, timestamp_ms: int, signature: bytes, now_ms: int) -> str | None:
    """None if the peer's HELLO is genuine and fresh, else why not."""
    if abs(now_ms - timestamp_ms) > HELLO_WINDOW_MS:
        return "peer HELLO timestamp is outside the accepted window; check the clocks"
    if not bls.key_validate(pubkey):
        return "peer identity key is not a valid BLS public key"
    if not bls.verify(pubkey, _hello_message(pubkey, timestamp_ms), signature):
        return "peer HELLO signature does not verify"
    return None


def load_or_create(data_dir: Path, password: str, *, fast_kdf: bool = False) -> Identity:
    """Read the identity keystore, or make a new key on first start (``fast_kdf``:
    a weak KDF, for tests and simulation only)."""
    path = data_dir / IDENTITY_FILE
    if path.exists():
        secret = keystore.decrypt(keystore.load(path), password)
        return Identity(int.from_bytes(secret, "big"))
    sk = bls.keygen(secrets.token_bytes(32))
    secret = sk.to_bytes(32, "big")
    keystore.save(path, keystore.encrypt(secret, password, pubkey=bls.sk_to_pk(sk), fast=fast_kdf))
    return Identity(sk)
