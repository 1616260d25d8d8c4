"""Channels driven by entities (node/machines/accounts.py with entity, frames, replica), pure.

Entities of one or several signers pay each other over channels in a
:class:`~tests.node.machines.channel_world.World`: real BLS agents sign each
frame's pre-commit and its outgoing channel messages in one answer, the
certificate aggregates both, and the counterparty verifies the quorum
signature against the signer set it knows.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.codec import decode, encode, encode_tree
from node.crypto import bls
from node.machines import accounts
from node.machines import channel as ch
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines.accounts import ExtendCredit, FundChannel, Pay
from node.machines.entity import EntityState
from node.machines.governance import ConfigError, SetThreshold
from node.machines.quorum import bitfield
from node.txs import Tx
from tests.node.machines.channel_world import ASSET, IDS, SKS, World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def _pair(world: World, a_funds: int = 1_000, a_collateral: int = 500) -> tuple[bytes, bytes]:
    a = world.entity("A", [0], 1, salt=1)
    b = world.entity("B", [1], 1, salt=2)
    world.mint("A", a_funds)
    world.run()
    world.open("A", "B", collateral=a_collateral)
    world.open("B", "A")
    world.settle()
    return a, b


def _side(state: EntityState, peer: bytes) -> ch.ChannelSide:
    record = state.channel(peer)
    assert record is not None
    return record.side


def _value(world: World, *names: str) -> int:
    """Reserves plus this side's balances, over the named entities."""
    total = 0
    for name in names:
        s = world.state(name)
        total += s.reserve(ASSET)
        for c in s.channels.values():
            total += c.side.agreed.asset(ASSET).balance(c.side.me)
    return total


def test_faucet_open_and_direct_payment(world: World) -> None:
    a, b = _pair(world)
    assert world.state("A").reserve(ASSET) == 500
    world.submit("A", Pay((b,), ASSET, 120))
    world.settle()
    sa, sb = _side(world.state("A"), b), _side(world.state("B"), a)
    assert sa.agreed.hash == sb.agreed.hash
    assert sa.head == sb.head
    assert sa.status == sb.status == "ready"
    bal = sa.agreed.asset(ASSET)
    assert bal.balance(sa.me) == 380
    assert bal.balance(sb.me) == 120
    assert [p.amount for p in world.payments("A", "paid")] == [120]
    assert [p.amount for p in world.payments("B", "received")] == [120]
    assert _value(world, "A", "B") == 1_000


def test_both_directions_and_credit(world: World) -> None:
    a, b = _pair(world)
    # B has no collateral: it can pay A only within the credit A extends to it.
    world.propose("A", ExtendCredit(b, ASSET, 50))
    world.settle()
    world.submit("B", Pay((a,), ASSET, 40))
    world.submit("A", Pay((b,), ASSET, 10))
    world.settle()
    side = _side(world.state("A"), b)
    assert side.agreed.asset(ASSET).balance(side.me) == 500 - 10 + 40
    assert _side(world.state("B"), a).agreed.hash == side.agreed.hash
    # Beyond capacity: refused in the batch, with a clear reason; nothing changes.
    before = world.state("B").hash
    world.submit("B", Pay((a,), ASSET, 10_000))
    world.run()
    assert any("insufficient capacity" in n for n in world.notes)
    assert world.state("B").hash == before


def test_payment_through_a_hub_conserves_value(world: World) -> None:
    a = world.entity("A", [0], 1, salt=1)
    h = world.entity("H", [2, 3, 4], 2, salt=3)
    b = world.entity("B", [1], 1, salt=2)
    world.mint("A", 1_000)
    world.mint("H", 1_000)
    world.run()
    world.open("A", "H", collateral=300)
    world.open("H", "A")
    world.open("H", "B", collateral=400)
    world.open("B", "H")
    world.settle()
    total = _value(world, "A", "H", "B")
    for amount in (10, 20, 30):
        world.submit("A", Pay((h, b), ASSET, amount))
    world.settle()
    assert sorted(p.amount for p in world.payments("B", "received")) == [10, 20, 30]
    assert sorted(p.amount for p in world.payments("H", "forwarded")) == [10, 20, 30]
    assert _value(world, "A", "H", "B") == total
    assert _value(world, "B") == 60
    assert len(world.state("H").forwards) == 0
    for x, y in ((a, h), (h, b)):
        assert _side(world.state(x), y).agreed.hash == _side(world.state(y), x).agreed.hash


