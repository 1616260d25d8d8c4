"""What a replica's step asks of the runtime (its effects), once the block is durable.

The runtime (``node.coordinator``) routes ``Send`` to another replica of the same
entity and ``Transmit`` to a member's replica of a counterparty entity, asks the
proposer's agent to approve a ``ProposeFrame``, a member's agent to pre-commit on a
``PrecommitDue``, and logs the rest. ``transmissions``
and ``resend`` turn the signed channel messages the mailbox holds into
``Transmit`` effects: the mailbox says which messages and to whom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.machines import entity as ent
from node.machines.accounts import Message
from node.machines.entity import EntityState
from node.machines.frames import Certificate, Frame, Polka
from node.machines.mailbox import addressees
from node.machines.replica.inputs import Deliver
from node.machines.replica.state import Genesis, Replica
from node.txs import Tx


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``tx`` to signer ``to``'s replica of this entity (on whichever server hosts it)."""

    to: bytes
    tx: Tx


@dataclass(frozen=True, slots=True)
class ProposeFrame:
    """Ask this signer's agent to approve, then send the proposal to ``members``.
    ``valid``: the polka of a lock this proposal re-proposes (it lets members locked
    on another frame at a lower round approve this one)."""

    frame: Frame
    round: int
    members: tuple[bytes, ...]
    valid: Polka | None = None


@dataclass(frozen=True, slots=True)
class PrecommitDue:
    """A polka for ``frame_hash`` at (height, polka.round): ask this signer's agent to
    pre-commit that frame (if it approved it there) and send the pre-commit to
    ``proposer``."""

    height: int
    frame_hash: bytes
    polka: Polka
    proposer: bytes


@dataclass(frozen=True, slots=True)
class Transmit:
    """Deliver ``tx`` to signer ``to``'s replica of another entity, ``entity``."""

    entity: bytes
    to: bytes
    tx: Tx


@dataclass(frozen=True, slots=True)
class Committed:
    frame: Frame
    cert: Certificate
    events: ent.FrameEvents
    state: ent.EntityState  # the agreed state the frame made (kept readable by hash)


@dataclass(frozen=True, slots=True)
class Invite:
    """Signer ``to`` became a member: it should make a replica from ``genesis``."""

    to: bytes
    genesis: Genesis


@dataclass(frozen=True, slots=True)
class Note:
    """Something refused or noteworthy, for the log and the input's receipt."""

    index: int  # the input's index in this step, or -1
    message: str


type Effect = Send | Transmit | ProposeFrame | PrecommitDue | Committed | Invite | Note


def transmissions(entity: EntityState, messages: Sequence[tuple[bytes, Message]]) -> list[Effect]:
    """Deliver each message to every member of its counterparty (an announcement: of
    every counterparty), as we know their signer sets (``mailbox.addressees``)."""
    out: list[Effect] = []
    for peer, message in messages:
        tx = Tx.of(Deliver(message))
        out.extend(Transmit(counterparty, m, tx) for counterparty, m in addressees(entity, peer))
    return out


def resend_to(replica: Replica, peer: bytes) -> list[Effect]:
    """What goes again to one counterparty (``Mailbox.resend_for``): our pending frame
    for it after our announcements, to its members only."""
    out: list[Effect] = []
    for message in replica.mailbox.resend_for(peer):
        tx = Tx.of(Deliver(message))
        out.extend(Transmit(c, m, tx) for c, m in addressees(replica.entity, peer))
    return out


def resend(replica: Replica) -> list[Effect]:
    """Our pending channel frames again, after the announcements of our signer set
    (after a reconnect, a restart or a timeout; every message is idempotent): the
    mailbox's ``to_resend``. Acks go again when the frame they ack comes again
    (``consensus``, on a stale ``deliver``)."""
    return transmissions(replica.entity, replica.mailbox.to_resend())
