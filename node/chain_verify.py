"""Replay a chain from genesis and check every link and state hash.

Used by ``xln-node verify``, both on a closed data folder and, through the
protocol, against a running node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node.block import Block
from node.codec import DecodeError
from node.machines.server import InvalidBlock, ServerState, apply_block
from node.mempool import Mempool


@dataclass(frozen=True, slots=True)
class VerifyReport:
    blocks: int
    state: ServerState
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


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
    state = ServerState()
    count = 0
    for raw in raw_blocks:
        height = state.height + 1
        try:
            block = Block.decode(raw)
        except DecodeError as exc:
            return VerifyReport(count, state, f"block {height}: undecodable: {exc}")
        if block.height != height:
            return VerifyReport(count, state, f"block {height}: claims height {block.height}")
        if block.prev_hash != state.head:
            return VerifyReport(count, state, f"block {height}: does not link to block {height - 1}")
        try:
            step = apply_block(state, Mempool.decode(block.mempool), block.timestamp)
        except (DecodeError, InvalidBlock) as exc:
            return VerifyReport(count, state, f"block {height}: invalid: {exc}")
        if step.block.state_hash != block.state_hash:
            return VerifyReport(
                count,
                state,
                f"block {height}: state hash {block.state_hash.hex()} but replay gives "
                f"{step.block.state_hash.hex()}",
            )
        if step.block.raw != raw:
            return VerifyReport(count, state, f"block {height}: not in canonical form")
        state = step.state
        count += 1
        if progress is not None and count % progress_every == 0:
            progress(count)
    if expected_head is not None and (state.height, state.head) != expected_head:
        return VerifyReport(
            count,
            state,
            f"chain ends at height {state.height} ({state.head.hex()}), but the root is at "
            f"height {expected_head[0]} ({expected_head[1].hex()})",
        )
    if progress is not None:
        progress(count)
    return VerifyReport(count, state)