def test_hub_without_capacity_refunds_with_the_reason(world: World) -> None:
    world.entity("A", [0], 1, salt=1)
    h = world.entity("H", [2, 3, 4], 2, salt=3)
    b = world.entity("B", [1], 1, salt=2)
    world.mint("A", 1_000)
    world.run()
    world.open("A", "H", collateral=300)
    world.open("H", "A")
    world.open("H", "B")  # no collateral, no credit: H cannot pay B
    world.open("B", "H")
    world.settle()
    world.submit("A", Pay((h, b), ASSET, 100))
    world.settle()
    refunded = world.payments("A", "refunded")
    assert [p.amount for p in refunded] == [100]
    assert "exceeds the capacity" in refunded[0].detail
    assert world.payments("B", "received") == []
    side = _side(world.state("A"), h)
    assert side.agreed.asset(ASSET).balance(side.me) == 300  # back, nothing half-applied
    assert len(world.state("H").forwards) == 0


def test_route_to_an_entity_the_hub_has_no_channel_with(world: World) -> None:
    world.entity("A", [0], 1, salt=1)
    h = world.entity("H", [2], 1, salt=3)
    stranger = b"\x77" * 32
    world.mint("A", 100)
    world.run()
    world.open("A", "H", collateral=100)
    world.open("H", "A")
    world.settle()
    world.submit("A", Pay((h, stranger), ASSET, 60))
    world.settle()
    [refund] = world.payments("A", "refunded")
    assert refund.amount == 60
    assert "no channel" in refund.detail
    assert _value(world, "A") == 100


def test_simultaneous_payments_both_ways(world: World) -> None:
    a, b = _pair(world)
    world.propose("A", ExtendCredit(b, ASSET, 1_000))
    world.settle()
    for i in range(5):
        world.submit("A", Pay((b,), ASSET, 1 + i))
        world.submit("B", Pay((a,), ASSET, 10 + i))
        world.run()
    world.settle()
    side = _side(world.state("A"), b)
    assert side.agreed.asset(ASSET).balance(side.me) == 500 - sum(range(1, 6)) + sum(range(10, 15))
    assert _side(world.state("B"), a).agreed.hash == side.agreed.hash
    assert len(world.payments("A", "paid")) == 5
    assert len(world.payments("B", "received")) == 5
    assert len(world.payments("A", "received")) == 5


def test_lost_messages_come_again_by_resend(world: World) -> None:
    a, b = _pair(world)
    rng = random.Random(7)

    def drop(src: bytes, dst: bytes, tx: Tx) -> bool:
        return rng.random() < 0.5  # half the messages between entities are lost

    world.drop = drop
    for amount in (5, 6, 7):
        world.submit("A", Pay((b,), ASSET, amount))
        world.run()
    world.settle()
    assert sorted(p.amount for p in world.payments("B", "received")) == [5, 6, 7]
    assert _side(world.state("A"), b).agreed.hash == _side(world.state("B"), a).agreed.hash


def test_add_collateral_and_credit_limits(world: World) -> None:
    a, b = _pair(world)
    world.propose("A", FundChannel(b, ASSET, 200))
    world.settle()
    side = _side(world.state("A"), b)
    asset = side.agreed.asset(ASSET)
    assert asset.balance(side.me) == 700
    assert world.state("A").reserve(ASSET) == 300
    # More than the reserve: the action is voided, and says why.
    world.propose("A", FundChannel(b, ASSET, 10_000))
    world.settle()
    voided = [v for ev in world.events[a] for v in ev.voided]
    assert any("reserve of asset 1 is 300" in reason for _, reason in voided)


def test_signer_set_change_reaches_the_counterparty(world: World) -> None:
    world.entity("A", [0], 1, salt=1)
    h = world.entity("H", [2, 3, 4], 2, salt=3)
    world.mint("A", 100)
    world.run()
    world.open("A", "H", collateral=100)
    world.open("H", "A")
    world.settle()
    old_config = world.state("H").config
    world.propose("H", SetThreshold(3))
    world.settle()
    h_state = world.state("H")
    assert h_state.config.threshold == 3
    assert h_state.config_height > 0
    # H's next message (an ack, signed by the new set) is accepted only because A
    # learned the new set from H's certified announcement first.
    world.submit("A", Pay((h,), ASSET, 10))
    world.settle()
    record = world.state("A").channel(h)
    assert record is not None
    assert record.peer_config == h_state.config
    assert record.peer_config_height == h_state.config_height
    assert [p.amount for p in world.payments("H", "received")] == [10]
    assert old_config != h_state.config


