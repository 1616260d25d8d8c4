"""Replay a chain from genesis and check every link and state hash.

Used by ``xln-node verify``, both on a closed data folder and, page by page
through the protocol, against a running node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from node.block import Block
from node.codec import DecodeError
from node.machines.outcomes import Outcomes
from node.machines.server import InvalidBlock, ServerState, apply_block
from node.mempool import Mempool


class ChainInvalid(Exception):
    """The chain fails verification; the message names the block and the reason."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    blocks: int
    state: ServerState
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Replayer:
    """Re-executes raw blocks one at a time, from genesis."""

    def __init__(self) -> None:
        self.state = ServerState()
        # The last decoded mempool. Consecutive blocks often carry identical input
        # (empty blocks, --demo-increments), and a Mempool is immutable.
        self._mempool_raw = b""
        self._mempool = Mempool.empty()
        # The replay's own cache of frame outcomes: a frame proposed in one block is
        # committed by the entity's other replicas in a later one.
        self._outcomes = Outcomes()

    def push(self, raw: bytes) -> None:
        height = self.state.height + 1
        try:
            # Unhashed: the block we re-make below must equal ``raw`` byte for byte.
            block = Block.decode(raw, hashed=False)
        except DecodeError as exc:
            raise ChainInvalid(f"block {height}: undecodable: {exc}") from None
        if block.height != height:
            raise ChainInvalid(f"block {height}: claims height {block.height}")
        if block.prev_hash != self.state.head:
            raise ChainInvalid(f"block {height}: does not link to block {height - 1}")
        try:
            if block.mempool != self._mempool_raw:
                self._mempool = Mempool.decode(block.mempool)
                self._mempool_raw = block.mempool
            step = apply_block(self.state, self._mempool, block.timestamp, outcomes=self._outcomes)
            if height == 1 and step.block.state_hash != block.state_hash:
                # The simulation flag is fixed at genesis and not in any block: the
                # chain's is the one that reproduces block 1's state hash.
                genesis = replace(self.state, simulation=not self.state.simulation)
                other = apply_block(
                    genesis, self._mempool, block.timestamp, outcomes=self._outcomes
                )
                if other.block.state_hash == block.state_hash:
                    step = other
        except (DecodeError, InvalidBlock) as exc:
            raise ChainInvalid(f"block {height}: invalid: {exc}") from None
        if step.block.state_hash != block.state_hash:
            raise ChainInvalid(
                f"block {height}: state hash {block.state_hash.hex()} but replay gives "
                f"{step.block.state_hash.hex()}"
            )
        if step.block.raw != raw:
            raise ChainInvalid(f"block {height}: not in canonical form")
        self.state = step.state

    def finish(self, expected_head: tuple[int, bytes] | None) -> None:
        if expected_head is not None and (self.state.height, self.state.head) != expected_head:
            raise ChainInvalid(
                f"chain ends at height {self.state.height} ({self.state.head.hex()}), but the "
                f"root is at height {expected_head[0]} ({expected_head[1].hex()})"
            )


def verify_chain(
    raw_blocks: Iterable[bytes],
    *,
    expected_head: tuple[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
) -> VerifyReport:
    """Re-execute every block; the report names the first failure.

    ``expected_head`` is the root's ``(height, hash)``: the replay must end there.
    """
    replayer = Replayer()
    try:
        for raw in raw_blocks:
            replayer.push(raw)
            if progress is not None and replayer.state.height % progress_every == 0:
                progress(replayer.state.height)
        replayer.finish(expected_head)
    except ChainInvalid as exc:
        return VerifyReport(replayer.state.height, replayer.state, str(exc))
    if progress is not None:
        progress(replayer.state.height)
    return VerifyReport(replayer.state.height, replayer.state)
