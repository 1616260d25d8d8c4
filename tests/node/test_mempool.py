"""The hierarchical ``[keys, values]`` mempool: shape, canonical form, strict decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.codec import (
    DecodeError,
    RlpItem,
    RlpTree,
    as_int,
    as_list,
    decode,
    encode,
    encode_tree,
    int_bytes,
)
from node.machines.server import Increment
from node.mempool import Mempool
from node.txs import MAX_TX_BYTES, Level, Tx, TxRegistry


@dataclass(frozen=True, slots=True)
class Note:
    """A test-only transaction type, registered at every level of a private registry."""

    TYPE: ClassVar[int] = 7
    NAME: ClassVar[str] = "note"
    n: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError("note: one field")
        return cls(as_int(fields[0], "note n"))

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.n)]


def registries() -> dict[Level, TxRegistry]:
    regs = {level: TxRegistry(level) for level in Level}
    for reg in regs.values():
        reg.register(Note)
    return regs


REGS = registries()


def key(i: int) -> bytes:
    return i.to_bytes(32, "big")


def mempools(depth: int = 0) -> st.SearchStrategy[Mempool]:
    txs = st.lists(st.integers(0, 2**40).map(lambda n: Tx.of(Note(n))), max_size=4)
    if depth >= Level.CHANNEL:
        return txs.filter(bool).map(lambda t: Mempool.build(txs=t))

    @st.composite
    def build(draw: st.DrawFn) -> Mempool:
        ids = sorted(draw(st.sets(st.integers(0, 2**16), max_size=3)))
        subs = [draw(mempools(depth + 1)) for _ in ids]
        own = draw(txs)
        return Mempool.build([key(i) for i in ids], subs, own)

    non_empty = build().filter(lambda m: not m.is_empty)
    return non_empty if depth else build()


def test_seed_example_five_keys_seven_values() -> None:
    """5 keys and 7 values: 5 sub-mempools for 5 signers plus 2 server transactions."""
    subs = [Mempool.build(txs=[Tx.of(Note(i))]) for i in range(5)]
    own = [Tx.of(Note(100)), Tx.of(Note(101))]
    mp = Mempool.build([key(i) for i in range(5)], subs, own)
    keys, values = as_list(decode(mp.raw), "mempool", size=2)
    assert len(as_list(keys, "keys")) == 5
    assert len(as_list(values, "values")) == 7
    back = Mempool.decode(mp.raw, registries=REGS)
    assert back == mp
    assert [t.body for t in back.txs] == [Note(100), Note(101)]
    assert back.subs[3].txs[0].body == Note(3)
    assert back.tx_count() == 7


def test_empty_mempool_encoding() -> None:
    assert Mempool.empty().raw == bytes.fromhex("c2c0c0")
    assert Mempool.decode(bytes.fromhex("c2c0c0")).is_empty


@settings(max_examples=300)
@given(mempools())
def test_round_trip(mp: Mempool) -> None:
    back = Mempool.decode(mp.raw, registries=REGS)
    assert back == mp
    assert back.raw == mp.raw


def test_transactions_keep_their_exact_bytes() -> None:
    tx = Tx.of(Increment(300))
    assert tx.raw == encode([1, 300])
    back = Mempool.decode(Mempool.build(txs=[tx]).raw)
    assert back.txs[0].raw == tx.raw
    assert back.txs[0].body == Increment(300)


def _reject(raw: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        Mempool.decode(raw, registries=REGS)


def test_rejects_unsorted_or_duplicate_keys() -> None:
    note = [b"\x07", b"\x01"]
    for keys in ([key(2), key(1)], [key(1), key(1)]):
        _reject(encode_tree([keys, [[[], [note]], [[], [note]]]]), "strictly ascending")


def test_rejects_bad_keys_and_counts() -> None:
    note = [b"\x07", b"\x01"]
    _reject(encode_tree([[b"\x01" * 31], [[[], [note]]]]), "expected 32 bytes")
    _reject(encode_tree([[key(1), key(2)], [[[], [note]]]]), "2 keys but only 1 values")
    _reject(encode_tree([[key(1)], [[[], []]]]), "empty sub-mempool")
    _reject(
        encode_tree(
            [[], []],
        )
        + b"\x00",
        "(?i)trailing",
    )
    _reject(encode_tree([[]]), "expected 2 items")
    _reject(encode_tree([b"", []]), "expected a list")


def test_rejects_unknown_types_and_bad_fields() -> None:
    _reject(encode_tree([[], [[b"\x09", b"\x01"]]]), "unknown server transaction type 9")
    _reject(encode_tree([[], [[b"\x07", b"\x00\x01"]]]), "leading zero")
    _reject(encode_tree([[], [[]]]), "empty list")
    _reject(encode_tree([[], [b"\x07"]]), "expected a list")
    _reject(encode_tree([[], [[b"\x07", b"x" * MAX_TX_BYTES]]]), "exceeds the cap")


def test_rejects_sub_machines_below_the_deepest_level() -> None:
    note = [b"\x07", b"\x01"]
    leaf: RlpTree = [[key(9)], [[[], [note]]]]
    deep: RlpTree = [[key(1)], [[[key(2)], [[[key(3)], [leaf]]]]]]
    _reject(encode_tree(deep), "no sub-machines")


def test_each_level_decodes_with_its_own_registry() -> None:
    """The real registries: a type known at one level is unknown one level down."""
    mp = Mempool.build(txs=[Tx.of(Increment(1))])
    assert Mempool.decode(mp.raw).txs[0].body == Increment(1)
    signer_increment = encode_tree([[key(1)], [[[], [[b"\x01", b"\x01"]]]]])
    assert Mempool.decode(signer_increment).subs[0].txs[0].body.NAME == "increment"
    unknown = encode_tree([[key(1)], [[[], [[b"\x63", b"\x01"]]]]])
    with pytest.raises(DecodeError, match="unknown signer transaction type 99"):
        Mempool.decode(unknown)


def test_build_refuses_non_canonical_shapes() -> None:
    one = Mempool.build(txs=[Tx.of(Note(1))])
    with pytest.raises(ValueError, match="ascending"):
        Mempool.build([key(2), key(1)], [one, one])
    with pytest.raises(ValueError, match="empty sub-mempool"):
        Mempool.build([key(1)], [Mempool.empty()])
    with pytest.raises(ValueError, match="one sub-mempool per key"):
        Mempool.build([key(1)], [])


@given(mempools(), st.data())
def test_mutated_mempools_never_decode_to_something_else(mp: Mempool, data: st.DataObject) -> None:
    """A mutated encoding is either rejected, or is the canonical encoding of what it decodes to."""
    raw = bytearray(mp.raw)
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]))
    try:
        back = Mempool.decode(bytes(raw), registries=REGS)
    except DecodeError:
        return
    assert back.raw == bytes(raw)
    assert Mempool.build(back.keys, back.subs, back.txs).raw == bytes(raw)
