"""Frames, the pre-commit message, bitfields and certificates (node/machines/frames.py)."""

from __future__ import annotations

import pytest
import rlp
from eth_hash.auto import keccak as eth_keccak
from hypothesis import given
from hypothesis import strategies as st

from node.codec import DecodeError, decode, encode
from node.crypto import bls
from node.machines.accounts import ACK, ANNOUNCE, FRAME, Message, Outgoing
from node.machines.channel import Ack
from node.machines.entity import Batch, Increment, sign_batch
from node.machines.frames import (
    MAX_FRAME_BATCHES,
    MAX_FRAME_INPUTS,
    MAX_OUTBOX,
    MAX_ROUND,
    PRECOMMIT_DOMAIN,
    Certificate,
    Frame,
    Signatures,
    aggregate_precommits,
    bitfield,
    bitfield_indexes,
    precommit_message,
    signers_of,
    verify_certificate,
)
from node.machines.governance import Config, Member, signer_id
from node.txs import Tx

SKS = [bls.keygen(bytes([i + 1]) * 32) for i in range(5)]
PKS = [bls.sk_to_pk(sk) for sk in SKS]
IDS = [signer_id(pk) for pk in PKS]
ENTITY = b"\xe1" * 32
PREV = b"\x9a" * 32
STATE = b"\x5b" * 32
PEER = b"\xc7" * 32
ACKED = Message(ACK, PEER, Ack(b"\x3c" * 32, 4, b"\x3d" * 32), 2, b"\x01", b"\x3e" * 96)
OUTBOX = (
    Outgoing(ANNOUNCE, b"", b"\xa0" * 32),
    Outgoing(ACK, PEER, b"\xa1" * 32),
    Outgoing(FRAME, PEER, b"\xa2" * 32),
)


def batch(who: int, nonce: int, n: int = 1) -> Batch:
    return sign_batch(ENTITY, SKS[who], IDS[who], nonce, [Tx.of(Increment(n))])


def frame(
    height: int = 7,
    batches: tuple[Batch, ...] | None = None,
    outbox: tuple[Outgoing, ...] = (),
) -> Frame:
    if batches is None:
        batches = (batch(0, 1), batch(1, 1, 5))
    return Frame.make(ENTITY, height, PREV, batches, STATE, (), outbox)


def config(shares: list[int], threshold: int) -> Config:
    return Config(tuple(Member(PKS[i], s) for i, s in enumerate(shares)), threshold, IDS[0])


# Frames -------------------------------------------------------------------------------


def test_frame_round_trip_and_hash() -> None:
    f = frame()
    again = Frame.decode(f.raw)
    assert again == f
    assert again.raw == f.raw
    assert again.hash == f.hash == eth_keccak(f.raw)
    assert [b.raw for b in again.batches] == [b.raw for b in f.batches]
    # The layout: [entity_id, height, prev_hash, [batch...], [input...], [outgoing...],
    # state_hash], read by pyrlp.
    fields = rlp.decode(f.raw)
    assert len(fields) == 7
    assert fields[0] == ENTITY
    assert int.from_bytes(fields[1], "big") == 7
    assert fields[2] == PREV
    assert [rlp.encode(b) for b in fields[3]] == [b.raw for b in f.batches]
    assert fields[4] == []
    assert fields[5] == []
    assert fields[6] == STATE


