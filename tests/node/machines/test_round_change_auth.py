"""Signed round changes and server bindings (node/machines/binding.py, replica/rounds.py).

Real BLS keys throughout: members' keys sign bindings of server identity keys, the
servers' keys sign round changes. A round change from another server counts only
under its member's current binding and that server's signature over this entity,
height, round and lock; anything else is refused and leaves the replica as it was.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from node.agent import Agent, Refused
from node.codec import decode
from node.crypto import bls
from node.machines import replica as rep
from node.machines.binding import (
    NO_SERVER,
    Bound,
    ServerBinding,
    binding_message,
    round_change_message,
    sign_binding,
)
from node.machines.frames import Frame, Polka, bitfield
from node.machines.governance import Config, Member, signer_id
from node.machines.replica import (
    AnnounceBinding,
    Genesis,
    Lock,
    Note,
    Replica,
    RoundChange,
    SignedRoundChange,
)
from node.txs import REGISTRIES, Level, Tx

SKS = [bls.keygen(bytes([i + 41]) * 32) for i in range(4)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
POPS = [bls.pop_prove(sk) for sk in SKS]
A, B, C, D = range(4)
# The servers' identity keys: S[i] hosts member i.
SERVER_SKS = [bls.keygen(bytes([i + 81]) * 32) for i in range(4)]
SERVER_PKS = [bls.sk_to_pk(sk) for sk in SERVER_SKS]
STRANGER = bls.keygen(b"\x99" * 32)  # a fresh identity key, bound to no one


def genesis(salt: bytes = b"\x11" * 32) -> Genesis:
    config = Config(tuple(Member(pk, 1) for pk in PKS), 3, IDS[A])
    return Genesis(config, salt, tuple(POPS))


def replica_of(who: int, salt: bytes = b"\x11" * 32) -> Replica:
    return rep.create(IDS[who], genesis(salt))


def binding(member: int, server: int, serial: int = 1) -> ServerBinding:
    return sign_binding(SKS[member], IDS[member], SERVER_PKS[server], serial)


def signed(
    r: Replica,
    member: int,
    height: int,
    round_: int,
    *,
    by: int | None = None,
    server_sk: int | None = None,
    bound: ServerBinding | None = None,
) -> SignedRoundChange:
    """Member ``member``'s round change as its server (``by``, default its own) sends it
    to ``r``'s entity."""
    server = member if by is None else by
    rc = RoundChange(height, round_, IDS[member], None)
    sk = SERVER_SKS[server] if server_sk is None else server_sk
    signature = bls.sign(sk, SignedRoundChange.message(r.entity_id, rc))
    return SignedRoundChange(rc, bound or binding(member, server), signature)


def step(r: Replica, *bodies: object) -> tuple[Replica, list[rep.Effect]]:
    after, effects = rep.step(r, [Tx.of(b) for b in bodies])  # type: ignore[arg-type]
    again = Replica.decode(after.encoded)
    assert again == after
    assert again.encoded == after.encoded
    return after, effects


def notes(effects: list[rep.Effect]) -> list[str]:
    return [e.message for e in effects if isinstance(e, Note)]


def refused(r: Replica, src: SignedRoundChange, why: str) -> None:
    """``src`` is refused, for ``why``, by the transition and the intake check alike,
    and changes nothing."""
    reason = rep.check_round_change(r, src)
    assert reason is not None
    assert why in reason, reason
    after, effects = step(r, src)
    assert after.encoded == r.encoded
    assert any(why in n for n in notes(effects)), effects


# The messages ----------------------------------------------------------------------------


def test_messages_are_domain_separated_and_sized() -> None:
    m = binding_message(IDS[A], SERVER_PKS[A], 7)
    assert len(m) == 109
    assert m.startswith(b"XLN/server-binding/v1")
    assert m.endswith((7).to_bytes(8, "big"))
    rc = round_change_message(b"\x01" * 32, 5, 3, IDS[A], b"\x00" * 32)
    assert len(rc) == 127
    assert rc.startswith(b"XLN/round-change/v1")
    # No other signed message of the protocol has these lengths (99, 123, 129, 32).
    assert {len(m), len(rc)}.isdisjoint({32, 99, 123, 129})


def test_signed_round_change_and_binding_round_trip_on_the_wire() -> None:
    r = replica_of(B)
    for body in (signed(r, C, 1, 1), AnnounceBinding(binding(C, C))):
        tx = Tx.of(body)
        assert REGISTRIES[Level.ENTITY].decode(decode(tx.raw), tx.raw).body == body


# What counts -----------------------------------------------------------------------------


