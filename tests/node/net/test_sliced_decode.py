"""decode_sliced gives exactly what decode_with_raw gives, or refuses what it refuses."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.codec import DecodeError, RlpItem, decode_with_raw, encode_tree
from node.net.sliced_decode import decode_sliced

trees: st.SearchStrategy[RlpItem] = st.recursive(
    st.binary(max_size=120),
    lambda children: st.lists(children, max_size=8),
    max_leaves=60,
)


def sliced(data: bytes) -> tuple[RlpItem, list[object]]:
    # Slices of 8 bytes so that nearly every list and string is walked by hand.
    return asyncio.run(decode_sliced(data, slice_bytes=8, yield_bytes=16))


@given(trees)
def test_same_tree_and_encodings_as_the_strict_decoder(tree: RlpItem) -> None:
    data = encode_tree(tree)
    assert sliced(data) == decode_with_raw(data)


@given(trees, st.binary(min_size=1, max_size=6), st.integers(min_value=0, max_value=10_000))
def test_refuses_what_the_strict_decoder_refuses(tree: RlpItem, noise: bytes, where: int) -> None:
    data = encode_tree(tree)
    at = where % (len(data) + 1)
    for mutated in (data[:at] + noise + data[at:], data[:at] + data[at + 1 :]):
        try:
            expected = decode_with_raw(mutated)
        except DecodeError:
            with pytest.raises(DecodeError):
                sliced(mutated)
        else:
            assert sliced(mutated) == expected


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("b90005") + b"hello",  # long form for a short string
        bytes.fromhex("b9000041") + b"a" * 65,  # long form length with a leading zero
        bytes.fromhex("f9000041") + b"\x01" * 65,
        bytes.fromhex("f84181") + b"\x01" * 64,  # a list whose length cuts an item
        bytes.fromhex("c0c0"),  # trailing bytes
    ],
)
def test_refuses_non_canonical_headers_of_large_items(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_with_raw(data)
    with pytest.raises(DecodeError):
        sliced(data)


async def test_it_yields_to_the_loop_while_decoding() -> None:
    data = encode_tree([[b"\x01"] * 500 for _ in range(40)])
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = turns
    assert await decode_sliced(data, slice_bytes=600, yield_bytes=500) == decode_with_raw(data)
    counter.cancel()
    assert turns - before >= 40  # other tasks ran between the 40 slices
