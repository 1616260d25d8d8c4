"""A replica's kept signed channel messages (node/machines/mailbox.py), pure.

Every message here is real: a recording :class:`World` (tests/node/machines/
channel_world.py) runs entities with channels through certified frames, so the
frames, acks and signer-set announcements are the ``accounts.Message`` values the
replicas signed (quorum certificates over real BLS signatures), and the channel
records they are checked against are the entities' real states. The story is
built once per module; each test reads the snapshots it needs:

- A (one signer) has channels with B, C (one signer each) and H (three signers,
  threshold 2); A is the left side of each (its id is the smallest).
- ``opened``: A right after proposing its channel frame to B, not acked yet.
- ``sent``: A with its frame to B pending (its delivery lost) and its ack of B's
  last frame kept; ``acked``: after B acked that frame; ``later``: after B paid
  again (a new ack replaces the old one).
- B and A propose at once: B, the right side, loses the tie-break, acks A's frame
  and proposes again in the same frame.
- H's signer set changes ten times (ten announcements, more than MAX_ANNOUNCED).
- Then random payments while a third of the messages between entities are lost.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.codec import DecodeError, RlpTree, decode, encode_tree
from node.machines import accounts
from node.machines import channel as ch
from node.machines.accounts import ACK, ANNOUNCE, FRAME, MAX_ANNOUNCED, Message, Pay
from node.machines.entity import EntityState
from node.machines.governance import SetThreshold
from node.machines.mailbox import NO_MAIL, NOTHING_KEPT, Kept, Mailbox
from node.machines.replica import Replica
from node.merkle_map import MerkleMap
from node.txs import Tx
from tests.node.machines.channel_world import ASSET, World

UNKNOWN_PEER = b"\x77" * 32


@dataclass
class Recording(World):
    """A world that keeps every replica after each frame it commits."""

    history: dict[tuple[int, bytes], list[Replica]] = field(default_factory=dict)

    def step(self, k: int, eid: bytes) -> bool:
        busy = super().step(k, eid)
        replica = self.replicas[(k, eid)]
        kept = self.history.setdefault((k, eid), [])
        if not kept or kept[-1].head != replica.head:
            kept.append(replica)
        return busy


@dataclass(frozen=True)
class Story:
    world: Recording
    a: bytes
    b: bytes
    c: bytes
    h: bytes
    before_channels: EntityState  # A with a reserve and no channel yet
    opened: Replica
    sent: Replica
    acked: Replica
    later: Replica
    announcements: tuple[Message, ...]  # H's, oldest first

    def replicas(self) -> Iterator[Replica]:
        for history in self.world.history.values():
            yield from history

    def frames_of(self, sender: bytes) -> list[Message]:
        """Every channel frame ``sender`` signed, as its replicas kept it."""
        found: dict[bytes, Message] = {}
        for k in self.world.members[sender]:
            for r in self.world.history.get((k, sender), []):
                for _, m in r.mailbox.messages():
                    if m.kind == FRAME:
                        found[m.hash] = m
        return list(found.values())


def _first(world: World, name: str) -> Replica:
    eid = world.names[name]
    return world.replicas[(world.members[eid][0], eid)]


def _keep_all(src: bytes, dst: bytes, tx: Tx) -> bool:
    return False


def _tell(world: World) -> None:
    """Deliver what waits on the wire and stop holding messages."""
    world.hold = False
    for key, tx in world.wire:
        world.inbox[key].append(tx)
    world.wire.clear()


def _build(root: Path) -> Story:
    w = Recording(root)
    a = w.entity("A", [0], 1, salt=1)
    b = w.entity("B", [1], 1, salt=2)
    c = w.entity("C", [5], 1, salt=4)
    h = w.entity("H", [2, 3, 4], 2, salt=3)
    assert a < min(b, c, h)
    for name in ("A", "B", "C", "H"):
        w.mint(name, 10_000)
    w.run()
    before_channels = w.state("A")
    w.open("A", "B", collateral=1_000)
    opened = _first(w, "A")
    for x, y in (("B", "A"), ("A", "C"), ("C", "A"), ("A", "H"), ("H", "A")):
        w.open(x, y, collateral=1_000)
    w.settle()

    w.submit("B", Pay((a,), ASSET, 5))
    w.settle()
    w.drop = lambda src, dst, tx: src == a and dst == b  # A's next frame to B is lost
    w.submit("A", Pay((b,), ASSET, 7))
    w.run()
    sent = _first(w, "A")
    w.drop = _keep_all
    w.settle()  # resends it
    acked = _first(w, "A")
    w.submit("B", Pay((a,), ASSET, 3))
    w.settle()
    later = _first(w, "A")

    w.hold = True
    w.submit("A", Pay((b,), ASSET, 1))
    w.submit("B", Pay((a,), ASSET, 2))
    w.run()
    _tell(w)
    w.settle()

    for i in range(10):
        w.propose("H", SetThreshold(3 if i % 2 == 0 else 2))
    w.settle()

    rng = random.Random(5)
    w.drop = lambda src, dst, tx: rng.random() < 0.3
    pairs = [("A", b), ("B", a), ("A", c), ("C", a), ("A", h), ("H", a)]
    for _ in range(30):
        payer, payee = rng.choice(pairs)
        w.submit(payer, Pay((payee,), ASSET, rng.randint(1, 20)))
        w.run()
    w.drop = _keep_all
    w.settle()

    made: dict[bytes, Message] = {}
    for r in w.history[(2, h)]:
        for m in r.mailbox.announced:
            made[m.hash] = m
    announcements = tuple(sorted(made.values(), key=_announced_height))
    return Story(w, a, b, c, h, before_channels, opened, sent, acked, later, announcements)


def _announced_height(m: Message) -> int:
    assert isinstance(m.body, accounts.Announce)
    return m.body.config_height


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    s = _build(tmp_path_factory.mktemp("mailbox"))
    yield s
    s.world.close()


def _kept(mailbox: Mailbox, peer: bytes) -> Kept:
    k = mailbox.kept.get(peer)
    assert k is not None
    return k


def _frame_and_ack(story: Story) -> tuple[Message, Message]:
    """A's pending frame to B and its last ack of B's frame, in ``sent``."""
    k = _kept(story.sent.mailbox, story.b)
    assert k.frame is not None
    assert k.ack is not None
    return k.frame, k.ack


# The story is what the tests think it is ---------------------------------------------


def test_the_story_holds_the_messages_the_tests_need(story: Story) -> None:
    a, b = story.a, story.b
    frame, ack = _frame_and_ack(story)
    assert frame.kind == FRAME
    assert ack.kind == ACK
    assert frame.sender == ack.sender == a
    sent_side = story.sent.entity.channel(b)
    assert sent_side is not None
    assert sent_side.side.pending is not None
    assert sent_side.side.pending.hash == frame.hash
    assert sent_side.side.last_ack is not None
    assert sent_side.side.last_ack.hash == ack.hash
    acked = story.acked.entity.channel(b)
    assert acked is not None
    assert acked.side.pending is None
    assert acked.side.last_ack == sent_side.side.last_ack
    later = story.later.entity.channel(b)
    assert later is not None
    assert later.side.pending is None
    assert later.side.last_ack is not None
    assert later.side.last_ack.hash != ack.hash
    opened = _kept(story.opened.mailbox, b)
    assert opened.frame is not None
    assert opened.ack is None
    assert story.before_channels.channel(b) is None
    assert len(story.announcements) == 10 > MAX_ANNOUNCED
    assert all(m.kind == ANNOUNCE and m.sender == story.h for m in story.announcements)


# after --------------------------------------------------------------------------------


def test_fresh_frame_and_ack_go_into_the_peers_entry_frame_first(story: Story) -> None:
    b = story.b
    frame, ack = _frame_and_ack(story)
    post = story.sent.entity
    for fresh in ([(b, frame), (b, ack)], [(b, ack), (b, frame)]):
        m = NO_MAIL.after(post, [b], fresh)
        assert m.announced == ()
        assert list(m.kept.keys()) == [b]
        k = _kept(m, b)
        assert k == Kept(b, frame, ack)
        assert k.frame is frame
        assert k.ack is ack
        assert k.messages() == [frame, ack]
        assert list(m.messages()) == [(b, frame), (b, ack)]
        assert list(m.pending_frames()) == [(b, frame)]
    # One at a time, over two commits, into the same entry.
    m = NO_MAIL.after(post, [], [(b, ack)]).after(post, [], [(b, frame)])
    assert _kept(m, b) == Kept(b, frame, ack)


def test_a_fresh_message_replaces_only_its_own_kind(story: Story) -> None:
    """A fresh ack for a peer whose entry is not looked at keeps the entry's frame."""
    b = story.b
    frame, ack = _frame_and_ack(story)
    new_ack = _kept(story.later.mailbox, b).ack
    assert new_ack is not None
    assert new_ack != ack
    m = story.sent.mailbox.after(story.sent.entity, [], [(b, new_ack)])
    assert _kept(m, b) == Kept(b, frame, new_ack)