def test_genuine_signed_round_changes_move_the_replica_and_record_bindings() -> None:
    r = replica_of(B)  # B leads round 1
    assert rep.check_round_change(r, signed(r, C, 1, 1)) is None
    r, effects = step(r, signed(r, C, 1, 1))
    assert notes(effects) == []
    assert r.ahead == ((IDS[C], 1),)
    assert r.round == 0
    r, _ = step(r, signed(r, D, 1, 1))
    assert r.round == 1  # C and D hold more than total - threshold shares
    assert [b.signer for b in r.bindings] == sorted([IDS[C], IDS[D]])
    assert r.version == 3
    # The same inputs give the same replica, byte for byte (replicas are deterministic).
    fresh = replica_of(B)
    fresh, _ = step(fresh, signed(fresh, C, 1, 1))
    fresh, _ = step(fresh, signed(fresh, D, 1, 1))
    assert fresh.encoded == r.encoded
    assert fresh.hash == r.hash


def test_a_replica_without_bindings_round_trips_with_an_empty_list() -> None:
    r = replica_of(B)
    assert r.version == 3
    assert r.to_tree()[14] == []
    assert Replica.decode(r.encoded) == r
    r, _ = step(r, RoundChange(1, 1, IDS[C], None))  # the node's own: no binding
    assert r.bindings == ()
    assert r.ahead == ((IDS[C], 1),)
    assert Replica.decode(r.encoded) == r


def test_a_fresh_identity_key_cannot_forge_a_members_round_change() -> None:
    """The hostile peer of issue 13: a new identity key, and a "binding" it signed itself."""
    r = replica_of(B)
    self_made = sign_binding(STRANGER, IDS[C], bls.sk_to_pk(STRANGER), 1)
    forged = signed(r, C, 1, 21, server_sk=STRANGER, bound=self_made)
    refused(r, forged, "does not verify under member")
    # Nor with a genuine binding of C's real server, which it cannot sign for.
    stolen = signed(r, C, 1, 21, server_sk=STRANGER, bound=binding(C, C))
    refused(r, stolen, "not signed by the server its binding names")


def test_a_binding_by_the_wrong_member_is_refused() -> None:
    r = replica_of(B)
    # D's binding carried with C's round change.
    mixed = signed(r, C, 1, 1, by=D, bound=binding(D, D))
    refused(r, mixed, "under another member's binding")
    # A binding naming C but signed with D's key.
    wrong_key = ServerBinding(
        IDS[C], SERVER_PKS[D], 1, bls.sign(SKS[D], binding_message(IDS[C], SERVER_PKS[D], 1))
    )
    refused(r, signed(r, C, 1, 1, by=D, bound=wrong_key), "does not verify under member")


def test_a_binding_of_another_server_key_is_refused() -> None:
    """C bound server 2; server 3 signs C's round change under that binding."""
    r = replica_of(B)
    src = signed(r, C, 1, 1, server_sk=SERVER_SKS[D], bound=binding(C, C))
    refused(r, src, "not signed by the server its binding names")


def test_a_non_member_is_refused() -> None:
    outsider_sk = bls.keygen(b"\x77" * 32)
    outsider = signer_id(bls.sk_to_pk(outsider_sk))
    r = replica_of(B)
    rc = RoundChange(1, 1, outsider, None)
    bound = sign_binding(outsider_sk, outsider, SERVER_PKS[D], 1)
    sig = bls.sign(SERVER_SKS[D], SignedRoundChange.message(r.entity_id, rc))
    refused(r, SignedRoundChange(rc, bound, sig), "not a member of the entity")


@pytest.mark.parametrize("what", ["height", "round", "entity", "lock"])
def test_a_round_change_replayed_elsewhere_is_refused(what: str) -> None:
    r = replica_of(B)
    genuine = signed(r, C, 1, 1)
    rc = genuine.report
    if what == "entity":
        other = replica_of(B, salt=b"\x22" * 32)
        refused(other, genuine, "not signed by the server")
        return
    if what == "height":
        # A report signed for height 2, replayed at height 1 (where the replica is).
        at2 = signed(r, C, 2, 1)
        moved = SignedRoundChange(RoundChange(1, 1, IDS[C], None), at2.binding, at2.signature)
        refused(r, moved, "not signed by the server")
        return
    if what == "round":
        moved = SignedRoundChange(
            RoundChange(rc.height, 9, rc.signer, None), genuine.binding, genuine.signature
        )
        refused(r, moved, "not signed by the server")
        return
    # The lock is covered by the signature too: a made-up lock cannot be slipped in.
    frame = Frame.make(r.entity_id, 1, r.head, (), r.entity.hash)
    polka = Polka(0, bitfield([A], len(r.entity.config.members)), bls.sign(SKS[A], b"x"))
    lock = Lock(0, frame, polka)
    moved = SignedRoundChange(
        RoundChange(rc.height, rc.round, rc.signer, lock), genuine.binding, genuine.signature
    )
    refused(r, moved, "not signed by the server")


