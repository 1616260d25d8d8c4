"""The channel machine, case by case: ids, capacity, the frame/ack flow, ties, codecs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.codec import ZERO_HASH, DecodeError, encode, encode_tree, int_bytes, keccak
from node.machines import channel as ch
from node.txs import Tx

A = bytes([0x11]) * 32  # lower id: left
B = bytes([0x22]) * 32
LEFT, RIGHT = ch.Side.LEFT, ch.Side.RIGHT


def pay(amount: int, asset: int = 0) -> Tx:
    return Tx.of(ch.Payment(asset, amount))


def credit(limit: int, asset: int = 0) -> Tx:
    return Tx.of(ch.SetCredit(asset, limit))


def collateral(amount: int, asset: int = 0) -> Tx:
    return Tx.of(ch.AddCollateral(asset, amount))


def only[T](outs: list[ch.Output], kind: type[T]) -> T:
    assert len(outs) == 1, outs
    assert isinstance(outs[0], kind), outs
    return outs[0]


def sent_frame(outs: list[ch.Output]) -> ch.Frame:
    frames = [o.frame for o in outs if isinstance(o, ch.SendFrame)]
    assert len(frames) == 1, outs
    return frames[0]


def sent_ack(outs: list[ch.Output]) -> ch.Ack:
    acks = [o.ack for o in outs if isinstance(o, ch.SendAck)]
    assert len(acks) == 1, outs
    return acks[0]


def enqueue(side: ch.ChannelSide, *txs: Tx) -> ch.ChannelSide:
    for tx in txs:
        side, outs = ch.step(side, ch.Enqueue(tx))
        assert outs == []
    return side


def exchange(
    sender: ch.ChannelSide, receiver: ch.ChannelSide, *txs: Tx
) -> tuple[ch.ChannelSide, ch.ChannelSide, ch.Frame]:
    """sender queues txs, proposes; the receiver applies and acks; the sender applies."""
    sender = enqueue(sender, *txs)
    sender, outs = ch.step(sender, ch.Propose())
    assert not any(isinstance(o, ch.Rejected) for o in outs), outs
    frame = sent_frame(outs)
    assert sender.status == "sent"
    receiver, outs = ch.step(receiver, ch.ReceiveFrame(frame))
    assert outs[0] == ch.Applied(frame)
    sender, outs = ch.step(sender, ch.ReceiveAck(sent_ack(outs)))
    assert outs == [ch.Applied(frame)]
    assert sender.status == "ready"
    assert sender.agreed == receiver.agreed
    assert sender.head == receiver.head == frame.hash
    return sender, receiver, frame


@pytest.fixture
def funded() -> tuple[ch.ChannelSide, ch.ChannelSide]:
    """Left holds 100 of collateral in asset 0, right 50."""
    left, right = ch.open_side(A, B), ch.open_side(B, A)
    left, right, _ = exchange(left, right, collateral(100))
    right, left, _ = exchange(right, left, collateral(50))
    return left, right


# Ids and sides -------------------------------------------------------------------------


def test_channel_id_is_symmetric_and_documented() -> None:
    expected = keccak(encode([b"XLN/channel-id/v1", A, B]))
    assert ch.channel_id_for(A, B) == ch.channel_id_for(B, A) == expected
    assert ch.ordered(B, A) == (A, B)
    assert ch.side_of(A, B) is LEFT
    assert ch.side_of(B, A) is RIGHT
    left, right = ch.open_side(A, B), ch.open_side(B, A)
    assert left.agreed == right.agreed
    assert (left.entity, left.peer) == (A, B)
    assert (right.entity, right.peer) == (B, A)
    assert left.status == right.status == "ready"


def test_a_channel_needs_two_distinct_32_byte_ids() -> None:
    with pytest.raises(ValueError, match="two different"):
        ch.channel_id_for(A, A)
    with pytest.raises(ValueError, match="32 bytes"):
        ch.channel_id_for(A, b"short")


# Capacity and the transactions ---------------------------------------------------------


def test_capacity_is_balance_plus_the_credit_the_other_side_extends() -> None:
    a = ch.AssetBalance(0, collateral_left=100, collateral_right=50, delta=30)
    assert (a.balance(LEFT), a.balance(RIGHT)) == (70, 80)
    assert (a.capacity(LEFT), a.capacity(RIGHT)) == (70, 80)
    a = replace(a, credit_left=20, credit_right=5)  # left extends 20 to right
    assert (a.capacity(LEFT), a.capacity(RIGHT)) == (75, 100)
    assert a.balance(LEFT) + a.balance(RIGHT) == a.collateral == 150


def test_payments_both_ways(funded: tuple[ch.ChannelSide, ch.ChannelSide]) -> None:
    left, right = funded
    left, right, _ = exchange(left, right, pay(30), pay(10))
    assert left.agreed.asset(0).delta == 40
    right, left, _ = exchange(right, left, pay(15))
    a = left.agreed.asset(0)
    assert a.delta == 25
    assert (a.balance(LEFT), a.balance(RIGHT)) == (75, 75)
    assert left.agreed.height == right.agreed.height == 4


def test_a_payment_beyond_capacity_is_rejected_and_nothing_is_applied(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, _ = funded
    before = left.agreed
    left = enqueue(left, pay(60), pay(41), pay(40))
    left, outs = ch.step(left, ch.Propose())
    rejected = [o for o in outs if isinstance(o, ch.Rejected)]
    assert [r.tx for r in rejected] == [pay(41)]  # 60 fits, then 41 > 40 left, then 40 fits
    assert "exceeds the capacity 40" in rejected[0].reason
    frame = sent_frame(outs)
    assert list(frame.txs) == [pay(60), pay(40)]
    assert left.agreed == before  # nothing applies before the ack
    assert left.queue == ()


def test_a_frame_with_one_bad_tx_is_refused_whole(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    bad = ch.Frame.make(
        left.channel_id, 3, left.head, LEFT, [pay(10), pay(200)], keccak(encode_tree([]))
    )
    right2, outs = ch.step(right, ch.ReceiveFrame(bad))
    reason = only(outs, ch.Ignored).reason
    assert "tx 1 (payment)" in reason
    assert "exceeds the capacity" in reason
    assert right2 is right


def test_a_frame_whose_state_hash_does_not_match_is_refused(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    frame = ch.Frame.make(left.channel_id, 3, left.head, LEFT, [pay(1)], ZERO_HASH)
    right2, outs = ch.step(right, ch.ReceiveFrame(frame))
    assert "state hash" in only(outs, ch.Ignored).reason
    assert right2 is right


def test_credit_lets_a_side_pay_beyond_its_balance(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    right, left, _ = exchange(right, left, credit(30))  # right extends 30 to left
    assert left.agreed.asset(0).capacity(LEFT) == 130
    left, right, _ = exchange(left, right, pay(120))
    a = left.agreed.asset(0)
    assert a.balance(LEFT) == -20  # left owes right 20 on credit
    assert a.balance(LEFT) + a.balance(RIGHT) == 150
    # right cannot cut the limit below what left has drawn; it can cut it to that
    right = enqueue(right, credit(19), credit(20))
    right, outs = ch.step(right, ch.Propose())
    rejected = only([o for o in outs if isinstance(o, ch.Rejected)], ch.Rejected)
    assert rejected.tx == credit(19)
    assert "below the 20 already drawn" in rejected.reason
    assert list(sent_frame(outs).txs) == [credit(20)]


def test_collateral_is_capped_and_unknown_assets_have_no_capacity() -> None:
    left = ch.open_side(A, B)
    left = enqueue(left, collateral(ch.MAX_AMOUNT, 7), collateral(1, 7), pay(1, 3))
    left, outs = ch.step(left, ch.Propose())
    reasons = [o.reason for o in outs if isinstance(o, ch.Rejected)]
    assert reasons == [
        "add_collateral: collateral would exceed the maximum",
        "payment: payment of 1 exceeds the capacity 0",
    ]
    assert [a.asset for a in ch.apply_txs(left.agreed, sent_frame(outs).txs, LEFT).assets] == [7]


def test_a_propose_whose_txs_are_all_rejected_sends_nothing() -> None:
    left = enqueue(ch.open_side(A, B), pay(5))
    left, outs = ch.step(left, ch.Propose())
    assert only(outs, ch.Rejected).tx == pay(5)
    assert left.status == "ready"
    assert left.queue == ()


def test_the_queue_is_capped() -> None:
    left = replace(ch.open_side(A, B), queue=(pay(1),) * ch.MAX_QUEUE)
    left2, outs = ch.step(left, ch.Enqueue(pay(2)))
    assert "queue full" in only(outs, ch.Rejected).reason
    assert left2 is left


# The frame/ack flow ---------------------------------------------------------------------


def test_transactions_wait_while_sent_and_go_out_in_one_frame_after_the_ack(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    left = enqueue(left, pay(1))
    left, outs = ch.step(left, ch.Propose())
    first = sent_frame(outs)
    left = enqueue(left, pay(2), pay(3))
    left2, outs = ch.step(left, ch.Propose())  # sent: nothing happens
    assert (left2, outs) == (left, [])
    right, outs = ch.step(right, ch.ReceiveFrame(first))
    left, outs = ch.step(left, ch.ReceiveAck(sent_ack(outs)))
    assert left.status == "ready"
    left, outs = ch.step(left, ch.Propose())
    second = sent_frame(outs)
    assert list(second.txs) == [pay(2), pay(3)]
    assert second.prev_hash == first.hash
    assert second.height == first.height + 1


def test_a_duplicate_frame_gets_the_same_ack_and_changes_nothing(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    left = enqueue(left, pay(5))
    left, outs = ch.step(left, ch.Propose())
    frame = sent_frame(outs)
    right, outs = ch.step(right, ch.ReceiveFrame(frame))
    ack = sent_ack(outs)
    right2, outs = ch.step(right, ch.ReceiveFrame(frame))
    assert outs == [ch.SendAck(ack)]
    assert right2 is right
    left, _ = ch.step(left, ch.ReceiveAck(ack))
    left2, outs = ch.step(left, ch.ReceiveAck(ack))  # a duplicate ack
    assert isinstance(outs[0], ch.Ignored)
    assert left2 is left


def test_stale_future_and_foreign_messages_change_nothing(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    left0 = enqueue(left, pay(1))
    left1, outs = ch.step(left0, ch.Propose())
    f1 = sent_frame(outs)
    right1, outs = ch.step(right, ch.ReceiveFrame(f1))
    ack1 = sent_ack(outs)
    left1, _ = ch.step(left1, ch.ReceiveAck(ack1))
    left1 = enqueue(left1, pay(2))
    left2, outs = ch.step(left1, ch.Propose())
    f2 = sent_frame(outs)
    left2 = enqueue(left2, pay(3))
    cases: list[tuple[ch.ChannelSide, ch.Input, str]] = [
        (right, ch.ReceiveFrame(f2), "future frame"),
        (right, ch.ReceiveAck(ack1), "not for our pending"),
        (right1, ch.ReceiveFrame(replace_channel(f1)), "another channel"),
        (right, ch.ReceiveFrame(fork(f1)), "does not extend the agreed head"),
        (left2, ch.ReceiveFrame(f2), "our own side"),
        (left2, ch.ReceiveAck(ch.Ack(left.channel_id, 5, f2.hash)), "not for our pending"),
        (left2, ch.ReceiveAck(ch.Ack(A, 4, f2.hash)), "another channel"),
    ]
    for side, event, reason in cases:
        after, outs = ch.step(side, event)
        assert reason in only(outs, ch.Ignored).reason
        assert after is side


def fork(frame: ch.Frame) -> ch.Frame:
    return ch.Frame.make(
        frame.channel_id, frame.height, ZERO_HASH, frame.from_side, frame.txs, frame.state_hash
    )


def replace_channel(frame: ch.Frame) -> ch.Frame:
    other = ch.channel_id_for(A, bytes([0x33]) * 32)
    return ch.Frame.make(
        other, frame.height, frame.prev_hash, frame.from_side, frame.txs, frame.state_hash
    )


def test_a_stale_frame_that_is_not_the_last_received_is_ignored(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    left, right, f3 = exchange(left, right, pay(1))
    right, left, _ = exchange(right, left, pay(1))  # right's ack now is for nothing newer
    right2, outs = ch.step(right, ch.ReceiveFrame(f3))
    assert right2 is right
    assert outs == [ch.SendAck(ch.Ack(right.channel_id, 3, f3.hash))]  # still its last ack
    left, right, _ = exchange(left, right, pay(1))
    right3, outs = ch.step(right, ch.ReceiveFrame(f3))
    assert "stale frame at height 3" in only(outs, ch.Ignored).reason
    assert right3 is right


def test_resend_repeats_the_pending_frame_and_the_last_ack(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, _ = funded
    assert ch.step(ch.open_side(A, B), ch.Resend())[1] == []
    left = enqueue(left, pay(1))
    left, outs = ch.step(left, ch.Propose())
    frame = sent_frame(outs)
    assert left.last_ack is not None
    assert ch.step(left, ch.Resend()) == (left, [ch.SendAck(left.last_ack), ch.SendFrame(frame)])


# Both sides propose at once -------------------------------------------------------------


@pytest.mark.parametrize("left_first", [True, False])
def test_simultaneous_proposals_left_wins_and_right_requeues_in_front(
    funded: tuple[ch.ChannelSide, ch.ChannelSide], left_first: bool
) -> None:
    left, right = funded
    left = enqueue(left, pay(10))
    right = enqueue(right, pay(20), pay(21))
    left, outs = ch.step(left, ch.Propose())
    lf = sent_frame(outs)
    right, outs = ch.step(right, ch.Propose())
    rf = sent_frame(outs)
    right = enqueue(right, pay(2))
    assert lf.height == rf.height == 3

    def left_gets_right_frame(left: ch.ChannelSide) -> ch.ChannelSide:
        after, outs = ch.step(left, ch.ReceiveFrame(rf))
        assert "left's frame wins" in only(outs, ch.Ignored).reason
        assert after is left
        return after

    if left_first:
        left = left_gets_right_frame(left)
    right, outs = ch.step(right, ch.ReceiveFrame(lf))
    assert outs[0] == ch.Applied(lf)
    assert right.status == "ready"
    assert list(right.queue) == [pay(20), pay(21), pay(2)]
    if not left_first:
        left = left_gets_right_frame(left)
    left, outs = ch.step(left, ch.ReceiveAck(sent_ack(outs)))
    assert outs == [ch.Applied(lf)]
    # right's stale frame arriving late changes nothing either
    left2, outs = ch.step(left, ch.ReceiveFrame(rf))
    assert "stale" in only(outs, ch.Ignored).reason
    assert left2 is left
    right, left, frame = exchange(right, left)
    assert list(frame.txs) == [pay(20), pay(21), pay(2)]
    assert frame.height == 4
    assert left.agreed.asset(0).delta == 10 - 43


# Encodings -------------------------------------------------------------------------------


def test_encodings_round_trip_byte_exactly(
    funded: tuple[ch.ChannelSide, ch.ChannelSide],
) -> None:
    left, right = funded
    right, left, _ = exchange(right, left, credit(40), pay(45), credit(7, 9))
    assert left.agreed.asset(0).delta < 0  # negative deltas encode too
    left = enqueue(left, pay(1), collateral(5, 2))
    left, outs = ch.step(left, ch.Propose())
    left = enqueue(left, credit(3))
    frame = sent_frame(outs)
    for side in (left, right, ch.open_side(A, B)):
        back = ch.ChannelSide.decode(side.encoded)
        assert back == side
        assert back.encoded == side.encoded
        assert back.hash == side.hash
    assert left.pending is not None
    assert left.last_ack is not None
    assert ch.ChannelState.decode(left.agreed.encoded) == left.agreed
    assert ch.Frame.decode(frame.raw) == frame
    assert (
        ch.Frame.decode(frame.raw).hash == frame.hash == keccak(b"XLN/channel-frame/v1" + frame.raw)
    )
    ack = left.last_ack
    assert ch.Ack.decode(ack.raw) == ack
    assert ack.hash == keccak(b"XLN/channel-ack/v1" + ack.raw)
    for tx in (pay(1), credit(0), collateral(ch.MAX_AMOUNT, ch.MAX_ASSET)):
        assert ch.decode_tx(tx.raw) == tx


def _state(assets: list[list[int]], left: bytes = A, right: bytes = B) -> bytes:
    cid = keccak(encode([b"XLN/channel-id/v1", left, right]))
    return encode([1, cid, left, right, 0, assets])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_state([]) + b"\x00", "trailing bytes"),
        (_state([[0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]), "strictly ascending"),
        (_state([[1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]), "strictly ascending"),
        (_state([[0, 1, 0, 0, 0, 5]]), "beyond its credit"),  # left paid 3 with 1 and no credit
        (_state([[0, 2**128, 0, 0, 0, 0]]), "collateral left"),
        (_state([], B, A), "left entity id must be below"),
        (encode([1, A, A, B, 0, []]), "channel id does not match"),
        (encode([2, A, A, B, 0, []]), "unknown version"),
        (encode([1, A, A, B, 0]), "expected 6 items"),
        (b"\xc1\x81\x05", "invalid RLP"),  # 0x05 prefixed: not canonical
    ],
)
def test_strict_state_decode(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        ch.ChannelState.decode(raw)


def test_strict_frame_ack_and_tx_decode(funded: tuple[ch.ChannelSide, ch.ChannelSide]) -> None:
    left, _ = funded
    cid, head = left.channel_id, left.head
    tx = [1, 0, 5]
    bad_frames = [
        (encode([cid, 3, head, 0, [], ZERO_HASH]), "no transactions"),
        (encode([cid, 3, head, 2, [tx], ZERO_HASH]), "side"),
        (encode([cid, 0, head, 0, [tx], ZERO_HASH]), "height"),
        (encode([cid, 3, head[:31], 0, [tx], ZERO_HASH]), "prev hash"),
        (encode([cid, 3, head, 0, [[9, 0, 5]], ZERO_HASH]), "unknown channel transaction type 9"),
        (encode([cid, 3, head, 0, [[1, 0, 0]], ZERO_HASH]), "payment amount"),
        (encode([cid, 3, head, 0, [[1, 0]], ZERO_HASH]), "expected \\[asset, amount\\]"),
        (encode([cid, 3, head, 0, [tx], ZERO_HASH, b""]), "expected 6 items"),
        (encode([cid, 3, head, 0, [[1, 2**32, 5]], ZERO_HASH]), "asset"),
    ]
    for raw, message in bad_frames:
        with pytest.raises(DecodeError, match=message):
            ch.Frame.decode(raw)
    with pytest.raises(DecodeError, match="leading zero"):
        ch.Ack.decode(encode_tree([cid, b"\x00\x03", head]))
    with pytest.raises(DecodeError, match="expected 3 items"):
        ch.Ack.decode(encode([cid, 3]))
    with pytest.raises(DecodeError, match="credit limit"):
        ch.decode_tx(encode([2, 0, 2**128]))


def test_strict_side_decode(funded: tuple[ch.ChannelSide, ch.ChannelSide]) -> None:
    left, right = funded
    left = enqueue(left, pay(1))
    left, outs = ch.step(left, ch.Propose())
    frame = sent_frame(outs)
    version, me, agreed, head = int_bytes(1), int_bytes(0), left.agreed.to_tree(), left.head
    ack = [left.channel_id, int_bytes(2), right.head]

    def side(*fields: object) -> bytes:
        return encode(list(fields))

    assert ch.ChannelSide.decode(side(version, me, agreed, head, [], [], [])).pending is None
    other = ch.Frame.make(frame.channel_id, 3, frame.prev_hash, RIGHT, frame.txs, ZERO_HASH)
    later = ch.Frame.make(frame.channel_id, 4, frame.prev_hash, LEFT, frame.txs, ZERO_HASH)
    cases = [
        (side(version, me, agreed, ZERO_HASH, [], [], []), "head must be zero"),
        (side(version, me, agreed, head, [decode_item(other.raw)], [], []), "pending frame"),
        (side(version, me, agreed, head, [decode_item(later.raw)], [], []), "pending frame"),
        (side(version, me, agreed, head, [], [], [ack, ack]), "last ack"),
        (side(version, me, agreed, head, [], [], [[A, 2, head]]), "last ack is not"),
        (side(version, me, agreed, head, [], [], [[left.channel_id, 3, head]]), "last ack is not"),
        (side(version, 2, agreed, head, [], [], []), "channel side"),
        (side(version, me, agreed, head, [], [[7]], []), "unknown channel transaction"),
        (side(2, me, agreed, head, [], [], []), "unknown version"),
    ]
    for raw, message in cases:
        with pytest.raises(DecodeError, match=message):
            ch.ChannelSide.decode(raw)


def decode_item(raw: bytes) -> object:
    from node.codec import decode

    return decode(raw)
