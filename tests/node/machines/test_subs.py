"""``Subs``: sub-machines by id in a Merkle map of their state hashes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.codec import ZERO_HASH, keccak
from node.machines.subs import Subs, refs_root
from node.merkle_map import verify


@dataclass(frozen=True)
class Machine:
    """A stand-in sub-machine: all a parent's map reads of it is its hash."""

    hash: bytes


def key(i: int) -> bytes:
    return keccak(b"id %d" % i)


def machine(i: int, version: int = 0) -> Machine:
    return Machine(keccak(b"state %d %d" % (i, version)))


def test_lookups_walk_the_map_and_iterate_in_id_order() -> None:
    subs = Subs.of((key(i), machine(i)) for i in range(20))
    assert len(subs) == 20
    assert subs[key(3)] == machine(3)
    assert subs.get(key(3)) == machine(3)
    assert subs.get(key(99)) is None
    assert key(4) in subs
    assert key(99) not in subs
    assert b"short" not in subs
    with pytest.raises(KeyError):
        subs[key(99)]
    assert list(subs) == sorted(key(i) for i in range(20))
    assert [m.hash for m in subs.values()] == [h for _, h in subs.refs()]
    assert Subs().root == ZERO_HASH
    assert not Subs()


def test_a_leaf_commits_to_the_state_hash_so_refs_alone_rebuild_and_prove() -> None:
    subs = Subs.of((key(i), machine(i)) for i in range(10))
    assert refs_root(subs.refs()) == subs.root
    proof = subs._map.prove(key(5))
    assert verify(subs.root, key(5), machine(5).hash, proof)
    assert not verify(subs.root, key(5), machine(5, 1).hash, proof)


def test_a_change_replaces_one_leaf_and_keeps_the_other_machines() -> None:
    before = Subs.of((key(i), machine(i)) for i in range(50))
    after = before.set_many({key(7): machine(7, 1)})
    assert after.root != before.root
    assert [k for k in after if after[k] is not before[k]] == [key(7)]
    assert after._map.diff(before._map).keys() == {key(7)}
    assert before.set_many({}) is before
    assert after.set_many({key(7): machine(7)}) == before  # the same pairs, the same root


ops = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=60)


@settings(deadline=None)
@given(ops, st.randoms(use_true_random=False), st.integers(1, 9))
def test_the_root_depends_only_on_the_set_of_ids_and_hashes(
    updates: list[tuple[int, int]], rng: object, chunk: int
) -> None:
    """Whatever the order and grouping of the updates, the last value of each id
    decides the root; and a map built at once from the final pairs has it too."""
    final: dict[bytes, Machine] = {}
    one_by_one: Subs[Machine] = Subs()
    for i, v in updates:
        final[key(i)] = machine(i, v)
        one_by_one = one_by_one.set(key(i), machine(i, v))
    pairs = list(final.items())
    rng.shuffle(pairs)  # type: ignore[attr-defined]
    in_chunks: Subs[Machine] = Subs()
    for start in range(0, len(pairs), chunk):
        in_chunks = in_chunks.set_many(dict(pairs[start : start + chunk]))
    at_once = Subs.of(pairs)
    assert one_by_one.root == in_chunks.root == at_once.root
    assert one_by_one == at_once
    assert at_once.root == refs_root((k, m.hash) for k, m in final.items())
    assert list(at_once) == sorted(final)
