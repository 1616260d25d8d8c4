"""node.tree_cache: a large list is decoded once, a hit is as strict as a decode, and
the cache stays within its bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from node import tree_cache
from node.codec import DecodeError, RlpItem, decode_with_raw, encode_tree
from node.net.sliced_decode import decode_sliced


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    tree_cache.clear()
    yield
    tree_cache.clear()


def frame(tag: bytes, txs: int = 600) -> list[RlpItem]:
    """A channel frame's shape: a header and a list of small transactions (~30 KB)."""
    return [tag, [[b"\x05", i.to_bytes(2, "big"), b"r" * 32] for i in range(txs)], b"s" * 32]


def test_a_large_list_decoded_again_is_the_same_tree() -> None:
    data = encode_tree(frame(b"a"))
    assert len(data) >= tree_cache.MIN_BYTES
    first = decode_with_raw(data)
    again = decode_with_raw(data)
    assert again[0] is first[0]
    assert again[1] is first[1]
    assert again[0] == frame(b"a")


def test_a_list_inside_a_message_is_found_by_its_own_bytes() -> None:
    inner = frame(b"f")
    message: list[RlpItem] = [b"\x01", [b"to", inner, b"\x00"]]
    tree, raws = decode_with_raw(encode_tree(message))
    assert isinstance(tree, list)
    assert isinstance(tree[1], list)
    inside = tree[1][1]
    alone, alone_raws = decode_with_raw(encode_tree(inner))
    assert alone is inside
    assert alone_raws is raws[2][2]
    assert alone_raws[0] == encode_tree(inner)


def test_the_sliced_decoder_shares_the_trees_both_ways() -> None:
    inner = frame(b"g")
    proposal = encode_tree([b"\x02", [b"to", inner, b"\x00"]])
    commit = encode_tree([b"\x03", [inner, b"certificate"]])
    first, _ = asyncio.run(decode_sliced(proposal))
    assert isinstance(first, list)
    assert isinstance(first[1], list)
    second, second_raws = asyncio.run(decode_sliced(commit))
    assert isinstance(second, list)
    assert isinstance(second[1], list)
    assert second[1][0] is first[1][1]  # the commit's frame: not decoded again
    assert second == [b"\x03", [inner, b"certificate"]]
    assert second_raws == decode_with_raw(commit)[1]
    # and the strict decoder finds what the sliced one kept
    assert decode_with_raw(encode_tree(inner))[0] is first[1][1]


def test_a_hit_needs_the_exact_bytes() -> None:
    tree = frame(b"h")
    data = encode_tree(tree)
    decode_with_raw(data)
    # The same value with a non-canonical length prefix (a leading zero byte): refused
    # although the canonical bytes' tree is cached.
    assert data[0] == 0xF9  # long form, two length bytes
    padded = b"\xfa\x00" + data[1:]
    with pytest.raises(DecodeError):
        decode_with_raw(padded)
    with pytest.raises(DecodeError):
        asyncio.run(decode_sliced(padded))
    changed = data[:-1] + bytes([data[-1] ^ 1])
    other = decode_with_raw(changed)[0]
    assert isinstance(other, list)
    assert other[2] != tree[2]


def test_small_lists_are_not_kept() -> None:
    data = encode_tree(frame(b"s", txs=10))
    assert len(data) < tree_cache.MIN_BYTES
    assert decode_with_raw(data)[0] is not decode_with_raw(data)[0]
    assert tree_cache.get(data) is None


def test_the_cache_holds_at_most_its_bytes_oldest_out() -> None:
    datas = [encode_tree(frame(i.to_bytes(4, "big"))) for i in range(600)]
    total = sum(len(d) for d in datas)
    assert total > 1.5 * tree_cache.MAX_BYTES
    for data in datas:
        decode_with_raw(data)
    held = [d for d in datas if tree_cache.get(d) is not None]
    assert sum(len(d) for d in held) <= tree_cache.MAX_BYTES
    assert held == datas[len(datas) - len(held) :]  # the newest, in order
    # each frame is kept with its list of transactions, about as large: two entries
    assert len(held) >= tree_cache.MAX_BYTES // (2 * len(datas[0])) - 1
