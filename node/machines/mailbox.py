"""The life of an entity's signed channel messages: made, addressed, kept, resent (pure).

After a frame is certified, its outgoing messages (channel frames, acks and
signer-set announcements) are made from its outbox with the quorum's signatures
(:func:`signed_messages`) and delivered to every member of the counterparty
(:func:`addressees`). Delivery can fail, so a replica keeps them until they cannot
matter any more: per counterparty, our pending channel frame (until it is acked)
and our last ack (until the next one replaces it); and the latest announcements
of our signer set (at most ``MAX_ANNOUNCED - 1`` older ones and the new one).
What goes again to a counterparty is :meth:`Mailbox.resend_for` (a runtime finds
the counterparties with a pending frame as it sends them, and after a restart a
page at a time with :meth:`Mailbox.pending_page`), and the ack to repeat when a
frame we applied comes again is :meth:`Mailbox.ack_for`. The replica turns
these into its ``Transmit`` effects (``node.machines.replica.effects``).

A hub keeps one entry per channel, so the entries live in a :class:`MerkleMap`
keyed by counterparty: a frame updates only the entries of the channels it
changed, and the replica's hash commits to them through the map's root.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_list,
    decode,
    encode_list,
    encode_tree,
)
from node.machines import accounts
from node.machines.accounts import Message
from node.machines.channel import Ack
from node.machines.entity import EntityState
from node.machines.frames import Certificate, Frame
from node.merkle_map import MerkleMap


@dataclass(frozen=True)
class Kept:
    """What one counterparty may still need from us: our pending channel frame and our
    last ack, each as the signed message that carried it (at least one of them)."""

    peer: bytes
    frame: Message | None = None
    ack: Message | None = None

    @cached_property
    def encoded(self) -> bytes:
        """``[peer, [frame_message] or [], [ack_message] or []]``: the map's leaf value."""
        return encode_list(
            [
                encode_tree(self.peer),
                encode_list([self.frame.raw] if self.frame else []),
                encode_list([self.ack.raw] if self.ack else []),
            ]
        )

    def messages(self) -> list[Message]:
        """The frame first, then the ack."""
        return [m for m in (self.frame, self.ack) if m is not None]


NOTHING_KEPT: MerkleMap[Kept] = MerkleMap.empty()