def test_frame_with_inputs_and_outbox_round_trip() -> None:
    f = Frame.make(ENTITY, 3, PREV, (batch(0, 1),), STATE, (ACKED,), OUTBOX)
    again = Frame.decode(f.raw)
    assert again == f
    assert again.inputs == (ACKED,)
    assert again.outbox == OUTBOX
    fields = rlp.decode(f.raw)
    # An input is a counterparty's signed message [1, kind, sender, body, config_height,
    # bits, signature]; an outgoing is [kind, peer, hash], the peer empty for an
    # announcement of the signer set.
    assert fields[4] == [
        [
            b"\x01",
            b"\x02",
            PEER,
            [b"\x3c" * 32, b"\x04", b"\x3d" * 32],
            b"\x02",
            b"\x01",
            b"\x3e" * 96,
        ]
    ]
    assert fields[5] == [
        [b"\x03", b"", b"\xa0" * 32],
        [b"\x02", PEER, b"\xa1" * 32],
        [b"\x01", PEER, b"\xa2" * 32],
    ]
    assert fields[6] == STATE
    # Inputs and outbox are covered by the hash.
    assert f.hash != Frame.make(ENTITY, 3, PREV, (batch(0, 1),), STATE, (), OUTBOX).hash
    assert f.hash != Frame.make(ENTITY, 3, PREV, (batch(0, 1),), STATE, (ACKED,), ()).hash
    # The retired legacy mint input ([2, mint_id, asset, amount]) is no input now.
    fields[4] = [[b"\x02", b"\x3e" * 32, b"\x01", b"\x03\xe8"]]
    with pytest.raises(DecodeError, match="unknown frame input tag 2"):
        Frame.decode(rlp.encode(fields))


def test_empty_frame_round_trip() -> None:
    f = frame(height=1, batches=())
    assert Frame.decode(f.raw) == f
    assert f.batches == ()


def _frame_fields(f: Frame) -> list[object]:
    return [ENTITY, f.height, PREV, [decode(b.raw) for b in f.batches], [], [], STATE]


def _bad_frames() -> list[tuple[str, bytes]]:
    f = frame()
    good = _frame_fields(f)

    def with_field(i: int, value: object) -> bytes:
        fields = list(good)
        fields[i] = value
        return encode(fields)

    b0 = decode(f.batches[0].raw)
    assert isinstance(b0, list)
    return [
        ("empty", b""),
        ("not rlp", b"\xff\x00\x01"),
        ("truncated", f.raw[:-1]),
        ("trailing byte", f.raw + b"\x00"),
        ("a byte string", encode(b"frame")),
        ("four fields", encode(good[:4])),
        ("five fields (the layout before inputs and outbox)", encode([*good[:4], STATE])),
        ("six fields", encode(good[:6])),
        ("eight fields", encode([*good, b""])),
        ("short entity", with_field(0, ENTITY[:31])),
        ("entity as list", with_field(0, [ENTITY])),
        ("height zero", with_field(1, 0)),
        ("height with leading zero", with_field(1, b"\x00\x07")),
        ("height past uint64", with_field(1, 2**64)),
        ("long prev hash", with_field(2, PREV + b"\x00")),
        ("batches as bytes", with_field(3, b"batches")),
        ("batch as bytes", with_field(3, [b"batch"])),
        ("batch of three fields", with_field(3, [b0[:3]])),
        ("batch without txs", with_field(3, [[b0[0], b0[1], [], b0[3]]])),
        ("batch with unknown tx", with_field(3, [[b0[0], b0[1], [[99, 1]], b0[3]]])),
        ("batch nonce zero", with_field(3, [[b0[0], b"", b0[2], b0[3]]])),
        ("short batch signature", with_field(3, [[b0[0], b0[1], b0[2], b0[3][:95]]])),
        ("inputs as bytes", with_field(4, b"inputs")),
        ("input as bytes", with_field(4, [b"input"])),
        ("empty input", with_field(4, [[]])),
        ("input with unknown tag", with_field(4, [[3, b"\x3e" * 32, 1, 1]])),
        ("mint of three fields", with_field(4, [[2, b"\x3e" * 32, 1]])),
        ("mint of nothing", with_field(4, [[2, b"\x3e" * 32, 1, 0]])),
        ("short mint id", with_field(4, [[2, b"\x3e" * 31, 1, 1]])),
        ("message of six fields", with_field(4, [[1, 1, PEER, [], 0, b""]])),
        ("message of unknown kind", with_field(4, [[1, 4, PEER, [], 0, b"", b"\x00" * 96]])),
        ("outbox as bytes", with_field(5, b"outbox")),
        ("outgoing of two fields", with_field(5, [[1, PEER]])),
        ("outgoing of kind zero", with_field(5, [[0, PEER, b"\xa0" * 32]])),
        ("outgoing of kind four", with_field(5, [[4, PEER, b"\xa0" * 32]])),
        ("frame outgoing without a peer", with_field(5, [[1, b"", b"\xa0" * 32]])),
        ("announcement with a peer", with_field(5, [[3, PEER, b"\xa0" * 32]])),
        ("short outgoing hash", with_field(5, [[2, PEER, b"\xa0" * 31]])),
        ("short state hash", with_field(6, STATE[:-1])),
        ("state hash as list", with_field(6, [])),
    ]


