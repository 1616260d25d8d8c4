"""The server machine: the root of the hierarchy, one per node process.

``apply_block(state, mempool, timestamp) -> Step(state, block, receipts, outbox)``
is the whole transition. Its own transaction so far is ``increment(n)``;
sub-machines (signers) hang off ``state.subs`` as ``(id, state_hash)`` pairs, so
the state hash already covers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from node.block import Block
from node.codec import (
    HASH_LEN,
    UINT64_MAX,
    ZERO_HASH,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode_tree,
    int_bytes,
    keccak,
)
from node.mempool import Mempool
from node.txs import REGISTRIES, Level, Tx

STATE_VERSION = 1
MAX_INCREMENT = 2**32 - 1

SERVER_TXS = REGISTRIES[Level.SERVER]


@SERVER_TXS.register
@dataclass(frozen=True, slots=True)
class Increment:
    """Add ``n`` (1 .. 2**32-1) to the machine's counter."""

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


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the state hash covers, plus ``head``: the hash of the block that made it.

    ``head`` is chain position, not state: it is not encoded (a block cannot
    commit to its own hash) and is restored from the root's block on load.
    """

    height: int = 0
    timestamp: int = 0
    counter: int = 0
    subs: tuple[tuple[bytes, bytes], ...] = ()
    head: bytes = ZERO_HASH

    def encode(self) -> bytes:
        return encode_tree(
            [
                int_bytes(STATE_VERSION),
                int_bytes(self.height),
                int_bytes(self.timestamp),
                int_bytes(self.counter),
                [[sub_id, sub_hash] for sub_id, sub_hash in self.subs],
            ]
        )

    def hash(self) -> bytes:
        return keccak(self.encode())

    @classmethod
    def decode(cls, raw: bytes, head: bytes = ZERO_HASH) -> ServerState:
        items = as_list(decode(raw), "server state", size=5)
        version = as_int(items[0], "state version")
        if version != STATE_VERSION:
            raise DecodeError(f"server state version {version} is not {STATE_VERSION}")
        subs = tuple(
            (
                as_bytes(as_list(s, "sub", size=2)[0], "sub id", size=HASH_LEN),
                as_bytes(as_list(s, "sub", size=2)[1], "sub hash", size=HASH_LEN),
            )
            for s in as_list(items[4], "subs")
        )
        return cls(
            height=as_int(items[1], "state height"),
            timestamp=as_int(items[2], "state timestamp"),
            counter=as_int(items[3], "state counter"),
            subs=subs,
            head=head,
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """Outcome of one transaction: ``error`` is None when it applied."""

    route: tuple[bytes, ...]
    index: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message a block causes, sent only once that block is durable."""

    to: tuple[bytes, ...]
    payload: bytes


@dataclass(frozen=True, slots=True)
class Step:
    state: ServerState
    block: Block
    receipts: tuple[Receipt, ...]
    outbox: tuple[Outbound, ...]


class InvalidBlock(ValueError):
    """Inputs that no honest runtime would hand to the transition."""


def apply_block(state: ServerState, mempool: Mempool, timestamp: int) -> Step:
    if timestamp < state.timestamp:
        raise InvalidBlock(
            f"timestamp {timestamp} is before the previous block's {state.timestamp}"
        )
    known = {sub_id for sub_id, _ in state.subs}
    for key in mempool.keys:
        if key not in known:
            raise InvalidBlock(f"mempool addresses unknown signer {key.hex()}")
    counter = state.counter
    receipts = []
    for index, tx in enumerate(mempool.txs):
        counter, error = _apply_tx(counter, tx)
        receipts.append(Receipt((), index, error))
    height = state.height + 1
    state_hash = ServerState(height, timestamp, counter, state.subs).hash()
    block = Block.make(height, state.head, timestamp, mempool.raw, state_hash)
    new_state = ServerState(height, timestamp, counter, state.subs, head=block.hash)
    return Step(new_state, block, tuple(receipts), ())


def _apply_tx(counter: int, tx: Tx) -> tuple[int, str | None]:
    match tx.body:
        case Increment(n=n):
            if counter + n > UINT64_MAX:
                return counter, "counter overflow: the counter is a 64-bit unsigned integer"
            return counter + n, None
    return counter, f"{tx.body.NAME} is not a server transaction"
