"""Consensus among replicas (node/machines/replica/), pure, in one process.

A small harness plays the network and the coordinator (node/coordinator.py):
``Send`` effects become inputs of the target replica's next step; ``ProposeFrame``
asks the proposer's agent (a real :class:`Agent` with its LevelDB guard) to
approve, records the approval on the proposer's replica and hands the proposal
to the other members; a member answers a proposal when ``check_proposal`` accepts
it and its agent approves, sending the approval to the round's proposer. On a
``PrecommitDue`` (a polka) the member's agent pre-commits: the pre-commit goes to
the round's proposer and a ``SeenLock`` (the frame with its polka) to its own
replica. Every step checks that the replica's encoding round-trips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.agent import Agent, Refused
from node.codec import ZERO_HASH
from node.crypto import bls
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.entity import (
    Batch,
    Increment,
    Propose,
    Vote,
    Withdraw,
    is_withdrawal,
    sign_batch,
)
from node.machines.frames import (
    Certificate,
    Frame,
    Polka,
    aggregate_approvals,
    bitfield,
    signers_of,
    verify_certificate,
)
from node.machines.governance import Config, Member, RemoveSigner, signer_id
from node.machines.outcomes import Outcomes
from node.machines.replica import (
    Approve,
    Commit,
    Committed,
    Effect,
    Genesis,
    Lock,
    Note,
    PolkaNotice,
    Precommit,
    PrecommitDue,
    ProposeFrame,
    Replica,
    RoundChange,
    SeenLock,
    Send,
    SubmitBatch,
    Timeout,
)
from node.txs import Tx, TxBody
from tests.node.machines.test_outcomes import Counting

N_KEYS = 6
SKS = [bls.keygen(bytes([i + 1]) * 32) for i in range(N_KEYS)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
POPS = [bls.pop_prove(sk) for sk in SKS]
A, B, C, D, E = range(5)
SALT = b"\x3c" * 32


@dataclass
class StepRecord:
    who: int
    inputs: tuple[Tx, ...]
    effects: list[Effect]
    encoded: bytes


@dataclass
class Proposal:
    to: int
    frame: Frame
    round: int
    signature: bytes
    valid: Polka | None = None


@dataclass
class Net:
    """``len(shares)`` signers (keys 0, 1, ...) each with its replica and its agent."""

    guard_root: Path
    shares: list[int]
    threshold: int
    proposer: int = A
    replicas: dict[int, Replica] = field(default_factory=dict)
    inbox: dict[int, list[Tx]] = field(default_factory=dict)
    agents: dict[int, Agent] = field(default_factory=dict)
    proposals: list[Proposal] = field(default_factory=list)
    down: set[int] = field(default_factory=set)  # silent: not stepped, proposals to them lost
    history: list[StepRecord] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    # The coordinators' memo: (member, frame hash) -> the frame it approved.
    approved: dict[tuple[int, bytes], Frame] = field(default_factory=dict)
    # Members whose agents are asked nothing (their person has not decided yet).
    undecided: set[int] = field(default_factory=set)
    nonces: dict[int, int] = field(default_factory=dict)
    # One cache of frame outcomes for every replica (all on one server), or none.
    outcomes: Outcomes | None = None

    def __post_init__(self) -> None:
        n = len(self.shares)
        members = tuple(Member(PKS[i], s) for i, s in enumerate(self.shares))
        self.config = Config(members, self.threshold, IDS[self.proposer])
        self.genesis = Genesis(self.config, SALT, tuple(POPS[:n]))
        for i in range(n):
            self.replicas[i] = rep.create(IDS[i], self.genesis)
            self.inbox[i] = []
            self.agents[i] = Agent(SKS[i], self.guard_root / f"agent-{i}")

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()

    @property
    def entity_id(self) -> bytes:
        return self.replicas[A].entity_id

    def batch(self, who: int, *bodies: TxBody) -> Batch:
        self.nonces[who] = self.nonces.get(who, 0) + 1
        return sign_batch(
            self.entity_id, SKS[who], IDS[who], self.nonces[who], [Tx.of(b) for b in bodies]
        )

    def submit(self, at: int, *batches: Batch) -> None:
        self.inbox[at].extend(Tx.of(SubmitBatch(b)) for b in batches)

    def step(self, who: int, *extra: Tx) -> list[Effect]:
        inputs = (*self.inbox[who], *extra)
        self.inbox[who] = []
        replica, effects = rep.step(self.replicas[who], inputs, outcomes=self.outcomes)
        again = Replica.decode(replica.encoded)
        assert again == replica
        assert again.encoded == replica.encoded
        self.replicas[who] = replica
        self.history.append(StepRecord(who, inputs, effects, replica.encoded))
        for effect in effects:
            self._carry_out(who, effect)
        return effects

    def _carry_out(self, who: int, effect: Effect) -> None:
        match effect:
            case Send(to=to, tx=tx):
                self.inbox[IDS.index(to)].append(tx)
            case ProposeFrame(frame=frame, round=round_, members=members, valid=valid):
                if who in self.down:
                    return
                approval = self.approve(who, frame, round_, valid)
                if approval is None:
                    return
                self.inbox[who].append(
                    Tx.of(Approve(frame.height, round_, frame.hash, IDS[who], approval))
                )
                for member in members:
                    if member != IDS[who]:
                        self.proposals.append(
                            Proposal(IDS.index(member), frame, round_, approval, valid)
                        )
            case PrecommitDue() as due:
                if who not in self.down:
                    self.precommit(who, due)

    def approve(self, who: int, frame: Frame, round_: int, valid: Polka | None) -> bytes | None:
        config = self.replicas[who].entity.config
        try:
            approval = self.agents[who].approve(frame.raw, round_, config, valid)
        except Refused as exc:
            self.refusals.append((who, str(exc)))
            return None
        self.approved[(who, frame.hash)] = frame
        return approval

    def precommit(self, who: int, due: PrecommitDue) -> None:
        frame = self.approved.get((who, due.frame_hash))
        if frame is None:
            return
        round_ = due.polka.round
        config = self.replicas[who].entity.config
        try:
            signed = self.agents[who].sign_precommit(
                frame.entity_id, frame.height, round_, frame.hash, due.polka, config
            )
        except Refused as exc:
            self.refusals.append((who, str(exc)))
            return
        pc = Precommit(frame.height, round_, frame.hash, IDS[who], signed.precommit, signed.outbox)
        self.inbox[IDS.index(due.proposer)].append(Tx.of(pc))
        self.inbox[who].append(Tx.of(SeenLock(Lock(round_, frame, due.polka))))

    def answer(self, p: Proposal) -> str | None:
        """What the coordinator does with a proposal for member ``p.to``."""
        r = self.replicas[p.to]
        reason = rep.check_proposal(r, p.frame, p.round, p.signature, outcomes=self.outcomes)
        if reason is not None:
            self.refusals.append((p.to, reason))
            return reason
        approval = self.approve(p.to, p.frame, p.round, p.valid)
        if approval is None:
            return f"agent: {self.refusals[-1][1]}"
        f = p.frame
        proposer = IDS.index(r.entity.config.proposer_at(p.round))
        self.inbox[proposer].append(Tx.of(Approve(f.height, p.round, f.hash, IDS[p.to], approval)))
        return None

    def answer_proposals(self, only: set[int] | None = None) -> bool:
        """Answer the queued proposals (those for members in ``only``, if given); a
        proposal above the member's next height waits, as the coordinator defers it."""
        answered = False
        waiting = []
        for p in self.proposals:
            if p.to in self.down or (only is not None and p.to not in only):
                continue  # lost
            if p.to in self.undecided:
                waiting.append(p)
                continue
            if p.frame.height > self.replicas[p.to].next_height:
                waiting.append(p)
                continue
            self.answer(p)
            answered = True
        self.proposals = waiting
        return answered

    def run(self, max_rounds: int = 100) -> None:
        """Deliver everything until nothing moves."""
        for _ in range(max_rounds):
            moved = False
            for who in sorted(self.inbox):
                if who not in self.down and self.inbox[who]:
                    self.step(who)
                    moved = True
            moved = self.answer_proposals() or moved
            if not moved:
                return
        raise AssertionError("the network did not settle")

    def effects_of(self, who: int) -> list[Effect]:
        return [e for rec in self.history if rec.who == who for e in rec.effects]

    def committed(self, who: int) -> list[Committed]:
        return [e for e in self.effects_of(who) if isinstance(e, Committed)]

    def notes(self, who: int) -> list[Note]:
        return [e for e in self.effects_of(who) if isinstance(e, Note)]

    def live(self) -> list[Replica]:
        return [r for i, r in sorted(self.replicas.items()) if i not in self.down]

    def replay(self) -> None:
        """Fresh replicas given the same inputs in the same order: byte-identical states
        and equal effects at every step."""
        fresh = {i: rep.create(IDS[i], self.genesis) for i in self.replicas}
        for rec in self.history:
            fresh[rec.who], effects = rep.step(fresh[rec.who], rec.inputs)
            assert fresh[rec.who].encoded == rec.encoded
            assert effects == rec.effects
        assert {i: r.encoded for i, r in fresh.items()} == {
            i: r.encoded for i, r in self.replicas.items()
        }