@pytest.mark.parametrize(("what", "raw"), _bad_frames(), ids=[w for w, _ in _bad_frames()])
def test_frame_decode_is_strict(what: str, raw: bytes) -> None:
    with pytest.raises(DecodeError):
        Frame.decode(raw)


def test_frame_decode_raises_decode_error_for_structure() -> None:
    with pytest.raises(DecodeError):
        Frame.decode(encode([ENTITY, 1, PREV, [], [], [], STATE, b"extra"]))
    with pytest.raises(DecodeError):
        Frame.decode(encode([ENTITY, 0, PREV, [], [], [], STATE]))


def test_frame_batch_cap() -> None:
    # Only the count matters: the cap is checked before any batch is decoded.
    b = decode(batch(0, 1).raw)
    at_cap = encode([ENTITY, 1, PREV, [b] * MAX_FRAME_BATCHES, [], [], STATE])
    assert len(Frame.decode(at_cap).batches) == MAX_FRAME_BATCHES
    with pytest.raises(DecodeError, match="cap"):
        Frame.decode(encode([ENTITY, 1, PREV, [b] * (MAX_FRAME_BATCHES + 1), [], [], STATE]))


def test_frame_input_and_outbox_caps() -> None:
    acked = decode(ACKED.raw)
    at_cap = encode([ENTITY, 1, PREV, [], [acked] * MAX_FRAME_INPUTS, [], STATE])
    assert len(Frame.decode(at_cap).inputs) == MAX_FRAME_INPUTS
    with pytest.raises(DecodeError, match="cap"):
        Frame.decode(encode([ENTITY, 1, PREV, [], [acked] * (MAX_FRAME_INPUTS + 1), [], STATE]))
    out = [2, PEER, b"\xa1" * 32]
    at_cap = encode([ENTITY, 1, PREV, [], [], [out] * MAX_OUTBOX, STATE])
    assert len(Frame.decode(at_cap).outbox) == MAX_OUTBOX
    with pytest.raises(DecodeError, match="cap"):
        Frame.decode(encode([ENTITY, 1, PREV, [], [], [out] * (MAX_OUTBOX + 1), STATE]))


# The pre-commit message ---------------------------------------------------------------


def test_precommit_message_layout_byte_for_byte() -> None:
    f = frame(height=0x0102030405060708)
    round_ = 0x0A0B0C0D
    expected = (
        b"XLN/entity-precommit/v1"
        + ENTITY
        + bytes([1, 2, 3, 4, 5, 6, 7, 8])
        + bytes([0x0A, 0x0B, 0x0C, 0x0D])
        + eth_keccak(f.raw)
    )
    assert PRECOMMIT_DOMAIN == b"XLN/entity-precommit/v1"
    assert f.message(round_) == expected
    assert precommit_message(ENTITY, f.height, round_, eth_keccak(f.raw)) == expected
    assert len(expected) == 23 + 32 + 8 + 4 + 32


def test_precommit_message_small_values_are_zero_padded() -> None:
    msg = precommit_message(ENTITY, 1, 0, b"\x11" * 32)
    assert msg == PRECOMMIT_DOMAIN + ENTITY + b"\x00" * 7 + b"\x01" + b"\x00" * 4 + b"\x11" * 32
    top = precommit_message(ENTITY, 2**64 - 1, MAX_ROUND, b"\x11" * 32)
    assert top[23 + 32 :] == b"\xff" * 12 + b"\x11" * 32


def test_precommit_message_separates_every_field() -> None:
    f = frame()
    g = Frame.make(ENTITY, f.height, PREV, f.batches, b"\x5c" * 32)
    messages = {
        f.message(0),
        f.message(1),
        g.message(0),
        precommit_message(b"\xe2" * 32, f.height, 0, f.hash),
        precommit_message(ENTITY, f.height + 1, 0, f.hash),
    }
    assert len(messages) == 5


