"""Which members a peer server speaks for (node/net/peer_auth.py).

Real BLS keys: members' keys sign bindings of servers' identity keys. A connection
speaks for a member of an entity only under that member's current binding of the
connection's key, introduced on the connection or recorded on the replica; a
binding of another key, a replaced or revoked one, or one that does not verify
under the member's key in the config speaks for no one.
"""

from __future__ import annotations

from node.machines.binding import NO_SERVER, ServerBinding, sign_binding
from node.machines.replica import AnnounceBinding, Replica
from node.net import peer_auth
from node.net.peer_auth import MAX_INTRODUCED, PeerBindings
from tests.node.machines.test_round_change_auth import (
    IDS,
    SERVER_PKS,
    SKS,
    A,
    B,
    C,
    binding,
    replica_of,
    step,
)

OUTSIDER_KEY = SERVER_PKS[3]  # a server bound by member D in no entity below


def recorded(r: Replica, *bindings: object) -> Replica:
    after, _ = step(r, *(AnnounceBinding(b) for b in bindings))  # type: ignore[arg-type]
    return after


def test_an_introduced_binding_of_the_connections_key_speaks_for_its_member() -> None:
    r = replica_of(A)
    conn = PeerBindings(SERVER_PKS[B])
    assert conn.member_for(r) is None
    assert "speaks for no member of entity" in (peer_auth.refusal(conn, r) or "")
    assert conn.introduce(binding(B, B)) is None
    assert conn.member_for(r) == IDS[B]
    assert peer_auth.refusal(conn, r) is None


def test_a_binding_of_another_key_is_not_an_introduction() -> None:
    conn = PeerBindings(OUTSIDER_KEY)
    why = conn.introduce(binding(B, B))  # B's binding of its own server, not the outsider
    assert why == "a server introduces only bindings of its own identity key"
    assert conn.introduced == {}
    assert conn.member_for(replica_of(A)) is None


def test_a_forged_binding_verifies_under_no_member_key() -> None:
    # The outsider signs "B binds me" with its own key: held, but it speaks for no one.
    forged = sign_binding(SKS[C], IDS[B], OUTSIDER_KEY, 1)
    conn = PeerBindings(OUTSIDER_KEY)
    assert conn.introduce(forged) is None
    assert conn.member_for(replica_of(A)) is None


def test_a_signer_not_in_the_config_speaks_for_nothing() -> None:
    stranger = sign_binding(SKS[A], b"\x01" * 32, OUTSIDER_KEY, 1)  # no member's id
    conn = PeerBindings(OUTSIDER_KEY)
    assert conn.introduce(stranger) is None
    assert conn.member_for(replica_of(A)) is None


def test_a_higher_serial_recorded_on_the_replica_replaces_the_introduced_one() -> None:
    r = recorded(replica_of(A), binding(B, C, serial=2))  # B moved to server C
    old = PeerBindings(SERVER_PKS[B])
    old.introduce(binding(B, B, serial=1))
    assert old.member_for(r) is None
    moved = PeerBindings(SERVER_PKS[C])
    assert moved.member_for(r) == IDS[B]  # recorded on the replica: no introduction needed


def test_a_revocation_speaks_for_no_one() -> None:
    revoke = sign_binding(SKS[B], IDS[B], NO_SERVER, 2)
    r = recorded(replica_of(A), binding(B, B, serial=1), revoke)
    conn = PeerBindings(SERVER_PKS[B])
    conn.introduce(binding(B, B, serial=1))
    assert conn.member_for(r) is None
    assert conn.member_for(recorded(replica_of(A), binding(B, B, serial=1))) == IDS[B]


def test_a_lower_serial_introduced_later_is_ignored() -> None:
    conn = PeerBindings(SERVER_PKS[B])
    conn.introduce(binding(B, B, serial=3))
    conn.introduce(binding(B, B, serial=1))
    assert conn.introduced[IDS[B]].serial == 3


def test_a_connection_introduces_a_bounded_number_of_members() -> None:
    conn = PeerBindings(OUTSIDER_KEY)
    signature = sign_binding(SKS[A], IDS[A], OUTSIDER_KEY, 1).signature
    for i in range(MAX_INTRODUCED):
        made_up = ServerBinding(i.to_bytes(32, "big"), OUTSIDER_KEY, 1, signature)
        assert conn.introduce(made_up) is None
    extra = ServerBinding(b"\xff" * 32, OUTSIDER_KEY, 1, signature)
    assert conn.introduce(extra) == (
        f"a connection may introduce at most {MAX_INTRODUCED} members' bindings"
    )
    assert len(conn.introduced) == MAX_INTRODUCED
    # A member introduced already may still raise its serial.
    assert (
        conn.introduce(ServerBinding((0).to_bytes(32, "big"), OUTSIDER_KEY, 2, signature)) is None
    )
    assert conn.member_for(replica_of(A)) is None  # none of them is a member's binding
