"""MerkleMap: roots against a naive reference, a dict model, persistence, proofs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from node.codec import DecodeError, RlpItem, decode, encode_tree, int_bytes, keccak
from node.merkle_map import MerkleMap, Proof, adjacent, is_edge, verify

ZERO = bytes(32)


@dataclass(frozen=True, slots=True)
class Val:
    """A value whose canonical encoding is simply its bytes."""

    encoded: bytes


# The reference: the docstring's definition, recursively, with nothing shared --------------


def ref_bit(key: bytes, i: int) -> int:
    """Bit ``i`` of ``key``, bit 0 the most significant bit of byte 0."""
    return (int.from_bytes(key, "big") >> (255 - i)) & 1


def ref_node(keys: list[bytes], values: dict[bytes, bytes], depth: int) -> bytes:
    if len(keys) == 1:
        key = keys[0]
        return keccak(b"\x00" + key + keccak(values[key]))
    while len({ref_bit(k, depth) for k in keys}) == 1:
        depth += 1
    left = [k for k in keys if ref_bit(k, depth) == 0]
    right = [k for k in keys if ref_bit(k, depth) == 1]
    return keccak(
        b"\x01"
        + bytes([depth])
        + ref_node(left, values, depth + 1)
        + ref_node(right, values, depth + 1)
    )


def ref_root(values: dict[bytes, bytes]) -> bytes:
    """The root of ``values`` (key -> encoded value) by the docstring's definition."""
    if not values:
        return ZERO
    return ref_node(sorted(values), values, 0)


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return keccak(b"\x00" + key + keccak(value))


def to_map(values: dict[bytes, bytes]) -> MerkleMap[Val]:
    return MerkleMap[Val].from_items((k, Val(v)) for k, v in values.items())


def flip_bit(data: bytes, i: int) -> bytes:
    return (int.from_bytes(data, "big") ^ (1 << (8 * len(data) - 1 - i))).to_bytes(len(data), "big")


# Strategies -------------------------------------------------------------------------------

plain_keys = st.binary(min_size=32, max_size=32)
values = st.binary(max_size=40)


@st.composite
def clustered_keys(draw: st.DrawFn, min_size: int = 0, max_size: int = 24) -> list[bytes]:
    """Distinct keys around one base: some differ only in the last bits or the last byte,
    some anywhere, so the tries have branches at every depth, down to 255."""
    base = draw(st.integers(0, 2**256 - 1))
    n = draw(st.integers(min_size, max_size))
    keys: set[bytes] = set()
    for _ in range(n):
        width = draw(st.sampled_from([1, 2, 3, 8, 9, 17, 64, 256]))
        shift = draw(st.one_of(st.just(0), st.integers(0, 256 - width)))
        noise = draw(st.integers(0, 2**width - 1)) << shift
        keys.add((base ^ noise).to_bytes(32, "big"))
    if len(keys) < min_size:
        keys.add(base.to_bytes(32, "big"))
    return sorted(keys)


@st.composite
def value_dicts(draw: st.DrawFn, min_size: int = 0) -> dict[bytes, bytes]:
    keys = draw(
        st.one_of(
            st.lists(plain_keys, min_size=min_size, max_size=24, unique=True),
            clustered_keys(min_size=min_size),
        )
    )
    return {k: draw(values) for k in keys}


# Roots against the reference --------------------------------------------------------------


@settings(deadline=None, max_examples=200)
@given(value_dicts())
def test_root_matches_reference(d: dict[bytes, bytes]) -> None:
    m = to_map(d)
    assert m.root == ref_root(d)
    incremental = MerkleMap[Val]()
    for k, v in d.items():
        incremental = incremental.set(k, Val(v))
    assert incremental.root == ref_root(d)
    assert incremental == m


@settings(deadline=None, max_examples=50)
@given(value_dicts(min_size=1), st.randoms(use_true_random=False))
def test_root_independent_of_insertion_order(d: dict[bytes, bytes], rnd: random.Random) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    m = MerkleMap[Val]()
    for k, v in items:
        m = m.set(k, Val(v))
    rnd.shuffle(items)
    assert m.root == MerkleMap[Val].from_items((k, Val(v)) for k, v in items).root
    assert m.root == ref_root(d)
    assert list(m.keys()) == sorted(d)


