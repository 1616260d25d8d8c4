"""A replica's channel records live under their own keys, and a block writes only
those that changed (issue 11).

The states here are built directly (a hub's replica with many funded channels, as
``bench/hub_scale.py`` builds them), not through frames: what is tested is the
storage of whatever the machines produce. Real LevelDB; the batches are read back
from the database, not from a spy.
"""

from __future__ import annotations

from dataclasses import replace
from operator import itemgetter
from pathlib import Path

import plyvel_next as plyvel
import pytest

from node.block import Block
from node.codec import keccak
from node.crypto import bls
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.accounts import ChannelRecord, Forwarded
from node.machines.governance import Config, Member
from node.machines.server import ServerState, Step, Write, replica_write
from node.machines.signer import SignerState
from node.machines.subs import Subs
from node.mempool import Mempool
from node.merkle_map import Branch, MerkleMap, Stub
from node.merkle_store import BUCKET, StoredNodeError
from node.storage import (
    CHANNEL,
    FORWARD,
    SUB,
    WAITING,
    Store,
    StoreError,
    node_prefix,
    record_key,
)
from node.txs import Tx
from tests.node.hub_state import funded_side

SKS = [101, 102]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
N = 300
PAYMENT = keccak(b"a payment in flight")


def _config() -> Config:
    members = tuple(Member(pk, 1) for pk in PKS)
    return Config(members, 2, members[0].id)


def _replicas() -> tuple[list[rep.Replica], list[bytes]]:
    """Both members' replicas of one hub entity with ``N`` channels (one server hosts
    both signers)."""
    config = _config()
    genesis = rep.Genesis(config, b"\x07" * 32, tuple(bls.pop_prove(sk) for sk in SKS))
    hub = ent.genesis(config, genesis.salt)
    peers = sorted(keccak(b"peer %d" % i) for i in range(N))
    records = [ChannelRecord(p, config, 0, funded_side(hub.entity_id, p, 1000)) for p in peers]
    entity = replace(hub, channels=MerkleMap.from_items((r.peer, r) for r in records))
    return [rep.Replica(m, genesis, entity) for m in config.ids], peers


def _step(prev: ServerState, replicas: list[rep.Replica], before: list[rep.Replica] | None) -> Step:
    """A block holding ``replicas`` (changed from ``before``)."""
    signers = tuple(
        sorted(
            (SignerState.of(pk, 0, (r,)) for pk, r in zip(PKS, replicas, strict=True)),
            key=lambda s: s.id,
        )
    )
    body = ServerState(prev.height + 1, 1000 + prev.height, 0, Subs.of((s.id, s) for s in signers))
    block = Block.make(body.height, prev.head, body.timestamp, Mempool.build().raw, body.hash())
    state = replace(body, head=block.hash)
    changed = [Write((s.id,), s.encoded) for s in signers]
    for i, r in enumerate(replicas):
        old = before[i] if before else None
        changed.append(replica_write((r.signer, r.entity_id), r, old))
    return Step(state, block, (), changed=tuple(changed))


def _channel_keys(db_path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(db_path))
    try:
        return dict(db.iterator(prefix=CHANNEL))
    finally:
        db.close()


