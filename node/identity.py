"""The node's own identity key, with which it introduces itself to peer servers.

It is a BLS key, kept in ``<data>/identity.json`` as an EIP-2335 keystore (so
it is encrypted with a slow KDF); the password comes from the operator
(``--identity-password-file`` or ``XLN_NODE_PASSWORD``). It is not a signer's
key: signers' keys live with their agents, never in the node's data folder.

A peer opens its link with ``CHALLENGE``; the receiver answers with
:data:`CHALLENGE_LEN` random bytes (:func:`new_challenge`) and its own id, and
keeps the challenge for that connection alone, until the HELLO deadline. The
peer's HELLO then carries ``[pubkey, challenge, receiver_id, signature]``, the
signature over :func:`hello_message`: ``b"XLN/peer-hello/v2" || challenge ||
receiver_id || pubkey``. :func:`check_hello` accepts it only for the challenge
the receiver gave on that connection and for the receiver's own id, so a HELLO
seen on the wire cannot be replayed on another connection or to another server.
It proves that the holder of the key answered this connection, nothing more:
what peers then send is authenticated by its own content (signed batches,
pre-commits, certificates), and the identity decides where messages for which
signers go. It is also the key a hosted member's agent **binds**
(``node/machines/binding.py``: the member's signed binding of this key, with a
serial that a newer binding, or a revocation, replaces): the node signs that
member's round changes to other servers with it, and a server takes a round
change only from the connection whose identity key the member bound. A server
the peer chose to connect to can still relay its challenge elsewhere unless the
peer checks the receiver id it is given (the node does not pin its peers' ids
yet).

These are pure functions: the server holds the per-connection challenge.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from node.crypto import bls, keystore
from node.machines.governance import signer_id

HELLO_DOMAIN = b"XLN/peer-hello/v2"
CHALLENGE_LEN = 32
ID_LEN = 32
PUBKEY_LEN = 48
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

    def hello(self, challenge: bytes, receiver_id: bytes) -> list[bytes]:
        """A peer HELLO's body answering ``challenge`` from the server ``receiver_id``."""
        pubkey = self.pubkey
        sig = bls.sign(self.secret_key, hello_message(challenge, receiver_id, pubkey))
        return [pubkey, challenge, receiver_id, sig]


def new_challenge() -> bytes:
    """A fresh challenge for one connection's peer HELLO."""
    return secrets.token_bytes(CHALLENGE_LEN)


def hello_message(challenge: bytes, receiver_id: bytes, pubkey: bytes) -> bytes:
    """The bytes a peer HELLO signs (docs/PROTOCOL.md § 11.7): 129 of them."""
    if len(challenge) != CHALLENGE_LEN or len(receiver_id) != ID_LEN:
        raise ValueError("a challenge and a receiver id are 32 bytes each")
    return HELLO_DOMAIN + challenge + receiver_id + pubkey


def check_hello(
    pubkey: bytes,
    challenge: bytes,
    receiver_id: bytes,
    signature: bytes,
    *,
    given: bytes | None,
    own_id: bytes,
) -> str | None:
    """None if the peer's HELLO answers ``given``, the challenge this connection was
    given (None: it asked for none), is meant for ``own_id`` and is signed by
    ``pubkey``; else why not."""
    if given is None:
        return "peer HELLO without a challenge: send CHALLENGE first on this connection"
    if not secrets.compare_digest(challenge, given):
        return (
            "peer HELLO answers another challenge than this connection's"
            " (a HELLO is good for one connection only)"
        )
    if receiver_id != own_id:
        return (
            f"peer HELLO is meant for server {receiver_id.hex()[:16]},"
            f" not this one ({own_id.hex()[:16]})"
        )
    if not bls.key_validate(pubkey):
        return "peer identity key is not a valid BLS public key"
    if not bls.verify(pubkey, hello_message(challenge, receiver_id, pubkey), signature):
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