def test_the_real_tie_break_loser_keeps_its_new_ack_and_new_frame(story: Story) -> None:
    """B (the right side) proposed while A did: its frame lost, it acked A's frame and
    proposed again in one frame; its entry for A went from (old frame, old ack) to
    (new frame, new ack), the frame first."""
    a, b = story.a, story.b
    history = story.world.history[(1, b)]
    seen = 0
    for before, after in itertools.pairwise(history):
        old, new = before.mailbox.kept.get(a), after.mailbox.kept.get(a)
        if old is None or new is None or old.frame is None or new.ack is None:
            continue
        old_frame, new_ack = old.frame.body, new.ack.body
        assert isinstance(old_frame, ch.Frame)
        assert isinstance(new_ack, ch.Ack)
        if new_ack.height == old_frame.height:  # A's frame won at that height
            seen += 1
            assert new.frame is not None
            assert new.frame != old.frame
            assert old.ack != new.ack
            assert new.messages() == [new.frame, new.ack]
            side = after.entity.channel(a)
            assert side is not None
            assert side.side.pending is not None
            assert side.side.pending.hash == new.frame.hash
    assert seen >= 1


def test_a_fresh_announcement_goes_to_announced(story: Story) -> None:
    ann = story.announcements[0]
    m = NO_MAIL.after(story.acked.entity, [], [(b"", ann)])
    assert m.announced == (ann,)
    assert m.kept is NOTHING_KEPT
    assert list(m.messages()) == [(b"", ann)]
    assert list(m.pending_frames()) == []
    # Announcements come before channel messages, whatever the fresh order.
    frame, ack = _frame_and_ack(story)
    b = story.b
    m = NO_MAIL.after(story.sent.entity, [], [(b, frame), (b"", ann), (b, ack)])
    assert list(m.messages()) == [(b"", ann), (b, frame), (b, ack)]


