"""Checks the node makes outside a block: an input on intake, a forwarded batch, a proposal.

The network endpoint refuses an entity input that could never fit a frame
(``over_frame_budget``), a forwarded batch its signer did not sign
(``check_batch``) and a round change its member's bound server did not sign
(``check_round_change``, the transition's own rule), and drops a peer's
consensus message about a height or round the replica has left (``stale``)
before it costs a block; the coordinator asks
``check_proposal`` before this signer's agent approves a frame.
"""

from __future__ import annotations

from node.codec import scan
from node.crypto import bls
from node.machines.entity import Batch, FrameInvalid
from node.machines.frames import Frame
from node.machines.outcomes import Outcomes
from node.machines.replica.execution import execute_frame
from node.machines.replica.inputs import (
    AnnounceBinding,
    Approve,
    Commit,
    Deliver,
    PolkaNotice,
    Precommit,
    RoundChange,
    SeenLock,
    SignedRoundChange,
    SubmitBatch,
)
from node.machines.replica.proposing import COUNTING, MAX_FRAME_BATCH_ITEMS, MAX_FRAME_INPUT_ITEMS
from node.machines.replica.rounds import round_change_refusal
from node.machines.replica.state import Replica


def over_frame_budget(body: object) -> str | None:
    """Why an input can never fit a frame (its items alone pass the frame's budget),
    or None. The node refuses such inputs on intake, so the proposer's "at least
    one" never builds a frame that a peer link would refuse."""
    if isinstance(body, SubmitBatch):
        raw, cap, what = body.batch.raw, MAX_FRAME_BATCH_ITEMS, "batch"
    elif isinstance(body, Deliver):
        raw, cap, what = body.message.raw, MAX_FRAME_INPUT_ITEMS, "channel message"
    else:
        return None
    items = scan(raw, COUNTING)
    if items > cap:
        return f"a {what} of {items} RLP items exceeds a frame's budget of {cap}"
    return None


def stale(r: Replica, body: object) -> bool:
    """Whether a consensus message can change nothing at this replica, now or in any
    later state: it is about a height the replica has committed, or a round it has
    left at its next height. The transition ignores such a message (``consensus``,
    ``rounds``), and as heights and rounds only grow, it would ignore it in any later
    block too: the node drops it on intake, before it asks for an early block."""
    match body:
        case (
            RoundChange(height=height, round=round_)
            | SignedRoundChange(report=RoundChange(height=height, round=round_))
        ):
            return height < r.next_height or (height == r.next_height and round_ < r.round)
        case AnnounceBinding(binding=binding):
            # A replica's recorded serial only grows: an older or the same binding
            # changes nothing, now or later.
            bound = r.bound(binding.signer)
            return bound is not None and (binding.serial < bound.serial or bound.same(binding))
        case Precommit(height=height) | Approve(height=height):
            return height < r.next_height
        case PolkaNotice(height=height, polka=polka):
            return height < r.next_height or (height == r.next_height and polka.round < r.round)
        case Commit(frame=frame):
            return frame.height < r.next_height
        case SeenLock(lock=lock):
            return lock.frame.height < r.next_height
    return False


def check_batch(r: Replica, batch: Batch) -> str | None:
    """None if ``batch`` is signed by a member of the entity as this replica knows it:
    what a peer's forwarded batch must prove before it is queued (a batch, a faucet's
    among them, speaks for its member alone)."""
    config = r.entity.config
    slot = config.index.get(batch.signer)
    if slot is None:
        return f"batch from {batch.signer.hex()[:16]}, not a member of the entity"
    if not bls.verify(config.members[slot].pubkey, batch.message(r.entity_id), batch.signature):
        return f"batch signature does not verify under member {batch.signer.hex()[:16]}'s key"
    return None


def check_round_change(r: Replica, src: SignedRoundChange) -> str | None:
    """None if a peer's round change would count at ``r`` (``rounds.round_change_refusal``,
    the rule the transition applies): the node refuses it on intake otherwise, before
    it costs a block."""
    return round_change_refusal(r, src)


def check_proposal(
    r: Replica,
    frame: Frame,
    round_: int,
    proposer_sig: bytes,
    *,
    simulation: bool = False,
    outcomes: Outcomes | None = None,
) -> str | None:
    """None if this replica's signer may approve ``frame`` at ``round_``: the round's
    proposer approved it (``proposer_sig``), it extends our head, its round is not
    behind ours, and re-executing it on our replica gives the frame's state hash.
    Locks are the agent's to enforce. ``outcomes``: as ``step``'s."""
    if frame.entity_id != r.entity_id:
        return "proposal for another entity"
    if frame.height != r.next_height:
        return f"proposal at height {frame.height}, this replica is at {r.entity.height}"
    if frame.prev_hash != r.head:
        return "proposal does not extend this replica's head"
    if round_ < r.round:
        return f"proposal at round {round_}, this replica is at round {r.round}"
    config = r.entity.config
    proposer = config.members[config.index[config.proposer_at(round_)]]
    if not bls.verify(proposer.pubkey, frame.approval_message(round_), proposer_sig):
        return "proposal not approved by the round's proposer"
    try:
        post, events = execute_frame(
            r.entity, frame, verify=True, simulation=simulation, outcomes=outcomes
        )
    except FrameInvalid as exc:
        return f"proposal rejected by the entity rules: {exc}"
    if post.hash != frame.state_hash:
        return "proposal's state hash differs from re-execution"
    if tuple(events.outbox) != frame.outbox:
        return "proposal's outgoing messages differ from re-execution"
    return None
