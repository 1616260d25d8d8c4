"""Which channels the wallet shows and checks: a page at a time.

A hub's entity holds a million channels. The wallet holds such an entity's agreed
state partially (``node/net/remote_map.py``): its header, with channels read from
the node as walks reach them, which only a walk off the event loop may do. So no
view walks an entity's channels. The Channels view shows one page of them: taken
from the state when the wallet holds it whole, else read from the node
(READ_ENTITY's page part, every record proven: ``WalletService.channel_page``).

:class:`ChannelPager` is the plain state machine behind the view's Previous and
Next. :func:`checkable` is the state a form checks a channel action or a payment
against on the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from node.machines.accounts import ChannelRecord
from node.machines.entity import EntityState
from node.merkle_map import KEY_LEN, MerkleMap
from node.net.remote_map import is_partial

PAGE_SIZE = 50  # channels per page of the Channels view
PICKER_SIZE = 200  # counterparties a form's picker lists (the field takes any id typed)


@dataclass(frozen=True, slots=True)
class ChannelPage:
    records: tuple[ChannelRecord, ...]  # ascending by counterparty
    last: bool  # the entity has no channel after these


def local_page(state: EntityState, after: bytes, limit: int) -> ChannelPage:
    """Up to ``limit`` channels of a state held whole, after the counterparty
    ``after`` (empty: from the first): a walk to ``after`` and a step per channel."""
    out: list[ChannelRecord] = []
    for key, record in state.channels.items_from(after or bytes(KEY_LEN)):
        if key == after:
            continue
        if len(out) == limit:
            return ChannelPage(tuple(out), False)
        out.append(record)
    return ChannelPage(tuple(out), True)


def first_channels(state: EntityState, limit: int = PICKER_SIZE) -> tuple[ChannelRecord, ...]:
    """The first channels of a state held whole, for a picker; none of a partial one
    (its channels are on the node: the picker's field takes any counterparty typed)."""
    return () if is_partial(state) else local_page(state, b"", limit).records


def checkable(
    state: EntityState, at_hand: tuple[ChannelRecord, ...], peer: bytes | None
) -> EntityState:
    """The state a form checks an action on ``peer``'s channel (or a payment through
    it) against, on the GUI thread: ``state`` itself when the wallet holds it whole;
    for a partial state, its header with ``peer``'s channel when the page at hand
    holds it, else the partial state, whose channels ``compose`` does not check (the
    service checks them against the channel it reads, proven, before signing)."""
    if not is_partial(state):
        return state
    record = next((r for r in at_hand if r.peer == peer), None)
    if record is None:
        return state
    return replace(state, channels=MerkleMap.from_items([(record.peer, record)]))


class ChannelPager:
    """Where the Channels view is in an entity's channels: the page shown, and the
    counterparty each page seen on the way follows (pages read from the node may
    hold fewer than asked: they stop at a size cap)."""

    def __init__(self, size: int = PAGE_SIZE) -> None:
        self.size = size
        self._starts: list[tuple[bytes, int]] = [(b"", 0)]  # (after, channels before)
        self.page = ChannelPage((), True)

    @property
    def after(self) -> bytes:
        """The counterparty the page to show follows (empty: the first page)."""
        return self._starts[-1][0]

    @property
    def offset(self) -> int:
        """How many channels come before the page shown."""
        return self._starts[-1][1]

    @property
    def has_next(self) -> bool:
        return bool(self.page.records) and not self.page.last

    @property
    def has_previous(self) -> bool:
        return len(self._starts) > 1

    def next(self) -> bool:
        """Move to the next page (then read it at :attr:`after`); False at the end."""
        if not self.has_next:
            return False
        self._starts.append((self.page.records[-1].peer, self.offset + len(self.page.records)))
        return True

    def previous(self) -> bool:
        if not self.has_previous:
            return False
        self._starts.pop()
        return True

    def show(self, page: ChannelPage) -> bool:
        """Take the page read at :attr:`after`. False if it came back empty past the
        first page (its channels are gone): the pager steps back, read again."""
        if not page.records and self.has_previous:
            self.previous()
            return False
        self.page = page
        return True

    def caption(self, total: int) -> str:
        """``Channels 51-100 of 1,000,000`` (``total``: the entity's channel count)."""
        n = len(self.page.records)
        if not n:
            return "No channel"
        first = self.offset + 1
        return f"Channels {first:,}\u2013{first + n - 1:,} of {total:,}"