def test_at_most_max_announced_announcements_the_oldest_dropped(story: Story) -> None:
    """A commit keeps at most ``MAX_ANNOUNCED - 1`` older announcements and adds its own:
    eight after each announcing commit (once there were eight), seven after one that
    announces nothing."""
    assert MAX_ANNOUNCED == 8
    anns = story.announcements
    post = story.acked.entity
    m = NO_MAIL
    for i in range(8):
        m = m.after(post, [], [(b"", anns[i])])
        assert m.announced == anns[: i + 1]
    m = m.after(post, [], [(b"", anns[8])])
    assert m.announced == anns[1:9]
    m = m.after(post, [], [(b"", anns[9])])
    assert m.announced == anns[2:10]
    m = m.after(post, [], [])
    assert m.announced == anns[3:10]
    m = m.after(post, [], [])
    assert m.announced == anns[3:10]
    m = m.after(post, [], [(b"", anns[0])])
    assert m.announced == (*anns[3:10], anns[0])


def test_real_replicas_keep_their_latest_announcements(story: Story) -> None:
    """On every replica of H, after every commit: the latest of the announcements made
    so far, oldest first, eight after a commit that announced and seven otherwise."""
    checked = 0
    for k in story.world.members[story.h]:
        for r in story.world.history[(k, story.h)]:
            made = [m for m in story.announcements if _announced_height(m) <= r.entity.height]
            announced_now = r.entity.config_height == r.entity.height > 0
            keep = min(len(made), MAX_ANNOUNCED if announced_now else MAX_ANNOUNCED - 1)
            assert r.mailbox.announced == tuple(made[len(made) - keep :])
            checked += len(made) > MAX_ANNOUNCED
    assert checked > 0