@dataclass(frozen=True)
class Mailbox:
    """The announcements (oldest first) and the kept messages by counterparty."""

    announced: tuple[Message, ...] = ()
    kept: MerkleMap[Kept] = NOTHING_KEPT

    def __bool__(self) -> bool:
        return bool(self.announced) or bool(self.kept)

    def messages(self) -> Iterator[tuple[bytes, Message]]:
        """Every message with the counterparty it goes to (empty for an announcement,
        which goes to all): the announcements, then by ascending counterparty, a frame
        before an ack. Walks every entry: for readers, not for a frame's work."""
        for m in self.announced:
            yield b"", m
        for k in self.kept.values():
            for m in k.messages():
                yield k.peer, m

    def pending_frames(self) -> Iterator[tuple[bytes, Message]]:
        for k in self.kept.values():
            if k.frame is not None:
                yield k.peer, k.frame

    def to_resend(self) -> list[tuple[bytes, Message]]:
        """Every pending frame again, after the announcements: walks every entry (for
        tests and simulations; a node resends per counterparty, :meth:`resend_for`)."""
        frames = list(self.pending_frames())
        if not frames:
            return []
        announced = [(b"", m) for m in self.announced]
        return [*announced, *frames]

    def resend_for(self, peer: bytes) -> list[Message]:
        """What goes again to one counterparty: our pending channel frame for it, after
        the announcements of our signer set (it may have missed them, and needs them to
        check the frame's signers); nothing while no frame is pending for it. Acks go
        again when the frame they ack comes again (:meth:`ack_for`). One lookup."""
        k = self.kept.get(peer)
        if k is None or k.frame is None:
            return []
        return [*self.announced, k.frame]

    def pending_page(self, after: bytes | None, limit: int) -> tuple[list[bytes], bytes | None]:
        """The counterparties with a pending frame among the ``limit`` entries after
        ``after`` (None: from the first), and the last entry looked at (None: the walk
        is done). Costs the page, not the map: a restart's paced sweep."""
        found: list[bytes] = []
        last: bytes | None = None
        for key, k in self.kept.items_from(after or bytes(HASH_LEN)):
            if key == after:
                continue
            if k.frame is not None:
                found.append(key)
            last = key
            limit -= 1
            if not limit:
                return found, last
        return found, None

    def ack_for(self, peer: bytes, frame_hash: bytes) -> Message | None:
        """Our ack of ``peer``'s frame ``frame_hash``, if it is the last one we sent."""
        k = self.kept.get(peer)
        if k is None or k.ack is None:
            return None
        body = k.ack.body
        return k.ack if isinstance(body, Ack) and body.frame_hash == frame_hash else None

    def after(
        self,
        post: EntityState,
        changed: Iterable[bytes],
        fresh: Iterable[tuple[bytes, Message]],
    ) -> Mailbox:
        """The mailbox after a certified frame: for the channels the frame ``changed``,
        only the messages that still match their records (a pending frame not yet
        acked, the last ack); then the frame's own ``fresh`` messages. Entries of the
        other channels are not looked at: their records did not change."""
        updates: dict[bytes, Kept | None] = {}
        for peer in changed:
            k = self.kept.get(peer)
            if k is not None:
                updates[peer] = _still_needed(k, post)
        announced = list(self.announced[-(accounts.MAX_ANNOUNCED - 1) :])
        for peer, m in fresh:
            if m.kind == accounts.ANNOUNCE:
                announced.append(m)
                continue
            k = updates[peer] if peer in updates else self.kept.get(peer)
            if k is None:
                k = Kept(peer)
            k = Kept(peer, m, k.ack) if m.kind == accounts.FRAME else Kept(peer, k.frame, m)
            updates[peer] = k
        return Mailbox(tuple(announced), self.kept.set_many(updates))

    def to_tree(self) -> list[RlpTree]:
        """The flat list ``[[peer, message], …]`` of :meth:`messages` (PROTOCOL.md § 10.6)."""
        return [[peer, m.to_tree()] for peer, m in self.messages()]

    def encoded(self) -> bytes:
        return encode_list(encode_list([encode_tree(p), m.raw]) for p, m in self.messages())

    def header(self) -> bytes:
        """What the replica's hash commits to: ``[[announcement, …], kept_root]``."""
        return encode_list(
            [encode_list(m.raw for m in self.announced), encode_tree(self.kept.root)]
        )

    @classmethod
    def from_header(cls, item: RlpItem, kept: MerkleMap[Kept]) -> Mailbox:
        """The mailbox whose ``header`` is ``item``, with its kept messages (read
        apart, as storage keeps them); DecodeError unless they have its root."""
        f = as_list(item, "mailbox header", size=2)
        announced: list[Message] = []
        for raw in as_list(f[0], "announcements", max_len=accounts.MAX_ANNOUNCED):
            m = accounts.input_from_item(raw)
            if m.kind != accounts.ANNOUNCE:
                raise DecodeError("mailbox: not an announcement")
            _check_newer(announced, m)
            announced.append(m)
        if as_bytes(f[1], "kept root", size=HASH_LEN) != kept.root:
            raise DecodeError("mailbox: the kept messages do not match the header's root")
        return cls(tuple(announced), kept)

    @classmethod
    def from_item(cls, item: RlpItem) -> Mailbox:
        """The flat list, strictly in the order :meth:`messages` writes it."""
        announced: list[Message] = []
        kept: list[Kept] = []
        for raw in as_list(item, "signed messages"):
            f = as_list(raw, "signed message", size=2)
            message = accounts.input_from_item(f[1])
            if message.kind == accounts.ANNOUNCE:
                as_bytes(f[0], "signed announcement peer", size=0)
                if kept:
                    raise DecodeError("signed messages: an announcement after a channel message")
                _check_newer(announced, message)
                announced.append(message)
                continue
            peer = as_bytes(f[0], "signed message peer", size=HASH_LEN)
            last = kept[-1] if kept else None
            if last is not None and last.peer == peer:
                if message.kind != accounts.ACK or last.ack is not None:
                    raise DecodeError("signed messages: not a frame then an ack per peer")
                kept[-1] = Kept(peer, last.frame, message)
                continue
            if last is not None and last.peer > peer:
                raise DecodeError("signed messages: peers not ascending")
            if message.kind == accounts.FRAME:
                kept.append(Kept(peer, message, None))
            else:
                kept.append(Kept(peer, None, message))
        if len(announced) > accounts.MAX_ANNOUNCED:
            raise DecodeError(f"signed messages: more than {accounts.MAX_ANNOUNCED} announcements")
        return cls(tuple(announced), MerkleMap.from_items((k.peer, k) for k in kept))