# Bitfields ------------------------------------------------------------------------------


def test_bitfield_is_lsb_first() -> None:
    assert bitfield([], 0) == b""
    assert bitfield([], 3) == b"\x00"
    assert bitfield([0], 1) == b"\x01"
    assert bitfield([7], 8) == b"\x80"
    assert bitfield([0, 9], 10) == b"\x01\x02"
    assert bitfield([1, 2, 8, 15], 16) == b"\x06\x81"
    assert bitfield(range(9), 9) == b"\xff\x01"
    assert bitfield_indexes(b"\x06\x81", 16) == [1, 2, 8, 15]
    assert bitfield_indexes(b"\xff\x01", 9) == list(range(9))
    assert bitfield_indexes(b"", 0) == []


@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_bitfield_round_trip(case: tuple[int, set[int]]) -> None:
    size, indexes = case
    bits = bitfield(indexes, size)
    assert len(bits) == (size + 7) // 8
    assert bitfield_indexes(bits, size) == sorted(indexes)


@pytest.mark.parametrize(
    ("bits", "size"),
    [
        (b"\x02", 1),  # bit 1 of a 1-signer field
        (b"\x80", 7),  # bit 7 of a 7-signer field
        (b"\xff\x02", 9),  # bit 9 of a 9-signer field
        (b"\x00\x80", 15),
    ],
)
def test_bitfield_bits_past_the_last_signer_are_rejected(bits: bytes, size: int) -> None:
    with pytest.raises(DecodeError, match="past the last signer"):
        bitfield_indexes(bits, size)


@pytest.mark.parametrize(
    ("bits", "size"),
    [(b"", 1), (b"\x01\x00", 8), (b"\x01", 9), (b"\x00", 0), (b"\x01\x00\x00", 16)],
)
def test_bitfield_of_the_wrong_length_is_rejected(bits: bytes, size: int) -> None:
    with pytest.raises(DecodeError, match="bytes for"):
        bitfield_indexes(bits, size)


def test_bitfield_full_bytes_accept_every_bit() -> None:
    assert bitfield_indexes(b"\xff", 8) == list(range(8))
    assert bitfield_indexes(b"\xff\xff", 16) == list(range(16))


# Certificates -----------------------------------------------------------------------------


def _sigs(f: Frame, round_: int, who: list[int]) -> dict[int, Signatures]:
    """Each member's pre-commit of ``f`` and its signature over each outgoing hash."""
    return {
        i: Signatures(
            bls.sign(SKS[i], f.message(round_)),
            tuple(bls.sign(SKS[i], o.hash) for o in f.outbox),
        )
        for i in who
    }


def test_certificate_round_trip() -> None:
    cert = Certificate(5, bitfield([0, 2], 3), bls.sign(SKS[0], b"x"))
    assert cert.outbox == ()
    assert Certificate.from_item(decode(cert.raw)) == cert
    assert rlp.decode(cert.raw) == [b"\x05", b"\x05", cert.signature, []]
    zero = Certificate(0, b"", b"\x00" * 96)
    assert Certificate.from_item(decode(zero.raw)) == zero
    top = Certificate(MAX_ROUND, b"\xff" * 128, b"\x01" * 96, (b"\x02" * 96,) * MAX_OUTBOX)
    assert Certificate.from_item(decode(top.raw)) == top
    # [round, bits, signature, [outbox_signature...]]: one per outgoing message, in order.
    two = Certificate(1, b"\x03", b"\x01" * 96, (b"\x02" * 96, b"\x03" * 96))
    assert Certificate.from_item(decode(two.raw)) == two
    assert rlp.decode(two.raw) == [b"\x01", b"\x03", b"\x01" * 96, [b"\x02" * 96, b"\x03" * 96]]


