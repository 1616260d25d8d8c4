"""The approval queue and notifications, headless, with an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from node.crypto import bls
from node.machines.entity import Increment, sign_batch
from node.machines.frames import Frame
from node.machines.governance import signer_id
from node.txs import Tx
from wallet.flows import approvals
from wallet.flows.approvals import ApprovalQueue, ApprovalRequest, Notifications, Status

SK = bls.keygen(bytes([3]) * 32)
SIGNER = signer_id(bls.sk_to_pk(SK))
ENTITY = b"\xe1" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(n: int = 1) -> Frame:
    batch = sign_batch(ENTITY, SK, SIGNER, 1, [Tx.of(Increment(n))])
    return Frame.make(ENTITY, 1, b"\x00" * 32, [batch], bytes([n]) * 32)


def status(request: ApprovalRequest) -> Status:
    return request.status  # read afresh (no narrowing across the queue's calls)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_add_approve_and_listeners(clock: Clock) -> None:
    queue = ApprovalQueue(clock)
    seen: list[tuple[str, int, Status]] = []
    queue.added.append(lambda r: seen.append(("added", r.id, r.status)))
    queue.changed.append(lambda r: seen.append(("changed", r.id, r.status)))
    request = queue.add(SIGNER, ENTITY, frame(), 0, None, ttl_s=25)
    assert queue.pending() == [request]
    assert request.remaining(clock()) == 25
    clock.now += 5
    queue.approve(request.id)
    assert request.status is Status.APPROVED
    assert request.decided_by == "you"
    assert request.decided_at == clock.now
    assert queue.pending() == []
    assert queue.get(request.id) is request
    assert seen == [("added", 1, Status.PENDING), ("changed", 1, Status.APPROVED)]


def test_bad_decisions_change_nothing(clock: Clock) -> None:
    queue = ApprovalQueue(clock)
    request = queue.add(SIGNER, ENTITY, frame(), 0, None, ttl_s=25)
    with pytest.raises(KeyError):
        queue.approve(99)
    queue.reject(request.id)
    with pytest.raises(ValueError, match="already rejected"):
        queue.approve(request.id)
    assert request.status is Status.REJECTED
    with pytest.raises(ValueError, match="positive"):
        queue.add(SIGNER, ENTITY, frame(), 0, None, ttl_s=0)
    with pytest.raises(ValueError, match="decided"):
        queue.record(SIGNER, ENTITY, frame(), 0, None, Status.PENDING, "x", "y")


def test_expiry_follows_the_injected_clock(clock: Clock) -> None:
    queue = ApprovalQueue(clock)
    early = queue.add(SIGNER, ENTITY, frame(1), 0, None, ttl_s=10)
    late = queue.add(SIGNER, ENTITY, frame(2), 0, None, ttl_s=20)
    clock.now += 9.99
    assert queue.expire_due() == []
    clock.now += 0.01
    assert queue.expire_due() == [early]
    assert early.status is Status.EXPIRED
    assert late.status is Status.PENDING
    clock.now += 10
    with pytest.raises(ValueError, match="expired"):
        queue.approve(late.id)  # too late: it expires instead
    assert status(late) is Status.EXPIRED
    assert [r.id for r in queue.all()] == [late.id, early.id]


async def test_wait_returns_the_outcome(clock: Clock) -> None:
    queue = ApprovalQueue(clock)
    request = queue.add(SIGNER, ENTITY, frame(), 0, None, ttl_s=3600)
    waiting = asyncio.create_task(queue.wait(request))
    await asyncio.sleep(0)  # let the waiter start (a turn of the loop, not a timed wait)
    queue.reject(request.id, reason="no")
    assert await asyncio.wait_for(waiting, 5) is Status.REJECTED
    # Expiry wakes a waiter too, when the clock says so.
    second = queue.add(SIGNER, ENTITY, frame(2), 0, None, ttl_s=3600)
    waiting = asyncio.create_task(queue.wait(second))
    await asyncio.sleep(0)
    clock.now += 3600
    queue.expire_due()
    assert await asyncio.wait_for(waiting, 5) is Status.EXPIRED
    # Already due: no waiting at all.
    third = queue.add(SIGNER, ENTITY, frame(3), 0, None, ttl_s=1)
    clock.now += 1
    assert await asyncio.wait_for(queue.wait(third), 5) is Status.EXPIRED


def test_recorded_decisions_and_notifications(clock: Clock) -> None:
    queue = ApprovalQueue(clock)
    added: list[ApprovalRequest] = []
    queue.added.append(added.append)
    auto = queue.record(
        SIGNER, ENTITY, frame(), 0, None, Status.APPROVED, "accountant: routine", "counter"
    )
    assert auto.automatic
    assert added == [auto]
    queue.update(auto, signed=True)
    assert auto.signed
    notes = Notifications(clock)
    got: list[str] = []
    notes.added.append(lambda n: got.append(n.title))
    notes.notify("Approval needed", "frame 1")
    assert [n.text for n in notes.items] == ["frame 1"]
    assert got == ["Approval needed"]
    assert notes.items[0].time == clock.now


def test_the_same_frame_at_a_later_round_stays_one_request(clock: Clock) -> None:
    """A round that times out while the person reads asks the same frame again: the
    pending request follows the new round (same id, renewed expiry), so the list
    keeps one entry per frame and the one being read does not go away."""
    queue = ApprovalQueue(clock)
    changed: list[ApprovalRequest] = []
    queue.changed.append(changed.append)
    round0 = queue.add(SIGNER, ENTITY, frame(1), 0, None, ttl_s=25)
    other = queue.add(SIGNER, ENTITY, frame(2), 0, None, ttl_s=25)
    clock.now += 20
    round1 = queue.add(SIGNER, ENTITY, frame(1), 1, None, ttl_s=25)
    assert round1 is round0
    assert (round0.id, round0.round, round0.status) == (1, 1, Status.PENDING)
    assert round0.expires == clock.now + 25
    assert changed == [round0]
    assert queue.pending() == [round0, other], "one pending request per frame"
    # An older round asked late changes nothing.
    assert queue.add(SIGNER, ENTITY, frame(1), 0, None, ttl_s=25) is round0
    assert round0.round == 1
    clock.now += 10  # past round 0's expiry, within round 1's
    assert queue.expire_due() == [other]
    queue.approve(round0.id)
    assert status(round0) is Status.APPROVED


async def test_the_waiter_of_an_earlier_round_is_told_its_round_is_over(clock: Clock) -> None:
    queue = ApprovalQueue(clock)
    request = queue.add(SIGNER, ENTITY, frame(1), 0, None, ttl_s=25)
    first = asyncio.ensure_future(queue.wait(request, 0))
    await asyncio.sleep(0)  # the waiter of round 0 is waiting
    queue.add(SIGNER, ENTITY, frame(1), 1, None, ttl_s=25)
    assert await asyncio.wait_for(first, 5) is None
    second = asyncio.ensure_future(queue.wait(request, 1))
    await asyncio.sleep(0)
    queue.approve(request.id)
    assert await asyncio.wait_for(second, 5) is Status.APPROVED
    assert request.round == 1


def test_decided_requests_are_bounded_and_older_ones_drop_their_state(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An accountant approving a hub's frames all day keeps a bounded list: at most
    DECIDED_LIMIT requests and DECIDED_BYTES of frames, and only the newest
    DECIDED_WHOLE keep the state after their frame (each pins a version of the maps)."""
    from tests.node.machines.test_entity import B, Entity
    from tests.wallet.flows.test_effects import commit

    e = Entity([1, 1, 1], 2)
    analyses = [commit(e, e.batch(B, Increment(n + 1))) for n in range(6)]
    monkeypatch.setattr(approvals, "DECIDED_WHOLE", 2)
    one = len(frame().raw)
    monkeypatch.setattr(approvals, "DECIDED_BYTES", 4 * one + one // 2)
    queue = ApprovalQueue(clock)
    requests = [
        queue.record(SIGNER, ENTITY, frame(n + 1), 0, a, Status.APPROVED, "accountant", "ok")
        for n, a in enumerate(analyses)
    ]
    assert list(queue.decided) == requests[2:]  # four frames' bytes at most
    whole = [r.analysis is not None and r.analysis.new_state is not None for r in requests[2:]]
    assert whole == [False, False, True, True]
    for r, a in zip(requests[2:], analyses[2:], strict=True):
        assert r.analysis is not None
        assert a.new_state is not None
        kept = r.analysis
        assert (kept.frame_hash, kept.height, kept.txs, kept.effects, kept.error) == (
            a.frame_hash,
            a.height,
            a.txs,
            a.effects,
            a.error,
        )  # what the frame does is all kept
        assert kept.effects
        assert kept.config_after == a.new_state.config
        if kept.new_state is None:
            assert kept.events is None
            assert a.events is not None
        else:
            assert kept is a
    monkeypatch.setattr(approvals, "DECIDED_BYTES", 1)
    last = queue.record(SIGNER, ENTITY, frame(9), 0, None, Status.REJECTED, "you", "no")
    assert list(queue.decided) == [last]  # one at least, however large
    monkeypatch.setattr(approvals, "DECIDED_LIMIT", 2)
    monkeypatch.setattr(approvals, "DECIDED_BYTES", 10**9)
    more = [
        queue.record(SIGNER, ENTITY, frame(n), 0, None, Status.APPROVED, "you", "") for n in (1, 2)
    ]
    assert list(queue.decided) == more


def test_an_approved_frame_asked_again_stays_one_entry(clock: Clock) -> None:
    """A frame approved at one round and asked at later rounds is signed again without
    asking: its approved entry follows the rounds (seen by the GUI suite: the proposer's
    list held one entry per round of one frame), and still says who approved it."""
    queue = ApprovalQueue(clock)
    changed: list[ApprovalRequest] = []
    queue.changed.append(changed.append)
    request = queue.add(SIGNER, ENTITY, frame(1), 2, None, ttl_s=25)
    queue.approve(request.id)
    changed.clear()
    clock.now += 5
    assert queue.again(SIGNER, ENTITY, frame(1), 4, ttl_s=25) is request
    assert (request.round, request.status, request.decided_by) == (4, Status.APPROVED, "you")
    assert request.expires == clock.now + 25
    assert queue.again(SIGNER, ENTITY, frame(1), 3, ttl_s=25) is request  # a late older round
    assert request.round == 4
    assert changed == [request, request]
    assert queue.all() == [request], "one entry for the frame"
    # Another signer's, or a frame whose entry left the list: an entry of its own.
    other = queue.again(SIGNER, ENTITY, frame(2), 4, ttl_s=25)
    assert other is not request
    assert (other.status, other.decided_by) == (Status.APPROVED, "approved before")
    assert queue.all() == [other, request]
