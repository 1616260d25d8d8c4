"""An entity with more channels than the old 1,024 cap (issue 11).

There is no cap on an entity's channels any more; what bounds a frame's outbox is
``accounts.MAX_PROPOSING``: at most that many channels propose in one frame, the
lowest counterparty ids first, and the rest in the next frames. The states are built
directly with the pure channel machine (thousands of channels through frames would
take minutes); the frames are real ``entity.execute`` runs.
"""

from __future__ import annotations

from dataclasses import replace

from node.codec import decode, keccak
from node.crypto import bls
from node.machines import accounts
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines.accounts import ChannelRecord, OpenChannel
from node.machines.entity import EntityState
from node.machines.frames import MAX_OUTBOX
from node.machines.governance import Config, Member
from node.merkle_map import MerkleMap
from node.txs import Tx

N = accounts.MAX_PROPOSING + 76


def _config(seed: int) -> Config:
    member = Member(bls.sk_to_pk(seed), 1)
    return Config((member,), 1, member.id)


def _hub_with_waiting_channels(n: int) -> tuple[EntityState, list[bytes]]:
    """A hub with ``n`` open channels, each with one payment queued and no frame out."""
    hub = ent.genesis(_config(3), b"hub")
    peers = sorted(keccak(b"counterparty %d" % i) for i in range(n))
    peer_config = _config(4)
    records = []
    for p in peers:
        side = ch.open_side(hub.entity_id, p)
        side, _ = ch.step(side, ch.Enqueue(Tx.of(ch.SetCredit(1, 10))))
        records.append(ChannelRecord(p, peer_config, 0, side))
    channels = MerkleMap.from_items((r.peer, r) for r in records)
    return replace(hub, channels=channels), peers


def test_at_most_max_proposing_channels_propose_in_one_frame() -> None:
    hub, peers = _hub_with_waiting_channels(N)
    assert hub.waiting == frozenset(peers)

    post, events = ent.execute(hub, [], verify=False)
    framed = [o.peer for o in events.outbox if o.kind == accounts.FRAME]
    assert framed == peers[: accounts.MAX_PROPOSING]  # the lowest ids, in order
    assert len(events.outbox) <= MAX_OUTBOX
    assert post.waiting == frozenset(peers[accounts.MAX_PROPOSING :])
    for p in peers[: accounts.MAX_PROPOSING]:
        rec = post.channel(p)
        assert rec is not None
        assert rec.side.pending is not None
        assert rec.side.queue == ()

    # The next frame proposes on the others, and then nothing waits.
    last, events = ent.execute(post, [], verify=False)
    assert [o.peer for o in events.outbox] == peers[accounts.MAX_PROPOSING :]
    assert last.waiting == frozenset()
    assert all(c.side.pending is not None for c in last.channels.values())
    # The waiting set a frame keeps is the one a decoded state finds by a scan.
    decoded = EntityState.from_item(decode(last.encoded))
    assert decoded.waiting == last.waiting
    assert decoded.hash == last.hash


def test_a_channel_beyond_the_old_cap_opens() -> None:
    hub, _ = _hub_with_waiting_channels(N)
    newcomer = keccak(b"newcomer")
    ledger = ent._Work.of(hub).ledger
    accounts.apply_action(ledger, OpenChannel(newcomer, _config(5), 0, 1, 0))
    assert len(hub.channels.set_many(ledger.channels.changes)) == N + 1
    assert ledger.channels.get(newcomer) is not None
    assert list(ledger.channels.touched()) == [newcomer]