@pytest.mark.parametrize(
    "item",
    [
        [b"", b"\x01"],
        [b"", b"\x01", b"\x00" * 96],  # the layout before outbox signatures
        [b"", b"\x01", b"\x00" * 96, b""],
        [b"", b"\x01", b"\x00" * 96, [], b""],
        [b"", b"\x01", b"\x00" * 95, []],
        [b"", b"\x01", b"\x00" * 97, []],
        [(MAX_ROUND + 1).to_bytes(5, "big"), b"\x01", b"\x00" * 96, []],
        [b"\x00", b"\x01", b"\x00" * 96, []],
        [b"", b"\x01" * 129, b"\x00" * 96, []],
        [b"", [b"\x01"], b"\x00" * 96, []],
        [b"", b"\x01", b"\x00" * 96, [b"\x00" * 95]],
        [b"", b"\x01", b"\x00" * 96, [[b"\x00" * 96]]],
        [b"", b"\x01", b"\x00" * 96, [b"\x00" * 96] * (MAX_OUTBOX + 1)],
        b"certificate",
    ],
)
def test_certificate_decode_is_strict(item: object) -> None:
    with pytest.raises(DecodeError):
        Certificate.from_item(decode(encode(item)))


def test_aggregate_and_verify_a_certificate() -> None:
    cfg = config([1, 1, 1, 1], 3)
    f = frame()
    cert, bad = aggregate_precommits(cfg, f, 2, _sigs(f, 2, [3, 0, 1]))
    assert bad == []
    assert cert is not None
    assert cert.round == 2
    assert cert.bits == bitfield([0, 1, 3], 4) == b"\x0b"
    assert signers_of(cfg, cert) == [0, 1, 3]
    assert verify_certificate(cfg, f, cert) is None
    assert bls.fast_aggregate_verify([PKS[0], PKS[1], PKS[3]], f.message(2), cert.signature)
    # The same certificate does not certify another frame, round or config.
    other = Frame.make(ENTITY, f.height, PREV, f.batches, b"\x00" * 32)
    assert verify_certificate(cfg, other, cert) == "aggregate signature does not verify"
    moved = Certificate(3, cert.bits, cert.signature)
    assert verify_certificate(cfg, f, moved) == "aggregate signature does not verify"
    assert verify_certificate(config([1, 1, 1, 1, 1], 4), f, cert) is not None


def test_aggregate_precommits_finds_bad_slots() -> None:
    cfg = config([1, 1, 1, 1, 1], 3)
    f = frame()
    sigs = _sigs(f, 0, [0, 1, 2, 3])
    sigs[1] = Signatures(bls.sign(SKS[1], f.message(1)))  # the wrong round
    sigs[3] = Signatures(b"\xff" * 96)  # not a curve point at all
    cert, bad = aggregate_precommits(cfg, f, 0, sigs)
    assert bad == [1, 3]
    assert cert is None  # slots 0 and 2 hold 2 shares, below 3
    sigs[4] = Signatures(bls.sign(SKS[4], f.message(0)))
    cert, bad = aggregate_precommits(cfg, f, 0, sigs)
    assert bad == [1, 3]
    assert cert is not None
    assert signers_of(cfg, cert) == [0, 2, 4]
    assert verify_certificate(cfg, f, cert) is None


def test_aggregate_precommits_signature_by_the_wrong_key() -> None:
    cfg = config([2, 1, 1], 3)
    f = frame()
    sigs = _sigs(f, 0, [0, 1, 2])
    sigs[2] = Signatures(bls.sign(SKS[1], f.message(0)))  # slot 2 holds member 1's signature
    cert, bad = aggregate_precommits(cfg, f, 0, sigs)
    assert bad == [2]
    assert cert is not None
    assert signers_of(cfg, cert) == [0, 1]  # 3 shares: enough with unequal shares


def test_aggregate_precommits_below_threshold_or_empty() -> None:
    cfg = config([1, 1, 1], 2)
    f = frame()
    assert aggregate_precommits(cfg, f, 0, _sigs(f, 0, [2])) == (None, [])
    assert aggregate_precommits(cfg, f, 0, {}) == (None, [])


