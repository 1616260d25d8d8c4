"""Storage of a server hosting many signers and entities: a block writes what it
changed, whatever the server hosts, and loading rebuilds the signers' and replicas'
maps from the ``S`` keys and checks their roots.

Real LevelDB; what a block wrote is read back from the database (every key whose
value a block added, changed or removed), and compared with ``block_writes``.
"""

from __future__ import annotations

from pathlib import Path

import plyvel_next as plyvel
import pytest

from node.codec import encode_tree, int_bytes, keccak
from node.machines.outcomes import Key, Outcomes
from node.machines.server import Step, apply_block
from node.mempool import Mempool
from node.storage import SUB, Store, StoreError, block_writes, sub_key
from tests.node.hosting import Hosted, host, touch_entity, touch_signer


def _written(path: Path, steps: list[Step]) -> None:
    with Store(path) as store:
        for step in steps:
            store.write_block(step)


def _contents(path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator())
    finally:
        db.close()


def _block_footprint(tmp_path: Path, entities: int, kind: str) -> tuple[int, int, int]:
    """(keys the block changed in the database, keys in its batch, bytes in its batch)
    for one block of ``kind`` on a server hosting ``entities`` one-signer entities,
    spread over one signer each (``signers``) or all on one (``entities``)."""
    layout, what = kind.split(":")
    hosted = host(entities, signers=entities if layout == "signers" else 1)
    path = tmp_path / f"{kind}-{entities}"
    _written(path, hosted.steps)
    before = _contents(path)
    mempool = {
        "empty": Mempool.empty(),
        "signer": touch_signer(hosted.routes[1][0]),
        "entity": touch_entity(hosted, 1),
    }[what]
    step = apply_block(hosted.state, mempool, 3000)
    writes = block_writes(step, bytes(32))
    _written(path, [step])
    after = _contents(path)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {k for k, _ in writes}  # every key written changed, and only those
    with Store(path) as store:
        loaded, _ = store.load()
    assert loaded == step.state
    return len(changed), len(writes), sum(len(k) + len(v or b"") for k, v in writes)


@pytest.mark.parametrize(
    "kind",
    [
        "signers:empty",
        "signers:signer",
        "signers:entity",
        "entities:empty",
        "entities:signer",
        "entities:entity",
    ],
)
def test_a_block_writes_the_same_keys_whether_the_server_hosts_3_or_50_entities(
    tmp_path: Path, kind: str
) -> None:
    small = _block_footprint(tmp_path, 3, kind)
    large = _block_footprint(tmp_path, 50, kind)
    assert small == large
    keys = {"empty": 3, "signer": 4, "entity": 5}[kind.split(":")[1]]
    assert small[0] == keys  # block, height, root; + the signer; + the replica


def test_load_rebuilds_the_signers_and_replicas_and_checks_their_roots(tmp_path: Path) -> None:
    hosted = host(7, signers=3)
    touched = apply_block(hosted.state, touch_entity(hosted, 5), 3000)
    _written(tmp_path / "db", [*hosted.steps, touched])
    with Store(tmp_path / "db") as store:
        state, block = store.load()
    assert block == touched.block
    assert state == touched.state
    assert state.hash() == touched.block.state_hash
    assert state.hosted.root == touched.state.hosted.root
    for s in touched.state.signers:
        back = state.hosted[s.id]
        assert back.held.root == s.held.root
        assert [r.hash for r in back.replicas] == [r.hash for r in s.replicas]
    signer, entity = hosted.routes[5]
    replica = state.replica(signer, entity)
    assert replica is not None
    assert replica.pool  # the batch the last block pooled


def _damage(db: plyvel.DB, hosted: Hosted, stale: Step, how: str) -> None:
    (a, ea), (b, _) = hosted.routes[0], hosted.routes[1]
    assert a != b
    if how == "stale replica":
        replica = stale.state.replica(a, ea)
        assert replica is not None
        db.put(sub_key((a, ea)), replica.header)
    elif how == "missing replica":
        db.delete(sub_key((a, ea)))
    elif how == "misfiled replica":
        db.put(sub_key((b, ea)), db.get(sub_key((a, ea))))
    elif how == "stale signer":
        db.put(sub_key((a,)), stale.state.hosted[a].encoded)
    elif how == "altered signer":
        s = stale.state.hosted[b]
        db.put(sub_key((b,)), encode_tree([int_bytes(2), s.pubkey, int_bytes(9), s.held.root]))
    elif how == "missing signer":
        db.delete(sub_key((b,)))
    elif how == "extra signer":
        db.put(sub_key((keccak(b"nobody"),)), db.get(sub_key((a,))))
    else:
        db.put(SUB + a[:16], b"")


@pytest.mark.parametrize(
    ("how", "found"),
    [
        ("stale replica", "replicas of signer .* do not match its root"),
        ("missing replica", "replicas of signer .* do not match its root"),
        ("misfiled replica", "replica under .* is of another route"),
        ("stale signer", "replicas of signer .* do not match its root"),
        ("altered signer", "signers do not match the server state's root"),
        ("missing signer", "of no stored signer"),
        ("extra signer", "does not match its key"),
        ("bad key", "state key of 16 bytes"),
    ],
)
def test_a_damaged_state_record_is_refused_at_load(tmp_path: Path, how: str, found: str) -> None:
    hosted = host(4, signers=2)
    # One more block changes the first signer and its first replica, so the block
    # before it left records that are now stale.
    stale = hosted.steps[-1]
    entity = apply_block(hosted.state, touch_entity(hosted, 0), 3000)
    signer = apply_block(entity.state, touch_signer(hosted.routes[0][0]), 3100)
    _written(tmp_path / "db", [*hosted.steps, entity, signer])
    with Store(tmp_path / "db") as store:
        assert store.load()[0] == signer.state
    db = plyvel.DB(str(tmp_path / "db"))
    _damage(db, hosted, stale, how)
    db.close()
    with Store(tmp_path / "db") as store, pytest.raises(StoreError, match=found):
        store.load()


def test_a_frame_in_flight_is_executed_again_on_load_and_remembered_unchecked(
    tmp_path: Path,
) -> None:
    """The proposer's frame remembered when built (its signatures were checked), then,
    after a restart, when the load executes it again to rebuild the state after it
    (unchecked: it is the replica's own frame). Loading with or without a cache gives
    the same state."""
    hosted = host(2)
    built = Outcomes()
    step = apply_block(hosted.state, touch_entity(hosted, 1), 3000, outcomes=built)
    replica = step.state.replica(*hosted.routes[1])
    assert replica is not None
    assert replica.pending is not None
    frame = replica.pending.frame
    assert Key(replica.entity.hash, frame.hash, False, True) in built
    assert len(built) == 1
    path = tmp_path / "store"
    _written(path, [*hosted.steps, step])
    reloaded = Outcomes()
    with Store(path) as store:
        plain, _ = store.load()
        cached, _ = store.load(reloaded)
    assert plain == cached == step.state
    assert Key(replica.entity.hash, frame.hash, False, False) in reloaded
    assert len(reloaded) == 1