def test_records_are_stored_apart_and_a_block_writes_only_the_changed_ones(
    tmp_path: Path,
) -> None:
    replicas, peers = _replicas()
    first = _step(ServerState(), replicas, None)
    with Store(tmp_path / "db") as store:
        store.write_block(first)
    stored = _channel_keys(tmp_path / "db")
    # One key per channel per replica, each holding that record's encoding only.
    assert len(stored) == 2 * N
    for r in replicas:
        for peer in peers:
            record = r.entity.channels.get(peer)
            assert record is not None
            assert stored[record_key(CHANNEL, (r.signer, r.entity_id), peer)] == record.encoded
    # A replica's own key holds its header (a few hundred bytes), not its channels.
    db = plyvel.DB(str(tmp_path / "db"))
    header = db.get(SUB + replicas[0].signer + replicas[0].entity_id)
    db.close()
    assert header == replicas[0].header
    assert len(header) < 2000 < len(replicas[0].encoded)

    # A frame changes one channel and closes another, on both replicas.
    changed_peer, closed_peer = peers[5], peers[9]
    before = replicas
    rec = replicas[0].entity.channels.get(changed_peer)
    assert rec is not None
    moved = replace(rec, side=funded_side(replicas[0].entity_id, changed_peer, 2000))
    entity = replace(
        replicas[0].entity,
        height=1,
        channels=replicas[0].entity.channels.set_many({changed_peer: moved, closed_peer: None}),
        forwards=replicas[0].entity.forwards.set(PAYMENT, Forwarded(changed_peer)),
    )
    after = [replace(r, entity=entity) for r in before]
    second = _step(first.state, after, before)
    writes = [w for w in second.changed if len(w.route) == 2]
    expected = [
        (CHANNEL, changed_peer, moved.encoded),
        (CHANNEL, closed_peer, None),
        (FORWARD, PAYMENT, Forwarded(changed_peer).encoded),
    ]
    key = itemgetter(0, 1)
    assert [sorted(w.records, key=key) for w in writes] == [sorted(expected, key=key)] * 2
    with Store(tmp_path / "db") as store:
        store.write_block(second)
    now = _channel_keys(tmp_path / "db")
    assert len(now) == 2 * (N - 1)
    for r in after:
        assert now[record_key(CHANNEL, (r.signer, r.entity_id), changed_peer)] == moved.encoded
        assert record_key(CHANNEL, (r.signer, r.entity_id), closed_peer) not in now
    unchanged = {k: v for k, v in stored.items() if k in now and v == now[k]}
    assert len(unchanged) == 2 * (N - 2)

    # Restart: the same state, channels and hashes. The loaded maps read their nodes
    # from the store when walked, so they are used while it is open.
    with Store(tmp_path / "db") as store:
        state, block = store.load()
        assert block == second.block
        assert state == second.state
        loaded = state.replica(after[0].signer, after[0].entity_id)
        assert loaded is not None
        assert loaded.entity.channels.root == entity.channels.root
        assert loaded.entity.channels.get(changed_peer) == moved
        assert loaded.entity.channels.get(closed_peer) is None
        assert len(loaded.entity.channels) == N - 1
        assert dict(loaded.entity.channels.items()) == dict(entity.channels.items())
        assert loaded.entity.forwards.get(PAYMENT) == Forwarded(changed_peer)
        assert loaded.entity.forwards.root == entity.forwards.root


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        ("altered", "has another hash"),
        # A missing record makes its small subtree's run of records read the next key.
        ("missing", "missing|has another hash"),
        ("misfiled", "record under .* is of"),
        ("branch altered", "has another hash|is malformed"),
        ("branch missing", "is missing"),
    ],
)
def test_a_damaged_record_or_node_is_found_when_read(
    tmp_path: Path, damage: str, found: str
) -> None:
    """A restart reads no record; each is checked against the hash its parent node
    holds when a walk reads it, so damage is found there, as a StoredNodeError (the
    node stops on it), and no wrong value is ever returned."""
    replicas, peers = _replicas()
    with Store(tmp_path / "db") as store:
        store.write_block(_step(ServerState(), replicas, None))
    r = replicas[1]
    route = (r.signer, r.entity_id)
    mine, other = r.entity.channels.get(peers[3]), r.entity.channels.get(peers[4])
    assert mine is not None
    assert other is not None
    db = plyvel.DB(str(tmp_path / "db"))
    # Both replicas hold the same channels, and a node read for one serves the other
    # (one stub per node): damage both copies.
    for route in ((q.signer, q.entity_id) for q in replicas):
        key = record_key(CHANNEL, route, peers[3])
        if damage == "altered":
            db.put(key, replace(mine, peer_config_height=7).encoded)
        elif damage == "missing":
            db.delete(key)
        elif damage == "misfiled":
            db.put(key, other.encoded)  # another channel's record under this key
        else:
            # The lowest stored branch over peers[3] (below it, a subtree of fewer than
            # BUCKET keys is read back from its records).
            prefix = node_prefix(route, CHANNEL)
            key = prefix + _lowest_stored_branch(r.entity.channels, peers[3])
            raw = db.get(key)
            assert raw is not None
            if damage == "branch missing":
                db.delete(key)
            else:
                db.put(key, raw[:40] + bytes([raw[40] ^ 1]) + raw[41:])
    db.close()
    route = (r.signer, r.entity_id)
    with Store(tmp_path / "db", cache_bytes=0) as store:
        state, _ = store.load()  # the top is read, nothing below it
        loaded = state.replica(*route)
        assert loaded is not None
        assert loaded.entity.channels.root == r.entity.channels.root
        assert loaded.entity.channels.get(peers[200]) == r.entity.channels.get(peers[200])
        with pytest.raises(StoredNodeError, match=found):
            loaded.entity.channels.get(peers[3])