def _signed(keys: list[int], bits_of: list[int], size: int, body: ch.Ack) -> tuple[bytes, bytes]:
    sig = bls.aggregate([bls.sign(SKS[k], body.hash) for k in keys])
    return bitfield(bits_of, size), sig


def test_sub_threshold_and_stale_signatures_are_refused(world: World) -> None:
    world.entity("A", [0], 1, salt=1)
    h = world.entity("H", [2, 3, 4], 2, salt=3)
    world.mint("A", 100)
    world.run()
    world.open("A", "H", collateral=100)
    world.open("H", "A")
    world.settle()
    state = world.state("A")
    record = state.channel(h)
    assert record is not None
    ack = ch.Ack(record.side.channel_id, 1, b"\x01" * 32)
    ledger = ent._Work.of(state).ledger
    bits, sig = _signed([2], [0], 3, ack)
    one = accounts.Message(accounts.ACK, h, ack, record.peer_config_height, bits, sig)
    with pytest.raises(ConfigError, match="below the threshold"):
        accounts.apply_input(ledger, one, verify=True)
    bits, sig = _signed([2, 3], [0, 1], 3, ack)
    forged = accounts.Message(
        accounts.ACK, h, ack, record.peer_config_height, bits, sig[:-1] + b"\0"
    )
    with pytest.raises(ConfigError):
        accounts.apply_input(ledger, forged, verify=True)
    # A set the receiver has moved past is stale; one it has not heard of is not yet valid.
    moved = accounts.ChannelRecord(h, record.peer_config, 5, record.side)
    ledger.channels[h] = moved
    stale = accounts.Message(accounts.ACK, h, ack, 4, bits, sig)
    with pytest.raises(ConfigError, match="stale signer set"):
        accounts.apply_input(ledger, stale, verify=True)
    future = accounts.Message(accounts.ACK, h, ack, 6, bits, sig)
    with pytest.raises(accounts.FutureInput):
        accounts.apply_input(ledger, future, verify=True)


def test_faucet_is_refused_outside_simulation(tmp_path: Path) -> None:
    world = World(tmp_path, simulation=False)
    try:
        world.entity("A", [0], 1, salt=1)
        world.mint("A", 100)
        world.run()
        assert world.state("A").reserve(ASSET) == 0
        assert any("disabled outside simulation" in n for n in world.notes)
    finally:
        world.close()


def test_a_faucet_from_a_member_that_does_not_propose(world: World) -> None:
    """The faucet is a member's signed batch: one from a non-proposer goes to the
    proposer like any batch, and every replica applies it; its event is ``minted``."""
    h = world.entity("H", [2, 3, 4], 2, salt=3)
    world.submit("H", accounts.Faucet(ASSET, 700), key=3)
    world.run()
    assert world.state("H").reserve(ASSET) == 700  # asserts every replica agrees
    assert world.state("H").reserves == ((ASSET, 700),)
    minted = world.payments("H", "minted")
    assert [(m.asset, m.amount) for m in minted] == [(ASSET, 700)]
    assert minted[0].payment_id == accounts.payment_id_for(h, IDS[3], 1, 0)


def test_threshold_entity_state_round_trips_with_channels(world: World) -> None:
    _, b = _pair(world)
    world.submit("A", Pay((b,), ASSET, 3))
    world.run()  # mid-flight: pending frames, queues, inbox
    for replica in world.replicas.values():
        again = rep.Replica.decode(replica.encoded)
        assert again.encoded == replica.encoded
        assert EntityState.from_item(decode(replica.entity.encoded)).hash == replica.entity.hash
    world.settle()


