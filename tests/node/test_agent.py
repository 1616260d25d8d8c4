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
from node.machines.frames import Frame, Signatures
from node.machines.governance import signer_id
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
    first = agent.sign_precommit(f.raw, 0)
    again = agent.sign_precommit(f.raw, 0)
    assert again == first
    assert agent.signed == 1  # the second answer came from the record
    assert bls.verify(PK, expected_message(f.raw, 0), first.precommit)
    # Exactly the deterministic BLS signature over the independently rebuilt message:
    # the agent signs what it recomputes from the frame, nothing else.
    assert first == Signatures(bls.sign(SK, expected_message(f.raw, 0)), ())
    assert f.message(0) == expected_message(f.raw, 0)


def test_different_frame_same_height_and_round_is_refused(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    agent.sign_precommit(frame(n=1).raw, 0)
    with pytest.raises(Refused, match="different frame"):
        agent.sign_precommit(frame(n=2).raw, 0)
    assert agent.signed == 1


def test_lock_across_rounds(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    f, g = frame(n=1), frame(n=2)
    agent.sign_precommit(f.raw, 2)
    with pytest.raises(Refused, match="locked on another frame"):
        agent.sign_precommit(g.raw, 3)
    with pytest.raises(Refused, match="locked on another frame"):
        agent.sign_precommit(g.raw, 100)
    sig3 = agent.sign_precommit(f.raw, 3)
    assert bls.verify(PK, expected_message(f.raw, 3), sig3.precommit)
    assert sig3 != agent.sign_precommit(f.raw, 2)  # another round, another message
    # Never below the last round signed, not even the same frame.
    for round_ in (0, 1):
        with pytest.raises(Refused, match="already signed at round 3"):
            agent.sign_precommit(f.raw, round_)
        with pytest.raises(Refused):
            agent.sign_precommit(g.raw, round_)
    # The records of rounds already signed still answer, identically.
    assert agent.sign_precommit(f.raw, 3) == sig3
    assert agent.signed == 2


def test_lock_is_per_height_and_per_entity(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    agent.sign_precommit(frame(height=3, n=1).raw, 5)
    # Another height, or the same height of another entity, is free, at any round.
    assert agent.sign_precommit(frame(height=4, n=2).raw, 0)
    assert agent.sign_precommit(frame(height=3, n=2, entity=OTHER_ENTITY).raw, 0)
    with pytest.raises(Refused):
        agent.sign_precommit(frame(height=3, n=2).raw, 5)


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
        agent.sign_precommit(raw, 0)
    assert agent.signed == 0


@pytest.mark.parametrize("round_", [-1, 2**32, 2**64])
def test_round_out_of_range_is_refused(open_agent: Callable[..., Agent], round_: int) -> None:
    agent = open_agent()
    with pytest.raises(Refused, match="round out of range"):
        agent.sign_precommit(frame().raw, round_)


def test_top_round_is_signed(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    f = frame()
    sig = agent.sign_precommit(f.raw, 2**32 - 1)
    assert bls.verify(PK, expected_message(f.raw, 2**32 - 1), sig.precommit)


def test_outgoing_hashes_are_signed_with_the_precommit(open_agent: Callable[..., Agent]) -> None:
    agent = open_agent()
    outbox = (
        Outgoing(ANNOUNCE, b"", b"\xa0" * 32),
        Outgoing(ACK, OTHER_ENTITY, b"\xa1" * 32),
        Outgoing(FRAME, OTHER_ENTITY, b"\xa2" * 32),
    )
    f = frame(outbox=outbox)
    sigs = agent.sign_precommit(f.raw, 1)
    # One signature per outgoing hash, in the frame's order, over the 32 bytes alone.
    assert sigs == Signatures(
        bls.sign(SK, expected_message(f.raw, 1)), tuple(bls.sign(SK, o.hash) for o in outbox)
    )
    # The record answers again with the same outgoing signatures.
    assert agent.sign_precommit(f.raw, 1) == sigs
    assert agent.signed == 1
    # Another frame at the same height and round is refused, outbox or not.
    with pytest.raises(Refused, match="different frame"):
        agent.sign_precommit(frame(outbox=outbox[:1]).raw, 1)


def test_no_sign_this_hash_api() -> None:
    public = {name for name in vars(Agent) if not name.startswith("_")}
    assert public == {
        "close",
        "from_keystore",
        "proof_of_possession",
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
        agent.sign_precommit(frame(height=3).raw, 0)
    assert agent.floor(ENTITY) is None
    assert agent.set_floor(ENTITY, 3) == 3
    assert agent.set_floor(ENTITY, 2) == 3  # a floor only rises
    for height in (1, 3):
        with pytest.raises(Refused, match="at or below 3"):
            agent.sign_precommit(frame(height=height).raw, 0)
    # Another entity has no floor yet: still refused.
    with pytest.raises(Refused, match="peers have not yet told"):
        agent.sign_precommit(frame(height=9, entity=OTHER_ENTITY).raw, 0)
    agent.sign_precommit(frame(height=4).raw, 0)
    assert agent.signed == 1
    agent.close()
    # Durable: reopened, the guard is still restored and holds the floor.
    again = open_agent(guard)
    assert again.restored
    assert again.floor(ENTITY) == 3
    with pytest.raises(Refused, match="at or below 3"):
        again.sign_precommit(frame(height=3, n=2).raw, 0)


def test_signing_record_is_the_highest_precommit_per_entity(
    tmp_path: Path, open_agent: Callable[..., Agent]
) -> None:
    guard = tmp_path / "guard"
    agent = open_agent(guard)
    assert agent.signing_record() == {}
    low, high = frame(height=2, n=1), frame(height=10, n=2)
    agent.sign_precommit(low.raw, 0)
    agent.sign_precommit(high.raw, 0)
    agent.sign_precommit(high.raw, 3)  # a later round of the same frame (the lock)
    with pytest.raises(Refused, match="already signed at round 3"):
        agent.sign_precommit(high.raw, 1)  # below the lock's round: nothing recorded
    other = frame(height=256, n=3, entity=OTHER_ENTITY)
    agent.sign_precommit(other.raw, 7)
    agent.set_floor(ENTITY, 50)  # floors and bindings are other records: not in it
    agent.bind_server(bls.sk_to_pk(bls.keygen(b"a" * 32)))
    expected = {
        ENTITY: SignedAt(10, 3, high.hash),
        OTHER_ENTITY: SignedAt(256, 7, other.hash),
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
    agent.sign_precommit(frame(height=2).raw, 0)  # no floor, not restored: signs
    agent.set_floor(ENTITY, 2)
    with pytest.raises(Refused, match="at or below 2"):
        agent.sign_precommit(frame(height=2, n=5).raw, 1)


def test_records_survive_reopening(tmp_path: Path, open_agent: Callable[..., Agent]) -> None:
    guard = tmp_path / "guard"
    agent = open_agent(guard)
    f, g = frame(n=1), frame(n=2)
    sig = agent.sign_precommit(f.raw, 1)
    agent.close()
    again = open_agent(guard)
    assert again.sign_precommit(f.raw, 1) == sig
    assert again.signed == 0  # answered from the record, not signed anew
    with pytest.raises(Refused, match="different frame"):
        again.sign_precommit(g.raw, 1)
    with pytest.raises(Refused, match="locked on another frame"):
        again.sign_precommit(g.raw, 2)
    with pytest.raises(Refused, match="already signed at round 1"):
        again.sign_precommit(f.raw, 0)


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
sig = agent.sign_precommit(bytes.fromhex(sys.argv[2]), int(sys.argv[3]))
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
        agent.sign_precommit(g.raw, 4)
    with pytest.raises(Refused, match="locked on another frame"):
        agent.sign_precommit(g.raw, 5)
    sig = agent.sign_precommit(f.raw, 4)
    assert agent.signed == 0
    assert bls.verify(PK, expected_message(f.raw, 4), sig.precommit)


def test_guard_folder_holds_the_records_and_never_the_key(tmp_path: Path) -> None:
    guard = tmp_path / "agent-guard"
    data = tmp_path / "node-data"
    data.mkdir()
    agent = Agent(SK, guard)
    try:
        for round_ in range(3):
            agent.sign_precommit(frame(n=1).raw, round_)
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
        agent.sign_precommit(frame().raw, 0)
    finally:
        agent.close()
    assert [p.name for p in (tmp_path / "guards").iterdir()] == [SIGNER.hex()]
    reopened = Agent(SK, tmp_path / "guards" / SIGNER.hex())
    try:
        with pytest.raises(Refused, match="different frame"):
            reopened.sign_precommit(frame(n=2).raw, 0)
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
    signer = threading.Thread(target=lambda: results.append(agent.sign_precommit(f.raw, 0)))
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
        agent.sign_precommit(frame(n=2).raw, 0)
    agent.close()  # twice: nothing more
