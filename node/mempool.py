"""The hierarchical mempool: one RLP value ``[keys, values]``.

``keys`` are the 32-byte ids of sub-machines. ``values[i]`` for ``i < len(keys)``
is the mempool of sub-machine ``keys[i]``, with the same shape one level down;
the remaining values are this machine's own transactions, in order.

Canonical form, enforced on decode and on build: keys strictly ascending (so
children apply in key order and every mempool has one encoding), no empty
sub-mempool, and no sub-mempools below the deepest level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    as_bytes,
    as_list,
    decode_with_raw,
    encode_list,
)
from node.txs import REGISTRIES, Level, Tx, TxRegistry

MAX_MEMPOOL_BYTES = 16 * 1024 * 1024
MAX_KEYS = 65_536
MAX_VALUES = 1_000_000

_EMPTY_LIST = b"\xc0"


@dataclass(frozen=True, slots=True)
class Mempool:
    keys: tuple[bytes, ...]
    subs: tuple[Mempool, ...]
    txs: tuple[Tx, ...]
    raw: bytes

    @classmethod
    def build(
        cls, keys: Sequence[bytes] = (), subs: Sequence[Mempool] = (), txs: Sequence[Tx] = ()
    ) -> Mempool:
        """A canonical mempool from parts; raises ValueError on a non-canonical shape."""
        if len(keys) != len(subs):
            raise ValueError("one sub-mempool per key")
        _check_keys(keys)
        for key, sub in zip(keys, subs, strict=True):
            if sub.is_empty:
                raise ValueError(f"empty sub-mempool for key {key.hex()}")
        raw = encode_list(
            (
                encode_list(b"\xa0" + k for k in keys) if keys else _EMPTY_LIST,
                encode_list([*(s.raw for s in subs), *(t.raw for t in txs)]),
            )
        )
        return cls(tuple(keys), tuple(subs), tuple(txs), raw)

    @classmethod
    def empty(cls) -> Mempool:
        return cls.build()

    @classmethod
    def decode(
        cls,
        data: bytes,
        depth: int = Level.SERVER,
        registries: Mapping[Level, TxRegistry] = REGISTRIES,
    ) -> Mempool:
        """Strictly decode; ``registries`` gives the transaction types of each level."""
        item, per_item = decode_with_raw(data, max_size=MAX_MEMPOOL_BYTES)
        return _from_item(item, per_item, depth, registries)

    @property
    def is_empty(self) -> bool:
        return not self.keys and not self.txs

    def tx_count(self) -> int:
        return len(self.txs) + sum(s.tx_count() for s in self.subs)


def _check_keys(keys: Sequence[bytes]) -> None:
    if len(keys) > MAX_KEYS:
        raise ValueError(f"{len(keys)} keys exceed the cap of {MAX_KEYS}")
    for i, key in enumerate(keys):
        if len(key) != HASH_LEN:
            raise ValueError(f"key {i} is {len(key)} bytes, expected {HASH_LEN}")
        if i and keys[i - 1] >= key:
            raise ValueError(f"keys must be strictly ascending (key {i})")


def _from_item(
    item: RlpItem, per_item: list[Any], depth: int, registries: Mapping[Level, TxRegistry]
) -> Mempool:
    where = f"mempool at depth {depth}"
    top = as_list(item, where, size=2)
    keys = tuple(
        as_bytes(k, f"{where} key {i}", size=HASH_LEN)
        for i, k in enumerate(as_list(top[0], f"{where} keys", max_len=MAX_KEYS))
    )
    try:
        _check_keys(keys)
    except ValueError as exc:
        raise DecodeError(f"{where}: {exc}") from None
    if keys and depth >= Level.CHANNEL:
        raise DecodeError(f"{where}: machines at this level have no sub-machines")
    values = as_list(top[1], f"{where} values", max_len=MAX_VALUES)
    if len(values) < len(keys):
        raise DecodeError(f"{where}: {len(keys)} keys but only {len(values)} values")
    value_raws = per_item[2]  # [raw of values, per_item of child 0, ...]
    subs = []
    for i in range(len(keys)):
        sub = _from_item(values[i], value_raws[i + 1], depth + 1, registries)
        if sub.is_empty:
            raise DecodeError(f"{where}: empty sub-mempool for key {keys[i].hex()}")
        subs.append(sub)
    registry = registries[Level(depth)]
    txs = tuple(
        registry.decode(values[i], value_raws[i + 1][0]) for i in range(len(keys), len(values))
    )
    return Mempool(keys, tuple(subs), txs, per_item[0])