def test_an_acked_frame_is_dropped_and_a_current_ack_kept(story: Story) -> None:
    b = story.b
    _, ack = _frame_and_ack(story)
    m = story.sent.mailbox.after(story.acked.entity, [b], [])
    k = _kept(m, b)
    assert k == Kept(b, None, ack)
    assert k.ack is ack
    assert list(m.pending_frames()) == []
    # What the real replica kept.
    assert story.acked.mailbox.kept.get(b) == k


def test_an_entry_whose_messages_are_all_stale_disappears(story: Story) -> None:
    b = story.b
    # Our frame acked, and our ack replaced by a later one.
    m = story.sent.mailbox.after(story.later.entity, [b], [])
    assert b not in m.kept
    assert len(m.kept) == len(story.sent.mailbox.kept) - 1
    # Only a frame, now acked.
    m = story.opened.mailbox.after(story.acked.entity, [b], [])
    assert b not in m.kept
    assert not m
    # Gone, then its fresh ack makes a new entry.
    new_ack = _kept(story.later.mailbox, b).ack
    assert new_ack is not None
    m = story.sent.mailbox.after(story.later.entity, [b], [(b, new_ack)])
    assert _kept(m, b) == Kept(b, None, new_ack)


def test_a_frame_that_is_no_longer_the_pending_one_is_dropped(story: Story) -> None:
    """Our record has another pending frame now (the one we sent was acked, and a
    later one proposed): the kept frame goes, though a frame is pending."""
    b = story.b
    frame, _ = _frame_and_ack(story)
    posts = []
    for r in story.world.history[(0, story.a)]:
        record = r.entity.channel(b)
        pending = record.side.pending if record is not None else None
        if pending is not None and pending.hash != frame.hash:
            posts.append(r.entity)
    assert posts
    for post in posts:
        k = story.sent.mailbox.after(post, [b], []).kept.get(b)
        assert k is None or k.frame is None


def test_a_channel_that_is_gone_drops_its_entry(story: Story) -> None:
    b, c = story.b, story.c
    mailbox = story.sent.mailbox
    m = mailbox.after(story.before_channels, [b], [])
    assert b not in m.kept
    assert m.kept.get(c) is mailbox.kept.get(c)
    m = mailbox.after(story.before_channels, list(mailbox.kept.keys()), [])
    assert not m.kept
    assert m.announced == mailbox.announced


def test_unchanged_peers_are_not_looked_at(story: Story) -> None:
    """``after`` looks only at the entries of the channels the frame changed: a frame
    whose work is O(its changes) cannot walk a hub's every kept message. Any other
    entry comes back as the very same object, even when it no longer matches its
    record (here on purpose: a later state whose record of B moved on). In a real run
    that cannot happen, since a record that did not change still matches; see
    ``test_every_real_mailbox_keeps_exactly_what_its_records_need``."""
    b, c = story.b, story.c
    mailbox = story.sent.mailbox
    stale = _kept(mailbox, b)
    assert _kept(mailbox.after(story.later.entity, [b], []), c) is _kept(mailbox, c)
    for changed in ([], [c], [UNKNOWN_PEER]):
        m = mailbox.after(story.later.entity, changed, [])
        assert m.kept.get(b) is stale
        assert m.kept is mailbox.kept
        assert m.header() == mailbox.header()


def test_a_changed_peer_whose_messages_still_match_keeps_the_same_map(story: Story) -> None:
    mailbox = story.sent.mailbox
    m = mailbox.after(story.sent.entity, list(mailbox.kept.keys()), [])
    assert m.kept is mailbox.kept
    assert m == mailbox
    assert m.header() == mailbox.header()


