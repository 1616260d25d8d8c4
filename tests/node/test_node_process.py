"""A real ``xln-node run`` process on loopback: load, crashes, bad tokens and fuzzed frames."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from node.block import Block
from node.codec import DecodeError, decode, encode, encode_tree, int_bytes, keccak
from node.entity_reads import CHANNELS, HEADER, RECORD, EntityHeader, check_record
from node.machines.counter import MAX_INCREMENT
from node.machines.server import Increment
from node.mempool import Mempool
from node.net.client import NodeClient, NodeError, parse_receipts
from node.net.protocol import (
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    encode_request,
    error_of,
)
from node.storage import Store
from node.txs import Tx
from tests.conftest import NodeProcess, create_token, recv_reply, run_python, xln_node

pytestmark = pytest.mark.slow

DEADLINE = 20
KILL_CYCLES = 20
FUZZ_PER_TYPE = 1000
ME = Sender(SenderKind.CLIENT, b"fuzzer")


async def test_a_thousand_transactions_are_all_acknowledged(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    token = create_token(data)
    node = node_process(data=data)
    async with await NodeClient.connect(node.url, token=token) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.submit([Increment(i + 1)]) for i in range(1000))), 60
        )
        status = await client.status()
    assert len(results) == 1000
    assert all(r.receipts[0].error is None for r in results)
    assert status.counter == sum(range(1, 1001))
    assert node.terminate() == 0


async def test_bad_token_is_refused_by_a_real_node(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    create_token(data)
    node = node_process(data=data)
    with pytest.raises(NodeError) as info:
        await NodeClient.connect(node.url, token="xln_deadbeef_" + "A" * 43)
    assert info.value.code is Err.UNAUTHORIZED
    async with connect(node.url, compression=None) as ws:
        await ws.send(encode_request(Req.SUBMIT, 1, ME, (), [[1, 1]]))
        reply = await recv_reply(ws, DEADLINE)
        assert reply.type is Rep.ERROR
        assert error_of(reply)[0] is Err.UNAUTHORIZED
    assert node.alive


async def _hammer(
    url: str,
    token: str,
    rng: random.Random,
    next_n: list[int],
    acked: dict[int, tuple[int, bytes, int]],
) -> None:
    """Submit batches of uniquely numbered increments, pipelined, recording every ack."""
    async with await NodeClient.connect(url, token=token) as client:

        async def one() -> None:
            while True:
                batch = []
                for _ in range(rng.randint(1, 20)):
                    next_n[0] += 1
                    batch.append(Increment(next_n[0]))
                receipts = await client.submit(batch)
                for tx, r in zip(batch, receipts.receipts, strict=True):
                    assert r.error is None
                    acked[tx.n] = (receipts.height, receipts.block_hash, r.index)

        await asyncio.gather(*(one() for _ in range(4)))


async def test_sigkill_at_random_moments_loses_no_acknowledged_transaction(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    token = create_token(data)
    rng = random.Random(20261125)
    acked: dict[int, tuple[int, bytes, int]] = {}
    next_n = [0]
    for _cycle in range(KILL_CYCLES):
        node = node_process("--tick-ms", "10", data=data)
        # The random moment: let the workload run for a random time, then SIGKILL.
        with contextlib.suppress(
            TimeoutError, ConnectionError, ConnectionClosed, NodeError, OSError
        ):
            await asyncio.wait_for(
                _hammer(node.url, token, rng, next_n, acked), rng.uniform(0.05, 0.7)
            )
        node.kill()
        assert node.proc is not None
        assert node.proc.returncode == -9
    assert len(acked) > 1000, "the workload should have been acknowledged many times over"

    verify = xln_node("verify", "--data", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    seen: dict[int, tuple[int, int]] = {}
    with Store(data / "chain") as store:
        state, _ = store.load()
        for raw in store.blocks():
            block = Block.decode(raw)
            for index, tx in enumerate(Mempool.decode(block.mempool).txs):
                assert isinstance(tx.body, Increment)
                assert tx.body.n not in seen, "a transaction was applied twice"
                seen[tx.body.n] = (block.height, index)
        for n, (height, block_hash, index) in acked.items():
            assert store.block_hash_at(height) == block_hash, f"acked block {height} was lost"
            assert seen.get(n) == (height, index)
    assert state.counter == sum(seen)


# Shutdown ----------------------------------------------------------------------

SHUTDOWN_ATTEMPTS = 3
SUBMITS_PER_ATTEMPT = 5_000


@dataclass
class ShutdownOutcome:
    """What one connection heard while the node stopped under it."""

    receipted: dict[int, tuple[int, bytes, int]]  # increment -> (height, block hash, index)
    refused: set[int]  # increments answered SHUTTING_DOWN, alone or by the request-id-0 error
    close_code: int | None
    exit_code: int


async def _submit_through_sigterm(node: NodeProcess, token: str, base: int) -> ShutdownOutcome:
    """Pipeline SUBMITs of ``increment(base + request id)`` until the node closes the
    connection; SIGTERM goes to the node once the first RECEIPTS comes back."""
    assert node.proc is not None
    sent: dict[int, int] = {}
    replies: list[Reply] = []
    close_code = None
    async with connect(node.url, compression=None) as ws:
        await ws.send(encode_request(Req.HELLO, 1, ME, (), [token.encode()]))
        assert (await recv_reply(ws, DEADLINE)).type is Rep.WELCOME

        async def send_all() -> None:
            with contextlib.suppress(ConnectionClosed):
                for rid in range(2, SUBMITS_PER_ATTEMPT + 2):
                    tx = Tx.of(Increment(base + rid))
                    await ws.send(encode_request(Req.SUBMIT, rid, ME, (), [decode(tx.raw)]))
                    sent[rid] = base + rid
                    await asyncio.sleep(0)  # let the replies in

        sender = asyncio.create_task(send_all())
        terminated = False
        try:
            while True:
                reply = await recv_reply(ws, DEADLINE)
                replies.append(reply)
                if reply.type is Rep.RECEIPTS and not terminated:
                    node.proc.send_signal(signal.SIGTERM)
                    terminated = True
        except ConnectionClosed as exc:
            close_code = exc.rcvd.code if exc.rcvd is not None else None
        await asyncio.wait_for(sender, DEADLINE)
    exit_code = node.proc.wait(timeout=DEADLINE)

    receipted: dict[int, tuple[int, bytes, int]] = {}
    refused: set[int] = set()
    answered: set[int] = set()
    notice = False
    for reply in replies:
        assert not notice, "a reply came after the connection-wide SHUTTING_DOWN"
        rid = reply.request_id
        if reply.type is Rep.ERROR:
            code, message = error_of(reply)
            assert code is Err.SHUTTING_DOWN, message
            if rid == 0:
                notice = True
                continue
            refused.add(sent[rid])
        else:
            assert reply.type is Rep.RECEIPTS
            receipts = parse_receipts(reply)
            (receipt,) = receipts.receipts
            assert receipt.error is None
            receipted[sent[rid]] = (receipts.height, receipts.block_hash, receipt.index)
        assert rid not in answered, f"request {rid} answered twice"
        answered.add(rid)
    unanswered = {sent[rid] for rid in sent.keys() - answered}
    assert notice or not unanswered, f"{len(unanswered)} SUBMITs heard nothing before the close"
    return ShutdownOutcome(receipted, refused | unanswered, close_code, exit_code)


async def test_sigterm_answers_every_submit_with_receipts_or_shutting_down(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    """docs/PROTOCOL.md § 6: RECEIPTS means in the chain; SHUTTING_DOWN (its own, or the
    request-id-0 error that comes before close 1001) means not applied; nothing else."""
    data = tmp_path / "data"
    token = create_token(data)
    receipted: dict[int, tuple[int, bytes, int]] = {}
    refused: set[int] = set()
    for attempt in range(SHUTDOWN_ATTEMPTS):
        node = node_process("--tick-ms", "10", data=data)
        outcome = await _submit_through_sigterm(node, token, attempt * 2 * SUBMITS_PER_ATTEMPT)
        assert outcome.exit_code == 0
        assert outcome.close_code == 1001
        assert outcome.receipted, "SIGTERM came after a RECEIPTS"
        receipted |= outcome.receipted
        refused |= outcome.refused
    assert refused, "some SUBMITs should have come too late"

    verify = xln_node("verify", "--data", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    seen: dict[int, tuple[int, int]] = {}
    with Store(data / "chain") as store:
        for raw in store.blocks():
            block = Block.decode(raw)
            for index, tx in enumerate(Mempool.decode(block.mempool).txs):
                assert isinstance(tx.body, Increment)
                seen[tx.body.n] = (block.height, index)
        for n, (height, block_hash, index) in receipted.items():
            assert store.block_hash_at(height) == block_hash
            assert seen.get(n) == (height, index)
    assert seen.keys() == receipted.keys()
    assert not refused & seen.keys()


# Fuzzing ---------------------------------------------------------------------

VALID_BODIES: dict[Req, list[Any]] = {
    Req.HELLO: [b"TOKEN"],
    Req.SUBMIT: [[1, 1], [1, 2]],
    Req.STATUS: [],
    Req.READ_STATE: [],
    Req.SUBSCRIBE: [1],
    Req.UNSUBSCRIBE: [1],
    Req.GET_BLOCKS: [1, 10],
    Req.METRICS: [],
    # Peer and agent messages: whatever their shape, a client gets an error.
    Req.DELIVER: [b"\x01" * 32, b"", [1, 1]],
    Req.PROPOSAL: [b"\x01" * 32, [b"\x01"], 0, b"\x00" * 96, []],
    Req.GET_FRAMES: [b"\x01" * 32, 1, 10],
    Req.PEER_INFO: [],
    Req.READ_ENTITY: [2, b"", 0, b"", 16],
    Req.CHALLENGE: [],  # a peer server's, before its HELLO
    Req.SIGN: [[b"\x01"], 0, [], []],
    Req.APPROVE: [[b"\x01"], 0, [], []],
    Req.BIND: [b"\x01" * 48],
    Req.FLOOR: [1, 0],
    # A restore's: this node runs no consensus.
    Req.MEMBERSHIPS: [b"\x01" * 32, b"", 16],
    Req.FIND_ENTITIES: [],
}

INVALID_BODIES: dict[Req, list[list[Any]]] = {
    Req.HELLO: [[], [b"a", b"b"], [[b"x"]], [b"xln_00000000_" + b"B" * 43], [b"z" * 129]],
    Req.SUBMIT: [
        [],
        [[1, 0]],
        [[1, MAX_INCREMENT + 1]],
        [[1, b"\x00\x01"]],
        [[1, 1, 1]],
        [[2, 1]],
        [[]],
        [b"\x01"],
        [[1, [1]]],
        [[1, 1]] * 4097,
    ],
    Req.STATUS: [[1], [b""], [[]]],
    Req.READ_STATE: [[2], [1, 1], [[]]],
    Req.SUBSCRIBE: [[], [0], [3], [255], [1, 1], [[1]], [b"\x00\x01"]],
    Req.UNSUBSCRIBE: [[], [10**6], [[1]], [1, 2]],
    Req.GET_BLOCKS: [[], [1], [0, 1], [1, 0], [1, 1001], [[1], 1], [1, b"\x00\x05"]],
    Req.METRICS: [[1], [[]]],
    Req.DELIVER: [[], [b"\x01"], [b"\x01" * 32, b"", [1, 1]]],
    Req.PROPOSAL: [[], [b"\x01" * 32, [], 0, b"", []]],
    Req.GET_FRAMES: [[], [b"\x01" * 32, 0, 10]],
    Req.PEER_INFO: [[1], []],
    Req.READ_ENTITY: [[], [3, b""], [0], [2, b"", 2, b"", 16], [2, b"", 0, b"", 0], [1, b"\x01"]],
    Req.CHALLENGE: [[1], [b""], [[]]],
    Req.SIGN: [[], [[b"\x01"], 0]],
    Req.APPROVE: [[], [[b"\x01"], 0]],
    Req.BIND: [[], [b"\x01" * 48]],
    Req.FLOOR: [[], [1, 0]],
    Req.MEMBERSHIPS: [[], [b"\x01" * 32, b"", 0], [b"\x01", b"", 1], [b"\x01" * 32, b"\x02", 1]],
    Req.FIND_ENTITIES: [[1], [[]]],
}


def _frame(
    req: Req,
    rid: int,
    body: Sequence[Any],
    route: Sequence[Any] | None = None,
    sender: Sequence[Any] | None = None,
) -> bytes:
    return encode([req, rid, sender or [ME.kind, ME.id], route or [], body])


def mutants(req: Req, token: bytes, rng: random.Random, count: int) -> list[bytes]:
    """``count`` frames of type ``req``, each certain to be invalid, by rotating operators."""
    valid_body: list[Any] = [token] if req is Req.HELLO else VALID_BODIES[req]
    valid = _frame(req, 7, valid_body)
    unknown_id = rng.randbytes(32)

    def truncate() -> bytes:
        return valid[: rng.randrange(len(valid))]

    def trail() -> bytes:
        return valid + rng.randbytes(rng.randint(1, 4))

    def flip() -> bytes:
        raw = bytearray(valid)
        for _ in range(64):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            try:
                decode(bytes(raw))
            except DecodeError:
                return bytes(raw)
        return truncate()

    def wrong_field_type() -> bytes:
        fields: list[Any] = [req, 7, [ME.kind, ME.id], [], valid_body]
        i = rng.randrange(5)
        fields[i] = [b"\x01"] if i < 2 else b"\x01"
        return encode(fields)

    def unknown_type() -> bytes:
        unknown = [0, *range(13, 20), *range(21, 256)]
        return encode([rng.choice(unknown), 7, [ME.kind, ME.id], [], valid_body])

    def bad_route() -> bytes:
        route: list[Any] = rng.choice(
            [
                [unknown_id],
                [rng.randbytes(rng.choice([1, 31, 33]))],
                [unknown_id] * 4,
                [[unknown_id]],
                [unknown_id, rng.randbytes(32)],
            ]
        )
        return _frame(req, 7, valid_body, route=route)

    def bad_body() -> bytes:
        return _frame(req, 7, rng.choice(INVALID_BODIES[req]))

    def bad_sender() -> bytes:
        sender: list[Any] = rng.choice(
            [[0, b"x"], [4, b"x"], [1, b"x" * 65], [1], [1, [b"x"]], [b"\x00\x01", b"x"]]
        )
        return _frame(req, 7, valid_body, sender=sender)

    def non_canonical_int() -> bytes:
        return encode_tree([int_bytes(req), b"\x00\x07", [b"\x01", ME.id], [], []])

    def not_a_list() -> bytes:
        return encode(rng.randbytes(rng.randint(0, 40)))

    ops = [
        truncate,
        trail,
        flip,
        wrong_field_type,
        unknown_type,
        bad_route,
        bad_body,
        bad_sender,
        non_canonical_int,
        not_a_list,
    ]
    return [ops[i % len(ops)]() for i in range(count)]


class Conn:
    """A connection that re-opens (and re-authenticates) when the node closes it."""

    def __init__(self, url: str, token: bytes, authenticate: bool) -> None:
        self.url, self.token, self.authenticate = url, token, authenticate
        self.ws: ClientConnection | None = None
        self.reopened = 0

    async def open(self) -> ClientConnection:
        if self.ws is None or self.ws.close_code is not None:
            self.ws = await connect(self.url, compression=None)
            self.reopened += 1
            if self.authenticate:
                await self.ws.send(_frame(Req.HELLO, 1, [self.token]))
                assert (await recv_reply(self.ws, DEADLINE)).type is Rep.WELCOME
        return self.ws

    async def error_for(self, frame: bytes) -> Err:
        ws = await self.open()
        await ws.send(frame)
        reply = await recv_reply(ws, DEADLINE)
        assert reply.type is Rep.ERROR, (frame.hex(), reply)
        code = error_of(reply)[0]
        if code in (Err.UNAUTHORIZED, Err.UNSUPPORTED_SENDER) or not self.authenticate:
            # Documented: these two close the connection, with code 1008, and before
            # HELLO so does every error (PROTOCOL.md § 1.3).
            await asyncio.wait_for(ws.wait_closed(), DEADLINE)
            assert ws.close_code == 1008
        return code


async def test_mutated_frames_of_every_type_get_errors_and_change_nothing(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    token = create_token(data).encode()
    node = node_process(data=data)
    async with await NodeClient.connect(node.url, token=token.decode()) as client:
        await client.submit([Increment(11)])
        before = await client.status()
        rng = random.Random(7)
        codes: dict[Req, set[Err]] = {}
        for req in Req:
            conn = Conn(node.url, token, authenticate=req is not Req.HELLO)
            frames = mutants(req, token, rng, FUZZ_PER_TYPE)
            assert len(frames) >= FUZZ_PER_TYPE
            codes[req] = {await conn.error_for(frame) for frame in frames}
            if conn.ws is not None:
                await conn.ws.close()
            assert node.alive, f"node died while fuzzing {req.name}"
        after = await client.status()
    assert (after.height, after.head, after.state_hash, after.counter) == (
        before.height,
        before.head,
        before.state_hash,
        before.counter,
    )
    assert Err.MALFORMED in codes[Req.SUBMIT]
    assert Err.INVALID_TX in codes[Req.SUBMIT]
    assert Err.UNKNOWN_ROUTE in codes[Req.SUBMIT]
    assert Err.UNKNOWN_TYPE in codes[Req.STATUS]
    assert Err.UNAUTHORIZED in codes[Req.HELLO]


async def test_a_hub_too_large_to_read_whole_is_read_in_parts(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    """A node serving a hub of 5,000 channels (``bench/hub_store.py``'s store: the
    state written directly) refuses READ_STATE of the replica, which would read and
    encode every channel, and answers READ_ENTITY of its header and of one channel."""
    data = tmp_path / "hub"
    made = run_python("-m", "bench.hub_store", "--channels", "5000", "--data", str(data))
    assert made.returncode == 0, made.stderr
    token = create_token(data)
    node = node_process("--cache-mb", "1", data=data)
    async with await NodeClient.connect(node.url, token=token) as client:
        signers = await client.server_listing()
        ((signer, _),) = signers[1]
        _, _, replicas = await client.signer_listing(signer)
        ((entity, _),) = replicas
        with pytest.raises(NodeError) as refused:
            await client.request(Req.READ_STATE, [], [signer, entity])
        assert refused.value.code is Err.NOT_FOUND
        message = str(refused.value)
        assert "holds 5,000 channels and kept entries and 0 forwards" in message
        assert "more than a whole read takes (4,096 and 65,536)" in message
        assert "read it in parts with READ_ENTITY" in str(refused.value)
        header = await client.request(Req.READ_ENTITY, [HEADER, b""], [signer, entity])
        assert header.type is Rep.ENTITY
        peer = keccak(b"peer 0")
        one = await client.request(Req.READ_ENTITY, [RECORD, b"", CHANNELS, peer], [signer, entity])
        assert one.type is Rep.ENTITY
        head = EntityHeader.from_item(one.body[2], entity)
        record = check_record(head, CHANNELS, peer, one.body[3])
        assert record is not None
        assert record.peer == peer
    assert node.terminate() == 0