def test_large_map_matches_reference() -> None:
    d = {keccak(i.to_bytes(4, "big")): i.to_bytes(4, "big") for i in range(600)}
    m = to_map(d)
    assert len(m) == 600
    assert m.root == ref_root(d)
    # Delete half, one by one, and compare with a fresh build.
    half = sorted(d)[::2]
    for k in half:
        m = m.delete(k)
        del d[k]
    assert len(m) == 300
    assert m.root == ref_root(d) == to_map(d).root


def test_deepest_trie_every_depth() -> None:
    """A base key and its 256 one-bit neighbours: the base's path has a branch at every
    depth 0..255, the most steps a proof can have."""
    base = keccak(b"base")
    d = {base: b"base"} | {flip_bit(base, i): bytes([i]) for i in range(256)}
    m = to_map(d)
    assert m.root == ref_root(d)
    proof = m.prove(base)
    assert [depth for depth, _ in proof.steps] == list(range(256))
    assert proof.end is None
    assert verify(m.root, base, b"base", proof)
    assert Proof.from_item(decode(encode_tree(proof.to_tree()))) == proof
    m2 = m.delete(base)
    assert m2.root == ref_root({k: v for k, v in d.items() if k != base})
    absent = m2.prove(base)
    assert len(absent.steps) == 255
    assert absent.end is not None
    assert verify(m2.root, base, None, absent)


# Exact vectors ----------------------------------------------------------------------------


def test_empty_map() -> None:
    m = MerkleMap[Val]()
    assert m.root == ZERO
    assert MerkleMap[Val].empty().root == ZERO
    assert MerkleMap[Val].from_items([]).root == ZERO
    assert len(m) == 0
    assert not m
    assert list(m.items()) == []
    assert m.get(ZERO) is None
    assert ZERO not in m
    assert m == MerkleMap[Val].empty()
    assert repr(m) == "<MerkleMap of 0 entries>"


def test_one_entry_root_is_its_leaf_hash() -> None:
    key = bytes(range(32))
    m = MerkleMap[Val]().set(key, Val(b"value"))
    expected = keccak(b"\x00" + key + keccak(b"value"))
    assert m.root == expected
    assert m.root == ref_root({key: b"value"})


def test_two_entries_branch_at_depth_zero() -> None:
    k0 = bytes(32)
    k1 = b"\x80" + bytes(31)
    leaf0 = keccak(b"\x00" + k0 + keccak(b"a"))
    leaf1 = keccak(b"\x00" + k1 + keccak(b"b"))
    expected = keccak(b"\x01\x00" + leaf0 + leaf1)
    m = MerkleMap[Val]().set(k1, Val(b"b")).set(k0, Val(b"a"))
    assert m.root == expected
    assert MerkleMap[Val].from_items([(k1, Val(b"b")), (k0, Val(b"a"))]).root == expected
    assert m.prove(k0) == Proof(((0, leaf1),), None)
    assert m.prove(k1) == Proof(((0, leaf0),), None)


def test_two_entries_branch_at_depth_255() -> None:
    k0 = bytes(32)
    k1 = bytes(31) + b"\x01"
    leaf0 = keccak(b"\x00" + k0 + keccak(b"a"))
    leaf1 = keccak(b"\x00" + k1 + keccak(b"b"))
    m = MerkleMap[Val]().set(k0, Val(b"a")).set(k1, Val(b"b"))
    assert m.root == keccak(b"\x01\xff" + leaf0 + leaf1)


def test_three_entries_nested_branches() -> None:
    ka = bytes(32)
    kb = b"\x40" + bytes(31)
    kc = b"\x80" + bytes(31)
    la, lb, lc = (leaf_hash(k, v) for k, v in ((ka, b"a"), (kb, b"b"), (kc, b"c")))
    expected = keccak(b"\x01\x00" + keccak(b"\x01\x01" + la + lb) + lc)
    m = MerkleMap[Val].from_items([(kc, Val(b"c")), (ka, Val(b"a")), (kb, Val(b"b"))])
    assert m.root == expected
    assert MerkleMap[Val]().set(kc, Val(b"c")).set(kb, Val(b"b")).set(ka, Val(b"a")) == m
    # kb's walk: depth 0 (left, sibling lc), depth 1 (right, sibling la).
    assert m.prove(kb) == Proof(((0, lc), (1, la)), None)
    # An absent key 0x20..: same walk as ka (bits 0, 1 are 0), ends on ka's leaf.
    absent = b"\x20" + bytes(31)
    assert m.prove(absent) == Proof(((0, lc), (1, lb)), (ka, keccak(b"a")))
    assert verify(m.root, absent, None, m.prove(absent))