@pytest.fixture
def make_net(tmp_path: Path) -> Iterator[Callable[..., Net]]:
    nets: list[Net] = []

    def make(
        shares: list[int], threshold: int, proposer: int = A, outcomes: Outcomes | None = None
    ) -> Net:
        net = Net(tmp_path / f"net-{len(nets)}", shares, threshold, proposer, outcomes=outcomes)
        nets.append(net)
        return net

    yield make
    for net in nets:
        net.close()


def approve_tx(who: int, frame: Frame, round_: int = 0) -> Tx:
    signature = bls.sign(SKS[who], frame.approval_message(round_))
    return Tx.of(Approve(frame.height, round_, frame.hash, IDS[who], signature))


def reach_polka(net: Net, frame: Frame, *approvers: int) -> Polka:
    """The proposer (A, which approved its proposal) gathers the approvals of
    ``approvers``: its polka; its own pre-commit and lock wait in its inbox."""
    net.step(A, *(approve_tx(w, frame) for w in approvers))
    pending = net.replicas[A].pending
    assert pending is not None
    assert pending.polka is not None
    return pending.polka


def sign_pc(who: int, frame: Frame, round_: int) -> Tx:
    """An honest pre-commit by ``who``, made with its key directly (no agent), with its
    signature over each outgoing hash of the frame."""
    sig = bls.sign(SKS[who], frame.message(round_))
    outbox = tuple(bls.sign(SKS[who], o.hash) for o in frame.outbox)
    return Tx.of(Precommit(frame.height, round_, frame.hash, IDS[who], sig, outbox))


def cert_of(
    frame: Frame, round_: int, slots: list[int], size: int, keys: list[int] | None = None
) -> Certificate:
    """A certificate with ``slots`` set, aggregating the signatures of ``keys``
    (the same members unless given)."""
    sigs = [bls.sign(SKS[k], frame.message(round_)) for k in (keys if keys is not None else slots)]
    return Certificate(round_, bitfield(slots, size), bls.aggregate(sigs))


def next_frame(r: Replica, *batches: Batch, state_hash: bytes | None = None) -> Frame:
    """The honest frame at ``r``'s next height holding ``batches``."""
    if state_hash is None:
        post, _ = ent.execute(r.entity, batches, verify=False)
        state_hash = post.hash
    return Frame.make(r.entity_id, r.next_height, r.head, batches, state_hash)


def only(effects: list[Effect], kind: type[ProposeFrame]) -> ProposeFrame:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


def messages(notes: list[Note]) -> list[str]:
    return [n.message for n in notes]


# Happy path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "threshold"),
    [([1, 1, 1, 1], 3), ([3, 2, 1, 1], 4)],
    ids=["equal", "unequal"],
)
def test_batch_at_a_non_proposer_is_forwarded_framed_certified_and_applied(
    make_net: Callable[..., Net], shares: list[int], threshold: int
) -> None:
    net = make_net(shares, threshold)
    b = net.batch(B, Increment(5))
    net.submit(B, b)
    assert net.step(B) == [Send(IDS[A], Tx.of(SubmitBatch(b)))]
    assert net.replicas[B].pool == (b,)

    proposal = only(net.step(A), ProposeFrame)
    frame = proposal.frame
    assert proposal.round == 0
    assert proposal.members == net.config.ids
    assert (frame.height, frame.prev_hash, frame.batches) == (1, ZERO_HASH, (b,))
    assert (net.agents[A].approved, net.agents[A].signed) == (1, 0)  # no lock before a polka

    net.run()
    replicas = net.live()
    assert {r.entity.hash for r in replicas} == {frame.state_hash}
    assert {r.head for r in replicas} == {frame.hash}
    for i, r in enumerate(replicas):
        assert (r.entity.height, r.entity.counter, r.round) == (1, 5, 0)
        assert r.entity.nonce_of(IDS[B]) == 1
        assert (r.pool, r.pending, r.lock, r.changes) == ((), None, None, ())
        assert [c.frame for c in net.committed(i)] == [frame]
        assert net.agents[i].signed == 1
    assert net.refusals == []

    cert = replicas[A].cert
    assert cert is not None
    assert {r.cert for r in replicas} == {cert}
    assert cert.round == 0
    assert verify_certificate(net.config, frame, cert) is None
    signed = signers_of(net.config, cert)
    assert sum(shares[i] for i in signed) >= threshold
    # And checked by the pure-Python reference alone, from the raw bytes.
    py_ecc = bls.get_backend("py_ecc")
    assert py_ecc.fast_aggregate_verify([PKS[i] for i in signed], frame.message(0), cert.signature)
    assert not py_ecc.fast_aggregate_verify(
        [PKS[i] for i in signed], frame.message(1), cert.signature
    )
    net.replay()


