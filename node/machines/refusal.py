"""A member's signed refusal of a frame, with its reason (pure).

When a member's agent will not approve a frame because its person or its
accountant said no (not because its double-sign guard forbids it), it signs a
**refusal**: the member's key over the refusal message (121 bytes)::

    b"XLN/refuse/v1" (13) || entity_id (32) || height (8, BE) || round (4, BE)
    || frame_hash (32) || keccak-256(reason) (32)

with the reason beside it (UTF-8, at most :data:`MAX_REASON_BYTES`; for the
accountant, its rule's name and what it found). The domain tag and the length
differ from every other message a key signs (a pre-commit is 99 bytes, a binding
109, a round change 127, a peer HELLO 129), so a refusal can be taken for nothing
else. Anyone can check it against the member's key, and the key against the
member's id (its keccak-256).

A refusal is a pre-vote for nothing (``docs/CONSENSUS.md``, "Refusals"): it takes no
slot and locks nobody, so a refused frame holds no height. It is what lets the
proposer, the other members and their wallets see who refused which frame and why
(``node/refusals.py`` keeps them; ``READ_ENTITY``'s refusals part reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    int_bytes,
    keccak,
)
from node.crypto import bls
from node.machines.entity import SIG_LEN
from node.machines.frames import MAX_ROUND

REFUSE_DOMAIN = b"XLN/refuse/v1"
MAX_REASON_BYTES = 512


def refusal_message(
    entity_id: bytes, height: int, round_: int, frame_hash: bytes, reason: str
) -> bytes:
    """The 148 bytes a member's key signs to refuse ``frame_hash`` at (height, round)."""
    if len(entity_id) != HASH_LEN or len(frame_hash) != HASH_LEN:
        raise ValueError("an entity id and a frame hash are 32 bytes")
    return (
        REFUSE_DOMAIN
        + entity_id
        + height.to_bytes(8, "big")
        + round_.to_bytes(4, "big")
        + frame_hash
        + keccak(reason.encode("utf-8"))
    )


def fit_reason(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON_BYTES` of UTF-8 (whole characters)."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return reason
    return raw[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


@dataclass(frozen=True, slots=True)
class Refusal:
    """``signer``'s refusal of frame ``frame_hash`` of ``entity`` at (height, round)."""

    entity: bytes
    height: int
    round: int
    frame_hash: bytes
    signer: bytes
    reason: str
    signature: bytes

    @property
    def message(self) -> bytes:
        return refusal_message(self.entity, self.height, self.round, self.frame_hash, self.reason)

    def verify(self, member_pubkey: bytes) -> bool:
        """Whether the member whose key is ``member_pubkey`` signed it (and is ``signer``)."""
        return keccak(member_pubkey) == self.signer and bls.verify(
            member_pubkey, self.message, self.signature
        )

    def to_tree(self) -> list[RlpItem]:
        return [
            self.entity,
            int_bytes(self.height),
            int_bytes(self.round),
            self.frame_hash,
            self.signer,
            self.reason.encode("utf-8"),
            self.signature,
        ]

    @classmethod
    def from_item(cls, item: RlpItem) -> Refusal:
        f = as_list(item, "refusal", size=7)
        reason = as_bytes(f[5], "refusal reason", max_len=MAX_REASON_BYTES)
        try:
            text = reason.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("refusal reason: not UTF-8") from None
        return cls(
            as_bytes(f[0], "refusal entity", size=HASH_LEN),
            as_int(f[1], "refusal height", min_value=1),
            as_int(f[2], "refusal round", max_value=MAX_ROUND),
            as_bytes(f[3], "refused frame hash", size=HASH_LEN),
            as_bytes(f[4], "refusing signer", size=HASH_LEN),
            text,
            as_bytes(f[6], "refusal signature", size=SIG_LEN),
        )


def sign_refusal(
    secret_key: int,
    signer: bytes,
    entity: bytes,
    height: int,
    round_: int,
    frame_hash: bytes,
    reason: str,
) -> Refusal:
    """A refusal signed with ``secret_key`` (the member's; ``signer`` its id)."""
    reason = fit_reason(reason)
    message = refusal_message(entity, height, round_, frame_hash, reason)
    return Refusal(
        entity, height, round_, frame_hash, signer, reason, bls.sign(secret_key, message)
    )