def test_every_real_mailbox_keeps_exactly_what_its_records_need(story: Story) -> None:
    """After every commit of every replica: for each channel, the signed message of our
    pending frame and of our last ack (as a full scan of the records finds them),
    nothing else, by ascending counterparty, the frame first."""
    checked = 0
    for (_, eid), history in story.world.history.items():
        signed: dict[tuple[int, bytes, bytes], Message] = {}
        for r in history:
            for peer, m in r.mailbox.messages():
                signed[(m.kind, peer, m.hash)] = m
        for r in history:
            want: list[Kept] = []
            for record in r.entity.channels.values():
                side, peer = record.side, record.peer
                frame = signed.get((FRAME, peer, side.pending.hash)) if side.pending else None
                ack = signed.get((ACK, peer, side.last_ack.hash)) if side.last_ack else None
                assert (frame is None) == (side.pending is None)
                assert (ack is None) == (side.last_ack is None)
                if frame is not None or ack is not None:
                    want.append(Kept(peer, frame, ack))
            assert list(r.mailbox.kept.values()) == want
            assert all(m.sender == eid for _, m in r.mailbox.messages())
            checked += len(want)
    assert checked > 100


# ack_for ------------------------------------------------------------------------------


def test_ack_for_answers_only_our_last_ack_of_that_frame(story: Story) -> None:
    a, b = story.a, story.b
    _, ack = _frame_and_ack(story)
    assert isinstance(ack.body, ch.Ack)
    acked_frame = [m for m in story.frames_of(b) if m.hash == ack.body.frame_hash]
    assert len(acked_frame) == 1  # the ack is of one of B's real frames
    for mailbox in (story.sent.mailbox, story.acked.mailbox):
        assert mailbox.ack_for(b, acked_frame[0].hash) is ack
    others = [m.hash for m in story.frames_of(b) if m.hash != ack.body.frame_hash]
    assert others
    for h in others:
        assert story.acked.mailbox.ack_for(b, h) is None
    assert story.sent.mailbox.ack_for(b, _frame_and_ack(story)[0].hash) is None
    # Our ack of B's later frame replaced it: the older frame gets nothing.
    assert story.later.mailbox.ack_for(b, acked_frame[0].hash) is None
    # Unknown peers, a peer whose entry holds only a frame, no mail at all.
    assert story.acked.mailbox.ack_for(UNKNOWN_PEER, acked_frame[0].hash) is None
    assert story.acked.mailbox.ack_for(a, acked_frame[0].hash) is None
    assert story.opened.mailbox.ack_for(b, acked_frame[0].hash) is None
    assert NO_MAIL.ack_for(b, acked_frame[0].hash) is None


# Encoding -----------------------------------------------------------------------------


def _header_tree(m: Mailbox) -> list[object]:
    return [[decode(x.raw) for x in m.announced], m.kept.root]


def test_every_real_mailbox_round_trips(story: Story) -> None:
    with_both, with_many = 0, 0
    for r in story.replicas():
        m = r.mailbox
        again = Mailbox.from_item(decode(m.encoded()))
        assert again == m
        assert list(again.messages()) == list(m.messages())
        assert again.header() == m.header()
        assert again.encoded() == m.encoded()
        assert m.encoded() == encode_tree(m.to_tree())
        assert decode(m.header()) == _header_tree(m)
        with_both += bool(m.kept) and bool(m.announced)
        with_many += len(m.kept) > 1
    assert with_both > 0
    assert with_many > 0


def test_the_empty_mailbox_encodes_as_nothing() -> None:
    assert NO_MAIL.encoded() == encode_tree([])
    assert NO_MAIL.to_tree() == []
    assert decode(NO_MAIL.header()) == [[], b"\x00" * 32]
    assert Mailbox.from_item([]) == NO_MAIL
    assert Mailbox.from_item([]).header() == NO_MAIL.header()


def test_the_header_changes_exactly_when_a_kept_message_does(story: Story) -> None:
    outcomes: set[bool] = set()
    for history in story.world.history.values():
        for before, after in itertools.pairwise(history):
            same = list(before.mailbox.messages()) == list(after.mailbox.messages())
            assert (before.mailbox.header() == after.mailbox.header()) == same
            outcomes.add(same)
    assert outcomes == {True, False}
    mailbox = story.sent.mailbox
    b = story.b
    frame, ack = _frame_and_ack(story)
    new_ack = _kept(story.later.mailbox, b).ack
    assert new_ack is not None
    variants = [
        Mailbox(mailbox.announced, mailbox.kept.set(b, Kept(b, frame, new_ack))),
        Mailbox(mailbox.announced, mailbox.kept.set(b, Kept(b, None, ack))),
        Mailbox(mailbox.announced, mailbox.kept.set(b, Kept(b, frame, None))),
        Mailbox(mailbox.announced, mailbox.kept.delete(b)),
        Mailbox((story.announcements[0],), mailbox.kept),
    ]
    headers = {v.header() for v in variants} | {mailbox.header()}
    assert len(headers) == len(variants) + 1
    rebuilt = Mailbox(mailbox.announced, MerkleMap.from_items(mailbox.kept.items()))
    assert rebuilt.header() == mailbox.header()
    assert rebuilt == mailbox