BUG_EVENTS = (
    "regression (fixed): the proposer's Committed effect carries empty FrameEvents "
    "(consensus._try_commit passes ent.FrameEvents() instead of the frame's events)"
)


def test_committed_events_are_the_same_on_every_replica(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1], 2)
    net.submit(A, net.batch(A, Propose(RemoveSigner(IDS[C]), 5)), net.batch(B, Vote(1)))
    net.run()
    assert len({r.entity.hash for r in net.live()}) == 1
    assert len(net.live()[A].entity.config.members) == 2
    # Every replica but the proposer re-executes the frame, and reports its events.
    for who in (B, C):
        (committed,) = net.committed(who)
        assert committed.events.executed == [(1, "remove_signer")]
    (at_proposer,) = net.committed(A)
    assert at_proposer.events.executed == [(1, "remove_signer")], BUG_EVENTS


# Pipelining -------------------------------------------------------------------------------


def test_pipelined_batches_heights_advance_and_nothing_applies_twice(
    make_net: Callable[..., Net],
) -> None:
    net = make_net([1, 1, 1], 2)
    b1 = net.batch(A, Increment(1))
    net.submit(A, b1)
    first = only(net.step(A), ProposeFrame).frame
    # While frame 1 is in flight: more batches, one with a nonce ahead of its turn.
    b2 = net.batch(B, Increment(2))
    b3 = net.batch(B, Increment(3))
    b4 = net.batch(C, Increment(4))
    net.submit(B, b3, b2)
    net.submit(C, b4)
    net.step(B)
    net.step(C)
    assert not [e for e in net.step(A) if isinstance(e, ProposeFrame)]  # one frame at a time
    pending = net.replicas[A].pending
    assert pending is not None
    assert pending.frame == first
    assert [b.raw for b in net.replicas[A].pool] == [b1.raw, b3.raw, b2.raw, b4.raw]

    net.run()
    frames = [c.frame for c in net.committed(A)]
    assert [f.height for f in frames] == [1, 2, 3]
    assert frames[0] == first
    assert [f.batches for f in frames] == [(b1,), (b2, b4), (b3,)]  # b3 waits for b2
    for prev, f in zip([None, *frames], frames, strict=False):
        assert f.prev_hash == (prev.hash if prev else ZERO_HASH)
    # Frame 2 was proposed in the same step that committed frame 1.
    at_a = [rec.effects for rec in net.history if rec.who == A]
    assert any(
        [type(e) for e in effects if isinstance(e, Committed | ProposeFrame)]
        == [Committed, ProposeFrame]
        for effects in at_a
    )
    applied = [b.raw for f in frames for b in f.batches]
    assert sorted(applied) == sorted({b.raw for b in (b1, b2, b3, b4)})
    for i, r in enumerate(net.live()):
        assert [c.frame.height for c in net.committed(i)] == [1, 2, 3]
        assert r.entity.counter == 1 + 2 + 3 + 4
        assert dict(r.entity.nonces) == {IDS[A]: 1, IDS[B]: 2, IDS[C]: 1}
        assert (r.pool, r.pending) == ((), None)
        assert r.head == frames[-1].hash

    # A batch replayed, and a commit delivered again, change nothing.
    before = {i: r.encoded for i, r in net.replicas.items()}
    net.submit(A, b2)
    effects = net.step(A)
    assert messages([e for e in effects if isinstance(e, Note)]) == ["batch nonce 1 already used"]
    assert len(effects) == 1
    assert net.step(B, Tx.of(Commit(frames[0], net.committed(A)[0].cert))) == []
    assert {i: r.encoded for i, r in net.replicas.items()} == before
    net.replay()


def test_a_batch_from_a_non_signer_is_not_pooled(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1], 2)
    outsider = sign_batch(net.entity_id, SKS[E], IDS[E], 1, [Tx.of(Increment(1))])
    effects = net.step(B, Tx.of(SubmitBatch(outsider)))
    assert effects == [Note(0, "batch from a signer not in the entity")]
    assert net.replicas[B].pool == ()


def test_a_resent_batch_is_pooled_once(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1], 2)
    b = net.batch(C, Increment(1))
    effects = net.step(B, Tx.of(SubmitBatch(b)), Tx.of(SubmitBatch(b)))
    assert effects == [Send(IDS[A], Tx.of(SubmitBatch(b)))]
    assert net.replicas[B].pool == (b,)


# Byzantine pre-commits ------------------------------------------------------------------------


def test_byzantine_precommits_are_never_counted(
    make_net: Callable[..., Net], monkeypatch: pytest.MonkeyPatch
) -> None:
    net = make_net([1, 1, 1, 1], 3)
    checked: list[int] = []  # the number of keys of each verification
    real_verify = bls.fast_aggregate_verify_keys

    def spy(keys: Sequence[bls.PublicKey], msg: bytes, sig: bytes) -> bool:
        checked.append(len(keys))
        return real_verify(keys, msg, sig)

    monkeypatch.setattr(bls, "fast_aggregate_verify_keys", spy)
    net.submit(A, net.batch(A, Increment(1)))
    frame = only(net.step(A), ProposeFrame).frame
    net.proposals.clear()  # the tests play the other members by hand
    reach_polka(net, frame, B, C)
    other = Frame.make(frame.entity_id, 1, ZERO_HASH, frame.batches, b"\x01" * 32)
    honest_b = sign_pc(B, frame, 0)
    b_signs_garbage = Tx.of(Precommit(1, 0, frame.hash, IDS[B], bls.sign(SKS[B], b"junk")))
    d_bad_sig = Tx.of(Precommit(1, 0, frame.hash, IDS[D], bls.sign(SKS[D], frame.message(1))))
    inputs = [
        sign_pc(C, other, 0),  # 2: over another frame
        sign_pc(E, frame, 0),  # 3: not a member
        honest_b,  # 4
        honest_b,  # 5: duplicate
        b_signs_garbage,  # 6: duplicate slot, another signature
        sign_pc(C, frame, 1),  # 7: a round with no frame in flight
        d_bad_sig,  # 8: checked on arrival, never counted
    ]
    checked.clear()
    effects = net.step(A, *inputs)
    notes = [e for e in effects if isinstance(e, Note)]
    assert [(n.index, n.message) for n in notes] == [
        (2, f"precommit from {IDS[C].hex()[:16]} for a different frame"),
        (3, f"precommit from {IDS[E].hex()[:16]}, not a signer"),
        (5, f"duplicate precommit from {IDS[B].hex()[:16]}"),
        (6, f"duplicate precommit from {IDS[B].hex()[:16]}"),
        (7, "precommit at 1/1: no frame in flight there"),
        (8, f"invalid precommit signature from {IDS[D].hex()[:16]}; not counted"),
    ]
    assert not [e for e in effects if isinstance(e, Committed)]
    pending = net.replicas[A].pending
    assert pending is not None
    assert [slot for slot, _ in pending.sigs] == [A, B]  # D refused, B's first kept
    # A's own pre-commit (input 0) alone, its lock's polka (input 1) as an aggregate
    # of its three approvers, then B's and D's pre-commits, each checked alone as it
    # came; the copies of B's were not checked.
    assert checked == [1, 3, 1, 1]
    checked.clear()

    # An honest third pre-commit certifies the frame; the bad signer is not in it.
    effects = net.step(A, sign_pc(C, frame, 0))
    (committed,) = [e for e in effects if isinstance(e, Committed)]
    assert committed.frame == frame
    assert committed.cert.bits == bitfield([A, B, C], 4)
    assert checked == [1, 3]  # C's alone as it came, then the certificate's aggregate
    assert verify_certificate(net.config, frame, committed.cert) is None
    assert sorted(IDS.index(e.to) for e in effects if isinstance(e, Send)) == [B, C, D]
    # D's honest pre-commit, now late, is ignored quietly.
    assert net.step(A, sign_pc(D, frame, 0)) == []
    net.run()
    assert {r.head for r in net.live()} == {frame.hash}
    net.replay()


