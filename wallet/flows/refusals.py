"""What the wallet says about co-signers' refusals of a frame (pure: no Qt).

The node keeps the members' signed refusals it has seen (``node/refusals.py``); the
wallet reads them with the entity's evidence, each checked against the entity's
config (``EntityReader.refusals``), into ``WalletModel.refusals``. The Approvals
view shows, under a frame's signers bar, who refused that frame and why: one line
per member, its latest round; and, for a frame refused and not certified that holds
batches of this wallet's signer, their nonces to withdraw (a batch of ``withdraw``
alone at a nonce replaces the refused batch in every pool: ``withdrawable``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from node.machines.frames import Frame
from node.machines.refusal import Refusal

# Shown with a pending frame of an entity that has channels: a channel frame goes out
# only inside a certified entity frame (PROTOCOL.md § 11.8).
CHANNELS_WAIT = (
    "While this frame waits, this entity's channel messages wait too:"
    " no payment in or out moves until a frame is certified."
)


def refusals_of(refusals: Sequence[Refusal], frame_hash: bytes) -> list[Refusal]:
    """The refusals of ``frame_hash``: each member's latest, in the order members first refused."""
    latest: dict[bytes, Refusal] = {}
    for r in refusals:
        if r.frame_hash != frame_hash:
            continue
        held = latest.get(r.signer)
        if held is None or r.round >= held.round:
            latest[r.signer] = r
    return list(latest.values())


def refusal_lines(
    refusals: Sequence[Refusal], frame_hash: bytes, name: Callable[[bytes], str]
) -> list[str]:
    """One line per member that refused ``frame_hash``: who, at which round, and why."""
    return [
        f"Refused by {name(r.signer)} at round {r.round}: {r.reason}"
        for r in refusals_of(refusals, frame_hash)
    ]


def withdrawable(
    frame: Frame, signer: bytes, refusals: Sequence[Refusal], certified: bool
) -> tuple[int, ...]:
    """The nonces of ``signer``'s batches in ``frame`` that it may withdraw: the frame
    was refused by a member and is not certified (a withdrawal after the threshold
    approved it is refused by the node as too late)."""
    if certified or not refusals_of(refusals, frame.hash):
        return ()
    return tuple(sorted(b.nonce for b in frame.batches if b.signer == signer))