# A dict model ------------------------------------------------------------------------------

Op = tuple[str, Any]


@st.composite
def op_sequences(draw: st.DrawFn) -> tuple[list[bytes], list[Op]]:
    pool = draw(
        st.one_of(
            clustered_keys(min_size=1, max_size=12),
            st.lists(plain_keys, min_size=1, max_size=12, unique=True),
        )
    )
    some_key = st.sampled_from(pool)
    op = st.one_of(
        st.tuples(st.just("set"), st.tuples(some_key, values)),
        st.tuples(st.just("delete"), some_key),
        st.tuples(
            st.just("set_many"),
            st.dictionaries(some_key, st.one_of(st.none(), values), max_size=6),
        ),
    )
    return pool, draw(st.lists(op, max_size=25))


def check_against(m: MerkleMap[Val], model: dict[bytes, Val], pool: list[bytes]) -> None:
    assert len(m) == len(model)
    assert bool(m) == bool(model)
    for k in pool:
        assert m.get(k) is model.get(k)
        assert (k in m) == (k in model)
    for k in (flip_bit(pool[0], 255), flip_bit(pool[0], 0), ZERO, b"\xff" * 32):
        assert m.get(k) is model.get(k)
        assert (k in m) == (k in model)
    expected = sorted(model.items())
    assert list(m.items()) == expected
    assert list(m.keys()) == [k for k, _ in expected]
    assert list(m) == [k for k, _ in expected]
    assert list(m.values()) == [v for _, v in expected]
    assert m.root == MerkleMap[Val].from_items(model.items()).root
    assert m.root == ref_root({k: v.encoded for k, v in model.items()})


@settings(deadline=None, max_examples=150)
@given(op_sequences())
def test_model(case: tuple[list[bytes], list[Op]]) -> None:
    pool, ops = case
    m = MerkleMap[Val]()
    model: dict[bytes, Val] = {}
    history: list[tuple[MerkleMap[Val], list[tuple[bytes, Val]], bytes]] = []
    for name, arg in ops:
        history.append((m, list(m.items()), m.root))
        before, before_items = m, list(m.items())
        if name == "set":
            key, raw = arg
            value = Val(raw)
            m = m.set(key, value)
            model[key] = value
        elif name == "delete":
            m = m.delete(arg)
            model.pop(arg, None)
        else:
            changes = {k: None if v is None else Val(v) for k, v in arg.items()}
            m = m.set_many(changes)
            for k, v in changes.items():
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
        check_against(m, model, pool)
        assert list(before.items()) == before_items  # the old map did not change
    # Every earlier map still holds exactly what it held, and its root.
    for old, items, root in history:
        assert list(old.items()) == items
        assert len(old) == len(items)
        assert old.root == root
        assert root == MerkleMap[Val].from_items(items).root


@settings(deadline=None, max_examples=60)
@given(value_dicts(min_size=1), st.data())
def test_persistence_of_roots_after_updates(d: dict[bytes, bytes], data: st.DataObject) -> None:
    """Roots read before an update (hashes cached in shared nodes) stay right after it."""
    m = to_map(d)
    root = m.root
    key = data.draw(st.sampled_from(sorted(d)))
    m2 = m.set(key, Val(d[key] + b"!"))
    m3 = m.delete(key)
    m4 = m.set(flip_bit(key, 255), Val(b"new"))
    assert m.root == root == ref_root(d)
    assert m2.root == ref_root(d | {key: d[key] + b"!"})
    assert m3.root == ref_root({k: v for k, v in d.items() if k != key})
    assert m4.root == ref_root(d | {flip_bit(key, 255): b"new"})
    assert m.get(key) == Val(d[key])
    assert len(m) == len(d)


