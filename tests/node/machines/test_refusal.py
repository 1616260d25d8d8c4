"""Signed refusals (node/machines/refusal.py) and the node's log of them (node/refusals.py).

Real BLS keys. A refusal is the member's key over a domain-separated 121-byte
message naming the entity, height, round, frame and the reason's hash; it verifies
under that member's key only, and says nothing else once altered. The log keeps a
refusal only if a member of the config signed it, once, within its bounds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from node import refusals as log_module
from node.agent import Agent
from node.codec import DecodeError, decode, encode_tree, keccak
from node.crypto import bls
from node.machines.frames import Frame, precommit_message
from node.machines.governance import Config, Member, signer_id
from node.machines.refusal import (
    MAX_REASON_BYTES,
    REFUSE_DOMAIN,
    Refusal,
    fit_reason,
    refusal_message,
    sign_refusal,
)
from node.refusals import RefusalLog

SKS = [bls.keygen(bytes([i + 61]) * 32) for i in range(3)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
CONFIG = Config(tuple(Member(pk, 1) for pk in PKS[:2]), 2, IDS[0])  # members 0 and 1
ENTITY = b"\x42" * 32
FRAME = keccak(b"a frame")


def refusal(
    who: int = 1, reason: str = "accountant: limit: 5,000 > 1,000", **kw: object
) -> Refusal:
    r = sign_refusal(SKS[who], IDS[who], ENTITY, 3, 1, FRAME, reason)
    return replace(r, **kw) if kw else r  # type: ignore[arg-type]


def test_the_message_is_domain_separated_and_sized() -> None:
    message = refusal_message(ENTITY, 3, 1, FRAME, "no")
    assert len(message) == 121
    assert message.startswith(REFUSE_DOMAIN)
    assert message[-32:] == keccak(b"no")
    assert len(message) != len(precommit_message(ENTITY, 3, 1, FRAME))


def test_a_refusal_verifies_under_its_members_key_only() -> None:
    r = refusal()
    assert r.verify(PKS[1])
    assert not r.verify(PKS[0])  # another member's key (and id)
    for altered in (
        replace(r, reason="accountant: limit: 5 > 1"),
        replace(r, round=2),
        replace(r, height=4),
        replace(r, frame_hash=keccak(b"another")),
        replace(r, entity=b"\x43" * 32),
    ):
        assert not altered.verify(PKS[1]), altered
    # A key that signs for another member's id is no use either.
    assert not replace(refusal(who=2), signer=IDS[1]).verify(PKS[2])


def test_the_encoding_round_trips_and_is_strict() -> None:
    r = refusal()
    assert Refusal.from_item(decode(encode_tree(r.to_tree()))) == r
    tree = r.to_tree()
    tree[5] = b"\xff\xfe"
    with pytest.raises(DecodeError, match="not UTF-8"):
        Refusal.from_item(tree)
    tree[5] = b"x" * (MAX_REASON_BYTES + 1)
    with pytest.raises(DecodeError):
        Refusal.from_item(tree)
    with pytest.raises(DecodeError):
        Refusal.from_item(tree[:6])


def test_a_long_reason_is_cut_to_whole_characters() -> None:
    reason = "é" * MAX_REASON_BYTES  # 2 bytes each
    cut = fit_reason(reason)
    assert len(cut.encode("utf-8")) <= MAX_REASON_BYTES
    assert cut.endswith("...")
    r = sign_refusal(SKS[1], IDS[1], ENTITY, 3, 1, FRAME, reason)
    assert r.reason == cut
    assert r.verify(PKS[1])


def test_the_agent_signs_a_refusal_of_the_frame_it_was_asked(tmp_path: Path) -> None:
    frame = Frame.make(ENTITY, 3, keccak(b"frame 2"), [], keccak(b"state after"))
    agent = Agent(SKS[1], tmp_path / "guard")
    try:
        r = agent.sign_refusal(frame.raw, 4, "rejected by hand")
    finally:
        agent.close()
    assert (r.entity, r.height, r.round, r.frame_hash) == (
        frame.entity_id,
        frame.height,
        4,
        frame.hash,
    )
    assert r.signer == IDS[1]
    assert r.verify(PKS[1])


def test_the_log_keeps_members_refusals_once() -> None:
    log = RefusalLog()
    assert log.observe(CONFIG, refusal()) is None
    assert log.observe(CONFIG, refusal()) is None  # the same one again
    assert log.of_entity(ENTITY) == [refusal()]
    outsider = refusal(who=2)
    assert log.observe(CONFIG, outsider) == (
        f"refusal by {IDS[2].hex()[:16]}, not a member of the entity"
    )
    forged = replace(refusal(), reason="something else")
    assert log.observe(CONFIG, forged) == (
        f"refusal does not verify under member {IDS[1].hex()[:16]}'s key"
    )
    assert log.of_entity(ENTITY) == [refusal()]
    assert log.of_entity(b"\x00" * 32) == []


def test_the_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module, "MAX_PER_ENTITY", 2)
    monkeypatch.setattr(log_module, "MAX_ENTITIES", 2)
    log = RefusalLog()
    kept = [sign_refusal(SKS[1], IDS[1], ENTITY, 3, n, FRAME, "no") for n in range(3)]
    for r in kept:
        assert log.observe(CONFIG, r) is None
    assert log.of_entity(ENTITY) == kept[1:]  # the newest two
    for entity in (b"\x01" * 32, b"\x02" * 32):
        assert log.observe(CONFIG, sign_refusal(SKS[0], IDS[0], entity, 1, 0, FRAME, "no")) is None
    assert log.of_entity(ENTITY) == []  # the entity refused least lately went
    assert len(log.of_entity(b"\x02" * 32)) == 1
