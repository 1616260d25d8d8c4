"""Strict RLP and keccak: round trips, and rejection of every non-canonical form."""

from __future__ import annotations

import pytest
import rlp
from hypothesis import given
from hypothesis import strategies as st
from rlp.codec import consume_item

from node.codec import (
    DecodeError,
    LimitExceeded,
    Limits,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode,
    encode_bytes,
    encode_list,
    encode_tree,
    int_bytes,
    keccak,
    nested_lists,
    scan,
)
from tests.conftest import run_python

rlp_trees: st.SearchStrategy[RlpItem] = st.recursive(
    st.binary(max_size=80),
    lambda children: st.lists(children, max_size=6),
    max_leaves=30,
)


def pure_python_decode(data: bytes) -> RlpItem:
    """pyrlp's pure-Python decoder, whatever backend node.codec is using."""
    item, _, end = consume_item(data, 0)
    if end != len(data):
        raise ValueError("trailing or missing bytes")
    return item  # type: ignore[no-any-return]


def pure_accepts(data: bytes) -> bool:
    try:
        pure_python_decode(data)
    except Exception:
        return False
    return True


def node_accepts(data: bytes) -> bool:
    try:
        decode(data)
    except DecodeError:
        return False
    return True


def test_keccak_is_ethereum_keccak_not_sha3() -> None:
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert (
        keccak(b"abc").hex() == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (b"", "80"),
        (b"\x00", "00"),
        (b"\x7f", "7f"),
        (b"\x80", "8180"),
        (b"dog", "83646f67"),
        ([], "c0"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (b"a" * 56, "b838" + "61" * 56),
    ],
)
def test_known_encodings(value: RlpItem, encoded: str) -> None:
    assert encode_tree(value).hex() == encoded
    assert decode(bytes.fromhex(encoded)) == value


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("8100", "single byte below 0x80 wrapped in a string prefix"),
        ("817f", "single byte below 0x80 wrapped in a string prefix"),
        ("b80161", "long form used for a short string"),
        ("b90038" + "61" * 56, "leading zero in the length"),
        ("f80101", "long list form for a short list"),
        ("83616263ff", "trailing byte"),
        ("c18000", "trailing byte after a list"),
        ("8361", "truncated string"),
        ("c3836162", "truncated string inside a list"),
        ("c2c1", "truncated nested list"),
        ("bf", "length of length runs past the end"),
        ("c20081", "truncated last item of a list (rusty-rlp 0.4 accepts this)"),
        ("c3008261", "truncated last item of a list (rusty-rlp 0.4 accepts this)"),
        ("", "empty input"),
    ],
)
def test_rejects_non_canonical(bad: str, why: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(bad))
    assert not pure_accepts(bytes.fromhex(bad)) or bad == "", why


@given(rlp_trees)
def test_round_trip(tree: RlpItem) -> None:
    data = encode_tree(tree)
    assert decode(data) == tree
    assert encode(tree) == data
    assert pure_python_decode(data) == tree


@given(rlp_trees)
def test_every_strict_prefix_is_rejected(tree: RlpItem) -> None:
    data = encode_tree(tree)
    for cut in range(len(data)):
        assert not node_accepts(data[:cut])


@given(rlp_trees, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_rejected(tree: RlpItem, extra: bytes) -> None:
    assert not node_accepts(encode_tree(tree) + extra)


@given(rlp_trees, st.data())
def test_mutations_are_rejected_or_canonical(tree: RlpItem, data: st.DataObject) -> None:
    """Whatever a mutation produces, decoding accepts only canonical bytes.

    If a mutated input decodes, re-encoding the result must give the same bytes;
    and the Rust and pure-Python backends must agree on accept or reject.
    """
    raw = bytearray(encode_tree(tree))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos]
        elif raw:
            raw[pos] = data.draw(st.integers(0, 255))
    mutated = bytes(raw)
    accepted = node_accepts(mutated)
    assert accepted == pure_accepts(mutated)
    if accepted:
        assert encode_tree(decode(mutated)) == mutated