NO_MAIL = Mailbox()


def signed_messages(
    pre: EntityState, post: EntityState, frame: Frame, cert: Certificate
) -> list[tuple[bytes, Message]]:
    """The frame's outgoing messages with their quorum signatures (made by the signer
    set before the frame, whose height the message names)."""
    out: list[tuple[bytes, Message]] = []
    for item, signature in zip(frame.outbox, cert.outbox, strict=True):
        body: accounts.MessageBody
        if item.kind == accounts.ANNOUNCE:
            body = accounts.Announce(post.entity_id, post.config_height, post.config)
        else:
            record = post.channel(item.peer)
            assert record is not None
            side = record.side
            found = side.pending if item.kind == accounts.FRAME else side.last_ack
            assert found is not None
            assert found.hash == item.hash
            body = found
        message = Message(item.kind, post.entity_id, body, pre.config_height, cert.bits, signature)
        out.append((item.peer, message))
    return out


def addressees(entity: EntityState, peer: bytes) -> list[tuple[bytes, bytes]]:
    """Who a message for ``peer`` goes to, as (counterparty, member): every member of
    the counterparty (an announcement, whose ``peer`` is empty: of every
    counterparty), as we know their signer sets."""
    records = [entity.channel(peer)] if peer else list(entity.channels.values())
    return [(r.peer, m) for r in records if r is not None for m in r.peer_config.ids]


def _check_newer(announced: list[Message], m: Message) -> None:
    """Announcements are kept oldest first: each names a later signer set."""
    if announced and not _set_height(announced[-1]) < _set_height(m):
        raise DecodeError("signed messages: announcements not in ascending height")


def _set_height(m: Message) -> int:
    body = m.body
    if not isinstance(body, accounts.Announce):
        raise DecodeError("signed messages: an announcement without its signer set")
    return body.config_height


def kept_from_raw(raw: bytes) -> Kept:
    """One kept entry as storage holds it (``Kept.encoded``)."""
    f = as_list(decode(raw), "kept", size=3)
    peer = as_bytes(f[0], "kept peer", size=HASH_LEN)
    frame = ack = None
    for x in as_list(f[1], "kept frame", max_len=1):
        frame = _message(x, accounts.FRAME)
    for x in as_list(f[2], "kept ack", max_len=1):
        ack = _message(x, accounts.ACK)
    if frame is None and ack is None:
        raise DecodeError("kept: no message")
    return Kept(peer, frame, ack)


def _message(item: RlpItem, kind: int) -> Message:
    m = accounts.input_from_item(item)
    if m.kind != kind:
        raise DecodeError("kept: not the expected channel message")
    return m


def _still_needed(k: Kept, post: EntityState) -> Kept | None:
    record = post.channel(k.peer)
    if record is None:
        return None
    side = record.side
    frame = k.frame if k.frame and side.pending and side.pending.hash == k.frame.hash else None
    ack = k.ack if k.ack and side.last_ack and side.last_ack.hash == k.ack.hash else None
    if frame is k.frame and ack is k.ack:
        return k
    return None if frame is None and ack is None else Kept(k.peer, frame, ack)