def test_a_forged_precommit_that_comes_first_keeps_no_slot(make_net: Callable[..., Net]) -> None:
    """A pre-commit takes its member's slot only once its signature verifies: a forgery
    "from" B that reaches the proposer first does not keep B's genuine one out."""
    net = make_net([1, 1, 1], 2)
    net.submit(A, net.batch(A, Increment(1)))
    frame = only(net.step(A), ProposeFrame).frame
    net.proposals.clear()
    reach_polka(net, frame, B)
    forged = Tx.of(Precommit(1, 0, frame.hash, IDS[B], bls.sign(SKS[C], frame.message(0))))
    effects = net.step(A, forged)  # after A's own pre-commit and lock (inputs 0, 1)
    assert [(n.index, n.message) for n in effects if isinstance(n, Note)] == [
        (2, f"invalid precommit signature from {IDS[B].hex()[:16]}; not counted")
    ]
    effects = net.step(A, sign_pc(B, frame, 0))
    (committed,) = [e for e in effects if isinstance(e, Committed)]
    assert committed.cert.bits == bitfield([A, B], 3)
    assert verify_certificate(net.config, frame, committed.cert) is None


def test_what_the_node_drops_as_stale_the_transition_ignores(
    make_net: Callable[..., Net],
) -> None:
    """``rep.stale`` (the node drops such peer messages on intake, before they cost a
    block) holds only for messages the transition ignores: the same replica, no
    effect. Messages about the next height are not stale."""
    net = make_net([1, 1, 1], 2)
    net.submit(A, net.batch(A, Increment(1)))
    frame = only(net.step(A), ProposeFrame).frame
    polka = reach_polka(net, frame, B)
    effects = net.step(A, sign_pc(B, frame, 0))
    (committed,) = [e for e in effects if isinstance(e, Committed)]
    r = net.replicas[A]
    assert (r.next_height, r.round) == (2, 0)
    old: list[TxBody] = [
        RoundChange(1, 5, IDS[B], None),
        Precommit(1, 0, frame.hash, IDS[C], bls.sign(SKS[C], frame.message(0))),
        approve_tx(C, frame).body,
        PolkaNotice(1, frame.hash, polka),
        Commit(frame, committed.cert),
        SeenLock(Lock(0, frame, polka)),
    ]
    for body in old:
        assert rep.stale(r, body), body
        after, out = rep.step(r, [Tx.of(body)])
        assert after == r
        assert out == []
    news = [RoundChange(2, 0, IDS[B], None), RoundChange(2, 1, IDS[B], None)]
    assert not any(rep.stale(r, body) for body in news)
    assert not rep.stale(r, SubmitBatch(net.batch(B, Increment(1))))


def test_a_malformed_signature_is_found_and_dropped(make_net: Callable[..., Net]) -> None:
    net = make_net([2, 1, 1], 3)
    net.submit(A, net.batch(A, Increment(1)))
    frame = only(net.step(A), ProposeFrame).frame
    net.proposals.clear()
    reach_polka(net, frame, C)
    garbage = Tx.of(Precommit(1, 0, frame.hash, IDS[B], b"\xff" * 96))  # not a G2 point
    effects = net.step(A, garbage)
    assert [n.message for n in effects if isinstance(n, Note)] == [
        f"invalid precommit signature from {IDS[B].hex()[:16]}; not counted"
    ]
    effects = net.step(A, sign_pc(C, frame, 0))
    (committed,) = [e for e in effects if isinstance(e, Committed)]
    assert committed.cert.bits == bitfield([A, C], 3)


def test_a_removed_signer_precommit_is_not_counted(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1, 1], 3)
    net.submit(A, net.batch(A, Propose(RemoveSigner(IDS[B]), 5)), net.batch(C, Vote(1)))
    net.submit(A, net.batch(D, Vote(1)))
    net.run()
    assert all(len(r.entity.config.members) == 3 for r in net.live())
    net.submit(A, net.batch(A, Increment(1)))
    proposal = only(net.step(A), ProposeFrame)
    assert proposal.members == (IDS[A], IDS[C], IDS[D])
    net.proposals.clear()
    effects = net.step(A, sign_pc(B, proposal.frame, 0))
    assert messages([e for e in effects if isinstance(e, Note)]) == [
        f"precommit from {IDS[B].hex()[:16]}, not a signer"
    ]


# Byzantine proposers -------------------------------------------------------------------------