@pytest.mark.parametrize("inside", [False, True])
def test_an_extra_record_is_never_read_as_the_map(tmp_path: Path, inside: bool) -> None:
    """The trie decides what the map holds. A small subtree (fewer than ``BUCKET``
    keys) is read back as the run of ``count`` records from its first key, so a record
    no leaf names is either never read (after the run's last key: the map reads as
    before) or, among the run's keys, damage found when that subtree is read: the read
    fails with StoredNodeError (the hash check) and never returns the extra record."""
    replicas, peers = _replicas()
    with Store(tmp_path / "db") as store:
        store.write_block(_step(ServerState(), replicas, None))
    r = replicas[1]
    route = (r.signer, r.entity_id)
    channels = r.entity.channels
    # A key whose last bit is 0, and its neighbour (last bit 1) as the extra record:
    # between that key and the next one in the map, inside its run or just after it.
    key = next(
        k for k in peers if k[-1] & 1 == 0 and (_bucket_keys(channels, k)[-1] != k) == inside
    )
    peer = key[:-1] + bytes([key[-1] | 1])
    assert peer not in peers
    other = channels.get(peers[4])
    assert other is not None
    extra = ChannelRecord(peer, other.peer_config, 0, funded_side(r.entity_id, peer, 5))
    db = plyvel.DB(str(tmp_path / "db"))
    for q in replicas:  # both replicas' copies (a node read for one serves the other)
        db.put(record_key(CHANNEL, (q.signer, q.entity_id), peer), extra.encoded)
    db.close()
    with Store(tmp_path / "db", cache_bytes=0) as store:
        state, _ = store.load()
        loaded = state.replica(*route)
        assert loaded is not None
        if inside:
            with pytest.raises(StoredNodeError, match="has another hash"):
                loaded.entity.channels.get(peer)
            with pytest.raises(StoredNodeError, match="has another hash"):
                dict(loaded.entity.channels.items())
        else:
            assert loaded.entity.channels.get(peer) is None
            assert dict(loaded.entity.channels.items()) == dict(channels.items())


def test_a_damaged_top_is_found_on_load(tmp_path: Path) -> None:
    replicas, _ = _replicas()
    with Store(tmp_path / "db") as store:
        store.write_block(_step(ServerState(), replicas, None))
    r = replicas[1]
    db = plyvel.DB(str(tmp_path / "db"))
    top = node_prefix((r.signer, r.entity_id), CHANNEL)
    raw = db.get(top)
    db.put(top, bytes([raw[0] ^ 1]) + raw[1:])
    db.close()
    with Store(tmp_path / "db") as store, pytest.raises(StoreError, match="header's root"):
        store.load()


def _lowest_stored_branch(m: MerkleMap[ChannelRecord], key: bytes) -> bytes:
    """The hash of the deepest branch on ``key``'s path that storage keeps as a node."""
    found = b""
    node = m.top
    while node is not None:
        if isinstance(node, Stub):
            node = node.open()
        if not isinstance(node, Branch):
            break
        if node.count >= BUCKET:
            found = node.digest()
        d = node.depth
        node = node.right if key[d >> 3] >> (7 - (d & 7)) & 1 else node.left
    assert found
    return found


def test_the_waiting_channels_are_kept_so_a_restart_reads_no_channel(tmp_path: Path) -> None:
    """``EntityState.waiting`` (ready channels with queued transactions: the next frame
    proposes on them) decides what a frame does; it is derived from every channel, so
    storage keeps it (``Q``, not hashed) and a restart reads it instead of the
    channels."""
    replicas, peers = _replicas()
    waiting_peers = sorted(peers[i] for i in (7, 70, 170))
    changes = {}
    for p in waiting_peers:
        rec = replicas[0].entity.channels.get(p)
        assert rec is not None
        side, _ = ch.step(rec.side, ch.Enqueue(Tx.of(ch.SetCredit(1, 5))))
        assert side.queue
        assert side.pending is None
        changes[p] = replace(rec, side=side)
    entity = replace(replicas[0].entity, channels=replicas[0].entity.channels.set_many(changes))
    assert entity.waiting == frozenset(waiting_peers)  # found by looking at every channel
    after = [replace(r, entity=entity) for r in replicas]
    first = _step(ServerState(), after, None)
    with Store(tmp_path / "db") as store:
        store.write_block(first)
    db = plyvel.DB(str(tmp_path / "db"))
    route = (replicas[0].signer, replicas[0].entity_id)
    assert db.get(WAITING + b"".join(route)) == b"".join(waiting_peers)
    db.close()
    with Store(tmp_path / "db", cache_bytes=0) as store:
        state, _ = store.load()
        loaded = state.replica(*route)
        assert loaded is not None
        assert loaded.entity.waiting == frozenset(waiting_peers)
        assert store.cache.loads == 0  # no channel read to know it
        # A block that leaves nothing waiting deletes the record.
        calm = replace(
            loaded.entity,
            channels=loaded.entity.channels.set_many(
                {p: replicas[0].entity.channels.get(p) for p in waiting_peers}
            ),
        )
        assert calm.waiting == frozenset()
        again = [replace(r, entity=calm) for r in after]
        store.write_block(_step(first.state, again, after))
    db = plyvel.DB(str(tmp_path / "db"))
    assert db.get(WAITING + b"".join(route)) is None
    db.close()


def _bucket_keys(m: MerkleMap[ChannelRecord], key: bytes) -> list[bytes]:
    """The keys of the small subtree (fewer than ``BUCKET`` keys) that holds ``key``."""
    node = m.top
    while True:
        if isinstance(node, Stub):
            node = node.open()
        assert node is not None
        if node.count < BUCKET:
            keys = [k for k, _ in m.items_from(node.rep)]
            return keys[: node.count]
        assert isinstance(node, Branch)
        d = node.depth
        node = node.right if key[d >> 3] >> (7 - (d & 7)) & 1 else node.left
