"""Decoding a large frame in slices, yielding to the event loop between them.

The structural scan and the strict decoder are each one call: a
frame of 65,536 items holds the event loop for about 150 ms, and with it the
block tick and every other connection. :func:`decode_sliced` gives the same
result (the same tree, the same per-item encodings, the same refusals of
non-canonical input) but walks the outer lists itself and hands the strict
decoder only spans of at most ``slice_bytes``, awaiting ``asyncio.sleep(0)``
after each ``yield_bytes`` decoded. A span of ``n`` bytes holds at most ``n``
items, so no slice costs the loop more than a few milliseconds. Like the strict
decoder, it keeps the large lists it decodes in :mod:`node.tree_cache` and takes
back the ones decoded before (a frame inside the commit that follows its proposal).

Only frames already scanned (:func:`node.codec.scan`) come here: their depth is
capped, so this walk recurses at most ``max_depth`` levels.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node import tree_cache
from node.codec import (
    DecodeError,
    Limits,
    RlpItem,
    decode_with_raw,
    encode_list,
    item_header,
    scan_steps,
)

SLICE_BYTES = 1024
YIELD_BYTES = 1024
SCAN_STEP_ITEMS = 4096


async def scan_sliced(data: bytes, limits: Limits) -> int:
    """:func:`node.codec.scan`, yielding to the loop after every ``SCAN_STEP_ITEMS``."""
    steps = scan_steps(data, limits, SCAN_STEP_ITEMS)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            count: int = done.value
            return count
        await asyncio.sleep(0)


async def decode_sliced(
    data: bytes, *, slice_bytes: int = SLICE_BYTES, yield_bytes: int = YIELD_BYTES
) -> tuple[RlpItem, list[Any]]:
    """``decode_with_raw(data)``, yielding to the loop after each ``yield_bytes``."""
    walk = _Walk(data, slice_bytes, yield_bytes)
    item, raws, end = await walk.span(0)
    if end != len(data):
        raise DecodeError(f"invalid RLP: {len(data) - end} trailing bytes after the item")
    return item, raws


class _Walk:
    def __init__(self, data: bytes, slice_bytes: int, yield_bytes: int) -> None:
        self.data = data
        self.slice_bytes = slice_bytes
        self.yield_bytes = yield_bytes
        self.since_yield = 0

    async def span(self, pos: int) -> tuple[RlpItem, list[Any], int]:
        """The item at ``pos``: its value, its per-item encodings, and where it ends."""
        data = self.data
        is_list, start, end = _header(data, pos)
        if end > len(data):
            raise DecodeError("invalid RLP: truncated input")
        if end - pos <= self.slice_bytes:
            small, small_raws = decode_with_raw(data[pos:end])
            await self._spent(end - pos)
            return small, small_raws, end
        _check_canonical(data, pos, start, end)
        if not is_list:
            await self._spent(end - pos)
            return data[start:end], [data[pos:end]], end
        raw = data[pos:end]
        known = tree_cache.get(raw)
        if known is not None:  # the same bytes, decoded strictly before
            return known[0], known[1], end
        items: list[RlpItem] = []
        raws: list[Any] = [raw]
        child = start
        while child < end:
            run_end = self._run(child, end)
            if run_end > child:  # small children, decoded together
                run, run_raws = decode_with_raw(encode_list([data[child:run_end]]))
                assert isinstance(run, list)
                items.extend(run)
                raws.extend(run_raws[1:])
                await self._spent(run_end - child)
                child = run_end
            else:  # one child larger than a slice
                item, child_raws, child = await self.span(child)
                items.append(item)
                raws.append(child_raws)
        if child != end:
            raise DecodeError("invalid RLP: truncated input")
        tree_cache.keep(items, raws)
        return items, raws, end

    def _run(self, pos: int, end: int) -> int:
        """Where the run of whole children from ``pos`` that fits one slice ends
        (``pos`` itself when the first child is larger than a slice)."""
        run_end = pos
        while run_end < end:
            _, _, child_end = _header(self.data, run_end)
            if child_end > end or child_end - pos > self.slice_bytes:
                break
            run_end = child_end
        return run_end

    async def _spent(self, size: int) -> None:
        self.since_yield += size
        if self.since_yield >= self.yield_bytes:
            self.since_yield = 0
            await asyncio.sleep(0)


def _check_canonical(data: bytes, pos: int, start: int, end: int) -> None:
    """Refuse a header the strict decoder would refuse (it sees only the spans inside)."""
    b = data[pos]
    if 0xB8 <= b < 0xC0 or b >= 0xF8:  # long form
        if data[pos + 1] == 0:
            raise DecodeError("invalid RLP: length prefix with a leading zero byte")
        if end - start < 56:
            raise DecodeError("invalid RLP: long form for a short payload")
    elif b == 0x81 and data[start] < 0x80:
        raise DecodeError("invalid RLP: a single byte below 0x80 with a prefix")


def _header(data: bytes, pos: int) -> tuple[bool, int, int]:
    try:
        return item_header(data, pos)
    except IndexError:
        raise DecodeError("invalid RLP: truncated input") from None
