"""One signer's replica of an entity, and the consensus that moves it (pure).

``step(replica, inputs) -> (replica, effects)`` is the transition. The package's
modules, each one job:

``inputs``     the wire inputs (``submit_batch``, ``approve``, ``polka``, ``precommit``,
               ``commit``, ``timeout``, ``seen_lock``, ``round_change``, ``deliver``,
               ``signed_round_change``, ``server_binding``, ``refusal``), and ``Lock``
``effects``    what a step asks of the runtime (``Send``, ``ProposeFrame``,
               ``PrecommitDue``, ``Transmit``, ``Committed``, ``Invite``, ``Note``), and the
               ``Transmit`` of signed channel messages (``transmissions``, ``resend_to``)
``state``      ``Replica`` with its frame in flight (``Pending``) and ``Genesis``: the
               state, its encodings and their decoding
``execution``  ``execute_frame``: a frame run through the caller's cache of outcomes
``stepping``   ``Step``, one step in progress
``consensus``  ``step``: batches and channel messages in, approvals and polkas,
               pre-commits, commits
``rounds``     timeouts, round changes (and who may speak for a member: its
               server binding), catch-up and locks
``proposing``  the proposer's frame, and a frame's budget
``checks``     what the node checks outside a block: inputs on intake, forwarded
               batches, proposals

The signed channel messages a certified frame makes, whom they go to and how long
they are kept are ``node.machines.mailbox``'s. This module re-exports the names
the rest of the node uses.
"""

from node.machines.replica.checks import (
    check_batch,
    check_proposal,
    check_round_change,
    over_frame_budget,
    stale,
)
from node.machines.replica.consensus import step
from node.machines.replica.effects import (
    Committed,
    Effect,
    Invite,
    Note,
    PrecommitDue,
    ProposeFrame,
    Send,
    Transmit,
    resend,
    resend_to,
)
from node.machines.replica.execution import execute_frame
from node.machines.replica.inputs import (
    INTERNAL_INPUTS,
    PEER_ONLY_INPUTS,
    AnnounceBinding,
    Approve,
    Commit,
    Deliver,
    Lock,
    PolkaNotice,
    Precommit,
    RefusalInput,
    RoundChange,
    SeenLock,
    SignedRoundChange,
    SubmitBatch,
    Timeout,
)
from node.machines.replica.state import Genesis, Pending, Replica, create

__all__ = [
    "INTERNAL_INPUTS",
    "PEER_ONLY_INPUTS",
    "AnnounceBinding",
    "Approve",
    "Commit",
    "Committed",
    "Deliver",
    "Effect",
    "Genesis",
    "Invite",
    "Lock",
    "Note",
    "Pending",
    "PolkaNotice",
    "Precommit",
    "PrecommitDue",
    "ProposeFrame",
    "RefusalInput",
    "Replica",
    "RoundChange",
    "SeenLock",
    "Send",
    "SignedRoundChange",
    "SubmitBatch",
    "Timeout",
    "Transmit",
    "check_batch",
    "check_proposal",
    "check_round_change",
    "create",
    "execute_frame",
    "over_frame_budget",
    "resend",
    "resend_to",
    "stale",
    "step",
]