def bound_of(r: Replica, member: int) -> Bound:
    found = r.bound(IDS[member])
    assert found is not None
    return found


def test_a_higher_serial_replaces_and_a_revocation_stops_counting() -> None:
    r = replica_of(B)
    r, _ = step(r, signed(r, C, 1, 1))  # C's round change under serial 1 (server 2)
    assert bound_of(r, C).serial == 1
    # C moves to server 3: serial 2. Server 2's round changes under serial 1 stop counting.
    moved = signed(r, C, 1, 2, by=D, bound=binding(C, D, serial=2))
    r, effects = step(r, moved)
    assert notes(effects) == []
    assert bound_of(r, C).serial == 2
    refused(r, signed(r, C, 1, 3), "replaced by serial 2")
    # Another binding at serial 2 (of another key) is not counted either.
    refused(r, signed(r, C, 1, 3, by=A, bound=binding(C, A, serial=2)), "a second binding")
    # C revokes: it binds no server at serial 3, announced to the replica.
    revoke = sign_binding(SKS[C], IDS[C], NO_SERVER, 3)
    r, effects = step(r, AnnounceBinding(revoke))
    assert notes(effects) == []
    assert bound_of(r, C).server_key == NO_SERVER
    refused(r, signed(r, C, 1, 3, by=D, bound=binding(C, D, serial=2)), "replaced by serial 3")
    # The revocation itself lets no server speak (no key can sign under 48 zero bytes).
    refused(r, signed(r, C, 1, 3, bound=revoke), "binds no server")
    # An older binding announced again changes nothing, and is stale on intake.
    assert rep.stale(r, AnnounceBinding(binding(C, C)))
    assert rep.stale(r, AnnounceBinding(revoke))
    after, _ = step(r, AnnounceBinding(binding(C, C)))
    assert after.encoded == r.encoded


def test_an_announced_binding_must_be_the_members() -> None:
    r = replica_of(B)
    forged = ServerBinding(IDS[C], SERVER_PKS[D], 5, bls.sign(STRANGER, b"x"))
    after, effects = step(r, AnnounceBinding(forged))
    assert after.encoded == r.encoded
    assert any("does not verify under member" in n for n in notes(effects))
    assert not rep.stale(r, AnnounceBinding(binding(C, C)))


def test_stale_signed_round_changes_are_dropped_before_any_check() -> None:
    r = replica_of(B)
    r, _ = step(r, signed(r, C, 1, 1), signed(r, D, 1, 1))
    assert r.round == 1
    junk = signed(r, C, 1, 1, server_sk=STRANGER)
    assert not rep.stale(r, junk)  # about the replica's round: checked, then refused
    assert rep.stale(replace(r, round=2), junk)  # a round it left: dropped unread
    after, effects = step(replace(r, round=2), junk)
    assert effects == []
    assert after.encoded == replace(r, round=2).encoded


def test_the_node_itself_is_the_only_source_of_unsigned_round_changes() -> None:
    assert RoundChange.TYPE in rep.INTERNAL_INPUTS
    assert SignedRoundChange.TYPE not in rep.INTERNAL_INPUTS


# The agent's bindings --------------------------------------------------------------------


def test_the_agent_binds_one_server_at_a_time_and_keeps_its_serial(tmp_path: Path) -> None:
    agent = Agent(SKS[C], tmp_path / "guard")
    try:
        first = agent.bind_server(SERVER_PKS[C])
        assert (first.signer, first.serial) == (IDS[C], 1)
        assert first.verify(PKS[C])
        assert agent.bind_server(SERVER_PKS[C]) == first  # the same key: the same binding
        moved = agent.bind_server(SERVER_PKS[D])
        assert moved.serial == 2
        assert moved.verify(PKS[C])
        revoke = agent.revoke_server()
        assert (revoke.server_key, revoke.serial) == (NO_SERVER, 3)
        with pytest.raises(Refused):
            agent.bind_server(b"\x01" * 47)
    finally:
        agent.close()
    again = Agent(SKS[C], tmp_path / "guard")  # the record is durable
    try:
        assert again.bind_server(NO_SERVER) == revoke
        assert again.bind_server(SERVER_PKS[C]).serial == 4
    finally:
        again.close()
