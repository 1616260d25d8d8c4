"""Large RLP lists decoded lately, by their bytes: a frame is decoded once per process.

A hub's 1,024-payment channel frame reaches a member's server three times (in
the DELIVER that brings it, inside the entity frame of the PROPOSAL, and again
in its COMMIT), and an agent's SIGN request holds a frame that the agent then
decodes as a frame. Each decode of 150 KB costs about 8 ms. The strict decoders
(``codec.decode_with_raw`` and ``net.sliced_decode``) keep here the tree of every
list of at least :data:`MIN_BYTES` that they decode, and give it back when the
same bytes come again, whole or inside another item.

A hit is as strict as a decode: the key is the exact bytes the strict decoder
accepted. The trees are shared between callers, so a decoded tree is read-only
(every reader turns it into new objects with ``codec``'s ``as_*`` helpers). The
cache holds at most :data:`MAX_BYTES` of keys, least recently used first out;
the trees take a few times that. Decoders on worker threads share it: a lock
guards it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MIN_BYTES = 16 * 1024
MAX_BYTES = 8 * 1024 * 1024

type Decoded = tuple[Any, list[Any]]  # (tree, per-item encodings) as decode_with_raw gives

_trees: OrderedDict[bytes, Decoded] = OrderedDict()
_held = 0
_lock = threading.Lock()


def get(raw: bytes) -> Decoded | None:
    """The tree decoded lately from exactly ``raw``, if any."""
    if len(raw) < MIN_BYTES:
        return None
    with _lock:
        hit = _trees.get(raw)
        if hit is not None:
            _trees.move_to_end(raw)
        return hit


def keep(item: Any, raws: list[Any]) -> None:
    """Remember ``item`` (a list, with its per-item encodings) under its bytes."""
    global _held
    raw = raws[0]
    size = len(raw)
    if size < MIN_BYTES or size > MAX_BYTES or not isinstance(item, list):
        return
    with _lock:
        if raw in _trees:
            _trees.move_to_end(raw)
            return
        _trees[raw] = (item, raws)
        _held += size
        while _held > MAX_BYTES:
            old, _ = _trees.popitem(last=False)
            _held -= len(old)


def keep_all(item: Any, raws: list[Any]) -> None:
    """:func:`keep` ``item`` and every list inside it of at least MIN_BYTES."""
    if not isinstance(item, list) or len(raws[0]) < MIN_BYTES:
        return
    keep(item, raws)
    for child, child_raws in zip(item, raws[1:], strict=True):
        if isinstance(child, list) and len(child_raws[0]) >= MIN_BYTES:
            keep_all(child, child_raws)


def clear() -> None:
    """Forget every tree (tests, and a process that wants the memory back)."""
    global _held
    with _lock:
        _trees.clear()
        _held = 0
