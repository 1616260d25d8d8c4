"""Parts of an entity state and their proofs (node/entity_reads.py), built and checked
without a node: a hub state with many channels built directly (as bench/hub_scale.py
builds them), and parts tampered with as a lying node would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from node.codec import RlpItem, as_bytes, as_list, decode, encode_tree, keccak
from node.entity_reads import (
    CHANNELS,
    FORWARDS,
    MAX_PAGE_BYTES,
    EntityHeader,
    Page,
    ProofError,
    check_node,
    check_page,
    check_record,
    check_top,
    header_part,
    node_part,
    page_part,
    record_part,
)
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.accounts import ChannelRecord
from node.merkle_map import MerkleMap, Node, Stub
from node.txs import Tx
from tests.node import hub_state

N = 40


def _hub(n: int = N) -> tuple[rep.Genesis, ent.EntityState]:
    return hub_state.hub(n, forwards=3 * n)


type Hub = tuple[rep.Genesis, ent.EntityState, EntityHeader]


@pytest.fixture(scope="module")
def hub() -> Hub:
    genesis, state = _hub()
    header = EntityHeader.from_item(header_part(genesis.to_tree(), state), state.entity_id)
    return genesis, state, header


def _wire(item: list[RlpItem]) -> RlpItem:
    """As the item reaches a client: encoded and decoded again."""
    return decode(encode_tree(item))


def test_the_header_is_the_state_hash_and_names_the_roots(hub: Hub) -> None:
    genesis, state, header = hub
    assert header.hash == state.hash
    assert header.channels_root == state.channels.root
    assert header.forwards_root == state.forwards.root
    assert header.small.reserves == state.reserves
    assert header.height == 7
    assert header.genesis_config == genesis.config
    assert len(header.small.channels) == 0  # read by part, never carried


def test_a_header_of_another_entity_or_genesis_is_refused(hub: Hub) -> None:
    genesis, state, _ = hub
    part = header_part(genesis.to_tree(), state)
    with pytest.raises(ProofError, match="does not give this entity's id"):
        EntityHeader.from_item(part, keccak(b"another entity"))
    other = replace(genesis, salt=b"\x08" * 32)
    with pytest.raises(ProofError, match="does not give this entity's id"):
        EntityHeader.from_item(header_part(other.to_tree(), state), state.entity_id)
    at_zero = replace(state, height=0)  # not the genesis state: it holds channels
    with pytest.raises(ProofError, match="not the entity's genesis state"):
        EntityHeader.from_item(header_part(genesis.to_tree(), at_zero), state.entity_id)


def test_every_channel_and_a_missing_one_are_proven(hub: Hub) -> None:
    _, state, header = hub
    for peer, record in state.channels.items():
        got = check_record(header, CHANNELS, peer, _wire(record_part(state, CHANNELS, peer)))
        assert isinstance(got, ChannelRecord)
        assert got.encoded == record.encoded
    nobody = keccak(b"nobody")
    assert (
        check_record(header, CHANNELS, nobody, _wire(record_part(state, CHANNELS, nobody))) is None
    )
    pid, fwd = next(iter(state.forwards.items()))
    assert check_record(header, FORWARDS, pid, _wire(record_part(state, FORWARDS, pid))) == fwd


def test_a_lying_record_is_refused(hub: Hub) -> None:
    _, state, header = hub
    peers = list(state.channels.keys())
    a, b = peers[0], peers[1]
    # b's record sent as a's, a's proof with b's record, and a's record said to be absent
    part_b = record_part(state, CHANNELS, b)
    with pytest.raises(ProofError):
        check_record(header, CHANNELS, a, _wire(part_b))
    part_a = record_part(state, CHANNELS, a)
    with pytest.raises(ProofError):
        check_record(header, CHANNELS, a, _wire([part_b[0], part_a[1]]))
    with pytest.raises(ProofError):
        check_record(header, CHANNELS, a, _wire([[], part_a[1]]))
    # a record changed in one field
    record = state.channels.get(a)
    assert record is not None
    richer = replace(record, peer_config_height=5)
    with pytest.raises(ProofError):
        check_record(header, CHANNELS, a, _wire([[richer.encoded], part_a[1]]))


def _pages(state: ent.EntityState, header: EntityHeader, which: int, limit: int) -> list[Page]:
    """Every page of a map, each checked, as a client walks them."""
    pages: list[Page] = []
    after: bytes | None = b""
    while after is not None:
        item = page_part(state, which, after, limit)
        entries = as_list(as_list(item, "page")[1], "entries")
        sizes = [len(as_bytes(as_list(e, "entry")[1], "value")) for e in entries]
        assert len(entries) <= limit
        assert len(entries) == 1 or sum(sizes) <= MAX_PAGE_BYTES
        pages.append(check_page(header, which, after, _wire(item)))
        after = pages[-1].next_after
    assert pages[-1].last
    assert not any(p.last for p in pages[:-1])
    return pages


def test_pages_walk_the_whole_map_in_order(hub: Hub) -> None:
    _, state, header = hub
    for which, m in ((CHANNELS, state.channels), (FORWARDS, state.forwards)):
        pages = _pages(state, header, which, 7)
        assert [k for p in pages for k, _ in p.records] == list(m.keys())
        assert [len(p.records) for p in pages[:-1]] == [7] * (len(pages) - 1)


def test_a_page_missing_a_record_or_starting_elsewhere_is_refused(hub: Hub) -> None:
    _, state, header = hub
    keys = list(state.channels.keys())
    anchor, entries = page_part(state, CHANNELS, b"", 10)
    assert isinstance(entries, list)
    with pytest.raises(ProofError, match="leaves out records between"):
        check_page(header, CHANNELS, b"", _wire([anchor, entries[:3] + entries[4:]]))
    with pytest.raises(ProofError, match="first key"):
        check_page(header, CHANNELS, b"", _wire([anchor, entries[1:]]))
    with pytest.raises(ProofError, match="empty first page"):
        check_page(header, CHANNELS, b"", _wire([[], []]))
    # after keys[2], a page that skips keys[3]
    anchor, entries = page_part(state, CHANNELS, keys[2], 10)
    assert isinstance(entries, list)
    with pytest.raises(ProofError, match="leaves out records after"):
        check_page(header, CHANNELS, keys[2], _wire([anchor, entries[1:]]))
    with pytest.raises(ProofError, match="without that key's proof"):
        check_page(header, CHANNELS, keys[2], _wire([[], entries]))
    with pytest.raises(ProofError, match="not the last"):
        check_page(header, CHANNELS, keys[2], _wire([anchor, []]))
    other_anchor, _ = page_part(state, CHANNELS, keys[5], 10)
    with pytest.raises(ProofError, match="record the page follows"):
        check_page(header, CHANNELS, keys[2], _wire([other_anchor, entries]))
    # the last page is last, and says so only if it is
    tail = check_page(header, CHANNELS, keys[-4], _wire(page_part(state, CHANNELS, keys[-4], 10)))
    assert tail.last
    assert [k for k, _ in tail.records] == keys[-3:]
    cut = check_page(header, CHANNELS, keys[-4], _wire(page_part(state, CHANNELS, keys[-4], 2)))
    assert not cut.last
    assert cut.next_after == keys[-2]
    end = check_page(header, CHANNELS, keys[-1], _wire(page_part(state, CHANNELS, keys[-1], 2)))
    assert end.records == []
    assert end.last
    with pytest.raises(KeyError):  # the node pages only after a key it holds
        page_part(state, CHANNELS, keccak(b"nobody"), 2)


def test_an_empty_map_reads_as_one_empty_last_page() -> None:
    genesis, state = _hub(0)
    header = EntityHeader.from_item(header_part(genesis.to_tree(), state), state.entity_id)
    page = check_page(header, CHANNELS, b"", _wire(page_part(state, CHANNELS, b"", 10)))
    assert page.records == []
    assert page.last
    assert page.next_after is None


def test_a_page_stays_within_its_byte_budget() -> None:
    """Channels with thousands of queued transactions: a page holds what fits its
    byte budget, whatever its limit; a record larger than the budget goes alone."""
    genesis, state = _hub(6)
    big = {}
    for i, (peer, record) in enumerate(state.channels.items()):
        hops = tuple(keccak(b"hop %d" % h) for h in range(8 if i == 4 else 1))
        queue = tuple(
            Tx.of(ch.Forward(1, 10**30 + n, hops, keccak(b"%d %d" % (i, n))))
            for n in range(2000 if i != 4 else 4000)
        )  # as ch.Enqueue leaves them, without stepping thousands of times
        big[peer] = replace(record, side=replace(record.side, queue=queue))
    state = replace(state, channels=state.channels.set_many(big))
    header = EntityHeader.from_item(header_part(genesis.to_tree(), state), state.entity_id)
    sizes = [len(r.encoded) for r in state.channels.values()]
    assert min(sizes) > 100_000
    assert max(sizes) > MAX_PAGE_BYTES
    pages = _pages(state, header, CHANNELS, 256)
    assert [k for p in pages for k, _ in p.records] == list(state.channels.keys())
    assert len(pages) >= 3  # six records of 170 KB to 1.3 MB do not fit one 640 KB page


# Node by node (READ_ENTITY's node part) ----------------------------------------------

BIG = 300  # channels: more than SUBTREE, so the top levels come as branches


class _NodeReads:
    """A map read node by node through ``node_part`` and ``check_node``, as
    ``node/net/remote_map.py`` reads it from a node (here without the wire's I/O).
    ``tamper`` plays a lying node: it changes each part before it is checked."""

    def __init__(
        self,
        state: ent.EntityState,
        which: int,
        tamper: Callable[[RlpItem], RlpItem] | None = None,
    ) -> None:
        self.state, self.which, self.tamper = state, which, tamper
        self.loads = 0

    def load(self, stub: Stub[Any]) -> Node[Any]:
        item = _wire(node_part(self.state, self.which, stub.rep, stub.count, stub.h))
        if self.tamper is not None:
            item = self.tamper(item)
        node = check_node(
            self.which, stub.rep, stub.count, stub.h, item, lambda h, r, n: Stub(h, r, n, self)
        )
        stub.node = node
        self.loads += 1
        return node

    def pin(self, stub: Stub[Any]) -> Node[Any]:
        return stub.open()

    def map(self, header: EntityHeader) -> MerkleMap[Any]:
        part = _wire(node_part(self.state, self.which, bytes(32), 0, bytes(32)))
        top = check_top(header, self.which, part)
        assert top is not None
        return MerkleMap.stored(Stub(header.root(self.which), top[0], top[1], self))


@pytest.fixture(scope="module")
def big() -> Hub:
    genesis, state = _hub(BIG)
    header = EntityHeader.from_item(header_part(genesis.to_tree(), state), state.entity_id)
    return genesis, state, header


def test_a_map_read_node_by_node_is_the_map(big: Hub) -> None:
    """Walked whole, it holds every record; one look-up reads one path (a few branches,
    then a small subtree's records in one part); an update made on it gives the root
    the same update gives on the whole map."""
    _, state, header = big
    for which, whole in ((CHANNELS, state.channels), (FORWARDS, state.forwards)):
        reads = _NodeReads(state, which)
        assert dict(reads.map(header).items()) == dict(whole.items())
    reads = _NodeReads(state, CHANNELS)
    lazy = reads.map(header)
    assert len(lazy) == BIG
    peer = sorted(state.channels.keys())[BIG // 2]
    assert lazy.get(peer) == state.channels.get(peer)
    assert 2 <= reads.loads <= 6  # 300 keys: a branch or three above 64-key subtrees
    record = state.channels.get(peer)
    assert record is not None
    changed = replace(record, peer_config_height=9)
    gone = sorted(state.channels.keys())[3]
    update = {peer: changed, gone: None}
    assert lazy.set_many(update).root == state.channels.set_many(update).root


def test_a_lying_node_part_is_refused(big: Hub) -> None:
    _, state, header = big

    def flip_branch(item: RlpItem) -> RlpItem:
        kind, body = as_list(item, "part")
        if as_bytes(kind, "kind") == b"\x01":
            raw = bytearray(as_bytes(body, "branch"))
            raw[40] ^= 1  # a hash the parent does not name
            return [kind, bytes(raw)]
        return item

    def change_a_record(item: RlpItem) -> RlpItem:
        kind, body = as_list(item, "part")
        if as_bytes(kind, "kind") == b"":
            records: list[RlpItem] = [list(as_list(r, "record")) for r in as_list(body, "records")]
            last = as_list(records[-1], "record")
            key = as_bytes(last[0], "key")
            value = ChannelRecord.from_item(decode(as_bytes(last[1], "value")))
            records[-1] = [key, replace(value, peer_config_height=77).encoded]
            assert value.peer == key
            return [kind, records]
        return item

    def drop_a_record(item: RlpItem) -> RlpItem:
        kind, body = as_list(item, "part")
        if as_bytes(kind, "kind") == b"":
            return [kind, list(as_list(body, "records"))[1:]]
        return item

    for tamper in (flip_branch, change_a_record, drop_a_record):
        lazy = _NodeReads(state, CHANNELS, tamper).map(header)
        with pytest.raises(ProofError):
            dict(lazy.items())
    # A part of the wrong kind for the count its parent names.
    top = state.channels.top
    assert top is not None
    records = _wire(node_part(state, CHANNELS, top.rep, BIG, top.digest()))
    with pytest.raises(ProofError):
        check_node(CHANNELS, top.rep, BIG, top.digest(), [b"", []], _no_stubs)
    assert as_list(records, "part")[0] == b"\x01"
    # A subtree the map does not have; a top said to be empty, or present in an empty map.
    with pytest.raises(KeyError):
        node_part(state, CHANNELS, top.rep, BIG - 1, top.digest())
    with pytest.raises(ProofError):
        check_top(header, CHANNELS, _wire([b"\x02", []]))
    empty = replace(state, forwards=MerkleMap.empty())
    empty_header = EntityHeader.from_item(header_part(big[0].to_tree(), empty), empty.entity_id)
    no_top = _wire(node_part(empty, FORWARDS, bytes(32), 0, bytes(32)))
    assert check_top(empty_header, FORWARDS, no_top) is None
    with pytest.raises(ProofError):
        check_top(
            empty_header, FORWARDS, _wire(node_part(state, FORWARDS, bytes(32), 0, bytes(32)))
        )


def _no_stubs(h: bytes, rep: bytes, count: int) -> Stub[Any]:
    raise AssertionError("no branch is decoded here")
