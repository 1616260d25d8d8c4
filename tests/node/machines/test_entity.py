"""The entity machine's rules (node/machines/entity.py) and its config (governance.py),
one focused test per rule, with real BLS keys."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
import rlp
from eth_hash.auto import keccak as eth_keccak

from node.codec import UINT64_MAX, DecodeError, decode, encode_tree
from node.crypto import bls
from node.machines import governance
from node.machines.entity import (
    ENTITY_TXS,
    MAX_PROPOSAL_TTL,
    Batch,
    EntityState,
    FrameEvents,
    FrameInvalid,
    Increment,
    Propose,
    Vote,
    entity_id_for,
    execute,
    genesis,
    select_batches,
    sign_batch,
)
from node.machines.governance import (
    MAX_SHARES,
    Action,
    AddSigner,
    Config,
    ConfigError,
    Member,
    RemoveSigner,
    SetProposer,
    SetShares,
    SetThreshold,
    signer_id,
)
from node.txs import Tx, TxBody

N_KEYS = 8
SKS = [bls.keygen(bytes([i + 1]) * 32) for i in range(N_KEYS)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
POPS = [bls.pop_prove(sk) for sk in SKS]
A, B, C, D, E, F = range(6)
SALT = b"\x5a" * 32


def config(shares: list[int], threshold: int, proposer: int = A) -> Config:
    """Members 0 .. len(shares)-1 of the key pool, in order."""
    return Config(tuple(Member(PKS[i], s) for i, s in enumerate(shares)), threshold, IDS[proposer])


def add(who: int, shares: int = 1) -> AddSigner:
    return AddSigner(PKS[who], POPS[who], shares)


class Entity:
    """One replica of an entity, with per-signer nonce bookkeeping for the tests."""

    def __init__(self, shares: list[int], threshold: int, proposer: int = A) -> None:
        self.state = genesis(config(shares, threshold, proposer), SALT)
        self.nonces: defaultdict[int, int] = defaultdict(int)

    @property
    def next_height(self) -> int:
        return self.state.height + 1

    def batch(self, who: int, *bodies: TxBody, nonce: int | None = None) -> Batch:
        """A batch signed by ``who``; the next nonce unless one is given."""
        if nonce is None:
            self.nonces[who] += 1
            nonce = self.nonces[who]
        txs = [Tx.of(b) for b in bodies]
        return sign_batch(self.state.entity_id, SKS[who], IDS[who], nonce, txs)

    def propose(self, who: int, action: Action, expires_at: int | None = None) -> Batch:
        at = self.next_height + 10 if expires_at is None else expires_at
        return self.batch(who, Propose(action, at))

    def vote(self, who: int, *pids: int) -> Batch:
        return self.batch(who, *(Vote(p) for p in pids))

    def frame(self, *batches: Batch) -> FrameEvents:
        self.state, events = execute(self.state, batches)
        return events

    def refused(self, *batches: Batch, match: str) -> None:
        """The frame is refused as a whole; the replica keeps its state (and the test
        forgets the nonces the refused batches used)."""
        before = self.state
        with pytest.raises(FrameInvalid, match=match):
            execute(self.state, batches)
        assert self.state is before
        for who in list(self.nonces):
            self.nonces[who] = self.state.nonce_of(IDS[who])

    def open_ids(self) -> list[int]:
        return [p.id for p in self.state.proposals]

    def votes(self, pid: int) -> tuple[bytes, ...]:
        (p,) = [p for p in self.state.proposals if p.id == pid]
        return p.votes


# Config (governance.py) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "threshold", "ok"),
    [
        ([1, 1, 1], 1, False),  # 1 <= 3/2
        ([1, 1, 1], 2, True),
        ([1, 1, 1], 3, True),
        ([1, 1, 1], 4, False),  # above the total
        ([2, 2], 2, False),  # exactly half is not a majority
        ([2, 2], 3, True),
        ([5], 3, True),
        ([5], 2, False),
        ([1], 1, True),
        ([1, 0], 1, False),  # every member holds >= 1 share
        ([MAX_SHARES], MAX_SHARES, True),
        ([MAX_SHARES + 1], MAX_SHARES + 1, False),
    ],
)
def test_config_threshold_rule(shares: list[int], threshold: int, ok: bool) -> None:
    if ok:
        assert config(shares, threshold).threshold == threshold
    else:
        with pytest.raises(ConfigError):
            config(shares, threshold)


def test_config_needs_members_unique_signers_and_a_member_proposer() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        Config((), 1, IDS[A])
    with pytest.raises(ConfigError, match="twice"):
        Config((Member(PKS[A], 1), Member(PKS[A], 1)), 2, IDS[A])
    with pytest.raises(ConfigError, match="proposer"):
        config([1, 1, 1], 2, proposer=D)


def test_config_actions_apply_and_revalidate() -> None:
    c = config([1, 1, 1], 2)
    c3 = config([1, 1, 1], 3)
    assert add(D).apply(c3).ids == (*IDS[:3], IDS[D])  # appended
    assert RemoveSigner(IDS[B]).apply(c).ids == (IDS[A], IDS[C])  # order kept
    assert SetShares(IDS[C], 2).apply(c3).total_shares == 4
    assert SetProposer(IDS[C]).apply(c).proposer == IDS[C]
    with pytest.raises(ConfigError, match="already a signer"):
        add(B).apply(c)
    for action in (RemoveSigner(IDS[D]), SetShares(IDS[D], 1), SetProposer(IDS[D])):
        with pytest.raises(ConfigError, match="not a signer"):
            action.apply(c)
    with pytest.raises(ConfigError, match="threshold"):
        SetThreshold(1).apply(c)
    with pytest.raises(ConfigError, match="shares"):
        SetShares(IDS[B], 0).apply(c)


# Proposals: the threshold rule at propose time ------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        SetThreshold(4),  # above the total of 3
        SetThreshold(1),  # not above half
        RemoveSigner(IDS[C]),  # total 2 < threshold 3
        SetShares(IDS[B], 0),
        add(D, 4),  # total 7, threshold 3 is not above half
    ],
    ids=["threshold-high", "threshold-low", "remove", "zero-shares", "add-heavy"],
)
def test_proposal_that_would_break_the_threshold_rule_is_refused(action: Action) -> None:
    e = Entity([1, 1, 1], 3)
    e.refused(e.batch(B, Increment(1)), e.propose(A, action), match="threshold|shares")
    assert e.state.counter == 0  # the whole frame is dropped
    assert e.state.next_proposal_id == 1


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (add(B), "already a signer"),
        (RemoveSigner(IDS[E]), "not a signer"),
        (SetShares(IDS[E], 1), "not a signer"),
        (SetProposer(IDS[E]), "not a signer"),
        (RemoveSigner(IDS[A]), "proposer cannot be removed"),
    ],
)
def test_proposal_invalid_on_the_current_config_is_refused(action: Action, match: str) -> None:
    e = Entity([1, 1, 1, 1], 3)
    e.refused(e.propose(B, action), match=match)


def test_the_proposer_cannot_be_removed_until_changed() -> None:
    e = Entity([1, 1, 1], 2)
    e.refused(e.propose(B, RemoveSigner(IDS[A])), match="proposer cannot be removed")
    e.frame(e.propose(A, SetProposer(IDS[B])), e.vote(B, 1))
    assert e.state.config.proposer == IDS[B]
    events = e.frame(e.propose(A, RemoveSigner(IDS[A])), e.vote(C, 2))
    assert events.executed == [(2, "remove_signer")]
    assert e.state.config.ids == (IDS[B], IDS[C])


def test_add_signer_needs_a_valid_key_and_proof_of_possession() -> None:
    e = Entity([1, 1, 1], 3)
    e.refused(e.propose(A, AddSigner(PKS[D], POPS[E], 1)), match="proof of possession")
    e.refused(e.propose(A, AddSigner(PKS[D], bls.sign(SKS[D], PKS[D]), 1)), match="possession")
    bad_key = b"\xc0" + b"\x01" * 47  # not a point on the curve
    e.refused(e.propose(A, AddSigner(bad_key, POPS[D], 1)), match="public key")
    e.frame(e.propose(A, AddSigner(PKS[D], POPS[D], 1)))
    assert e.open_ids() == [1]


# Rule 1: propose counts as the proposer's vote; ids from 1 ---------------------------


def test_propose_counts_as_the_proposers_vote() -> None:
    e = Entity([1, 1, 1], 2)
    events = e.frame(e.propose(B, SetProposer(IDS[C])))
    assert events.executed == []
    assert e.open_ids() == [1]
    assert e.votes(1) == (IDS[B],)
    assert e.state.proposals[0].proposer == IDS[B]
    events = e.frame(e.vote(A, 1))
    assert events.executed == [(1, "set_proposer")]
    assert e.state.config.proposer == IDS[C]
    assert e.open_ids() == []


def test_a_proposer_holding_the_threshold_executes_in_the_same_frame() -> None:
    e = Entity([3, 1, 1], 3)
    events = e.frame(e.propose(A, SetThreshold(4)))
    assert events.executed == [(1, "set_threshold")]
    assert e.state.config.threshold == 4
    assert e.open_ids() == []
    assert e.state.next_proposal_id == 2


def test_proposal_ids_count_from_one_across_frames() -> None:
    e = Entity([1, 1, 1], 3)
    e.frame(e.propose(A, SetThreshold(2)), e.propose(B, SetProposer(IDS[B])))
    e.frame(e.propose(C, SetShares(IDS[C], 2)))
    assert e.open_ids() == [1, 2, 3]
    assert e.state.next_proposal_id == 4


# Rule 6: one vote per signer per proposal --------------------------------------------


def test_a_second_vote_is_refused() -> None:
    e = Entity([1, 1, 1, 1], 4)
    e.refused(e.propose(A, SetThreshold(3)), e.vote(A, 1), match="already voted")
    e.frame(e.propose(A, SetThreshold(3)))
    e.refused(e.vote(A, 1), match="already voted")  # the proposer's own vote
    e.frame(e.vote(B, 1))
    e.refused(e.vote(B, 1), match="already voted")  # a later frame
    e.refused(e.vote(C, 1, 1), match="already voted")  # one batch
    e.refused(e.vote(C, 1), e.vote(C, 1), match="already voted")  # one frame
    assert e.votes(1) == tuple(sorted((IDS[A], IDS[B])))


def test_vote_on_unknown_executed_or_expired_proposal_is_refused() -> None:
    e = Entity([1, 1, 1], 2)
    e.refused(e.vote(A, 1), match="no open proposal 1")
    e.frame(e.propose(A, SetThreshold(3), expires_at=1))
    assert e.open_ids() == []  # expired at the end of its own frame
    e.refused(e.vote(B, 1), match="no open proposal 1")
    e.frame(e.propose(A, SetThreshold(3)), e.vote(B, 2))  # executed
    e.refused(e.vote(C, 2), match="no open proposal 2")
    e.refused(e.vote(C, 3), match="no open proposal 3")


# Rules 2 and 4: expiry -----------------------------------------------------------------


def test_expires_at_must_not_be_before_the_frame_height() -> None:
    e = Entity([1, 1, 1], 2)
    e.frame(e.batch(A, Increment(1)))
    e.frame(e.batch(A, Increment(1)))
    assert e.next_height == 3
    e.refused(e.propose(B, SetThreshold(3), expires_at=2), match="expires_at")
    e.refused(e.propose(B, SetThreshold(3), expires_at=0), match="expires_at")
    e.refused(e.propose(B, SetThreshold(3), expires_at=3 + MAX_PROPOSAL_TTL + 1), match="expires")
    e.frame(e.propose(B, SetThreshold(3), expires_at=3 + MAX_PROPOSAL_TTL))
    e.frame(e.propose(B, SetProposer(IDS[B]), expires_at=5))
    assert e.open_ids() == [1, 2]


def test_a_proposal_lives_through_the_frame_at_expires_at() -> None:
    e = Entity([1, 1, 1], 3)
    e.frame(e.propose(A, SetThreshold(2), expires_at=3))  # height 1
    assert e.frame(e.vote(B, 1)).expired == []  # height 2
    assert e.open_ids() == [1]
    events = e.frame(e.batch(A, Increment(1)))  # height 3: not voted, dropped
    assert events.expired == [1]
    assert e.state.height == 3
    assert e.open_ids() == []
    e.refused(e.vote(C, 1), match="no open proposal")


def test_crossing_the_threshold_in_the_expiry_frame_executes() -> None:
    e = Entity([1, 1, 1], 3)
    e.frame(e.propose(A, SetThreshold(2), expires_at=3))
    e.frame(e.vote(B, 1))
    events = e.frame(e.vote(C, 1))  # height 3 == expires_at
    assert events.executed == [(1, "set_threshold")]
    assert events.expired == []
    assert e.state.config.threshold == 2


def test_a_proposal_can_expire_in_its_own_frame() -> None:
    e = Entity([1, 1, 1], 3)
    events = e.frame(e.propose(A, SetThreshold(2), expires_at=1), e.vote(B, 1))
    assert events.expired == [1]
    e2 = Entity([1, 1, 1], 2)
    events = e2.frame(e2.propose(A, SetThreshold(3), expires_at=1), e2.vote(B, 1))
    assert (events.executed, events.expired) == ([(1, "set_threshold")], [])


# Rule 3: ascending ids, each counted under the config left by the lower ones ----------


def test_a_lower_id_lowering_the_threshold_lets_a_higher_one_cross_in_the_same_frame() -> None:
    e = Entity([1, 1, 1, 1, 1], 4)
    events = e.frame(
        e.propose(A, SetThreshold(3)),
        e.propose(A, SetProposer(IDS[B])),
        e.vote(B, 1, 2),
        e.vote(C, 1, 2),
        e.vote(D, 1),
    )
    # 1 has 4 votes and executes; 2 has 3, enough only under the new threshold.
    assert events.executed == [(1, "set_threshold"), (2, "set_proposer")]
    assert e.state.config.proposer == IDS[B]


def test_a_higher_id_does_not_help_a_lower_one_in_the_same_frame() -> None:
    e = Entity([1, 1, 1, 1, 1], 4)
    events = e.frame(
        e.propose(A, SetProposer(IDS[B])),
        e.propose(A, SetThreshold(3)),
        e.vote(B, 1, 2),
        e.vote(C, 1, 2),
        e.vote(D, 2),
    )
    # 1 is evaluated once, before 2 lowers the threshold: it waits for the next frame.
    assert events.executed == [(2, "set_threshold")]
    assert e.open_ids() == [1]
    events = e.frame(e.batch(E, Increment(1)))
    assert events.executed == [(1, "set_proposer")]


def test_a_lower_id_raising_the_threshold_holds_back_a_higher_one() -> None:
    e = Entity([1, 1, 1, 1], 3)
    events = e.frame(
        e.propose(A, SetThreshold(4)),
        e.propose(A, RemoveSigner(IDS[D])),  # valid when proposed: total 3 >= threshold 3
        e.vote(B, 1, 2),
        e.vote(C, 1, 2),
    )
    # 2's three votes no longer reach threshold 4; it stays open.
    assert events.executed == [(1, "set_threshold")]
    assert events.voided == []
    assert e.open_ids() == [2]
    assert e.state.config.threshold == 4


def test_an_action_no_longer_valid_when_it_executes_is_voided() -> None:
    e = Entity([1, 1, 1, 1], 3)
    events = e.frame(
        e.propose(A, RemoveSigner(IDS[D])),
        e.propose(A, SetThreshold(4)),  # valid now, not once D is gone
        e.propose(A, SetShares(IDS[D], 2)),
        e.vote(B, 1, 2, 3),
        e.vote(C, 1, 2, 3),
    )
    assert events.executed == [(1, "remove_signer")]
    assert [pid for pid, _ in events.voided] == [2, 3]
    assert "threshold" in events.voided[0][1]
    assert "not a signer" in events.voided[1][1]
    assert e.open_ids() == []  # voided proposals close
    assert e.state.config.ids == tuple(IDS[:3])
    assert e.state.config.threshold == 3


def test_two_additions_of_one_key_void_the_second() -> None:
    e = Entity([1, 1, 1], 3)
    events = e.frame(
        e.propose(A, add(D)), e.propose(B, add(D)), e.vote(C, 1, 2), e.vote(B, 1), e.vote(A, 2)
    )
    assert events.executed == [(1, "add_signer")]
    assert events.voided == [(2, "add_signer: already a signer")]


def test_removing_the_proposer_changed_after_proposing_is_voided() -> None:
    e = Entity([1, 1, 1, 1], 3)
    e.frame(e.propose(B, RemoveSigner(IDS[D])), e.vote(C, 1))  # 2 of 3 votes
    e.frame(e.propose(A, SetProposer(IDS[D])), e.vote(B, 2), e.vote(C, 2))
    assert e.state.config.proposer == IDS[D]
    events = e.frame(e.vote(A, 1))
    assert events.voided == [
        (1, "remove_signer: the proposer cannot be removed; change the proposer first")
    ]
    assert e.state.config.ids == tuple(IDS[:4])


# Rule 5: signer-set changes keep proposals open; votes counted with the current config --


def test_a_removed_signers_vote_stops_counting() -> None:
    e = Entity([1, 1, 1, 1], 3)
    e.frame(e.propose(C, SetProposer(IDS[B])), e.vote(D, 1))  # 1: C + D
    e.frame(e.propose(A, RemoveSigner(IDS[D])), e.vote(B, 2), e.vote(C, 2))
    assert e.state.config.ids == tuple(IDS[:3])
    assert e.open_ids() == [1]  # kept open
    assert e.votes(1) == tuple(sorted((IDS[C], IDS[D])))  # D's vote kept, not counted
    events = e.frame(e.vote(A, 1))  # A + C = 2 < 3; with D it would be 3
    assert events.executed == []
    events = e.frame(e.vote(B, 1))
    assert events.executed == [(1, "set_proposer")]


def test_a_new_share_weight_counts_at_once() -> None:
    e = Entity([1, 1, 1, 1], 3)
    e.frame(e.propose(B, SetProposer(IDS[C])), e.vote(C, 1))  # 1: B + C = 2 of 3
    e.frame(e.propose(A, SetShares(IDS[B], 2)), e.vote(C, 2))  # 2: A + C, not yet
    assert e.open_ids() == [1, 2]
    events = e.frame(e.vote(D, 2))  # 2 executes: total 5, threshold 3 still valid
    assert events.executed == [(2, "set_shares")]
    assert e.open_ids() == [1]
    events = e.frame(e.batch(A, Increment(1)))  # no new vote: B's weight 2 + C = 3
    assert events.executed == [(1, "set_proposer")]


def test_a_new_signer_can_vote_on_proposals_opened_before_it_joined() -> None:
    e = Entity([1, 1, 1], 3)
    e.frame(e.propose(B, SetProposer(IDS[B])), e.vote(C, 1))  # 2 of 3
    e.frame(e.propose(A, add(D)), e.vote(B, 2), e.vote(C, 2))  # total 4, threshold 3
    assert e.state.config.ids == tuple(IDS[:4])
    events = e.frame(e.vote(D, 1))
    assert events.executed == [(1, "set_proposer")]


# Batches: membership, nonces, signatures ---------------------------------------------


def test_batches_from_non_members_are_refused() -> None:
    e = Entity([1, 1, 1], 2)
    e.refused(e.batch(E, Increment(1)), match="not a signer")
    e.refused(e.batch(A, Increment(1)), e.batch(E, Increment(1)), match="not a signer")
    assert e.state.counter == 0


def test_nonces_replay_and_gap_are_refused() -> None:
    e = Entity([1, 1, 1], 2)
    first = e.batch(A, Increment(1))
    e.frame(first)
    assert e.state.nonce_of(IDS[A]) == 1
    e.refused(first, match="nonce 1, expected 2")  # replay
    e.refused(e.batch(A, Increment(1), nonce=3), match="nonce 3, expected 2")  # gap
    e.refused(e.batch(B, Increment(1), nonce=0), match="nonce 0, expected 1")
    second = e.batch(A, Increment(1))
    e.refused(second, second, match="nonce 2, expected 3")  # replay in one frame
    e.frame(second, e.batch(A, Increment(2), nonce=3))  # two in order in one frame
    assert e.state.nonce_of(IDS[A]) == 3
    assert e.state.counter == 4
    assert e.state.nonces == ((IDS[A], 3),)


def test_nonces_are_kept_after_removal_and_readdition() -> None:
    e = Entity([1, 1, 1, 1], 3)
    e.frame(e.batch(D, Increment(1)), e.batch(D, Increment(1)))
    e.frame(e.propose(A, RemoveSigner(IDS[D])), e.vote(B, 1), e.vote(C, 1))
    assert IDS[D] not in e.state.config.index
    assert e.state.nonce_of(IDS[D]) == 2
    e.refused(e.batch(D, Increment(1)), match="not a signer")  # a removed signer
    e.frame(e.propose(A, add(D)), e.vote(B, 2), e.vote(C, 2))
    assert e.state.config.ids[-1] == IDS[D]
    e.refused(e.batch(D, Increment(1), nonce=1), match="nonce 1, expected 3")
    e.frame(e.batch(D, Increment(5), nonce=3))
    assert e.state.nonce_of(IDS[D]) == 3
    assert e.state.counter == 7


def test_bad_signatures_are_refused_when_verifying() -> None:
    e = Entity([1, 1, 1], 2)
    good = e.batch(A, Increment(1))
    wrong_msg = Batch.make(IDS[A], 1, good.txs, bls.sign(SKS[A], b"something else"))
    garbage = Batch.make(IDS[A], 1, good.txs, b"\x00" * 96)
    tampered = Batch.make(IDS[A], 1, [Tx.of(Increment(100))], good.signature)
    for bad in (wrong_msg, garbage, tampered):
        with pytest.raises(FrameInvalid, match="bad batch signature"):
            execute(e.state, [bad])
    # Without verification (a replica re-running its own checked frame) they pass.
    assert execute(e.state, [garbage], verify=False)[0].counter == 1
    other = genesis(e.state.config, b"\x01" * 32)  # same config, another entity
    with pytest.raises(FrameInvalid, match="bad batch signature"):
        execute(other, [good])
    e.frame(good)


def test_a_batch_signed_by_one_signer_claiming_another_is_refused() -> None:
    e = Entity([1, 1, 1], 2)
    e.frame(e.propose(A, SetProposer(IDS[C])))
    forged = sign_batch(e.state.entity_id, SKS[A], IDS[B], 1, [Tx.of(Vote(1))])
    with pytest.raises(FrameInvalid, match="bad batch signature"):
        execute(e.state, [forged])
    # The same vote from B's own key counts.
    events = e.frame(e.vote(B, 1))
    assert events.executed == [(1, "set_proposer")]


def test_counter_overflow_is_refused() -> None:
    e = Entity([1, 1, 1], 2)
    e.state = replace(e.state, counter=UINT64_MAX - 2)
    e.refused(e.batch(A, Increment(3)), match="overflow")
    e.refused(e.batch(A, Increment(1)), e.batch(B, Increment(2)), match="overflow")
    e.frame(e.batch(A, Increment(2)))
    assert e.state.counter == UINT64_MAX
    e.refused(e.batch(A, Increment(1)), match="overflow")


def test_a_refused_frame_leaves_the_state_unchanged() -> None:
    e = Entity([1, 1, 1], 2)
    e.frame(e.propose(A, SetThreshold(3)))
    before = e.state.encoded
    with pytest.raises(FrameInvalid):
        execute(e.state, [e.vote(B, 1), e.batch(C, Increment(1)), e.vote(B, 1)])
    assert e.state.encoded == before


# Identity and encoding ------------------------------------------------------------------


def test_entity_id_derivation() -> None:
    cfg = config([1, 2, 3], 4, proposer=B)
    members = [[PKS[0], 1], [PKS[1], 2], [PKS[2], 3]]
    expected = eth_keccak(rlp.encode([b"XLN/entity-id/v1", [members, 4, IDS[B]], SALT]))
    assert entity_id_for(cfg, SALT) == expected
    assert genesis(cfg, SALT).entity_id == expected
    assert entity_id_for(cfg, b"\x00" * 32) != expected
    assert entity_id_for(config([1, 2, 3], 4, proposer=C), SALT) != expected
    assert entity_id_for(config([1, 2, 3], 5, proposer=B), SALT) != expected
    assert IDS[A] == eth_keccak(PKS[A])


def test_genesis_state() -> None:
    s = genesis(config([1, 1, 1], 2), SALT)
    assert (s.height, s.counter, s.proposals, s.next_proposal_id, s.nonces) == (0, 0, (), 1, ())


def test_state_encode_decode_round_trip() -> None:
    e = Entity([1, 2, 1, 1], 4)
    e.frame(
        e.propose(A, add(E, 2), expires_at=50),
        e.propose(B, RemoveSigner(IDS[D])),
        e.vote(C, 2),  # B (2) + C (1) = 3 < 4: open
        e.batch(D, Increment(7)),
    )
    e.frame(e.propose(C, SetShares(IDS[C], 3)), e.propose(C, SetProposer(IDS[C])))
    e.frame(e.propose(A, SetThreshold(5), expires_at=e.next_height + 1))
    s = e.state
    assert [p.id for p in s.proposals] == [1, 2, 3, 4, 5]
    assert s.counter == 7
    back = EntityState.from_item(decode(s.encoded))
    assert back == s
    assert back.encoded == s.encoded
    assert back.hash == s.hash == eth_keccak(s.header)
    # The header is the encoding with the Merkle roots of the channels and of the
    # forwards in their places (none here: the empty map's root, 32 zero bytes).
    tree = decode(s.encoded)
    assert isinstance(tree, list)
    assert tree[10] == tree[11] == []
    assert decode(s.header) == [*tree[:10], bytes(32), bytes(32), *tree[12:]]
    # A different state hashes differently.
    assert replace(s, counter=s.counter + 1).hash != s.hash


def test_batch_decode_round_trip() -> None:
    e = Entity([1, 1, 1], 2)
    b = e.batch(A, Increment(3), Propose(add(D), 9), Vote(1))
    back = Batch.decode(b.raw)
    assert back == b
    assert back.message(e.state.entity_id) == b.message(e.state.entity_id)


# The proposer's filter ------------------------------------------------------------------


def test_select_batches_keeps_valid_batches_in_order_and_reports_the_others() -> None:
    e = Entity([1, 1, 1], 2)
    e.frame(e.propose(A, SetThreshold(3)))  # A's nonce is now 1
    a2 = e.batch(A, Increment(1), nonce=2)
    b_bad_sig = Batch.make(IDS[B], 1, [Tx.of(Increment(1))], b"\x00" * 96)
    a4_future = e.batch(A, Increment(4), nonce=4)
    outsider = e.batch(E, Increment(1), nonce=1)
    c_bad = e.batch(C, Increment(100), Vote(9), nonce=1)  # its increment must not stick
    a3 = e.batch(A, Increment(2), nonce=3)
    b1 = e.batch(B, Vote(1), nonce=1)
    b2_double = e.batch(B, Vote(1), nonce=2)
    candidates = [a2, b_bad_sig, a4_future, outsider, c_bad, a3, a2, b1, b2_double]
    kept, rejected = select_batches(e.state, candidates)
    assert kept == [a2, a3, b1]  # a4 is in the future when met: neither kept nor rejected
    assert [b for b, _ in rejected] == [b_bad_sig, outsider, c_bad, a2, b2_double]
    reasons = [r for _, r in rejected]
    assert "bad batch signature" in reasons[0]
    assert "not a signer" in reasons[1]
    assert "no open proposal 9" in reasons[2]
    assert "nonce 2, expected 4" in reasons[3]  # the replay
    assert "already voted" in reasons[4]
    post, events = execute(e.state, kept)
    assert post.counter == 3
    assert events.executed == [(1, "set_threshold")]
    # The future batch is kept once its predecessor is in.
    assert select_batches(post, [a4_future]) == ([a4_future], [])


def test_select_batches_on_an_all_valid_pool_keeps_everything() -> None:
    e = Entity([1, 1, 1], 3)
    pool = [e.batch(A, Increment(1)), e.propose(B, add(D)), e.vote(C, 1), e.batch(A, Vote(1))]
    kept, rejected = select_batches(e.state, pool)
    assert kept == pool
    assert rejected == []


def test_any_valid_threshold_can_be_proposed_through_the_wire() -> None:
    # 600 members of MAX_SHARES: every valid threshold exceeds 2**40 (the total is ~2**41.2).
    members = tuple(Member(i.to_bytes(48, "big"), MAX_SHARES) for i in range(1, 601))
    total = 600 * MAX_SHARES
    cfg = Config(members, total, members[0].id)
    state = genesis(cfg, SALT)
    threshold = total // 2 + 1
    assert threshold > 2**40
    raw = Tx.of(Propose(SetThreshold(threshold), 5)).raw
    tx = ENTITY_TXS.decode(decode(raw), raw)
    batch = Batch.make(members[0].id, 1, [tx], b"\x00" * 96)
    post, events = execute(state, [batch], verify=False)
    assert events.executed == []
    assert post.proposals[0].action == SetThreshold(threshold)


def test_a_one_of_one_entity_grows_to_two_of_two_in_one_proposal() -> None:
    e = Entity([1], 1)
    e.refused(e.propose(A, add(B)), match="must exceed half")  # alone: 1 of 2 shares
    grow = AddSigner(PKS[B], POPS[B], 1, threshold=2)
    events = e.frame(e.propose(A, grow))
    assert events.executed == [(1, "add_signer")]
    c = e.state.config
    assert (c.ids, c.threshold) == ((IDS[A], IDS[B]), 2)
    e.refused(e.propose(A, AddSigner(PKS[C], POPS[C], 1, threshold=1)), match="exceed half")


def test_add_signer_encodes_its_threshold_only_when_given() -> None:
    plain, grow = add(B), AddSigner(PKS[B], POPS[B], 1, threshold=2)
    assert len(governance.action_tree(plain)) == 4  # as before: kind and three fields
    assert len(governance.action_tree(grow)) == 5
    for action in (plain, grow):
        tree = governance.action_tree(action)
        assert governance.action_from_item(decode(encode_tree(tree))) == action
    with pytest.raises(DecodeError, match="3 or 4 fields"):
        governance.action_from_item(decode(encode_tree(governance.action_tree(grow)[:3])))
    with pytest.raises(DecodeError, match="exceed the cap"):
        governance.action_from_item(decode(encode_tree([*governance.action_tree(grow), b"\x01"])))