# from_item strictness -----------------------------------------------------------------


def _rich(story: Story) -> Mailbox:
    """One announcement, then A's kept messages of ``sent``: B's entry has both."""
    return Mailbox((story.announcements[0],), story.sent.mailbox.kept)


def _entries(m: Mailbox) -> list[list[RlpTree]]:
    return [[peer, msg.to_tree()] for peer, msg in m.messages()]


def _decode(entries: list[list[RlpTree]]) -> Mailbox:
    return Mailbox.from_item(decode(encode_tree(entries)))


def test_the_rich_mailbox_decodes(story: Story) -> None:
    m = _rich(story)
    assert len(m.kept) >= 3
    assert _decode(_entries(m)) == m
    assert _decode(_entries(m)).header() == m.header()
    anns = [[b"", a.to_tree()] for a in story.announcements[:MAX_ANNOUNCED]]
    assert _decode(anns).announced == story.announcements[:MAX_ANNOUNCED]


type Tamper = Callable[[Story], list[list[RlpTree]]]


def _announcement_after_a_channel_message(story: Story) -> list[list[RlpTree]]:
    e = _entries(_rich(story))
    return [*e[1:], e[0]]


def _peers_not_ascending(story: Story) -> list[list[RlpTree]]:
    e = _entries(Mailbox((), story.sent.mailbox.kept))
    return [e[-1], *e[:-1]]


def _two_frames_for_one_peer(story: Story) -> list[list[RlpTree]]:
    frame, _ = _frame_and_ack(story)
    return [[story.b, frame.to_tree()], [story.b, frame.to_tree()]]


def _two_acks_for_one_peer(story: Story) -> list[list[RlpTree]]:
    _, ack = _frame_and_ack(story)
    return [[story.b, ack.to_tree()], [story.b, ack.to_tree()]]


def _ack_then_frame(story: Story) -> list[list[RlpTree]]:
    frame, ack = _frame_and_ack(story)
    return [[story.b, ack.to_tree()], [story.b, frame.to_tree()]]


def _peer_on_an_announcement(story: Story) -> list[list[RlpTree]]:
    return [[story.b, story.announcements[0].to_tree()]]


def _short_peer(story: Story) -> list[list[RlpTree]]:
    frame, _ = _frame_and_ack(story)
    return [[story.b[:31], frame.to_tree()]]


def _no_peer_on_a_frame(story: Story) -> list[list[RlpTree]]:
    frame, _ = _frame_and_ack(story)
    return [[b"", frame.to_tree()]]


def _too_many_announcements(story: Story) -> list[list[RlpTree]]:
    return [[b"", a.to_tree()] for a in story.announcements[: MAX_ANNOUNCED + 1]]


def _announcements_out_of_order(story: Story) -> list[list[RlpTree]]:
    first, second = story.announcements[:2]
    return [[b"", second.to_tree()], [b"", first.to_tree()]]


def _one_announcement_twice(story: Story) -> list[list[RlpTree]]:
    first = story.announcements[0]
    return [[b"", first.to_tree()], [b"", first.to_tree()]]


def _a_mint(story: Story) -> list[list[RlpTree]]:
    # The retired legacy mint frame input ``[2, mint_id, asset, amount]``.
    return [[story.b, [b"\x02", b"\x4d" * 32, b"\x01", b"\x05"]]]


def _three_fields(story: Story) -> list[list[RlpTree]]:
    frame, _ = _frame_and_ack(story)
    return [[story.b, frame.to_tree(), b""]]


