"""Channel pages (wallet/flows/channel_pages.py): a state held whole pages itself; the
pager walks pages forward and back, counting what came before even when a page came
back short; a partial state is never walked here, and a form checks a channel of it
only when the page at hand holds that channel (else the service checks it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.machines.accounts import ExtendCredit, Pay
from tests.node import accounts_cases as cases
from tests.wallet.partial_states import partial_of
from wallet.flows import compose
from wallet.flows.channel_pages import (
    ChannelPage,
    ChannelPager,
    checkable,
    first_channels,
    local_page,
)
from wallet.flows.compose import ComposeError, ExtendCreditForm

STATE = cases.entity().state  # five channels: FUNDED < CREDIT < PENDING < FULL < NEW
PEERS = [cases.FUNDED, cases.CREDIT, cases.PENDING, cases.FULL, cases.NEW]


def peers(page: ChannelPage) -> list[bytes]:
    return [r.peer for r in page.records]


def test_local_pages_cover_the_channels_in_order_once() -> None:
    first = local_page(STATE, b"", 2)
    assert (peers(first), first.last) == (PEERS[:2], False)
    second = local_page(STATE, PEERS[1], 2)
    assert (peers(second), second.last) == (PEERS[2:4], False)
    third = local_page(STATE, PEERS[3], 2)
    assert (peers(third), third.last) == (PEERS[4:], True)
    exact = local_page(STATE, b"", 5)
    assert (peers(exact), exact.last) == (PEERS, True)
    assert local_page(STATE, PEERS[4], 2) == ChannelPage((), True)
    # After a counterparty that has no channel (closed meanwhile): the ones above it.
    assert peers(local_page(STATE, b"\x22" + b"\xff" * 31, 10)) == PEERS[2:]


def test_the_pager_moves_by_pages_and_counts_short_ones() -> None:
    pager = ChannelPager(2)
    assert (pager.after, pager.offset, pager.has_previous, pager.has_next) == (b"", 0, False, False)
    assert not pager.next()  # nothing shown yet
    assert pager.show(local_page(STATE, pager.after, 2))
    assert pager.caption(5) == "Channels 1\u20132 of 5"
    assert pager.next()
    assert (pager.after, pager.offset) == (PEERS[1], 2)
    # A page read from a node may come back short (a size cap): one record here.
    assert pager.show(ChannelPage(local_page(STATE, pager.after, 1).records, False))
    assert pager.caption(5) == "Channels 3\u20133 of 5"
    assert pager.next()
    assert (pager.after, pager.offset) == (PEERS[2], 3)
    assert pager.show(local_page(STATE, pager.after, 2))
    assert pager.caption(5) == "Channels 4\u20135 of 5"
    assert (pager.has_next, pager.has_previous) == (False, True)
    assert not pager.next()
    assert pager.previous()
    assert (pager.after, pager.offset) == (PEERS[1], 2)
    assert pager.previous()
    assert (pager.after, pager.offset, pager.has_previous) == (b"", 0, False)
    assert not pager.previous()


def test_a_page_gone_empty_steps_back() -> None:
    pager = ChannelPager(2)
    pager.show(local_page(STATE, b"", 2))
    pager.next()
    assert not pager.show(ChannelPage((), True))  # its channels went meanwhile
    assert (pager.after, pager.offset) == (b"", 0)
    assert pager.show(ChannelPage((), True))  # an entity with no channel: the first page
    assert pager.caption(0) == "No channel"


def test_a_partial_state_is_never_walked_here() -> None:
    partial = partial_of(STATE)
    assert first_channels(partial) == ()
    assert [r.peer for r in first_channels(STATE, 3)] == PEERS[:3]
    # Off the page at hand: the partial state itself, whose channels compose leaves alone.
    assert checkable(partial, (), cases.FUNDED) is partial
    assert not compose.channels_checkable(partial)
    pay = compose.pay([cases.FUNDED], 1, 10**6, partial)  # beyond its capacity
    assert pay == Pay((cases.FUNDED,), 1, 10**6)
    form = ExtendCreditForm(f"0x{cases.STRANGER.hex()}", 1, 5)
    assert form.to_action(partial) == ExtendCredit(cases.STRANGER, 1, 5)
    # On the page at hand: its header with that channel, checked as the node would.
    at_hand = local_page(STATE, b"", 5).records
    small = checkable(partial, at_hand, cases.FUNDED)
    assert compose.channels_checkable(small)
    assert [r.peer for r in small.channels.values()] == [cases.FUNDED]
    assert replace(small, channels=STATE.channels).hash == STATE.hash
    with pytest.raises(ComposeError, match="insufficient capacity"):
        compose.pay([cases.FUNDED], 1, 10**6, small)
    assert checkable(STATE, (), cases.FUNDED) is STATE
