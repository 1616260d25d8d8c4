"""Server bindings and signed round changes: who may speak for a member between servers (pure).

A member's agent signs a **binding** of the identity key of the server that hosts
the member (``node/identity.py``): "this server speaks for me in round changes".
It is entity-independent (one binding serves every entity the member belongs to)
and carries a **serial**: a binding with a higher serial replaces every binding of
that member with a lower one, so a member revokes its server's binding by signing
a newer one, of its new server's key or of :data:`NO_SERVER` (48 zero bytes, no
valid key: then no server speaks for it). The agent keeps the serial: asked to
bind the key it bound last, it returns that binding again; asked for another key,
it signs the next serial (``node/agent.py``).

The binding message (109 bytes), signed with the member's own BLS key::

    b"XLN/server-binding/v1" (21) || signer_id (32) || server_key (48) || serial (8, BE)

The hosting server signs each round change it sends to another server with its
identity key, over the round-change message (127 bytes)::

    b"XLN/round-change/v1" (19) || entity_id (32) || height (8, BE) || round (4, BE)
    || signer_id (32) || lock_hash (32, keccak-256 of the lock's RLP, or 32 zero bytes)

Every other message a key signs differs in its domain tag and its length (a
pre-commit is 99 bytes, a batch 123, a peer HELLO 129, an outgoing hash 32), so
neither can be taken for another. The replica checks both signatures
(``replica.rounds``): a round change counts only under a member's binding that no
higher serial replaced, signed by the key that binding names, for this entity,
height, round and lock. So a server speaks for the members bound to it and no
other, and what it signed cannot be replayed at another entity, height or round.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.codec import (
    HASH_LEN,
    ZERO_HASH,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    int_bytes,
    keccak,
)
from node.crypto import bls

BINDING_DOMAIN = b"XLN/server-binding/v1"
ROUND_CHANGE_DOMAIN = b"XLN/round-change/v1"
PUBKEY_LEN = 48
SIG_LEN = 96
NO_SERVER = b"\x00" * PUBKEY_LEN  # bound to no server: the member's revocation
MAX_SERIAL = 2**64 - 1


def binding_message(signer: bytes, server_key: bytes, serial: int) -> bytes:
    """The 109 bytes a member's key signs to bind ``server_key`` at ``serial``."""
    if len(signer) != HASH_LEN or len(server_key) != PUBKEY_LEN:
        raise ValueError("a signer id is 32 bytes and a server key 48")
    return BINDING_DOMAIN + signer + server_key + serial.to_bytes(8, "big")


def round_change_message(
    entity_id: bytes, height: int, round_: int, signer: bytes, lock_hash: bytes
) -> bytes:
    """The 127 bytes a hosting server signs for one of its members' round changes."""
    return (
        ROUND_CHANGE_DOMAIN
        + entity_id
        + height.to_bytes(8, "big")
        + round_.to_bytes(4, "big")
        + signer
        + lock_hash
    )


def lock_hash(lock_encoded: bytes | None) -> bytes:
    """What a round change's message says of its lock: the hash of its RLP, or zeros."""
    return ZERO_HASH if lock_encoded is None else keccak(lock_encoded)


@dataclass(frozen=True, slots=True)
class ServerBinding:
    """``signer``'s binding of ``server_key`` at ``serial``, signed by the signer's key."""

    signer: bytes
    server_key: bytes
    serial: int
    signature: bytes

    @property
    def message(self) -> bytes:
        return binding_message(self.signer, self.server_key, self.serial)

    @property
    def revokes(self) -> bool:
        """True if it binds no server (the member's revocation)."""
        return self.server_key == NO_SERVER

    def to_tree(self) -> list[RlpItem]:
        return [self.signer, self.server_key, int_bytes(self.serial), self.signature]

    @classmethod
    def from_item(cls, item: RlpItem) -> ServerBinding:
        f = as_list(item, "server binding", size=4)
        return cls(
            as_bytes(f[0], "binding signer", size=HASH_LEN),
            as_bytes(f[1], "bound server key", size=PUBKEY_LEN),
            as_int(f[2], "binding serial", min_value=1, max_value=MAX_SERIAL),
            as_bytes(f[3], "binding signature", size=SIG_LEN),
        )

    def verify(self, member_pubkey: bytes) -> bool:
        """Whether the member whose key is ``member_pubkey`` signed it."""
        return bls.verify(member_pubkey, self.message, self.signature)


def sign_binding(secret_key: int, signer: bytes, server_key: bytes, serial: int) -> ServerBinding:
    """A binding signed with ``secret_key`` (the member's; ``signer`` its id)."""
    if not 1 <= serial <= MAX_SERIAL:
        raise ValueError("a binding's serial is 1 … 2^64 - 1")
    signature = bls.sign(secret_key, binding_message(signer, server_key, serial))
    return ServerBinding(signer, server_key, serial, signature)


@dataclass(frozen=True, slots=True)
class Bound:
    """A replica's record of a member's binding: the highest serial it has seen, with the
    key bound and the member's signature (a binding seen again is not verified again)."""

    signer: bytes
    serial: int
    server_key: bytes
    signature: bytes

    def to_tree(self) -> list[RlpItem]:
        return [self.signer, int_bytes(self.serial), self.server_key, self.signature]

    @classmethod
    def from_item(cls, item: RlpItem) -> Bound:
        f = as_list(item, "bound", size=4)
        return cls(
            as_bytes(f[0], "bound signer", size=HASH_LEN),
            as_int(f[1], "bound serial", min_value=1, max_value=MAX_SERIAL),
            as_bytes(f[2], "bound server key", size=PUBKEY_LEN),
            as_bytes(f[3], "bound signature", size=SIG_LEN),
        )

    @classmethod
    def of(cls, binding: ServerBinding) -> Bound:
        return cls(binding.signer, binding.serial, binding.server_key, binding.signature)

    def same(self, binding: ServerBinding) -> bool:
        return (
            self.serial == binding.serial
            and self.server_key == binding.server_key
            and self.signature == binding.signature
        )


def binding_refusal(
    binding: ServerBinding, member_pubkey: bytes | None, recorded: Bound | None
) -> str | None:
    """Why ``binding`` is not its member's current binding, or None: it must be signed
    by a member of the entity (``member_pubkey``, its key in the config; None: not a
    member) and have no higher serial recorded (``recorded``: the highest-serial
    binding of that member seen so far, or None), nor another binding at its serial.
    A revocation (:data:`NO_SERVER`) can be current: then no server speaks for it."""
    who = binding.signer.hex()[:16]
    if member_pubkey is None:
        return f"binding by {who}, not a member of the entity"
    if recorded is not None:
        if binding.serial < recorded.serial:
            return (
                f"binding of {who} at serial {binding.serial} was replaced"
                f" by serial {recorded.serial}"
            )
        if recorded.same(binding):
            return None  # verified when it was recorded
    if not binding.verify(member_pubkey):
        return f"binding does not verify under member {who}'s key"
    if recorded is not None and binding.serial == recorded.serial:
        return f"a second binding of {who} at serial {binding.serial}: not counted"
    return None