@settings(deadline=None, max_examples=150)
@given(value_dicts(), value_dicts(), st.data())
def test_diff_is_exactly_the_changes(
    a: dict[bytes, bytes], b: dict[bytes, bytes], data: st.DataObject
) -> None:
    """``new.diff(old)`` lists every key whose value differs (None: gone), no other;
    applying it to ``old`` gives ``new``'s root. Both for unrelated maps and for a map
    and its update (which share all but the changed paths)."""
    old = to_map(a)
    keys = sorted(a)
    changes: dict[bytes, Val | None] = {}
    for k in data.draw(st.lists(st.sampled_from(keys), max_size=6)) if keys else []:
        changes[k] = None if data.draw(st.booleans()) else Val(b"changed " + k[:4])
        changes[flip_bit(k, data.draw(st.integers(0, 255)))] = Val(b"near")
    for k, v in b.items():
        if data.draw(st.booleans()):
            changes[k] = Val(v)
    updated = old.set_many(changes)
    unrelated = to_map(b)
    for new in (updated, unrelated):
        diff = new.diff(old)
        before = dict(old.items())
        after = dict(new.items())
        expected = {
            k: after.get(k)
            for k in before.keys() | after.keys()
            if before.get(k) is not after.get(k)
        }
        assert diff == expected
        assert old.set_many(diff).root == new.root
        assert new.set_many(new.diff(new)) is new
        assert new.diff(new) == {}


@settings(deadline=None, max_examples=150)
@given(value_dicts(), value_dicts(), st.data())
def test_a_large_batch_merges_as_single_updates_would(
    a: dict[bytes, bytes], b: dict[bytes, bytes], data: st.DataObject
) -> None:
    """``set_many`` of more than a few changes merges them in one pass; the result is
    the map of the dict model whatever the batch holds (sets, replacements, deletes of
    present and absent keys, keys next to present ones), and unchanged subtrees and
    values are kept."""
    old = to_map(a)
    changes: dict[bytes, Val | None] = {k: Val(v) for k, v in b.items()}
    for k in sorted(a):
        choice = data.draw(st.integers(0, 3))
        if choice == 1:
            changes[k] = None
        elif choice == 2:
            changes[k] = Val(b"replaced")
        elif choice == 3:
            changes[flip_bit(k, data.draw(st.integers(0, 255)))] = None  # mostly absent
    for k in data.draw(st.lists(plain_keys, max_size=12)):
        changes[k] = Val(b"new")
    model = {k: Val(v) for k, v in a.items()}
    for k, v in changes.items():
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v
    new = old.set_many(changes)
    assert dict(new.items()) == model
    assert len(new) == len(model)
    assert new.root == ref_root({k: v.encoded for k, v in model.items()})
    assert list(old.items()) == sorted((k, Val(v)) for k, v in a.items())  # unchanged
    untouched = [k for k in a if k not in changes]
    for k in untouched:
        assert new.get(k) is old.get(k)


# Identity shortcuts, equality -------------------------------------------------------------


def test_no_op_updates_return_the_same_map() -> None:
    k1, k2, absent = keccak(b"1"), keccak(b"2"), keccak(b"absent")
    v1 = Val(b"one")
    m = MerkleMap[Val]().set(k1, v1).set(k2, Val(b"two"))
    assert m.set(k1, v1) is m
    assert m.delete(absent) is m
    assert m.set_many({absent: None}) is m
    assert m.set_many({}) is m
    assert m.set_many({k1: v1, absent: None}) is m
    assert MerkleMap[Val]().delete(absent).root == ZERO
    empty = MerkleMap[Val]()
    assert empty.delete(absent) is empty
    assert empty.set_many({absent: None}) is empty
    # An equal but different value object makes a new map with the same root.
    m2 = m.set(k1, Val(b"one"))
    assert m2 is not m
    assert m2 == m
    assert m2.root == m.root
    assert len(m2) == 2


