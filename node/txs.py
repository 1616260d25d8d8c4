"""Typed transactions and the per-level registry that decodes them.

A transaction is the RLP list ``[type, field...]``. Each machine level (server,
signer, entity, channel) has its own registry of types, so a later level adds
types without touching the codec. A decoded :class:`Tx` keeps its exact
canonical bytes (``raw``): the block stores those bytes, never a re-encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol, Self

from node.codec import DecodeError, RlpItem, as_int, as_list, encode, encode_list, encode_uint

MAX_TX_BYTES = 4096
MAX_TX_FIELDS = 16


class Level(IntEnum):
    """Depth in the machine hierarchy; a route of length N addresses level N."""

    SERVER = 0
    SIGNER = 1
    ENTITY = 2
    CHANNEL = 3


class TxBody(Protocol):
    TYPE: ClassVar[int]
    NAME: ClassVar[str]

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self: ...

    def to_fields(self) -> list[RlpItem]: ...


@dataclass(frozen=True, slots=True)
class Tx:
    """A transaction body together with its canonical encoding."""

    body: TxBody
    raw: bytes

    @classmethod
    def of(cls, body: TxBody) -> Tx:
        # Bodies that carry whole frames give their fields already encoded: decoding a
        # frame only to encode it again dominated the hot path.
        encoded_fields = getattr(body, "encoded_fields", None)
        if encoded_fields is not None:
            return cls(body, encode_list([encode_uint(body.TYPE), *encoded_fields()]))
        return cls(body, encode([body.TYPE, *body.to_fields()]))


class TxRegistry:
    """The transaction types one machine level accepts."""

    def __init__(self, level: Level, max_tx_bytes: int = MAX_TX_BYTES) -> None:
        self.level = level
        self.max_tx_bytes = max_tx_bytes
        self._types: dict[int, Callable[[list[RlpItem]], TxBody]] = {}

    def register[T: type[TxBody]](self, cls: T) -> T:
        if cls.TYPE in self._types:
            raise ValueError(f"{self.level.name} tx type {cls.TYPE} registered twice")
        self._types[cls.TYPE] = cls.from_fields
        return cls

    def decode(self, item: RlpItem, raw: bytes) -> Tx:
        if len(raw) > self.max_tx_bytes:
            raise DecodeError(
                f"transaction of {len(raw)} bytes exceeds the cap of {self.max_tx_bytes}"
            )
        fields = as_list(item, "transaction", max_len=MAX_TX_FIELDS + 1)
        if not fields:
            raise DecodeError("transaction: empty list, expected [type, field...]")
        type_id = as_int(fields[0], "transaction type", max_value=0xFFFF)
        decoder = self._types.get(type_id)
        if decoder is None:
            raise DecodeError(f"unknown {self.level.name.lower()} transaction type {type_id}")
        return Tx(decoder(fields[1:]), raw)


# Entity inputs carry whole frames (commits, locks), and a signer's create_entity
# carries every member's key and proof of possession: they may be larger.
MAX_ENTITY_INPUT_BYTES = 512 * 1024
REGISTRIES: dict[Level, TxRegistry] = {
    level: TxRegistry(
        level,
        MAX_ENTITY_INPUT_BYTES if level in (Level.SIGNER, Level.ENTITY) else MAX_TX_BYTES,
    )
    for level in Level
}


def registry_for_depth(depth: int) -> TxRegistry:
    try:
        return REGISTRIES[Level(depth)]
    except ValueError:
        raise DecodeError(f"route depth {depth} is below the deepest machine level") from None