def test_check_proposal_refuses_what_an_honest_signer_must_not_sign(
    make_net: Callable[..., Net],
) -> None:
    net = make_net([1, 1, 1], 2)
    first = net.batch(A, Increment(1))
    net.submit(A, first)
    net.run()
    r = net.replicas[B]
    assert r.entity.height == 1

    def sig(frame: Frame, round_: int = 0, by: int = A) -> bytes:
        return bls.sign(SKS[by], frame.approval_message(round_))

    def check(frame: Frame, round_: int = 0, by: int = A) -> str | None:
        return rep.check_proposal(r, frame, round_, sig(frame, round_, by))

    honest = next_frame(r, net.batch(A, Increment(2)))
    assert check(honest) is None
    rules = "proposal rejected by the entity rules: "

    # The frame's content.
    assert check(next_frame(r, honest.batches[0], state_hash=b"\x00" * 32)) == (
        "proposal's state hash differs from re-execution"
    )
    vote = sign_batch(r.entity_id, SKS[B], IDS[B], 1, [Tx.of(Vote(7))])
    assert check(next_frame(r, vote, state_hash=b"\x00" * 32)) == (
        rules + "tx 0 (vote): no open proposal 7"
    )
    assert check(next_frame(r, first, state_hash=b"\x00" * 32)) == (
        rules + "batch nonce 1, expected 2"
    )
    txs = [Tx.of(Increment(9))]
    forged = Batch.make(
        IDS[C],
        1,
        txs,
        bls.sign(SKS[B], ent.batch_message(r.entity_id, IDS[C], 1, [t.raw for t in txs])),
    )
    assert check(next_frame(r, forged)) == rules + "bad batch signature"
    outsider = sign_batch(r.entity_id, SKS[E], IDS[E], 1, txs)
    assert check(next_frame(r, outsider, state_hash=b"\x00" * 32)) == (
        rules + f"batch from {IDS[E].hex()[:16]}, not a signer"
    )

    # Where the frame sits.
    b = honest.batches
    off_head = Frame.make(r.entity_id, 2, b"\x07" * 32, b, honest.state_hash)
    assert check(off_head) == "proposal does not extend this replica's head"
    assert check(Frame.make(r.entity_id, 3, r.head, b, honest.state_hash)) == (
        "proposal at height 3, this replica is at 1"
    )
    assert check(Frame.make(r.entity_id, 1, ZERO_HASH, b, honest.state_hash)) == (
        "proposal at height 1, this replica is at 1"
    )
    assert check(Frame.make(b"\x09" * 32, 2, r.head, b, honest.state_hash)) == (
        "proposal for another entity"
    )

    # Who signed it.
    not_proposer = "proposal not approved by the round's proposer"
    assert rep.check_proposal(r, honest, 0, b"") == not_proposer
    precommit = bls.sign(SKS[A], honest.message(0))  # a pre-commit is no approval
    assert rep.check_proposal(r, honest, 0, precommit) == not_proposer
    assert rep.check_proposal(r, honest, 0, b"\x00" * 96) == not_proposer
    assert rep.check_proposal(r, honest, 0, sig(honest, 1)) == not_proposer  # another round
    assert rep.check_proposal(r, honest, 0, sig(off_head)) == not_proposer  # another frame
    assert check(honest, 0, by=B) == not_proposer
    assert check(honest, 0, by=E) == not_proposer
    assert check(honest, 1, by=A) == not_proposer  # round 1 is B's
    assert check(honest, 1, by=B) is None

    # A round behind the replica's.
    net.step(B, Tx.of(Timeout(2, 0)))
    r = net.replicas[B]
    assert r.round == 1
    assert check(honest, 0) == "proposal at round 0, this replica is at round 1"
    assert check(honest, 1, by=B) is None


def test_byzantine_proposal_gets_no_signature(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1], 2)
    r = net.replicas[B]
    b = net.batch(A, Increment(1))
    lie = next_frame(r, b, state_hash=b"\x66" * 32)
    for to in (B, C):
        net.proposals.append(Proposal(to, lie, 0, bls.sign(SKS[A], lie.approval_message(0))))
    net.run()
    lied = "proposal's state hash differs from re-execution"
    assert net.refusals == [(B, lied), (C, lied)]
    assert [(a.approved, a.signed) for a in net.agents.values()] == [(0, 0)] * 3
    assert all(r.entity.height == 0 for r in net.live())
    # The honest frame is still approvable: the refusal left nothing behind.
    honest = next_frame(r, b)
    approval = bls.sign(SKS[A], honest.approval_message(0))
    assert net.answer(Proposal(B, honest, 0, approval)) is None


# Commits --------------------------------------------------------------------------------------


def test_commits_that_do_not_certify_are_refused_and_change_nothing(
    make_net: Callable[..., Net],
) -> None:
    net = make_net([1, 1, 1, 1], 3)
    r = net.replicas[C]
    frame = next_frame(r, net.batch(A, Increment(1)))

    def refused(cert: Certificate, reason: str, f: Frame = frame) -> None:
        before = net.replicas[C].encoded
        effects = net.step(C, Tx.of(Commit(f, cert)))
        assert effects == [Note(0, reason)]
        assert net.replicas[C].encoded == before

    refused(
        cert_of(frame, 0, [A, B], 4),
        "commit refused: certificate holds 2 shares, below the threshold 3",
    )
    anything = bls.sign(SKS[A], frame.message(0))
    refused(
        Certificate(0, b"\x00", anything),
        "commit refused: certificate holds 0 shares, below the threshold 3",
    )
    bad = "commit refused: aggregate signature does not verify"
    refused(cert_of(frame, 0, [A, B, C], 4, keys=[A, B, D]), bad)  # D's signature in C's slot
    refused(cert_of(frame, 0, [A, B, C], 4, keys=[A, B]), bad)  # a slot without a signature
    moved = cert_of(frame, 0, [A, B, C], 4)
    refused(Certificate(1, moved.bits, moved.signature), bad)  # signed at round 0
    sigs = [bls.sign(SKS[A], frame.message(0)), bls.sign(SKS[B], frame.message(0))]
    sigs.append(bls.sign(SKS[C], b"not the frame"))
    refused(Certificate(0, bitfield([A, B, C], 4), bls.aggregate(sigs)), bad)
    refused(
        Certificate(0, b"\x07\x00", moved.signature),
        "commit refused: bitfield of 2 bytes for 4 signers",
    )
    refused(
        Certificate(0, b"\x17", moved.signature),
        "commit refused: bitfield has bits past the last signer",
    )

    # A frame certified by the threshold but wrong is refused all the same.
    lie = next_frame(r, *frame.batches, state_hash=b"\x66" * 32)
    refused(
        cert_of(lie, 0, [A, B, D], 4),
        "certified frame's state hash differs from this replica's",
        lie,
    )
    vote = sign_batch(r.entity_id, SKS[B], IDS[B], 1, [Tx.of(Vote(1))])
    broken = next_frame(r, vote, state_hash=b"\x66" * 32)
    refused(
        cert_of(broken, 0, [A, B, D], 4),
        "certified frame does not execute here: tx 0 (vote): no open proposal 1",
        broken,
    )
    elsewhere = Frame.make(b"\x09" * 32, 1, ZERO_HASH, frame.batches, frame.state_hash)
    refused(cert_of(elsewhere, 0, [A, B, D], 4), "commit for another entity", elsewhere)
    ahead = Frame.make(r.entity_id, 2, frame.hash, (), frame.state_hash)
    refused(
        cert_of(ahead, 0, [A, B, D], 4), "commit at height 2, expected 1; catch up first", ahead
    )
    fork = Frame.make(r.entity_id, 1, b"\x05" * 32, frame.batches, frame.state_hash)
    refused(cert_of(fork, 0, [A, B, D], 4), "commit does not extend this replica's head", fork)

    # The real certificate, at any round, applies.
    effects = net.step(C, Tx.of(Commit(frame, cert_of(frame, 3, [B, C, D], 4))))
    assert [type(e) for e in effects] == [Committed]
    assert net.replicas[C].head == frame.hash
    net.replay()