def test_set_many_sets_and_deletes() -> None:
    k1, k2, k3 = keccak(b"1"), keccak(b"2"), keccak(b"3")
    m = MerkleMap[Val]().set(k1, Val(b"a")).set(k2, Val(b"b"))
    m2 = m.set_many({k1: None, k2: Val(b"B"), k3: Val(b"c")})
    assert dict(m2.items()) == {k2: Val(b"B"), k3: Val(b"c")}
    assert dict(m.items()) == {k1: Val(b"a"), k2: Val(b"b")}
    assert m2.set_many({k2: None, k3: None}).root == ZERO
    assert not m2.set_many({k2: None, k3: None})


@settings(deadline=None, max_examples=50)
@given(value_dicts(), value_dicts())
def test_eq_and_hash_follow_the_root(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> None:
    ma, mb = to_map(a), to_map(b)
    assert (ma == mb) == (a == b)
    assert (ma == mb) == (ma.root == mb.root)
    assert ma == to_map(dict(reversed(list(a.items()))))
    assert hash(ma) == hash(to_map(a))
    if ma == mb:
        assert hash(ma) == hash(mb)
    assert ma != object()
    assert ma != ma.root


def test_eq_compares_encoded_values_not_objects() -> None:
    key = keccak(b"k")
    a = MerkleMap[Val]().set(key, Val(b"x"))
    b = MerkleMap[Val]().set(key, Val(b"x"))
    c = MerkleMap[Val]().set(key, Val(b"y"))
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


# Bad keys ----------------------------------------------------------------------------------

KEY_ERROR = "a key is 32 bytes"
BAD_KEYS = [
    pytest.param(bytes(31), id="31-bytes"),
    pytest.param(bytes(33), id="33-bytes"),
    pytest.param(b"", id="empty"),
    pytest.param("a" * 32, id="str"),
    pytest.param(bytearray(32), id="bytearray"),
    pytest.param(None, id="None"),
    pytest.param(0, id="int"),
]


def test_from_items_rejects_a_duplicate_key() -> None:
    k = keccak(b"k")
    with pytest.raises(ValueError, match="twice"):
        MerkleMap[Val].from_items([(k, Val(b"a")), (keccak(b"j"), Val(b"c")), (k, Val(b"b"))])
    with pytest.raises(ValueError, match="twice"):
        MerkleMap[Val].from_items([(k, Val(b"a")), (k, Val(b"a"))])


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_keys_are_value_errors(bad: Any) -> None:
    good = keccak(b"good")
    m = MerkleMap[Val]().set(good, Val(b"v"))
    empty = MerkleMap[Val]()
    with pytest.raises(ValueError, match=KEY_ERROR):
        MerkleMap[Val].from_items([(good, Val(b"v")), (bad, Val(b"w"))])
    with pytest.raises(ValueError, match=KEY_ERROR):
        MerkleMap[Val].from_items([(bad, Val(b"w"))])
    for mm in (m, empty):
        with pytest.raises(ValueError, match=KEY_ERROR):
            mm.get(bad)
        with pytest.raises(ValueError, match=KEY_ERROR):
            mm.set(bad, Val(b"w"))
        with pytest.raises(ValueError, match=KEY_ERROR):
            mm.delete(bad)
        if not isinstance(bad, bytearray):  # which cannot be a dict key at all
            with pytest.raises(ValueError, match=KEY_ERROR):
                mm.set_many({good: Val(b"x"), bad: Val(b"w")})
            with pytest.raises(ValueError, match=KEY_ERROR):
                mm.set_many({bad: None})
        with pytest.raises(ValueError, match=KEY_ERROR):
            mm.prove(bad)
        with pytest.raises(ValueError, match=KEY_ERROR):
            _ = bad in mm
    with pytest.raises(ValueError, match=KEY_ERROR):
        verify(m.root, bad, b"v", m.prove(good))
    # Nothing changed.
    assert list(m.items()) == [(good, Val(b"v"))]


# Proofs -------------------------------------------------------------------------------------


def nearby_absent_keys(d: dict[bytes, bytes]) -> list[bytes]:
    out = {ZERO, b"\xff" * 32, keccak(b"surely absent")}
    for k in list(d)[:6]:
        out.update(flip_bit(k, i) for i in (0, 7, 100, 254, 255))
    return sorted(out - set(d))


def roundtrip(proof: Proof) -> Proof:
    return Proof.from_item(decode(encode_tree(proof.to_tree())))


@settings(deadline=None, max_examples=100)
@given(value_dicts(min_size=1))
def test_membership_proofs(d: dict[bytes, bytes]) -> None:
    m = to_map(d)
    root = m.root
    other_root = flip_bit(root, 3)
    for key, value in d.items():
        proof = m.prove(key)
        assert proof.end is None
        assert verify(root, key, value, proof)
        assert roundtrip(proof) == proof
        assert not verify(root, key, value + b"x", proof)
        assert not verify(other_root, key, value, proof)
        assert not verify(ZERO, key, value, proof)
        # A membership proof is no proof of absence.
        assert not verify(root, key, None, proof)
        # Nor, with the key's leaf as its end, is it one.
        as_end = Proof(proof.steps, (key, keccak(value)))
        assert not verify(root, key, None, as_end)
        if proof.steps:
            for i in {0, len(proof.steps) - 1}:
                depth, sibling = proof.steps[i]
                steps = list(proof.steps)
                steps[i] = (depth, flip_bit(sibling, 255))
                assert not verify(root, key, value, Proof(tuple(steps), None))
                # Dropping a step.
                dropped = proof.steps[:i] + proof.steps[i + 1 :]
                assert not verify(root, key, value, Proof(dropped, None))
            # The other side's bit at a step's depth.
            assert not verify(root, flip_bit(key, proof.steps[-1][0]), value, proof)
        last = proof.steps[-1][0] if proof.steps else -1
        if last < 255:
            extra = (*proof.steps, (last + 1, keccak(b"extra")))
            assert not verify(root, key, value, Proof(extra, None))
        if not proof.steps or proof.steps[0][0] > 0:
            extra = ((0, keccak(b"extra")), *proof.steps)
            assert not verify(root, key, value, Proof(extra, None))
        # Another key's proof of absence does not show this key absent.
        for absent in nearby_absent_keys(d)[:3]:
            assert not verify(root, key, None, m.prove(absent))


@settings(deadline=None, max_examples=100)
@given(value_dicts(min_size=1))
def test_non_membership_proofs(d: dict[bytes, bytes]) -> None:
    m = to_map(d)
    root = m.root
    for key in nearby_absent_keys(d):
        proof = m.prove(key)
        assert proof.end is not None
        end_key, end_value_hash = proof.end
        assert end_key in d
        assert end_value_hash == keccak(d[end_key])
        assert verify(root, key, None, proof)
        assert roundtrip(proof) == proof
        # Not a proof that the key holds anything.
        assert not verify(root, key, b"", proof)
        assert not verify(root, key, d[end_key], proof)
        assert not verify(root, key, d[end_key], Proof(proof.steps, None))
        assert not verify(flip_bit(root, 0), key, None, proof)
        # Nor of the end key's absence.
        assert not verify(root, end_key, None, proof)
        assert not verify(root, key, None, Proof(proof.steps, (key, end_value_hash)))
        assert not verify(root, key, None, Proof(proof.steps, (end_key, keccak(d[end_key] + b"?"))))
        assert not verify(root, key, None, Proof((), None))
        if proof.steps:
            depth, sibling = proof.steps[0]
            flipped = ((depth, flip_bit(sibling, 0)), *proof.steps[1:])
            assert not verify(root, key, None, Proof(flipped, proof.end))
            assert not verify(root, key, None, Proof(proof.steps[1:], proof.end))
            assert not verify(root, key, None, Proof(proof.steps[:-1], proof.end))
        last = proof.steps[-1][0] if proof.steps else -1
        if last < 255:
            extra = (*proof.steps, (last + 1, keccak(b"extra")))
            assert not verify(root, key, None, Proof(extra, proof.end))
    # A member's membership proof, shown for an absent key, proves nothing.
    member = next(iter(d))
    for key in nearby_absent_keys(d)[:3]:
        assert not verify(root, key, d[member], m.prove(member))


def test_empty_map_proof() -> None:
    m = MerkleMap[Val]()
    key = keccak(b"k")
    proof = m.prove(key)
    assert proof == Proof((), None)
    assert verify(ZERO, key, None, proof)
    assert not verify(ZERO, key, b"", proof)
    assert not verify(keccak(b"root"), key, None, proof)
    assert not verify(ZERO, key, None, Proof(((0, keccak(b"x")),), None))
    assert not verify(ZERO, key, None, Proof((), (keccak(b"other"), keccak(b"v"))))
    assert roundtrip(proof) == proof
    assert proof.to_tree() == [[], []]
    # An empty proof does not show absence from a non-empty map.
    m1 = m.set(key, Val(b"v"))
    assert not verify(m1.root, key, None, proof)
    assert not verify(m1.root, keccak(b"other"), None, proof)
    assert verify(m1.root, key, b"v", proof)  # a one-entry map: the leaf is the root


def test_one_entry_map_proofs() -> None:
    key, other = keccak(b"k"), keccak(b"other")
    m = MerkleMap[Val]().set(key, Val(b"v"))
    assert m.prove(key) == Proof((), None)
    absent = m.prove(other)
    assert absent == Proof((), (key, keccak(b"v")))
    assert verify(m.root, other, None, absent)
    assert not verify(m.root, key, None, absent)
    assert not verify(m.root, other, b"v", absent)
    assert not verify(m.root, key, b"v", Proof(((0, keccak(b"x")),), None))


def test_verify_rejects_malformed_proofs() -> None:
    base = keccak(b"base")
    d = {base: b"base"} | {flip_bit(base, i): bytes([i]) for i in (3, 9, 200)}
    m = to_map(d)
    proof = m.prove(base)
    assert [depth for depth, _ in proof.steps] == [3, 9, 200]
    (d0, s0), (d1, s1), (d2, s2) = proof.steps
    assert verify(m.root, base, b"base", proof)
    bad_shapes = [
        ((d0, s0), (d0, s1), (d2, s2)),  # repeated depth
        ((d1, s1), (d0, s0), (d2, s2)),  # decreasing
        ((d0, s0), (d1, s1), (256, s2)),  # depth past the key
        ((-1, s0), (d1, s1), (d2, s2)),
        ((d0, s0[:31]), (d1, s1), (d2, s2)),  # short sibling
        ((d0, s0 + b"\x00"), (d1, s1), (d2, s2)),
    ]
    for steps in bad_shapes:
        assert not verify(m.root, base, b"base", Proof(steps, None))
    too_many = tuple((i % 256, s0) for i in range(257))
    assert not verify(m.root, base, b"base", Proof(too_many, None))
    absent = flip_bit(base, 255)
    nonmember = m.prove(absent)
    assert nonmember.end == (base, keccak(b"base"))
    assert verify(m.root, absent, None, nonmember)
    assert not verify(m.root, absent, None, Proof(nonmember.steps, (base[:31], keccak(b"base"))))
    assert not verify(m.root, absent, None, Proof(nonmember.steps, (base, keccak(b"base")[:31])))


# The RLP form ---------------------------------------------------------------------------------


def test_to_tree_shape() -> None:
    h1, h2, key = keccak(b"1"), keccak(b"2"), keccak(b"k")
    proof = Proof(((0, h1), (255, h2)), (key, h2))
    assert proof.to_tree() == [[[b"", h1], [b"\xff", h2]], [key, h2]]
    assert roundtrip(proof) == proof
    assert Proof.from_item(proof.to_tree()) == proof


H = keccak(b"h")
K = keccak(b"key")


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(b"not a list", id="not-a-list"),
        pytest.param([], id="empty-list"),
        pytest.param([[], [], []], id="three-fields"),
        pytest.param([b"", []], id="steps-not-a-list"),
        pytest.param([[], b""], id="end-not-a-list"),
        pytest.param([[b"step"], []], id="step-not-a-list"),
        pytest.param([[[int_bytes(5), H, H]], []], id="step-of-three"),
        pytest.param([[[int_bytes(5), H], [int_bytes(5), H]], []], id="equal-depths"),
        pytest.param([[[int_bytes(6), H], [int_bytes(5), H]], []], id="decreasing-depths"),
        pytest.param([[[int_bytes(256), H]], []], id="depth-256"),
        pytest.param([[[b"\x00", H]], []], id="depth-zero-not-minimal"),
        pytest.param([[[b"\x00\x05", H]], []], id="depth-leading-zero"),
        pytest.param([[[[], H]], []], id="depth-a-list"),
        pytest.param([[[int_bytes(5), H[:31]]], []], id="sibling-31-bytes"),
        pytest.param([[[int_bytes(5), H + b"\x00"]], []], id="sibling-33-bytes"),
        pytest.param([[[int_bytes(5), [H]]], []], id="sibling-a-list"),
        pytest.param([[], [K]], id="end-of-one"),
        pytest.param([[], [K, H, H]], id="end-of-three"),
        pytest.param([[], [K[:31], H]], id="end-key-31-bytes"),
        pytest.param([[], [K, H[:31]]], id="end-hash-31-bytes"),
        pytest.param([[], [[K], H]], id="end-key-a-list"),
        pytest.param([[[int_bytes(i % 256), H] for i in range(257)], []], id="257-steps"),
    ],
)
def test_from_item_rejects(item: RlpItem) -> None:
    with pytest.raises(DecodeError):
        Proof.from_item(item)
    with pytest.raises(DecodeError):
        Proof.from_item(decode(encode_tree(item)))


