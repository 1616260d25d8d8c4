"""The caps of node/net/limits.py admit every message the code sends legitimately.

PROTOCOL.md § 1.3 promises that the largest legitimate messages fit their
link's caps: a HELLO before authentication, a proposal or commit of a frame
that fills the proposer's item budgets with the largest outbox and
certificate, a SUBMIT of the most transactions. These tests build those
messages from the real encoders and scan them against the caps; they also
check that the frame builder and the node's intake keep frames within them.
"""

from __future__ import annotations

import asyncio

import pytest

from node.codec import LimitExceeded, Limits, encode_list, encode_tree, int_bytes, scan
from node.crypto import bls
from node.identity import Identity
from node.machines import replica as rep
from node.machines.accounts import Outgoing
from node.machines.entity import SIG_LEN, Batch
from node.machines.frames import MAX_OUTBOX, Certificate
from node.machines.governance import MAX_SIGNERS
from node.machines.replica import proposing
from node.machines.server import Increment
from node.net import limits
from node.net.protocol import (
    MAX_SENDER_ID_BYTES,
    MAX_TOKEN_BYTES,
    MAX_TXS_PER_SUBMIT,
    Req,
    Sender,
    SenderKind,
    encode_request,
    encode_request_raw,
)
from node.txs import Tx

HASH = b"\x11" * 32


def blob(items: int) -> bytes:
    """A list of exactly ``items`` RLP items (itself included)."""
    return encode_list([b"\x01"] * (items - 1))


def test_the_longest_hellos_fit_before_authentication() -> None:
    client = encode_request(
        Req.HELLO,
        2**32,
        Sender(SenderKind.CLIENT, b"c" * MAX_SENDER_ID_BYTES),
        (),
        [b"t" * MAX_TOKEN_BYTES],
    )
    identity = Identity(bls.keygen(b"\x05" * 32))
    peer = encode_request(
        Req.HELLO,
        2**32,
        Sender(SenderKind.SERVER, identity.id),
        (),
        identity.hello(b"\xff" * 32, b"\xff" * 32),
    )
    challenge = encode_request(Req.CHALLENGE, 2**32, Sender(SenderKind.SERVER, identity.id), (), [])
    for hello in (client, peer, challenge):
        assert scan(hello, limits.PRE_HELLO) <= limits.PRE_HELLO.max_items
        assert len(hello) <= limits.PRE_HELLO.max_bytes


def _largest_frame() -> bytes:
    """A frame whose batches and inputs fill the builder's item budgets, with the
    largest outbox, encoded as Frame.make lays it out."""
    outbox = [Outgoing(1, HASH, HASH) for _ in range(MAX_OUTBOX)]
    return encode_list(
        [
            encode_tree(HASH),
            encode_tree(int_bytes(2**40)),
            encode_tree(HASH),
            encode_list([blob(proposing.MAX_FRAME_BATCH_ITEMS)]),
            encode_list([blob(proposing.MAX_FRAME_INPUT_ITEMS)]),
            encode_tree([o.to_tree() for o in outbox]),
            encode_tree(HASH),
        ]
    )