def test_a_certificate_of_a_stale_signer_set_is_refused(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1, 1], 3)
    old = net.config
    # Frame 1 removes B (A proposes, C and D vote): slots become A, C, D.
    net.submit(A, net.batch(A, Propose(RemoveSigner(IDS[B]), 5)), net.batch(C, Vote(1)))
    net.submit(A, net.batch(D, Vote(1)))
    net.run()
    r = net.replicas[C]
    assert r.entity.height == 1
    new = r.entity.config
    assert new.ids == (IDS[A], IDS[C], IDS[D])
    assert new.threshold == 3

    frame = next_frame(r, net.batch(A, Increment(1)))
    stale = cert_of(frame, 0, [A, B, C], 4)
    assert verify_certificate(old, frame, stale) is None  # it certified under the old set
    before = r.encoded
    effects = net.step(C, Tx.of(Commit(frame, stale)))
    assert effects == [Note(0, "commit refused: aggregate signature does not verify")]
    assert net.replicas[C].encoded == before
    # Old slots 0, 1, 3 (A, B, D): slot 3 no longer exists.
    effects = net.step(C, Tx.of(Commit(frame, cert_of(frame, 0, [0, 1, 3], 4, keys=[A, B, D]))))
    assert effects == [Note(0, "commit refused: bitfield has bits past the last signer")]
    assert net.replicas[C].encoded == before
    # The new set's certificate (slots 0, 1, 2 = A, C, D) applies.
    effects = net.step(C, Tx.of(Commit(frame, cert_of(frame, 0, [0, 1, 2], 3, keys=[A, C, D]))))
    assert [type(e) for e in effects] == [Committed]


# Round change -----------------------------------------------------------------------------------


def _stall_after_c_locks(net: Net) -> tuple[Frame, Batch, Batch]:
    """A proposes F (batch b1, submitted at B); B, C and D approve, A makes the polka,
    but only C receives it and pre-commits (locks); then A goes silent. B also pools
    a second batch b2."""
    b1 = net.batch(B, Increment(1))
    net.submit(B, b1)
    net.step(B)
    frame = only(net.step(A), ProposeFrame).frame
    net.answer_proposals()
    net.step(A)  # the polka: sent to B, C and D
    net.down.add(A)
    for lost in (B, D):  # the polka to B and D is lost
        net.inbox[lost] = [t for t in net.inbox[lost] if not isinstance(t.body, PolkaNotice)]
    net.step(C)  # C's agent pre-commits (to A, lost)
    net.step(C)  # C records its lock
    lock = net.replicas[C].lock
    assert lock is not None
    assert lock.frame == frame
    b2 = net.batch(B, Increment(2))
    net.submit(B, b2)
    net.step(B)
    assert net.replicas[B].pool == (b1, b2)
    return frame, b1, b2


def test_round_change_re_proposes_the_locked_frame(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1, 1], 3)
    frame, b1, b2 = _stall_after_c_locks(net)

    # Every live replica times out at round 0; B leads round 1 and waits for reports.
    # Each reports to every other member, the round's proposer first (a member with
    # nothing to do catches up on them).
    # Its pooled batches go to them too, so a member that had none times out as well.
    effects = net.step(B, Tx.of(Timeout(1, 0)))
    b_lock, b_pool = net.replicas[B].lock, net.replicas[B].pool
    assert b_pool
    expected = [
        *(Send(IDS[m], Tx.of(RoundChange(1, 1, IDS[B], b_lock))) for m in (A, C, D)),
        *(Send(IDS[m], Tx.of(SubmitBatch(b))) for m in (A, C, D) for b in b_pool),
    ]
    assert effects[-len(expected) :] == expected  # after its queued inputs' own
    assert (net.replicas[B].round, net.replicas[B].changes) == (1, (IDS[B],))
    effects = net.step(C, Tx.of(Timeout(1, 0)))
    report = Tx.of(RoundChange(1, 1, IDS[C], net.replicas[C].lock))
    expected = [
        *(Send(IDS[m], report) for m in (B, A, D)),
        *(Send(IDS[m], Tx.of(SubmitBatch(b))) for m in (B, A, D) for b in net.replicas[C].pool),
    ]
    assert effects[-len(expected) :] == expected
    assert not [e for e in net.step(B) if isinstance(e, ProposeFrame)]  # 2 shares < 3
    lock = net.replicas[B].lock
    assert lock is not None
    assert lock.frame == frame  # learnt from C's report
    net.step(D, Tx.of(Timeout(1, 0)))
    proposal = only(net.step(B), ProposeFrame)  # 3 shares: propose
    assert proposal.round == 1
    assert proposal.frame == frame  # the locked frame, not a fresh one with b2
    assert all(r.round == 1 for r in net.live())

    assert proposal.valid == lock.polka  # with the polka that unlocks others
    # C's agent, locked on F, would approve nothing else at round 1...
    fresh = next_frame(net.replicas[C], b1, b2)
    with pytest.raises(Refused, match="locked on another frame"):
        net.agents[C].approve(fresh.raw, 1, net.config)
    # ...and approves and signs F again at round 1.
    net.run()
    for r in net.live():
        assert r.head == frame.hash
        assert r.cert is not None
        assert r.cert.round == 1
        assert r.cert.bits == bitfield([B, C, D], 4)
        assert verify_certificate(net.config, frame, r.cert) is None
        assert r.round == 0
    assert net.agents[C].signed == 2  # F at round 0 and at round 1
    assert net.refusals == []

    # A comes back: it applies the round-1 certificate over its own stale round-0
    # frame, and proposes b2, which B sent it.
    net.down.discard(A)
    net.run()
    replicas = net.live()
    assert len(replicas) == 4
    assert {r.entity.height for r in replicas} == {2}
    assert {r.entity.counter for r in replicas} == {3}
    assert len({r.entity.hash for r in replicas}) == 1
    assert all(r.pool == () for r in replicas)
    net.replay()


def test_reports_that_arrive_before_the_proposer_times_out_still_count(
    make_net: Callable[..., Net],
) -> None:
    """B leads round 1 but its clock is slow: C's and D's reports reach it while it is
    still at round 0. They are not lost: B re-proposes F at round 1 without a timeout."""
    net = make_net([1, 1, 1, 1], 3)
    frame, _, _ = _stall_after_c_locks(net)
    for who in (C, D):
        net.step(who, Tx.of(Timeout(1, 0)))
    proposal = only(net.step(B), ProposeFrame)
    assert (proposal.round, proposal.frame) == (1, frame)
    net.run()
    assert {r.head for r in net.live()} == {frame.hash}
    net.replay()


def test_round_change_without_a_lock_proposes_a_fresh_frame(
    make_net: Callable[..., Net],
) -> None:
    net = make_net([1, 1, 1], 2)
    b = net.batch(C, Increment(1))
    net.submit(C, b)
    net.step(C)
    net.down.add(A)  # the proposer never sees the batch
    for who in (B, C):
        net.step(who, Tx.of(Timeout(1, 0)))
    proposal = only(net.step(B), ProposeFrame)
    assert (proposal.round, proposal.frame.batches) == (1, (b,))
    net.run()
    assert {r.entity.counter for r in net.live()} == {1}


