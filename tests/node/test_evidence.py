"""Equivocation evidence (``node/evidence.py``), with real BLS keys: two pre-commits of
one member for different frames at one (entity, height, round) are kept once, only
if both signatures verify, within their caps, across a restart; ``inspect`` shows
them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from node import cli
from node.crypto import bls
from node.evidence import APPROVE_VOTE, PRECOMMIT_VOTE, Evidence, EvidenceLog, Signed
from node.machines.frames import Frame, precommit_message
from node.machines.governance import Config, Member, signer_id
from node.machines.replica import Approve, Precommit
from node.storage import Store
from node.txs import Tx

SKS = [bls.keygen(bytes([i + 7]) * 32) for i in range(3)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
CONFIG = Config((Member(PKS[0], 1), Member(PKS[1], 1), Member(PKS[2], 1)), 2, IDS[0])
ENTITY = b"\xe1" * 32
FRAME_A = b"\xaa" * 32
FRAME_B = b"\xbb" * 32
FRAME_C = b"\xcc" * 32


def signed(member: int, frame_hash: bytes, height: int = 5, round_: int = 0) -> Signed:
    message = precommit_message(ENTITY, height, round_, frame_hash)
    return Signed(frame_hash, bls.sign(SKS[member], message))


def precommit(member: int, frame_hash: bytes, height: int = 5, round_: int = 0) -> Tx:
    s = signed(member, frame_hash, height, round_)
    return Tx.of(Precommit(height, round_, frame_hash, IDS[member], s.signature))


def test_two_precommits_for_different_frames_make_one_record_however_often_seen() -> None:
    log = EvidenceLog()
    first, second = precommit(1, FRAME_B), precommit(1, FRAME_A)
    assert log.observe_inputs(ENTITY, [first], lambda: CONFIG) == []
    (found,) = log.observe_inputs(ENTITY, [second], lambda: CONFIG)
    for _ in range(3):  # again, in either order, and a copy of each: counted once
        assert log.observe_inputs(ENTITY, [second, first, first], lambda: CONFIG) == []
    assert log.all() == [found]
    assert (found.entity_id, found.member, found.height, found.round) == (ENTITY, IDS[1], 5, 0)
    assert (found.a.frame_hash, found.b.frame_hash) == (FRAME_A, FRAME_B)  # ascending
    assert found.problem() is None  # anyone can check it with the key alone
    assert signer_id(found.pubkey) == IDS[1]
    assert Evidence.decode(found.encode()) == found
    # Another round, or another member, is another record; the same frame twice is none.
    log.observe_inputs(
        ENTITY, [precommit(1, FRAME_A, round_=1), precommit(2, FRAME_A)], lambda: CONFIG
    )
    assert log.observe_inputs(ENTITY, [precommit(2, FRAME_A)], lambda: CONFIG) == []
    assert len(log) == 1


def test_forged_evidence_is_not_kept() -> None:
    log = EvidenceLog()
    forged = Tx.of(Precommit(5, 0, FRAME_B, IDS[1], signed(2, FRAME_B).signature))  # 2's key
    log.observe_inputs(ENTITY, [precommit(1, FRAME_A), forged], lambda: CONFIG)
    assert len(log) == 0
    assert log.forged == 1
    # A forged first message is replaced by the genuine one that follows, and the
    # member's real equivocation is still found.
    log.observe_inputs(
        ENTITY,
        [
            Tx.of(Precommit(6, 0, FRAME_C, IDS[1], signed(0, FRAME_C, 6).signature)),
            precommit(1, FRAME_A, 6),
            precommit(1, FRAME_B, 6),
        ],
        lambda: CONFIG,
    )
    (found,) = log.all()
    assert found.height == 6
    assert found.problem() is None
    assert (found.a.frame_hash, found.b.frame_hash) == (FRAME_A, FRAME_B)
    # Evidence made up elsewhere is checked before it is kept.
    bad = Evidence.of(ENTITY, 7, 0, PKS[1], signed(1, FRAME_A, 7), signed(2, FRAME_B, 7))
    assert bad.problem() is not None
    assert not log.add(bad)
    good = Evidence.of(ENTITY, 7, 0, PKS[1], signed(1, FRAME_A, 7), signed(1, FRAME_B, 7))
    assert log.add(good)
    assert not log.add(good)
    assert len(log) == 2


def test_a_non_member_and_a_second_signature_of_one_message_are_no_evidence() -> None:
    log = EvidenceLog()
    outsider = bls.keygen(b"\x99" * 32)
    sig = bls.sign(outsider, precommit_message(ENTITY, 5, 0, FRAME_A))
    log.observe_inputs(ENTITY, [Tx.of(Precommit(5, 0, FRAME_A, b"\x01" * 32, sig))], lambda: CONFIG)
    junk = Tx.of(Precommit(5, 0, FRAME_A, IDS[1], signed(2, FRAME_A).signature))
    log.observe_inputs(ENTITY, [junk, precommit(1, FRAME_A)], lambda: CONFIG)
    assert len(log) == 0


def _frame(height: int, marker: int) -> Frame:
    return Frame.make(ENTITY, height, b"\x00" * 32, [], bytes([marker]) * 32)


def test_a_proposer_that_splits_its_proposals_leaves_evidence() -> None:
    """Two proposals at one round (each carries the proposer's approval), or two
    approvals of one member at one round met among entity inputs: evidence of the
    approval kind, which encodes with its kind and checks under the approval domain."""
    log = EvidenceLog()
    a, b = _frame(5, 1), _frame(5, 2)
    for frame in (a, b):
        log.observe_proposal(CONFIG, frame, 0, bls.sign(SKS[0], frame.approval_message(0)))
    (found,) = log.all()
    assert found.member == IDS[0] == CONFIG.proposer_at(0)
    assert found.kind == APPROVE_VOTE
    assert {found.a.frame_hash, found.b.frame_hash} == {a.hash, b.hash}
    assert found.problem() is None
    assert Evidence.decode(found.encode()) == found
    assert len(found.to_tree()) == 7
    # The same member's pre-commits at that round are another kind: not the same record.
    for frame in (a, b):
        log.observe(CONFIG, ENTITY, IDS[0], 5, 0, Signed(frame.hash, pc_sig(0, frame, 0)))
    assert [e.kind for e in log.all()] == [APPROVE_VOTE, PRECOMMIT_VOTE]
    assert len(log.all()[1].to_tree()) == 6

    def approval(member: int, frame: Frame, round_: int) -> Tx:
        sig = bls.sign(SKS[member], frame.approval_message(round_))
        return Tx.of(Approve(5, round_, frame.hash, IDS[member], sig))

    log.observe_inputs(ENTITY, [approval(2, a, 1)], lambda: CONFIG)
    log.observe_inputs(ENTITY, [approval(2, b, 1)], lambda: CONFIG)
    assert len(log) == 3
    assert (log.all()[2].member, log.all()[2].round, log.all()[2].kind) == (IDS[2], 1, 1)
    # A forged second approval is not kept.
    forged = Approve(5, 2, b.hash, IDS[1], bls.sign(SKS[2], b.approval_message(2)))
    log.observe_inputs(ENTITY, [approval(1, a, 2), Tx.of(forged)], lambda: CONFIG)
    assert len(log) == 3


def pc_sig(member: int, frame: Frame, round_: int) -> bytes:
    return bls.sign(SKS[member], frame.message(round_))


def test_evidence_is_capped_per_member_and_in_all_the_oldest_dropped() -> None:
    writes: list[list[tuple[int, bytes | None]]] = []
    log = EvidenceLog(persist=writes.append, max_records=5, per_member=3)
    for height in range(1, 6):  # member 1 equivocates at five heights
        log.observe_inputs(
            ENTITY, [precommit(1, FRAME_A, height), precommit(1, FRAME_B, height)], lambda: CONFIG
        )
    assert [e.height for e in log.all()] == [3, 4, 5]
    for height in range(1, 4):  # member 2 at three: five in all
        log.observe_inputs(
            ENTITY, [precommit(2, FRAME_A, height), precommit(2, FRAME_B, height)], lambda: CONFIG
        )
    assert [(e.member, e.height) for e in log.all()] == [
        (IDS[1], 4),
        (IDS[1], 5),
        (IDS[2], 1),
        (IDS[2], 2),
        (IDS[2], 3),
    ]
    assert writes[3] == [(4, writes[3][0][1]), (1, None)], "the oldest of the member deleted"
    small = EvidenceLog(max_watched=2)  # first messages remembered: bounded too
    for height in range(1, 10):
        small.observe_inputs(ENTITY, [precommit(1, FRAME_A, height)], lambda: CONFIG)
    assert len(small._first) == 2


def test_evidence_survives_a_restart_and_is_still_counted_once(tmp_path: Path) -> None:
    with Store(tmp_path / "chain") as store:
        log = EvidenceLog(store.evidence(), store.write_evidence)
        log.observe_inputs(ENTITY, [precommit(1, FRAME_A), precommit(1, FRAME_B)], lambda: CONFIG)
        (kept,) = log.all()
    with Store(tmp_path / "chain") as store:
        again = EvidenceLog(store.evidence(), store.write_evidence)
        assert again.all() == [kept]
        again.observe_inputs(ENTITY, [precommit(1, FRAME_B), precommit(1, FRAME_A)], lambda: CONFIG)
        assert len(again) == 1
        again.observe_inputs(ENTITY, [precommit(2, FRAME_B), precommit(2, FRAME_C)], lambda: CONFIG)
        assert [seq for seq, _ in store.evidence()] == [1, 2]


def test_inspect_shows_the_member_height_round_and_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    with Store(data / "chain") as store:
        log = EvidenceLog(store.evidence(), store.write_evidence)
        log.observe_inputs(
            ENTITY, [precommit(1, FRAME_B, 9, 2), precommit(1, FRAME_A, 9, 2)], lambda: CONFIG
        )
    assert cli.cmd_inspect(argparse.Namespace(data=str(data), json=True)) == 0
    info: dict[str, Any] = json.loads(capsys.readouterr().out)
    (shown,) = info["evidence"]
    assert shown["entity"] == ENTITY.hex()
    assert shown["member"] == IDS[1].hex()
    assert (shown["height"], shown["round"]) == (9, 2)
    assert shown["frames"] == [FRAME_A.hex(), FRAME_B.hex()]
    one, two = (
        Signed(bytes.fromhex(h), bytes.fromhex(s))
        for h, s in zip(shown["frames"], shown["signatures"], strict=True)
    )
    record = Evidence.of(ENTITY, 9, 2, bytes.fromhex(shown["pubkey"]), one, two)
    assert record.problem() is None, "the JSON alone is enough to check both signatures"
    assert cli.cmd_inspect(argparse.Namespace(data=str(data), json=False)) == 0
    text = capsys.readouterr().out
    assert "evidence  1 equivocation" in text
    assert (
        f"member {IDS[1].hex()} pre-committed two frames at height 9 round 2: "
        f"{FRAME_A.hex()} and {FRAME_B.hex()}"
    ) in text