def _largest_certificate() -> bytes:
    return Certificate(
        2**32 - 1,
        b"\xff" * (MAX_SIGNERS // 8),
        b"\x22" * SIG_LEN,
        (b"\x33" * SIG_LEN,) * MAX_OUTBOX,
    ).raw


def test_a_proposal_and_a_commit_of_the_largest_frame_fit_the_peer_link() -> None:
    frame = _largest_frame()
    server = Sender(SenderKind.SERVER, HASH)
    proposal = encode_request_raw(
        Req.PROPOSAL,
        2**32,
        server,
        (),
        [encode_tree(HASH), frame, encode_tree(int_bytes(2**32 - 1)), encode_tree(b"s" * 96)],
    )
    assert (
        scan(proposal, limits.REQUEST)
        > proposing.MAX_FRAME_BATCH_ITEMS + proposing.MAX_FRAME_INPUT_ITEMS
    )
    # A commit input carries [type, [frame, certificate]] (and a sync reply the same
    # pair): the certificate adds one signature per outgoing message.
    commit_input = encode_list(
        [encode_tree(int_bytes(rep.Commit.TYPE)), encode_list([frame, _largest_certificate()])]
    )
    deliver = encode_request_raw(
        Req.DELIVER, 2**32, server, (), [encode_tree(HASH), encode_tree(HASH), commit_input]
    )
    assert scan(deliver, limits.REQUEST) <= limits.REQUEST.max_items
    assert len(deliver) <= limits.MAX_FRAME_BYTES


def test_a_submit_of_the_most_transactions_fits() -> None:
    txs = [Tx.of(Increment(2**32 - 1)).raw] * MAX_TXS_PER_SUBMIT
    frame = encode_request_raw(
        Req.SUBMIT, 2**32, Sender(SenderKind.CLIENT, b"c" * MAX_SENDER_ID_BYTES), (), txs
    )
    assert scan(frame, limits.REQUEST) <= limits.REQUEST.max_items


def _batch(items: int) -> Batch:
    """A batch whose encoding holds ``items`` items; only its bytes matter here."""
    return Batch(HASH, 1, (), b"\x00" * SIG_LEN, blob(items))


def test_the_builder_keeps_a_frame_within_its_item_budget() -> None:
    pool = [_batch(5_000) for _ in range(10)]
    chosen = proposing._frame_sized(pool)
    assert len(chosen) == proposing.MAX_FRAME_BATCH_ITEMS // 5_000  # 4 of 5,000: 20,000 items
    assert sum(scan(b.raw, limits.BLOCK) for b in chosen) <= proposing.MAX_FRAME_BATCH_ITEMS
    # One batch alone always goes, so none past the budget may be taken in.
    assert proposing._frame_sized([_batch(proposing.MAX_FRAME_BATCH_ITEMS + 1)]) != []


def test_intake_refuses_a_batch_that_could_never_fit_a_frame() -> None:
    too_big = rep.SubmitBatch(_batch(proposing.MAX_FRAME_BATCH_ITEMS + 1))
    why = rep.over_frame_budget(too_big)
    assert why == (
        f"a batch of {proposing.MAX_FRAME_BATCH_ITEMS + 1} RLP items exceeds a frame's budget"
        f" of {proposing.MAX_FRAME_BATCH_ITEMS}"
    )
    assert rep.over_frame_budget(rep.SubmitBatch(_batch(proposing.MAX_FRAME_BATCH_ITEMS))) is None


@pytest.mark.parametrize(
    ("caps", "frame"),
    [
        (limits.PRE_HELLO, encode_list([b"\x01"] * 16)),
        (limits.REQUEST, encode_list([b"\x01"] * limits.MAX_ITEMS)),
    ],
    ids=["pre-HELLO", "request"],
)
def test_one_item_past_a_cap_is_refused(caps: Limits, frame: bytes) -> None:
    with pytest.raises(LimitExceeded, match=f"more than {caps.max_items} RLP items"):
        scan(frame, caps)


async def test_heavy_frames_take_turns_and_the_rest_runs_between_them() -> None:
    """Two heavy frames never run at once, and a light task that became ready while
    the first ran gets its turn before the second starts."""
    gate = limits.HeavyGate()
    order: list[str] = []

    async def heavy(name: str) -> None:
        async with gate.turn():
            order.append(f"{name} start")
            await asyncio.sleep(0)
            order.append(f"{name} end")

    async def light() -> None:
        order.append("light")

    first = asyncio.create_task(heavy("a"))
    second = asyncio.create_task(heavy("b"))
    await asyncio.sleep(0)  # a holds the gate; b waits
    await asyncio.create_task(light())
    await asyncio.gather(first, second)
    assert order.index("a end") < order.index("b start")
    assert order.index("light") < order.index("b start")
    assert gate.waited == 1
    assert limits.HeavyGate.is_heavy(limits.HEAVY_BYTES + 1)
    assert not limits.HeavyGate.is_heavy(limits.HEAVY_BYTES)