def test_from_item_caps_the_steps_before_reading_them() -> None:
    """257 steps cannot have strictly increasing depths below 256 anyway; the cap
    turns a long hostile list away before any of its steps is decoded."""
    tree: RlpItem = [[[b"junk"]] * 257, []]
    with pytest.raises(DecodeError, match="cap"):
        Proof.from_item(tree)


def test_from_item_accepts_256_steps() -> None:
    tree: RlpItem = [[[int_bytes(i), H] for i in range(256)], [K, H]]
    proof = Proof.from_item(tree)
    assert len(proof.steps) == 256
    assert proof.steps[0] == (0, H)
    assert proof.end == (K, H)
    assert proof.to_tree() == tree


@settings(deadline=None, max_examples=100)
@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(min_size=32, max_size=32)), max_size=20),
    st.one_of(st.none(), st.tuples(plain_keys, st.binary(min_size=32, max_size=32))),
)
def test_from_item_roundtrip_any_well_formed_proof(
    raw_steps: list[tuple[int, bytes]], end: tuple[bytes, bytes] | None
) -> None:
    by_depth = dict(raw_steps)
    proof = Proof(tuple(sorted(by_depth.items())), end)
    assert roundtrip(proof) == proof


# Pages: items_from, and the proofs that a page leaves nothing out --------------------------


