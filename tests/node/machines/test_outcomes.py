"""The cache of frame outcomes (node/machines/outcomes.py) and its use by the replica.

The cache is an optimisation: a hit returns what the execution would have, and an
outcome is never served to a caller it was not computed for (another state, frame,
``simulation`` flag, or one that asks for the signatures to be checked when they
were not). The replicas' own transition with a cache gives the same states and
effects, byte for byte, as without one.
"""

from __future__ import annotations

import pytest

from node.crypto import bls
from node.machines import accounts
from node.machines import replica as rep
from node.machines.entity import Batch, FrameInvalid, Increment, sign_batch
from node.machines.frames import Frame
from node.machines.governance import Config, Member, signer_id
from node.machines.outcomes import Key, Outcome, Outcomes
from node.machines.replica import Genesis, Replica, SubmitBatch
from node.txs import Tx, TxBody

SKS = [bls.keygen(bytes([0x70 + i]) * 32) for i in range(2)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
POPS = [bls.pop_prove(sk) for sk in SKS]


def replica() -> Replica:
    """A one-member entity's replica, its member the proposer."""
    config = Config((Member(PKS[0], 1),), 1, IDS[0])
    return rep.create(IDS[0], Genesis(config, b"\x5a" * 32, (POPS[0],)))


def frame_of(r: Replica, *batches: Batch) -> Frame:
    """A frame at ``r``'s next height (its state hash does not matter to execution)."""
    return Frame.make(r.entity_id, r.next_height, r.head, batches, b"\x00" * 32)


def batch(r: Replica, *bodies: TxBody, sk: int = 0, nonce: int = 1) -> Batch:
    """A batch by member 0, signed with key ``sk`` (another key: a forged signature)."""
    return sign_batch(r.entity_id, SKS[sk], IDS[0], nonce, [Tx.of(b) for b in bodies])


def key(n: int) -> Key:
    return Key(bytes([n]) * 32, bytes([n]) * 32, False, True)


def outcome(r: Replica, n: int) -> Outcome:
    return rep.execute_frame(
        r.entity, frame_of(r, batch(r, Increment(n))), verify=True, simulation=False
    )


# The cache alone ------------------------------------------------------------------------


def test_the_least_recently_used_entry_is_evicted_at_the_cap() -> None:
    r = replica()
    values = [outcome(r, n + 1) for n in range(4)]
    cache = Outcomes(3)
    for n in range(3):
        cache.put(key(n), values[n])
    assert cache.get(key(0)) is values[0]  # now the most recently used
    cache.put(key(3), values[3])
    assert len(cache) == 3
    assert cache.get(key(1)) is None  # the oldest unused went
    assert [cache.get(key(n)) is values[n] for n in (0, 2, 3)] == [True, True, True]
    cache.put(key(2), values[0])  # a new value for a key: refreshed, not duplicated
    cache.put(key(4), values[1])
    assert key(0) not in cache
    assert key(2) in cache
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0
    assert cache.get(key(3)) is None


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Outcomes(0)
    one = Outcomes(1)
    r = replica()
    one.put(key(1), outcome(r, 1))
    one.put(key(2), outcome(r, 2))
    assert key(1) not in one
    assert key(2) in one


def test_two_caches_share_nothing() -> None:
    r = replica()
    frame = frame_of(r, batch(r, Increment(1)))
    first, second = Outcomes(), Outcomes()
    a = rep.execute_frame(r.entity, frame, verify=True, simulation=False, outcomes=first)
    assert len(first) == 1
    assert len(second) == 0
    b = rep.execute_frame(r.entity, frame, verify=True, simulation=False, outcomes=second)
    assert b is not a
    assert b[0].hash == a[0].hash
    assert b[1].outbox == a[1].outbox
    assert rep.execute_frame(r.entity, frame, verify=True, simulation=False, outcomes=first) is a


# What a hit may serve -------------------------------------------------------------------


def test_a_remembered_outcome_is_returned_and_equals_a_fresh_execution() -> None:
    r = replica()
    frame = frame_of(r, batch(r, Increment(2), Increment(3)))
    cache = Outcomes()
    first = rep.execute_frame(r.entity, frame, verify=True, simulation=False, outcomes=cache)
    again = rep.execute_frame(r.entity, frame, verify=True, simulation=False, outcomes=cache)
    assert again is first  # not executed again
    fresh = rep.execute_frame(r.entity, frame, verify=True, simulation=False)
    assert fresh is not first
    assert fresh[0].hash == first[0].hash
    assert fresh[0].counter == first[0].counter == 5
    # A checked outcome also serves a caller that skips the checks.
    assert rep.execute_frame(r.entity, frame, verify=False, simulation=False, outcomes=cache) is (
        first
    )
    # The same frame on another state: executed there (where its nonce is used up).
    with pytest.raises(FrameInvalid, match="nonce"):
        rep.execute_frame(first[0], frame, verify=True, simulation=False, outcomes=cache)
    # Another frame on the same state: executed.
    other = rep.execute_frame(
        r.entity, frame_of(r, batch(r, Increment(7))), verify=True, simulation=False, outcomes=cache
    )
    assert other[0].counter == 7


def test_an_unchecked_outcome_is_not_served_to_a_caller_that_checks() -> None:
    r = replica()
    forged = frame_of(r, batch(r, Increment(1), sk=1))  # member 0's batch, another key
    cache = Outcomes()
    unchecked = rep.execute_frame(r.entity, forged, verify=False, simulation=False, outcomes=cache)
    assert unchecked[0].counter == 1
    assert Key(r.entity.hash, forged.hash, False, False) in cache
    assert (
        rep.execute_frame(r.entity, forged, verify=False, simulation=False, outcomes=cache)
        is unchecked
    )
    with pytest.raises(FrameInvalid, match="signature"):
        rep.execute_frame(r.entity, forged, verify=True, simulation=False, outcomes=cache)
    assert Key(r.entity.hash, forged.hash, False, True) not in cache  # failures are not kept
    approval = bls.sign(SKS[0], forged.approval_message(0))
    reason = rep.check_proposal(r, forged, 0, approval, outcomes=cache)
    assert reason is not None
    assert "signature" in reason


def test_an_outcome_under_simulation_is_not_served_outside_it() -> None:
    r = replica()
    mint = frame_of(r, batch(r, accounts.Faucet(1, 100)))
    cache = Outcomes()
    post, _ = rep.execute_frame(r.entity, mint, verify=True, simulation=True, outcomes=cache)
    assert post.hash != r.entity.hash
    with pytest.raises(FrameInvalid):
        rep.execute_frame(r.entity, mint, verify=True, simulation=False, outcomes=cache)


def test_a_failed_execution_is_not_remembered() -> None:
    r = replica()
    bad = frame_of(r, batch(r, Increment(1), nonce=5))
    cache = Outcomes()
    for _ in range(2):
        with pytest.raises(FrameInvalid):
            rep.execute_frame(r.entity, bad, verify=True, simulation=False, outcomes=cache)
    assert len(cache) == 0


# The transition with and without a cache ------------------------------------------------


class Counting(Outcomes):
    """An outcome cache that counts its hits (the real cache, observed)."""

    hits = 0

    def get(self, key: Key) -> Outcome | None:
        found = super().get(key)
        self.hits += found is not None
        return found


def _run(
    r: Replica, rounds: list[list[int]], outcomes: Outcomes | None
) -> tuple[list[tuple[bytes, list[rep.Effect]]], int]:
    """Each round submits a batch of increments (none if the round is empty) and
    pre-commits the frame in flight, then steps the one-member replica: it commits the
    frame and proposes the next. The replica's encoding and effects after each step,
    and how many frames it committed."""
    config = r.entity.config
    trace = []
    nonce = commits = 0
    for amounts in rounds:
        txs = []
        pending = r.pending
        if pending is not None:
            f = pending.frame
            sig = bls.sign(SKS[0], f.message(pending.round))
            outbox = tuple(bls.sign(SKS[0], o.hash) for o in f.outbox)
            pc = rep.Precommit(f.height, pending.round, f.hash, config.ids[0], sig, outbox)
            txs.append(Tx.of(pc))
            commits += 1
        if amounts:
            nonce += 1
            txs.append(Tx.of(SubmitBatch(batch(r, *(Increment(a) for a in amounts), nonce=nonce))))
        r, effects = rep.step(r, txs, outcomes=outcomes)
        assert r.entity.height == commits
        trace.append((r.encoded, effects))
    return trace, commits


@pytest.mark.parametrize(
    "rounds",
    [[[1], [2], [3]], [[5, 6], [7], [], [8, 9, 10], []], [[1]] * 6],
    ids=["three", "a-gap", "six"],
)
def test_a_replica_steps_identically_with_and_without_a_cache(rounds: list[list[int]]) -> None:
    cache = Counting(2)
    with_cache, commits = _run(replica(), rounds, cache)
    assert commits >= 2
    assert (with_cache, commits) == _run(replica(), rounds, None)
    # The proposer's commit of the frame it built is a lookup, not an execution.
    assert cache.hits == commits
