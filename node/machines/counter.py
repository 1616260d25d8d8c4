"""``increment(n)``: the counter transaction every level has (the seed's simplest).

One class, registered with the server's, the signer's and the entity's batch
registries (type 1 at each level): add ``n`` (1 .. 2**32-1) to that machine's
counter, a 64-bit unsigned integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from node.codec import DecodeError, RlpItem, as_int, int_bytes

MAX_INCREMENT = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Increment:
    TYPE: ClassVar[int] = 1
    NAME: ClassVar[str] = "increment"
    n: int

    @classmethod
    def from_fields(cls, fields: list[RlpItem]) -> Self:
        if len(fields) != 1:
            raise DecodeError(f"increment: expected 1 field [n], got {len(fields)}")
        return cls(as_int(fields[0], "increment n", min_value=1, max_value=MAX_INCREMENT))

    def to_fields(self) -> list[RlpItem]:
        return [int_bytes(self.n)]