@settings(deadline=None, max_examples=200)
@given(value_dicts(), plain_keys)
def test_items_from_is_the_sorted_suffix(d: dict[bytes, bytes], start: bytes) -> None:
    m = to_map(d)
    expected = [(k, d[k]) for k in sorted(d) if k >= start]
    assert [(k, v.encoded) for k, v in m.items_from(start)] == expected
    for k in d:  # from a member: it comes first
        assert [key for key, _ in m.items_from(k)] == [x for x in sorted(d) if x >= k]


@settings(deadline=None, max_examples=200)
@given(value_dicts(min_size=1))
def test_edges_and_adjacency_of_every_neighbour(d: dict[bytes, bytes]) -> None:
    m = to_map(d)
    keys = sorted(d)
    proofs = {k: m.prove(k) for k in keys}
    for k in keys:
        assert is_edge(k, proofs[k], 0) == (k == keys[0])
        assert is_edge(k, proofs[k], 1) == (k == keys[-1])
    for i, low in enumerate(keys):
        for j, high in enumerate(keys):
            assert adjacent(low, proofs[low], high, proofs[high]) == (j == i + 1)


@settings(deadline=None, max_examples=100)
@given(value_dicts(min_size=3), st.data())
def test_a_page_with_a_key_left_out_is_not_adjacent(
    d: dict[bytes, bytes], data: st.DataObject
) -> None:
    """A node that drops a key from a page cannot make the neighbours' proofs meet."""
    assume(len(d) >= 3)  # clustered keys may collide below the minimum
    m = to_map(d)
    keys = sorted(d)
    i = data.draw(st.integers(0, len(keys) - 3))
    low, high = keys[i], keys[i + 2]  # keys[i + 1] left out
    assert not adjacent(low, m.prove(low), high, m.prove(high))