@pytest.mark.parametrize(
    ("bits", "reason"),
    [
        (bitfield([0], 4), "below the threshold"),
        (b"\x07\x00", "bytes for 4 signers"),
        (b"\x17", "past the last signer"),
        (b"", "bytes for 4 signers"),
    ],
)
def test_verify_certificate_reasons(bits: bytes, reason: str) -> None:
    cfg = config([1, 1, 1, 1], 3)
    f = frame()
    sig = bls.aggregate([s.precommit for s in _sigs(f, 0, [0, 1, 2]).values()])
    result = verify_certificate(cfg, f, Certificate(0, bits, sig))
    assert result is not None
    assert reason in result


# Outbox signatures --------------------------------------------------------------------------


def test_a_certificate_aggregates_the_outbox_signatures() -> None:
    cfg = config([1, 1, 1, 1], 3)
    f = frame(outbox=OUTBOX)
    cert, bad = aggregate_precommits(cfg, f, 1, _sigs(f, 1, [2, 0, 3]))
    assert bad == []
    assert cert is not None
    assert signers_of(cfg, cert) == [0, 2, 3]
    assert len(cert.outbox) == len(OUTBOX)
    # Each is the same members' aggregate over that outgoing hash, in order.
    for out, sig in zip(OUTBOX, cert.outbox, strict=True):
        assert bls.fast_aggregate_verify([PKS[0], PKS[2], PKS[3]], out.hash, sig)
    assert verify_certificate(cfg, f, cert) is None
    assert Certificate.from_item(decode(cert.raw)) == cert


def test_verify_certificate_checks_every_outbox_signature() -> None:
    cfg = config([1, 1, 1, 1], 3)
    f = frame(outbox=OUTBOX)
    cert, _ = aggregate_precommits(cfg, f, 0, _sigs(f, 0, [0, 1, 2]))
    assert cert is not None
    missing = Certificate(cert.round, cert.bits, cert.signature, cert.outbox[:2])
    assert verify_certificate(cfg, f, missing) == "2 outbox signatures for 3 outgoing messages"
    swapped = Certificate(
        cert.round, cert.bits, cert.signature, (cert.outbox[0], cert.outbox[2], cert.outbox[1])
    )
    assert verify_certificate(cfg, f, swapped) == (
        "outgoing ack: aggregate signature does not verify"
    )
    # Outbox signatures by fewer members than the bits name do not verify either.
    fewer = bls.aggregate([bls.sign(SKS[i], OUTBOX[0].hash) for i in (0, 1)])
    short = Certificate(cert.round, cert.bits, cert.signature, (fewer, *cert.outbox[1:]))
    assert verify_certificate(cfg, f, short) == (
        "outgoing signers: aggregate signature does not verify"
    )
    # A certificate of a frame without an outbox carries none.
    bare = frame()
    bare_cert, _ = aggregate_precommits(cfg, bare, 0, _sigs(bare, 0, [0, 1, 2]))
    assert bare_cert is not None
    assert bare_cert.outbox == ()
    extra = Certificate(bare_cert.round, bare_cert.bits, bare_cert.signature, cert.outbox[:1])
    assert verify_certificate(cfg, bare, extra) == "1 outbox signatures for 0 outgoing messages"


def test_aggregate_precommits_drops_slots_with_bad_outbox_signatures() -> None:
    cfg = config([1, 1, 1, 1, 1], 3)
    f = frame(outbox=OUTBOX)
    sigs = _sigs(f, 0, [0, 1, 2, 3, 4])
    good = sigs[1]
    sigs[1] = Signatures(good.precommit, good.outbox[:2])  # one outbox signature short
    sigs[2] = Signatures(sigs[2].precommit, (*sigs[2].outbox[:2], bls.sign(SKS[2], b"other")))
    sigs[4] = Signatures(sigs[4].precommit, (b"\xff" * 96, *sigs[4].outbox[1:]))  # not a point
    cert, bad = aggregate_precommits(cfg, f, 0, sigs)
    assert bad == [1, 2, 4]
    assert cert is None  # slots 0 and 3 hold 2 shares, below 3
    sigs[1] = good
    cert, bad = aggregate_precommits(cfg, f, 0, sigs)
    assert bad == [2, 4]
    assert cert is not None
    assert signers_of(cfg, cert) == [0, 1, 3]
    assert verify_certificate(cfg, f, cert) is None