mixed_trees: st.SearchStrategy[object] = st.recursive(
    st.binary(max_size=40) | st.integers(0, 2**80),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@given(mixed_trees)
def test_encode_matches_pyrlp_for_ints_and_bytes(tree: object) -> None:
    assert encode(tree) == rlp.encode(tree)


@pytest.mark.parametrize("value", [True, "text", 1.5, None, -1])
def test_encode_refuses_what_has_no_encoding_here(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode([value])


@given(st.integers(0, 2**256 - 1))
def test_integers_are_minimal(value: int) -> None:
    assert as_int(int_bytes(value), "n", max_value=2**256) == value
    assert encode_bytes(int_bytes(value)) == encode(value)


@given(st.integers(1, 2**64 - 1), st.integers(1, 3))
def test_integer_leading_zeros_rejected(value: int, zeros: int) -> None:
    with pytest.raises(DecodeError, match="leading zero"):
        as_int(b"\x00" * zeros + int_bytes(value), "n")


def test_zero_is_the_empty_string() -> None:
    assert encode(0) == b"\x80"
    assert as_int(b"", "n") == 0
    with pytest.raises(DecodeError):
        as_int(b"\x00", "n")


def test_field_helpers_name_the_field() -> None:
    with pytest.raises(DecodeError, match="height: expected a byte string"):
        as_int([], "height")
    with pytest.raises(DecodeError, match="hash: expected 32 bytes"):
        as_bytes(b"x", "hash", size=32)
    with pytest.raises(DecodeError, match="txs: 3 items exceed the cap of 2"):
        as_list([b"", b"", b""], "txs", max_len=2)
    with pytest.raises(DecodeError, match="exceeds the maximum"):
        as_int(b"\x01\x00", "n", max_value=255)


def test_size_cap_is_checked_before_decoding() -> None:
    with pytest.raises(DecodeError, match="exceeds the cap"):
        decode(encode_tree(b"x" * 100), max_size=50)


def test_encode_list_matches_pyrlp() -> None:
    items: list[RlpTree] = [b"a", b"", [b"b"], b"c" * 60]
    assert encode_list(encode_tree(i) for i in items) == encode(items)


def test_pure_python_backend_is_equally_strict() -> None:
    """Without rusty-rlp, pyrlp falls back to pure Python; node.codec must behave the same."""
    script = (
        "import sys; sys.modules['rusty_rlp'] = None\n"
        "from node.codec import decode, DecodeError, encode_tree\n"
        "bad = ['8100', 'b80161', 'c18000', '8361', 'c3836162', '', 'c20081']\n"
        "for h in bad:\n"
        "    try:\n"
        "        decode(bytes.fromhex(h))\n"
        "    except DecodeError:\n"
        "        continue\n"
        "    raise SystemExit('accepted ' + h)\n"
        "tree = [b'cat', [b'', [b'dog' * 30]], b'\\x01']\n"
        "assert decode(encode_tree(tree)) == tree\n"
        "import rlp.codec; assert 'rusty' not in repr(rlp.codec.decode_raw.__code__.co_names)\n"
        "print('ok')\n"
    )
    result = run_python("-c", script, timeout_s=60)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "ok"


def test_keccak_fallback_backend_agrees() -> None:
    """Where safe-pysha3 has no wheel, keccak comes from pycryptodome: same digests."""
    script = (
        "import sys; sys.modules['sha3'] = None\n"
        "from node.codec import keccak\n"
        "from eth_hash.backends import pycryptodome\n"
        "assert keccak(b'') == pycryptodome.keccak256(b'')\n"
        "print(keccak(b'abc').hex())\n"
    )
    result = run_python("-c", script, timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == keccak(b"abc").hex()


# The structural scan ----------------------------------------------------------------

LOOSE = Limits(max_bytes=2**40, max_depth=2**20, max_items=2**40)


def _count(item: RlpItem) -> tuple[int, int]:
    """Items and list depth of a decoded tree, by the definitions of Limits."""
    if isinstance(item, bytes):
        return 1, 0
    items, depth = 1, 0
    for child in item:
        n, d = _count(child)
        items += n
        depth = max(depth, d)
    return items, depth + 1


@given(rlp_trees)
def test_scan_counts_every_item_of_canonical_rlp(tree: RlpItem) -> None:
    data = encode_tree(tree)
    items, depth = _count(tree)
    assert scan(data, LOOSE) == items
    exact = Limits(max_bytes=len(data), max_depth=depth, max_items=items)
    assert scan(data, exact) == items  # every cap is inclusive
    if depth:
        with pytest.raises(LimitExceeded, match=f"deeper than {depth - 1} levels"):
            scan(data, Limits(len(data), depth - 1, items))
    with pytest.raises(LimitExceeded, match=f"more than {items - 1} RLP items"):
        scan(data, Limits(len(data), depth, items - 1))
    with pytest.raises(LimitExceeded, match=f"exceeds the cap of {len(data) - 1} bytes"):
        scan(data, Limits(len(data) - 1, depth, items))


@given(st.binary(max_size=64))
def test_scan_accepts_whatever_decodes_and_never_crashes(data: bytes) -> None:
    """Arbitrary bytes: the scan either refuses them with DecodeError or passes them
    on; nothing the decoder accepts is refused."""
    try:
        decoded: RlpItem | None = decode(data)
    except DecodeError:
        decoded = None
    try:
        count = scan(data, LOOSE)
    except DecodeError:
        assert decoded is None, data.hex()
        return
    if decoded is not None:
        assert count == _count(decoded)[0]


@pytest.mark.parametrize("depth", [1, 16, 1_000, 100_000])
def test_scan_walks_any_depth_without_recursion(depth: int) -> None:
    data = nested_lists(depth)
    assert scan(data, LOOSE) == depth
    if depth > 16:
        with pytest.raises(LimitExceeded, match="deeper than 16 levels"):
            scan(data, Limits(len(data), 16, 2**20))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xb9\xff\xff" + b"a" * 10, "truncated"),
        (b"\xbf" + b"\xff" * 8 + b"x", "truncated"),
        (b"\xf9\xff\xff\xc0", "truncated"),
        (b"\xff" + b"\xff" * 8 + b"\xc0", "truncated"),
        (b"\xc2\xc5\x80\x80", "truncated"),
        (b"\xc1\xb8", "truncated"),
    ],
)
def test_scan_refuses_length_prefixes_that_lie(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        scan(data, LOOSE)


def test_decode_with_limits_scans_first() -> None:
    deep = nested_lists(100_000)
    with pytest.raises(LimitExceeded, match="deeper than 16"):
        decode(deep, limits=Limits(len(deep), 16, 2**20))
    wide = encode_list([b"\x80"] * 1000)
    with pytest.raises(LimitExceeded, match="more than 999 RLP items"):
        decode(wide, limits=Limits(len(wide), 2, 999))
    assert decode(wide, limits=Limits(len(wide), 1, 1001)) == [b""] * 1000