TAMPERED: dict[str, Tamper] = {
    "an announcement after a channel message": _announcement_after_a_channel_message,
    "peers not ascending": _peers_not_ascending,
    "two frames for one peer": _two_frames_for_one_peer,
    "two acks for one peer": _two_acks_for_one_peer,
    "an ack then a frame for one peer": _ack_then_frame,
    "a peer on an announcement": _peer_on_an_announcement,
    "a 31-byte peer": _short_peer,
    "no peer on a frame": _no_peer_on_a_frame,
    "more than MAX_ANNOUNCED announcements": _too_many_announcements,
    "not a channel message": _a_mint,
    "announcements out of order": _announcements_out_of_order,
    "one announcement twice": _one_announcement_twice,
    "an entry of three fields": _three_fields,
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_from_item_refuses(story: Story, case: str) -> None:
    entries = TAMPERED[case](story)
    with pytest.raises(DecodeError):
        _decode(entries)


def test_a_header_with_announcements_out_of_order_is_refused(story: Story) -> None:
    first, second = story.announcements[:2]
    good = Mailbox.from_header(
        [[decode(first.raw), decode(second.raw)], NO_MAIL.kept.root], NO_MAIL.kept
    )
    assert good.announced == (first, second)
    with pytest.raises(DecodeError, match="ascending height"):
        Mailbox.from_header(
            [[decode(second.raw), decode(first.raw)], NO_MAIL.kept.root], NO_MAIL.kept
        )


def test_from_item_refuses_what_is_not_a_list() -> None:
    with pytest.raises(DecodeError):
        Mailbox.from_item(b"\x01")
    with pytest.raises(DecodeError):
        Mailbox.from_item([b"\x01"])


def test_only_the_canonical_order_decodes(story: Story) -> None:
    """Of every order of the rich mailbox's entries, only the one ``messages`` writes."""
    entries = _entries(_rich(story))
    accepted = []
    for order in itertools.permutations(range(len(entries))):
        try:
            _decode([entries[i] for i in order])
        except DecodeError:
            continue
        accepted.append(order)
    assert accepted == [tuple(range(len(entries)))]


# bool ---------------------------------------------------------------------------------


def test_truth(story: Story) -> None:
    assert not NO_MAIL
    assert not Mailbox()
    assert Mailbox((story.announcements[0],))
    assert Mailbox((), story.sent.mailbox.kept)
    assert bool(story.sent.mailbox)


# resend per counterparty -----------------------------------------------------------------


def test_resend_for_is_one_counterpartys_pending_frame_after_the_announcements(
    story: Story,
) -> None:
    b = story.b
    frame, ack = _frame_and_ack(story)
    ann = story.announcements[0]
    m = NO_MAIL.after(story.sent.entity, [], [(b"", ann), (b, frame), (b, ack)])
    assert m.resend_for(b) == [ann, frame]
    assert m.resend_for(UNKNOWN_PEER) == []
    # Only an ack kept: nothing goes again (it goes when the frame it acks comes again).
    only_ack = NO_MAIL.after(story.sent.entity, [], [(b"", ann), (b, ack)])
    assert only_ack.resend_for(b) == []


def test_a_sweep_of_pending_frames_goes_a_page_at_a_time(story: Story) -> None:
    """``pending_page`` looks at ``limit`` entries after a key: a runtime's sweep after a
    restart finds every pending frame, in key order, without reading all at once."""
    frame, ack = _frame_and_ack(story)
    peers = sorted(bytes([i]) * 32 for i in range(1, 12))
    with_frame = {p for i, p in enumerate(peers) if i % 3 != 1}
    kept = MerkleMap.from_items(
        (p, Kept(p, frame if p in with_frame else None, ack)) for p in peers
    )
    m = Mailbox((), kept)
    found: list[bytes] = []
    pages = 0
    after: bytes | None = None
    while True:
        page, after = m.pending_page(after, 4)
        pages += 1
        found.extend(page)
        if after is None:
            break
    assert found == sorted(with_frame)
    assert pages == 3  # 4 + 4 + 3 entries
    assert m.pending_page(None, 100) == (sorted(with_frame), None)
    assert Mailbox().pending_page(None, 4) == ([], None)
