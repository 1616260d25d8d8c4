"""An entity's accounts with a channel of every kind, and hypothesis strategies of
payments and channel actions against it: for the tests that the node's checks
(``accounts.check_pay``, ``check_action_applies``, the number and route rules) refuse
exactly what its transition refuses, and that the wallet's forms refuse the same.

The entity is ``tests.node.machines.test_entity``'s one-signer ``Entity([1], 1)``
(signer ``A``), so a test can sign its batches. Its channels are real sides brought
to agreement by the pure channel machine; every number is small enough to read.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from node.codec import UINT64_MAX
from node.machines import channel as ch
from node.machines.accounts import (
    ChannelAction,
    ChannelRecord,
    ExtendCredit,
    FundChannel,
    Ledger,
    OpenChannel,
    Pay,
)
from node.machines.channel import MAX_AMOUNT, MAX_ASSET, MAX_HOPS, MAX_QUEUE
from node.machines.entity import EntityState
from node.machines.overlay import Overlay
from node.merkle_map import MerkleMap
from node.txs import Tx
from tests.node.channel_sides import exchange
from tests.node.machines.test_entity import Entity, config

FUNDED = b"\x21" * 32  # we put 100 of asset 1 in
CREDIT = b"\x22" * 32  # it extends us 50 of asset 2
PENDING = b"\x23" * 32  # 100 of asset 1 in, 30 of it paid in our pending frame, 20 queued
FULL = b"\x24" * 32  # 1000 of asset 1 in, and MAX_QUEUE transactions waiting
NEW = b"\x25" * 32  # opened, nothing agreed yet
STRANGER = b"\x26" * 32  # no channel
OTHER = b"\x27" * 32  # no channel
RESERVES = ((1, 500), (2, 7))
PEERS = [FUNDED, FUNDED, CREDIT, CREDIT, PENDING, PENDING, FULL, NEW, STRANGER, OTHER]
PEER_CONFIG = config([1], 1)


def _sides(me: bytes, peer: bytes) -> tuple[ch.ChannelSide, ch.ChannelSide]:
    return ch.open_side(me, peer), ch.open_side(peer, me)


def _channels(me: bytes) -> list[ch.ChannelSide]:
    funded, _ = exchange(*_sides(me, FUNDED), ch.AddCollateral(1, 100))
    theirs, mine = _sides(CREDIT, me)[0], _sides(me, CREDIT)[0]
    _, credit = exchange(theirs, mine, ch.SetCredit(2, 50))
    pending, _ = exchange(*_sides(me, PENDING), ch.AddCollateral(1, 100))
    pending, _ = ch.step(pending, ch.Enqueue(Tx.of(ch.Payment(1, 30))))
    pending, _ = ch.step(pending, ch.Propose())
    pending, _ = ch.step(pending, ch.Enqueue(Tx.of(ch.Payment(1, 20))))
    assert pending.pending is not None
    assert len(pending.queue) == 1
    full, _ = exchange(*_sides(me, FULL), ch.AddCollateral(1, 1000))
    full = replace(full, queue=(Tx.of(ch.SetCredit(1, 0)),) * MAX_QUEUE)  # pays nothing
    return [funded, credit, pending, full, ch.open_side(me, NEW)]


def entity() -> Entity:
    """The entity, with its reserves and its five channels."""
    e = Entity([1], 1)
    records = [
        ChannelRecord(side.peer, PEER_CONFIG, 0, side) for side in _channels(e.state.entity_id)
    ]
    e.state = replace(
        e.state,
        reserves=RESERVES,
        channels=MerkleMap.from_items((r.peer, r) for r in records),
    )
    return e


def ledger(state: EntityState) -> Ledger:
    """A frame's scratch over ``state``'s accounts, as ``entity.execute`` starts one."""
    return Ledger(
        state.entity_id, dict(state.reserves), Overlay(state.channels), Overlay(state.forwards)
    )


def peers(me: bytes) -> st.SearchStrategy[bytes]:
    """Every kind of counterparty: ours of each kind (most often those that can pay),
    strangers, and ``me``."""
    return st.sampled_from([*PEERS, me])


# Mostly numbers the node takes, near the reserves and capacities above; the rest out
# of bounds. Every one has an encoding (non-negative, at most 32 bytes), so the node
# can be sent it and refuse it.
assets = st.sampled_from([1, 1, 1, 2, 2, 2, 0, 3, 2**31, MAX_ASSET, MAX_ASSET + 1, 2**40])
amounts = st.one_of(
    st.integers(0, 120),
    st.integers(0, 1_200),
    st.sampled_from([MAX_AMOUNT, MAX_AMOUNT + 1, 2**256 - 1]),
)


def distinct_routes(me: bytes) -> st.SearchStrategy[list[bytes]]:
    """Routes of one to three distinct ids (``me`` among them sometimes)."""
    ids = st.sampled_from([*dict.fromkeys(PEERS), me])
    return st.lists(ids, min_size=1, max_size=3, unique=True)


def routes(me: bytes) -> st.SearchStrategy[list[bytes]]:
    """Mostly short routes of distinct ids; else empty, too long, repeating, through
    ``me``, or with a hop of the wrong size."""
    hop = st.one_of(peers(me), st.sampled_from([b"\x21" * 31, b"\x28" * 33]))
    return st.one_of(
        distinct_routes(me),
        st.lists(hop, max_size=MAX_HOPS + 3),
    )


def payments(me: bytes) -> st.SearchStrategy[Pay]:
    """Payments as the node could be sent them (not checked: ``Pay`` checks nothing):
    a third likely to be taken, a third with fields the node reads, a third anything."""
    likely = st.builds(
        lambda first, rest, a, n: Pay((first, *rest), a, n),
        st.sampled_from([FUNDED, CREDIT, PENDING]),
        st.lists(st.sampled_from([STRANGER, OTHER]), max_size=2, unique=True),
        st.sampled_from([1, 2]),
        st.integers(1, 100),
    )
    readable = st.builds(
        lambda r, a, n: Pay(tuple(r), a, n),
        distinct_routes(me),
        st.sampled_from([1, 1, 2, 2, 0, 3]),
        st.integers(1, 120),
    )
    anything = st.builds(lambda r, a, n: Pay(tuple(r), a, n), routes(me), assets, amounts)
    return st.one_of(likely, readable, anything)


def actions(me: bytes) -> st.SearchStrategy[ChannelAction]:
    """Channel actions as the node could be sent them (not checked)."""
    heights = st.one_of(st.integers(0, 3), st.sampled_from([UINT64_MAX, UINT64_MAX + 1]))
    return st.one_of(
        st.builds(OpenChannel, peers(me), st.just(PEER_CONFIG), heights, assets, amounts),
        st.builds(ExtendCredit, peers(me), assets, amounts),
        st.builds(FundChannel, peers(me), assets, amounts),
    )
