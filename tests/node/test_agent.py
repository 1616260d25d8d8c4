"""The agent's double-sign guard and lock (node/agent.py), on a real LevelDB."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rlp
from eth_hash.auto import keccak as eth_keccak

from node.agent import Agent, Refused, SignedAt
from node.codec import encode
from node.crypto import bls, keystore
from node.machines.accounts import ACK, ANNOUNCE, FRAME, Outgoing
from node.machines.entity import Increment, sign_batch
from node.machines.frames import Frame, Polka, Signatures, bitfield
from node.machines.governance import Config, Member, signer_id
from node.txs import Tx
from tests.conftest import run_python

SK = bls.keygen(bytes([7]) * 32)
PK = bls.sk_to_pk(SK)
SIGNER = signer_id(PK)
ENTITY = b"\xe7" * 32
OTHER_ENTITY = b"\xe8" * 32
PREV = b"\x11" * 32
DEADLINE_S = 20


def frame(
    height: int = 3, n: int = 1, entity: bytes = ENTITY, outbox: tuple[Outgoing, ...] = ()
) -> Frame:
    """A frame whose content (and hash) depends on ``n``."""
    b = sign_batch(entity, SK, SIGNER, 1, [Tx.of(Increment(n))])
    return Frame.make(entity, height, PREV, [b], bytes([n % 256]) * 32, (), outbox)


def expected_message(frame_raw: bytes, round_: int) -> bytes:
    """The pre-commit message, rebuilt here from the frame bytes alone (not node code)."""
    fields = rlp.decode(frame_raw)
    entity: bytes = fields[0]
    return (
        b"XLN/entity-precommit/v1"
        + entity
        + int.from_bytes(fields[1], "big").to_bytes(8, "big")
        + round_.to_bytes(4, "big")
        + eth_keccak(frame_raw)
    )


def precommit(agent: Agent, frame_raw: bytes, round_: int) -> Signatures:
    """What the node asks of the agent for one frame: approve it, then pre-commit it on
    the polka of that approval (the agent's key is the whole config)."""
    config = Config((Member(agent.pubkey, 1),), 1, agent.signer_id)
    agent.approve(frame_raw, round_, config)
    f = Frame.decode_shallow(frame_raw)
    polka = Polka(round_, bitfield([0], 1), agent_approval(agent, f, round_))
    return agent.sign_precommit(f.entity_id, f.height, round_, f.hash, polka, config)


def agent_approval(agent: Agent, f: Frame, round_: int) -> bytes:
    config = Config((Member(agent.pubkey, 1),), 1, agent.signer_id)
    return agent.approve(f.raw, round_, config)  # the recorded approval, again


@pytest.fixture
def open_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def open_(guard: Path | None = None, sk: int = SK) -> Agent:
        agent = Agent(sk, guard or tmp_path / "guard")
        agents.append(agent)
        return agent

    yield open_
    for agent in agents:
        with contextlib.suppress(RuntimeError):  # closed by the test already
            agent.close()


def test_same_frame_same_round_same_signature(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    f = frame()
    first = precommit(agent, f.raw, 0)
    again = precommit(agent, f.raw, 0)
    assert again == first
    assert agent.signed == 1  # the second answer came from the record
    assert bls.verify(PK, expected_message(f.raw, 0), first.precommit)
    # Exactly the deterministic BLS signature over the independently rebuilt message:
    # the agent signs what it recomputes from the frame, nothing else.
    assert first == Signatures(bls.sign(SK, expected_message(f.raw, 0)), ())
    assert f.message(0) == expected_message(f.raw, 0)


def test_different_frame_same_height_and_round_is_refused(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    precommit(agent, frame(n=1).raw, 0)
    with pytest.raises(Refused, match="different frame"):
        precommit(agent, frame(n=2).raw, 0)
    assert agent.signed == 1


def test_lock_across_rounds(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    f, g = frame(n=1), frame(n=2)
    precommit(agent, f.raw, 2)
    with pytest.raises(Refused, match="locked on another frame"):
        precommit(agent, g.raw, 3)
    with pytest.raises(Refused, match="locked on another frame"):
        precommit(agent, g.raw, 100)
    sig3 = precommit(agent, f.raw, 3)
    assert bls.verify(PK, expected_message(f.raw, 3), sig3.precommit)
    assert sig3 != precommit(agent, f.raw, 2)  # another round, another message
    # Never below the last round signed, not even the same frame.
    for round_ in (0, 1):
        with pytest.raises(Refused, match="already pre-committed at round 3"):
            precommit(agent, f.raw, round_)
        with pytest.raises(Refused):
            precommit(agent, g.raw, round_)
    # The records of rounds already signed still answer, identically.
    assert precommit(agent, f.raw, 3) == sig3
    assert agent.signed == 2


def test_lock_is_per_height_and_per_entity(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    precommit(agent, frame(height=3, n=1).raw, 5)
    # Another height, or the same height of another entity, is free, at any round.
    assert precommit(agent, frame(height=4, n=2).raw, 0)
    assert precommit(agent, frame(height=3, n=2, entity=OTHER_ENTITY).raw, 0)
    with pytest.raises(Refused):
        precommit(agent, frame(height=3, n=2).raw, 5)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\xc0",
        frame().raw[:-1],
        frame().raw + b"\x00",
        encode([ENTITY, 1, PREV, [], b"\x00" * 32]),  # the layout before inputs and outbox
        encode([ENTITY, 0, PREV, [], [], [], b"\x00" * 32]),  # height 0
        encode([ENTITY[:31], 1, PREV, [], [], [], b"\x00" * 32]),
        encode([ENTITY, 1, PREV, [b"not a batch"], [], [], b"\x00" * 32]),
        encode([ENTITY, 1, PREV, [], [b"not an input"], [], b"\x00" * 32]),
        encode([ENTITY, 1, PREV, [], [], [[2, b"", b"\x00" * 32]], b"\x00" * 32]),  # no peer
        eth_keccak(b"a hash is not a frame"),
    ],
)
def test_malformed_frame_is_refused(open_agent: Callable[..., Agent], raw: bytes) -> None:
    agent = open_agent()
    with pytest.raises(Refused, match="not a frame"):
        precommit(agent, raw, 0)
    assert agent.signed == 0


@pytest.mark.parametrize("round_", [-1, 2**32, 2**64])
def test_round_out_of_range_is_refused(open_agent: Callable[..., Agent], round_: int) -> None:
    agent = open_agent()
    with pytest.raises(Refused, match="round out of range"):
        precommit(agent, frame().raw, round_)


def test_top_round_is_signed(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    f = frame()
    sig = precommit(agent, f.raw, 2**32 - 1)
    assert bls.verify(PK, expected_message(f.raw, 2**32 - 1), sig.precommit)


def test_outgoing_hashes_are_signed_with_the_precommit(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    outbox = (
        Outgoing(ANNOUNCE, b"", b"\xa0" * 32),
        Outgoing(ACK, OTHER_ENTITY, b"\xa1" * 32),
        Outgoing(FRAME, OTHER_ENTITY, b"\xa2" * 32),
    )
    f = frame(outbox=outbox)
    sigs = precommit(agent, f.raw, 1)
    # One signature per outgoing hash, in the frame's order, over the 32 bytes alone.
    assert sigs == Signatures(
        bls.sign(SK, expected_message(f.raw, 1)), tuple(bls.sign(SK, o.hash) for o in outbox)
    )
    # The record answers again with the same outgoing signatures.
    assert precommit(agent, f.raw, 1) == sigs
    assert agent.signed == 1
    # Another frame at the same height and round is refused, outbox or not.
    with pytest.raises(Refused, match="different frame"):
        precommit(agent, frame(outbox=outbox[:1]).raw, 1)


def test_no_sign_this_hash_api() -> None:
    public = {name for name in vars(Agent) if not name.startswith("_")}
    assert public == {
        "close",
        "from_keystore",
        "proof_of_possession",
        "approve",  # signs an approval message (domain-separated, built here from the frame)
        "sign_precommit",
        "sign_batch",
        "bind_server",  # signs a binding message (domain-separated, built here)
        "revoke_server",
        "sign_refusal",  # signs a refusal message (domain-separated, built here from the frame)
        # After a restore: these record and read floors; none of them signs anything.
        "mark_restored",
        "restored",
        "set_floor",
        "floor",
        "signing_record",  # reads the S records for a backup; signs nothing
    }


def test_a_restored_guard_signs_only_above_its_floor(
    tmp_path: Path, open_agent: Callable[..., Agent]
) -> None:
    guard = tmp_path / "guard"
    agent = open_agent(guard)
    agent.mark_restored()
    assert agent.restored
    with pytest.raises(Refused, match="peers have not yet told"):
        precommit(agent, frame(height=3).raw, 0)
    assert agent.floor(ENTITY) is None
    assert agent.set_floor(ENTITY, 3) == 3
    assert agent.set_floor(ENTITY, 2) == 3  # a floor only rises
    for height in (1, 3):
        with pytest.raises(Refused, match="at or below 3"):
            precommit(agent, frame(height=height).raw, 0)
    # Another entity has no floor yet: still refused.
    with pytest.raises(Refused, match="peers have not yet told"):
        precommit(agent, frame(height=9, entity=OTHER_ENTITY).raw, 0)
    precommit(agent, frame(height=4).raw, 0)
    assert agent.signed == 1
    agent.close()
    # Durable: reopened, the guard is still restored and holds the floor.
    again = open_agent(guard)
    assert again.restored
    assert again.floor(ENTITY) == 3
    with pytest.raises(Refused, match="at or below 3"):
        precommit(again, frame(height=3, n=2).raw, 0)


def test_signing_record_is_the_highest_vote_per_entity(
    tmp_path: Path, open_agent: Callable[..., Agent]
) -> None:
    guard = tmp_path / "guard"
    agent = open_agent(guard)
    assert agent.signing_record() == {}
    low, high = frame(height=2, n=1), frame(height=10, n=2)
    precommit(agent, low.raw, 0)
    precommit(agent, high.raw, 0)
    precommit(agent, high.raw, 3)  # a later round of the same frame (the lock)
    with pytest.raises(Refused, match="already pre-committed at round 3"):
        precommit(agent, high.raw, 1)  # below the lock's round: nothing recorded
    other = frame(height=255, n=3, entity=OTHER_ENTITY)
    precommit(agent, other.raw, 7)
    approved_only = frame(height=256, n=4, entity=OTHER_ENTITY)
    agent.approve(approved_only.raw, 0, TRIO)  # an approval is a vote too
    agent.set_floor(ENTITY, 50)  # floors and bindings are other records: not in it
    agent.bind_server(bls.sk_to_pk(bls.keygen(b"a" * 32)))
    expected = {
        ENTITY: SignedAt(10, 3, high.hash),
        OTHER_ENTITY: SignedAt(256, 0, approved_only.hash),
    }
    assert agent.signing_record() == expected
    agent.close()
    with pytest.raises(Refused, match="closed"):
        agent.signing_record()
    assert open_agent(guard).signing_record() == expected  # durable: read back from LevelDB


def test_a_floor_raises_the_next_binding_serial(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    key_a, key_b = bls.sk_to_pk(bls.keygen(b"a" * 32)), bls.sk_to_pk(bls.keygen(b"b" * 32))
    assert agent.bind_server(key_a).serial == 1
    # The peers saw serial 5 (the lost folder's binding): the same key is bound again above it.
    agent.set_floor(ENTITY, 0, binding_serial=5)
    rebound = agent.bind_server(key_a)
    assert rebound.serial == 6
    assert rebound.verify(PK)
    assert agent.bind_server(key_a) == rebound
    assert agent.bind_server(key_b).serial == 7
    with pytest.raises(Refused, match="a floor is an entity id"):
        agent.set_floor(b"short", 1)


def test_a_floor_binds_an_agent_that_was_not_restored(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    assert not agent.restored
    precommit(agent, frame(height=2).raw, 0)  # no floor, not restored: signs
    agent.set_floor(ENTITY, 2)
    with pytest.raises(Refused, match="at or below 2"):
        precommit(agent, frame(height=2, n=5).raw, 1)


def test_records_survive_reopening(tmp_path: Path, open_agent: Callable[..., Agent]) -> None:
    guard = tmp_path / "guard"
    agent = open_agent(guard)
    f, g = frame(n=1), frame(n=2)
    sig = precommit(agent, f.raw, 1)
    agent.close()
    again = open_agent(guard)
    assert precommit(again, f.raw, 1) == sig
    assert again.signed == 0  # answered from the record, not signed anew
    with pytest.raises(Refused, match="different frame"):
        precommit(again, g.raw, 1)
    with pytest.raises(Refused, match="locked on another frame"):
        precommit(again, g.raw, 2)
    with pytest.raises(Refused, match="already pre-committed at round 1"):
        precommit(again, f.raw, 0)


CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
from node.agent import Agent
from node.crypto import bls

agent = Agent(
    bls.keygen(bytes([7]) * 32),
    Path(sys.argv[1]),
    after_record=lambda: os.kill(os.getpid(), signal.SIGKILL),
)
print("STARTED", flush=True)
from node.machines.frames import Frame, Polka, bitfield
from node.machines.governance import Config, Member
raw, round_ = bytes.fromhex(sys.argv[2]), int(sys.argv[3])
config = Config((Member(agent.pubkey, 1),), 1, agent.signer_id)
approval = agent.approve(raw, round_, config)
f = Frame.decode_shallow(raw)
polka = Polka(round_, bitfield([0], 1), approval)
sig = agent.sign_precommit(f.entity_id, f.height, round_, f.hash, polka, config)
print("SIGNED", sig.precommit.hex(), flush=True)
"""


def test_crash_between_record_and_reply(tmp_path: Path, open_agent: Callable[..., Agent]) -> None:
    guard = tmp_path / "guard"
    f, g = frame(height=9, n=1), frame(height=9, n=2)
    result = run_python("-c", CRASH_SCRIPT, str(guard), f.raw.hex(), "4", timeout_s=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "STARTED" in result.stdout
    assert "SIGNED" not in result.stdout
    # The signature never left the process, but its record is durable: a new agent
    # refuses the other frame and answers for the same one with a valid signature.
    agent = open_agent(guard)
    with pytest.raises(Refused, match="different frame"):
        precommit(agent, g.raw, 4)
    with pytest.raises(Refused, match="locked on another frame"):
        precommit(agent, g.raw, 5)
    sig = precommit(agent, f.raw, 4)
    assert agent.signed == 0
    assert bls.verify(PK, expected_message(f.raw, 4), sig.precommit)


def test_guard_folder_holds_the_records_and_never_the_key(tmp_path: Path) -> None:
    guard = tmp_path / "agent-guard"
    data = tmp_path / "node-data"
    data.mkdir()
    agent = Agent(SK, guard)
    try:
        for round_ in range(3):
            precommit(agent, frame(n=1).raw, round_)
        agent.sign_batch(ENTITY, 1, [Tx.of(Increment(1))])
        agent.proof_of_possession()
    finally:
        agent.close()
    assert guard.is_dir()
    assert guard.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent-guard", "node-data"]
    assert list(data.iterdir()) == []
    files = [p for p in guard.rglob("*") if p.is_file()]
    assert any(p.name == "CURRENT" for p in files)  # a LevelDB
    content = b"".join(p.read_bytes() for p in files)
    assert frame(n=1).hash in content  # the records are there...
    secret = SK.to_bytes(32, "big")
    for form in (secret, secret.hex().encode(), secret[::-1], str(SK).encode()):
        assert form not in content  # ...and the key is not


def test_from_keystore_guard_is_per_signer(tmp_path: Path) -> None:
    store = tmp_path / "key.json"
    keystore.save(store, keystore.encrypt(SK.to_bytes(32, "big"), "pw", pubkey=PK, fast=True))
    agent = Agent.from_keystore(store, "pw", tmp_path / "guards")
    try:
        assert agent.pubkey == PK
        assert agent.signer_id == SIGNER
        assert bls.pop_verify(PK, agent.proof_of_possession())
        precommit(agent, frame().raw, 0)
    finally:
        agent.close()
    assert [p.name for p in (tmp_path / "guards").iterdir()] == [SIGNER.hex()]
    reopened = Agent(SK, tmp_path / "guards" / SIGNER.hex())
    try:
        with pytest.raises(Refused, match="different frame"):
            precommit(reopened, frame(n=2).raw, 0)
    finally:
        reopened.close()


def test_invalid_secret_key_is_refused(tmp_path: Path) -> None:
    for sk in (0, bls.CURVE_ORDER, -1):
        with pytest.raises(ValueError, match="invalid BLS secret key"):
            Agent(sk, tmp_path / "guard")


def test_close_waits_for_a_signing_thread_and_then_refuses(tmp_path: Path) -> None:
    """A thread signing while the agent closes (a node's loop shutting down under an
    ``asyncio.to_thread`` signing call) finishes its record first; then every request
    is refused, never a write to a closed LevelDB (which crashes the process)."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        assert release.wait(DEADLINE_S)

    agent = Agent(SK, tmp_path / "guard", after_record=hold)
    f = frame()
    results: list[Signatures] = []
    signer = threading.Thread(target=lambda: results.append(precommit(agent, f.raw, 0)))
    signer.start()
    assert inside.wait(DEADLINE_S)
    closer = threading.Thread(target=agent.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # held by the signing thread's record
    release.set()
    signer.join(DEADLINE_S)
    closer.join(DEADLINE_S)
    assert not closer.is_alive()
    assert results == [Signatures(bls.sign(SK, f.message(0)), ())]
    with pytest.raises(Refused, match="the agent is closed"):
        precommit(agent, frame(n=2).raw, 0)
    agent.close()  # twice: nothing more


OTHERS = [bls.keygen(bytes([i]) * 32) for i in (31, 32)]
TRIO = Config(
    (Member(PK, 1), *(Member(bls.sk_to_pk(sk), 1) for sk in OTHERS)), 2, SIGNER
)  # the agent is member 0 of 3, threshold 2


def polka_by(f: Frame, round_: int, *slots: int) -> Polka:
    keys = [SK, *OTHERS]
    sigs = [bls.sign(keys[i], f.approval_message(round_)) for i in slots]
    return Polka(round_, bitfield(slots, 3), bls.aggregate(sigs))


def test_a_pre_commit_needs_the_agents_own_approval_and_a_polka_of_its_round(
    open_agent: Callable[..., Agent],
) -> None:
    agent = open_agent()
    f, g = frame(n=1), frame(n=2)
    with pytest.raises(Refused, match="did not approve this frame"):
        agent.sign_precommit(f.entity_id, f.height, 0, f.hash, polka_by(f, 0, 1, 2), TRIO)
    agent.approve(f.raw, 0, TRIO)
    with pytest.raises(Refused, match="a polka of round 1 for a pre-commit at 0"):
        agent.sign_precommit(f.entity_id, f.height, 0, f.hash, polka_by(f, 1, 0, 1), TRIO)
    with pytest.raises(Refused, match="no polka for this frame: polka holds 1 shares"):
        agent.sign_precommit(f.entity_id, f.height, 0, f.hash, polka_by(f, 0, 1), TRIO)
    with pytest.raises(Refused, match="no polka for this frame: aggregate signature"):
        agent.sign_precommit(
            f.entity_id, f.height, 0, f.hash, polka_by(g, 0, 0, 1), TRIO
        )  # the polka of another frame
    with pytest.raises(Refused, match="already approved a different frame"):
        agent.approve(g.raw, 0, TRIO)
    assert agent.signed == 0  # nothing locked so far
    signed = agent.sign_precommit(f.entity_id, f.height, 0, f.hash, polka_by(f, 0, 0, 2), TRIO)
    assert bls.verify(PK, expected_message(f.raw, 0), signed.precommit)
    assert agent.signed == 1


def test_a_lock_is_released_only_by_a_polka_of_a_later_round(
    open_agent: Callable[..., Agent],
) -> None:
    """Locked on F since round 1, the agent approves G at round r only with a polka for
    G at a round vr, 1 < vr < r (the proposal carries it); then its lock moves to G."""
    agent = open_agent()
    f, g = frame(n=1), frame(n=2)
    agent.approve(f.raw, 1, TRIO)
    agent.sign_precommit(
        f.entity_id, f.height, 1, f.hash, polka_by(f, 1, 0, 1), TRIO
    )  # locked on (F, 1)
    with pytest.raises(Refused, match="already pre-committed at round 1"):
        agent.approve(g.raw, 0, TRIO)
    with pytest.raises(Refused, match="shows no polka for this frame"):
        agent.approve(g.raw, 3, TRIO)
    with pytest.raises(Refused, match="a polka at round 1 does not unlock it for round 3"):
        agent.approve(g.raw, 3, TRIO, polka_by(g, 1, 1, 2))  # not after the lock
    with pytest.raises(Refused, match="a polka at round 3 does not unlock it for round 3"):
        agent.approve(g.raw, 3, TRIO, polka_by(g, 3, 1, 2))  # not before the round
    with pytest.raises(Refused, match="polka does not verify"):
        agent.approve(g.raw, 3, TRIO, polka_by(f, 2, 1, 2))  # another frame's
    assert agent.approve(f.raw, 3, TRIO)  # the locked frame needs nothing
    unlock = polka_by(g, 2, 1, 2)  # B and C approved G at round 2
    approval = agent.approve(g.raw, 4, TRIO, unlock)
    assert bls.verify(PK, g.approval_message(4), approval)
    agent.sign_precommit(
        g.entity_id, g.height, 4, g.hash, polka_by(g, 4, 0, 1), TRIO
    )  # the lock moves to (G, 4)
    with pytest.raises(Refused, match="shows no polka"):
        agent.approve(f.raw, 5, TRIO)