def test_fast_encodings_equal_the_tree_encodings(world: World) -> None:
    """Replicas, entity states, inputs and frame-carrying inputs are encoded from their
    parts' encodings (no decoding to encode again); the bytes must be the same."""
    _, b = _pair(world)
    world.submit("A", *[Pay((b,), ASSET, 1)] * 20)
    checked = 0
    for _ in range(40):
        for key in [k for k, txs in world.inbox.items() if txs]:
            for tx in world.inbox[key]:
                assert tx.raw == encode([tx.body.TYPE, *tx.body.to_fields()])
            world.step(*key)
        for r in world.replicas.values():
            assert r.encoded == encode_tree(r.to_tree())
            assert r.entity.encoded == encode_tree(r.entity.to_tree())
            assert all(i.raw == encode_tree(i.to_tree()) for i in r.inbox)
            assert all(m.raw == encode_tree(m.to_tree()) for _, m in r.mailbox.messages())
            if r.pending is not None:
                assert r.pending.encoded == encode_tree(r.pending.to_tree())
            if r.lock is not None:
                assert r.lock.encoded == encode_tree(r.lock.to_tree())
            for c in r.entity.channels.values():
                waiting = (*c.side.queue, *(c.side.pending.txs if c.side.pending else ()))
                assert all(t.raw == encode([t.body.TYPE, *t.body.to_fields()]) for t in waiting)
            checked += bool(r.inbox or r.mailbox or r.pending)
    assert checked > 0


# Actions per seed; a longer run: XLN_HUB_ACTIONS=20000 (see bench/README.md).
HOSTILE_ACTIONS = int(os.environ.get("XLN_HUB_ACTIONS", "1000"))


@pytest.mark.parametrize("seed", range(6))
def test_payments_both_ways_through_a_hub_over_a_hostile_network(tmp_path: Path, seed: int) -> None:
    """Random payments both ways through a 3-signer hub while the messages between
    entities are delayed, reordered, duplicated and dropped, and replicas crash and
    restart from their persisted state. After quiescence: both sides of each channel
    hold the same state at the same height, value is conserved, and no payment is
    received twice; every payment was received, or came back with its reason."""
    rng = random.Random(seed)
    world = World(tmp_path, hold=True)
    try:
        a = world.entity("A", [0], 1, salt=1)
        h = world.entity("H", [2, 3, 4], 2, salt=3)
        b = world.entity("B", [1], 1, salt=2)
        world.hold = False
        for name in ("A", "H", "B"):
            world.mint(name, 10_000)
        world.run()
        world.open("A", "H", collateral=2_000)
        world.open("H", "A", collateral=2_000)
        world.open("H", "B", collateral=2_000)
        world.open("B", "H", collateral=2_000)
        world.settle()
        total = _value(world, "A", "H", "B")
        world.hold = True
        sent = 0
        for _ in range(HOSTILE_ACTIONS):
            roll = rng.random()
            if roll < 0.15:
                payer, payee = rng.choice((("A", b), ("B", a)))
                world.submit(payer, Pay((h, payee), ASSET, rng.randint(1, 300)))
                sent += 1
            elif roll < 0.55 and world.wire:
                i = rng.randrange(len(world.wire))
                fate = rng.random()
                if fate < 0.1:
                    del world.wire[i]  # lost
                else:
                    world.release(i, twice=fate < 0.2)
            elif roll < 0.6:
                world.crash(rng.choice(sorted(world.replicas)))
            elif roll < 0.65:
                world.resend_all()
            else:
                world.run()
        world.hold = False
        for key, tx in world.wire:
            world.inbox[key].append(tx)
        world.wire.clear()
        world.settle(rounds=200)

        for x, y in ((a, h), (h, b)):
            sx, sy = _side(world.state(x), y), _side(world.state(y), x)
            assert sx.agreed.hash == sy.agreed.hash
            assert sx.agreed.height == sy.agreed.height
            assert sx.head == sy.head
        assert _value(world, "A", "H", "B") == total
        assert len(world.state("H").forwards) == 0
        received = [p.payment_id for n in ("A", "B") for p in world.payments(n, "received")]
        assert len(received) == len(set(received))
        settled = {
            p.payment_id
            for n in ("A", "B")
            for kind in ("received", "refunded", "rejected")
            for p in world.payments(n, kind)
        }
        queued = {p.payment_id for n in ("A", "B") for p in world.payments(n, "queued")}
        assert queued <= settled  # every payment that left arrived, or came back
        assert sent >= len(queued) > 0
    finally:
        world.close()