def test_stale_timeouts_and_round_changes(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1], 2)
    assert net.step(B, Tx.of(Timeout(1, 1))) == [Note(0, "stale timeout 1/1")]
    assert net.step(B, Tx.of(Timeout(2, 0))) == [Note(0, "stale timeout 2/0")]
    assert net.replicas[B].round == 0
    outsider = Tx.of(RoundChange(1, 1, IDS[E], None))
    assert net.step(B, outsider) == [Note(0, "round change from a non-signer")]
    # A report for a round another member leads is not this replica's business.
    assert net.step(B, Tx.of(RoundChange(1, 2, IDS[A], None))) == []
    assert net.replicas[B].round == 0


BUG_JUNK_LOCK = (
    "regression (fixed): rounds.on_lock stores a higher-round lock without checking its signature; "
    "rounds.locked_frame later drops it, and the genuine lower-round lock it displaced is lost"
)


def test_a_junk_lock_does_not_hide_a_genuine_one(make_net: Callable[..., Net]) -> None:
    """One byzantine member sends a lock with a bad signature at a high round: it must
    not displace C's genuine lock, else B proposes a fresh frame that the agents
    locked on F (C's, and A's) refuse, and the entity stalls."""
    net = make_net([1, 1, 1, 1], 3)
    frame, _, _ = _stall_after_c_locks(net)
    junk = Lock(7, frame, Polka(7, bitfield([B, C, D], 4), bls.sign(SKS[D], b"junk")))
    net.step(B, Tx.of(Timeout(1, 0)))
    net.step(C, Tx.of(Timeout(1, 0)))
    net.step(B)  # C's report, with its genuine lock
    net.step(B, Tx.of(RoundChange(1, 1, IDS[D], junk)))  # D is byzantine
    proposals = [e for e in net.effects_of(B) if isinstance(e, ProposeFrame)]
    assert len(proposals) == 1
    assert proposals[0].frame == frame, BUG_JUNK_LOCK
    net.run()
    assert {r.head for r in net.live()} == {frame.hash}


BUG_SELF_LOCK = (
    "regression (fixed): a lock is one member's pre-commit, so a byzantine member can "
    "sign any frame at any round and it wins over genuine locks of lower rounds"
)


def test_a_self_made_lock_on_another_frame_does_not_win(make_net: Callable[..., Net]) -> None:
    """D approves its own frame G at round 7, a round that has not happened, and claims
    the approvals of B and C: B must still re-propose F, the frame C is locked on."""
    net = make_net([1, 1, 1, 1], 3)
    frame, b1, b2 = _stall_after_c_locks(net)
    g = next_frame(net.replicas[B], b1, b2)
    fake = Lock(7, g, Polka(7, bitfield([B, C, D], 4), bls.sign(SKS[D], g.approval_message(7))))
    net.step(B, Tx.of(Timeout(1, 0)))
    net.step(C, Tx.of(Timeout(1, 0)))
    net.step(B)
    net.step(B, Tx.of(RoundChange(1, 1, IDS[D], fake)))
    (proposal,) = [e for e in net.effects_of(B) if isinstance(e, ProposeFrame)]
    assert proposal.frame == frame, BUG_SELF_LOCK
    with pytest.raises(Refused, match="locked on another frame"):
        net.agents[C].approve(g.raw, 1, net.config)  # what C's agent does with G


BUG_ROUND_JUMP = (
    "regression (fixed): rounds.on_round_change moves a replica to the reported round on a single "
    "member's report when it leads that round, dropping its frame in flight"
)


def test_one_member_cannot_push_the_proposer_out_of_its_round(
    make_net: Callable[..., Net],
) -> None:
    net = make_net([1, 1, 1, 1], 3)
    net.submit(A, net.batch(A, Increment(1)))
    frame = only(net.step(A), ProposeFrame).frame
    net.proposals.clear()
    reach_polka(net, frame, B, C)
    net.step(A)  # A's own pre-commit
    # D (byzantine) reports round 4, which A leads again (4 members).
    net.step(A, Tx.of(RoundChange(1, 4, IDS[D], None)))
    assert net.replicas[A].round == 0, BUG_ROUND_JUMP
    effects = net.step(A, sign_pc(B, frame, 0), sign_pc(C, frame, 0))
    assert [type(e) for e in effects if isinstance(e, Committed)] == [Committed]


def test_one_member_cannot_push_a_signer_past_every_round(make_net: Callable[..., Net]) -> None:
    """The same report for a far round B leads: B then refuses every proposal below
    it, and with D byzantine the others cannot reach the threshold without B."""
    net = make_net([1, 1, 1, 1], 3)
    far = 2**32 - 3  # B leads it: far % 4 == 1
    net.step(B, Tx.of(RoundChange(1, far, IDS[D], None)))
    net.submit(A, net.batch(A, Increment(1)))
    net.run()
    assert net.refusals == [], BUG_ROUND_JUMP
    assert {r.entity.height for r in net.live()} == {1}


# Determinism -----------------------------------------------------------------------------------


def _scenario(net: Net) -> None:
    frame, _, _ = _stall_after_c_locks(net)
    for who in (B, C, D):
        net.step(who, Tx.of(Timeout(1, 0)))
    net.run()
    net.down.discard(A)
    net.submit(D, net.batch(D, Increment(4)), net.batch(C, Propose(RemoveSigner(IDS[D]), 9)))
    net.run()
    assert net.replicas[A].head != frame.hash


def test_replay_is_byte_identical(make_net: Callable[..., Net]) -> None:
    first = make_net([1, 1, 1, 1], 3)
    second = make_net([1, 1, 1, 1], 3)
    _scenario(first)
    _scenario(second)
    assert len(first.history) == len(second.history) > 10
    for a, b in zip(first.history, second.history, strict=True):
        assert (a.who, [t.raw for t in a.inputs], a.encoded) == (
            b.who,
            [t.raw for t in b.inputs],
            b.encoded,
        )
    first.replay()
    # Every state on the way decodes to itself (the harness checks each step too).
    for rec in first.history:
        assert Replica.decode(rec.encoded).encoded == rec.encoded


def test_a_cache_shared_by_every_replica_changes_nothing(make_net: Callable[..., Net]) -> None:
    """Rounds, locks, re-proposals and a removed signer with one cache of frame outcomes
    for every replica and proposal check (as one server hosting them all): a replay
    without a cache is byte-identical, and the cache was used."""
    cache = Counting()
    net = make_net([1, 1, 1, 1], 3, outcomes=cache)
    _scenario(net)
    assert cache.hits > 10
    net.replay()


# Two steps: splits and refusals -----------------------------------------------------------------


def test_a_proposer_that_splits_its_proposals_does_not_stall_the_height(
    make_net: Callable[..., Net],
) -> None:
    """4 members of 1 share, threshold 3 (2t - n = 2): A, the byzantine proposer of round
    0, proposes F_a to B and C and F_b to D. The only polka the split allows is F_a's
    (A, B and C); A shows it to C alone, which locks. B, leading round 1, re-proposes
    F_a with that polka, D (not locked) approves it, and F_a is certified at round 1."""
    net = make_net([1, 1, 1, 1], 3)
    r = net.replicas[B]
    fa = next_frame(r, net.batch(A, Increment(1)))
    net.nonces[A] = 0
    fb = next_frame(r, net.batch(A, Increment(2)))
    assert fa.hash != fb.hash
    net.down.add(A)
    for to, f in ((B, fa), (C, fa), (D, fb)):
        assert net.answer(Proposal(to, f, 0, bls.sign(SKS[A], f.approval_message(0)))) is None
    approvals = {
        IDS.index(a.signer): a.signature
        for a in (t.body for t in net.inbox[A])
        if isinstance(a, Approve) and a.frame_hash == fa.hash
    }
    assert sorted(approvals) == [B, C]
    approvals[A] = bls.sign(SKS[A], fa.approval_message(0))
    polka, bad = aggregate_approvals(net.config, fa, 0, approvals)
    assert polka is not None
    assert bad == []
    # No polka for F_b: A and D hold 2 shares.
    d_only = {
        A: bls.sign(SKS[A], fb.approval_message(0)),
        D: bls.sign(SKS[D], fb.approval_message(0)),
    }
    assert aggregate_approvals(net.config, fb, 0, d_only)[0] is None
    net.inbox[C].append(Tx.of(PolkaNotice(1, fa.hash, polka)))
    net.step(C)  # C's agent pre-commits F_a (to A: lost)
    net.step(C)  # and C locks
    lock = net.replicas[C].lock
    assert lock is not None
    assert (lock.frame, lock.polka) == (fa, polka)
    with pytest.raises(Refused, match="locked on another frame"):
        net.agents[C].approve(fb.raw, 1, net.config)

    for who in (B, C, D):
        net.step(who, Tx.of(Timeout(1, 0)))
    net.run()
    for replica in net.live():
        assert replica.head == fa.hash
        assert replica.cert is not None
        assert replica.cert.round == 1
        assert replica.cert.bits == bitfield([B, C, D], 4)
    assert net.refusals == []
    net.replay()


def test_a_refused_frame_locks_nobody(make_net: Callable[..., Net]) -> None:
    """In a 2-of-2, B's person does not approve A's frame: no polka, so A's agent
    approved but pre-committed nothing, and may approve another frame at that height
    in a later round. The height is not held by the refused frame."""
    net = make_net([1, 1], 2)
    net.undecided.add(B)
    net.submit(A, net.batch(A, Increment(1)))
    frame = only(net.step(A), ProposeFrame).frame
    net.run()
    pending = net.replicas[A].pending
    assert pending is not None
    assert pending.polka is None
    assert (net.agents[A].approved, net.agents[A].signed) == (1, 0)
    assert net.replicas[A].lock is None
    net.nonces[A] = 0
    other = next_frame(net.replicas[A], net.batch(A, Increment(2)))
    assert other.hash != frame.hash
    net.agents[A].approve(other.raw, 1, net.config)  # not locked: allowed
    # B decides later: it approves the frame at the round in flight, and it is certified.
    net.undecided.clear()
    net.run()
    assert {r.head for r in net.live()} == {frame.hash}


def test_a_withdrawal_replaces_a_refused_batch_and_the_next_frame_is_certified(
    make_net: Callable[..., Net],
) -> None:
    """In a 2-of-2, B will not approve A's batch X (its person is away, or refused).
    A withdraws X: a batch of ``withdraw`` alone at X's nonce replaces X in every pool;
    the next round's frame holds the withdrawal, B approves it, and X can never apply."""
    net = make_net([1, 1], 2)
    net.undecided.add(B)
    x = net.batch(A, Increment(5000))
    net.submit(A, x)
    frame = only(net.step(A), ProposeFrame).frame
    assert frame.batches == (x,)
    net.run()
    net.nonces[A] = 0
    withdrawal = net.batch(A, Withdraw())
    assert (withdrawal.signer, withdrawal.nonce) == (x.signer, x.nonce)
    assert is_withdrawal(withdrawal)
    net.step(A, Tx.of(SubmitBatch(withdrawal)))
    assert net.replicas[A].pool == (withdrawal,)
    # X again (a resend from B's pool, say) is dropped: withdrawn.
    effects = net.step(A, Tx.of(SubmitBatch(x)))
    assert messages(net.notes(A))[-1] == f"batch at nonce 1 of {IDS[A].hex()[:16]} withdrawn"
    assert not [e for e in effects if isinstance(e, Send)]
    net.proposals.clear()  # round 0's proposal of X: B never answers it
    net.undecided.clear()
    for who in (A, B):
        net.step(who, Tx.of(Timeout(1, 0)))
    net.run()
    for r in net.live():
        assert r.entity.height == 1
        assert r.entity.counter == 0  # X never applied
        assert r.entity.nonce_of(IDS[A]) == 1
        assert r.pool == ()
    (committed,) = net.committed(A)
    assert committed.frame.batches == (withdrawal,)
    net.replay()


def test_a_withdrawal_after_a_polka_is_too_late(make_net: Callable[..., Net]) -> None:
    net = make_net([1, 1, 1], 2)
    x = net.batch(A, Increment(7))
    net.submit(A, x)
    frame = only(net.step(A), ProposeFrame).frame
    net.proposals.clear()
    reach_polka(net, frame, B)
    net.nonces[A] = 0
    withdrawal = net.batch(A, Withdraw())
    net.step(A, Tx.of(SubmitBatch(withdrawal)))
    assert messages(net.notes(A))[-1] == (
        "withdrawal of nonce 1 refused: too late, approved by the threshold at round 0"
    )
    assert net.replicas[A].pool == (x,)
    net.step(A, sign_pc(B, frame, 0))  # B's pre-commit, on the polka: X is certified
    net.run()
    assert {r.entity.counter for r in net.live()} == {7}


def test_a_forged_polka_asks_for_no_pre_commit_and_moves_no_round(
    make_net: Callable[..., Net],
) -> None:
    """A polka whose aggregate is not the approvals it claims (one member's signature
    under the bits of three) is refused: no pre-commit is asked, the round stays."""
    net = make_net([1, 1, 1, 1], 3)
    frame = next_frame(net.replicas[B], net.batch(A, Increment(1)))
    forged = Polka(5, bitfield([A, C, D], 4), bls.sign(SKS[D], frame.approval_message(5)))
    before = net.replicas[B].encoded
    effects = net.step(B, Tx.of(PolkaNotice(1, frame.hash, forged)))
    assert not [e for e in effects if isinstance(e, PrecommitDue)]
    assert messages([e for e in effects if isinstance(e, Note)]) == [
        "polka refused: aggregate signature does not verify"
    ]
    assert net.replicas[B].encoded == before
