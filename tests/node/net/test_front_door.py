"""Structural extremes against a real ``xln-node run`` process, on every kind of connection.

Frames nested from 1 to 100,000 levels, lists as wide as the frame cap allows,
length prefixes that lie, and frames just past each cap, sent before and after
HELLO by a client, an agent, a peer server and over the control socket. The
node must answer each with an error (or close the connection as PROTOCOL.md
§ 1.3 says), keep answering, never grow far in memory, and keep acknowledging
an honest client's transactions throughout; nothing the frames carry may
change the state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from node.codec import LimitExceeded, encode, encode_list, encode_uint, nested_lists, scan
from node.crypto import bls
from node.identity import Identity
from node.machines.governance import signer_id
from node.machines.server import Increment
from node.net import limits
from node.net.client import NodeClient
from node.net.protocol import (
    Err,
    Rep,
    Reply,
    Req,
    Sender,
    SenderKind,
    decode_reply,
    encode_request,
    error_of,
)
from tests.conftest import NodeProcess, create_token
from tests.node.net.peer_hello import handshake

pytestmark = pytest.mark.slow

DEADLINE_S = 20
RSS_BUDGET_MB = 128
CLIENT = Sender(SenderKind.CLIENT, b"fuzzer")
SIGNER_KEY = bls.keygen(b"\x07" * 32)
SIGNER = signer_id(bls.sk_to_pk(SIGNER_KEY))
PEER = Identity(bls.keygen(b"\x08" * 32))


def wide(count: int, item: bytes = b"\x80") -> bytes:
    return encode_list([item] * count)


def envelope(req: Req, rid: int, body_items: list[bytes], sender: Sender = CLIENT) -> bytes:
    """A request envelope around already-encoded body items."""
    return encode_list(
        [
            encode_uint(req),
            encode_uint(rid),
            encode([sender.kind, sender.id]),
            encode([]),
            encode_list(body_items),
        ]
    )


@dataclass(frozen=True)
class Extreme:
    name: str
    frame: bytes
    over_cap: bool  # past a depth or item cap of an authenticated link


def extremes() -> Iterator[Extreme]:
    """Every extreme frame; request id 9 wherever an envelope carries one."""
    depth_cap = limits.REQUEST.max_depth
    for depth in (1, 2, 3, 4, 16, 17, 1_000, 26_000, 100_000):
        yield Extreme(f"{depth} nested lists", nested_lists(depth), depth > depth_cap)
    for depth in (13, 14, 15, 1_000, 100_000):
        # The envelope and its body list add two levels.
        frame = envelope(Req.STATUS, 9, [nested_lists(depth)])
        yield Extreme(f"STATUS, body nested {depth} deep", frame, depth + 2 > depth_cap)
    cap = limits.REQUEST.max_items
    for count in (cap - 1, cap, limits.MAX_FRAME_BYTES - 8):
        # The outer list is an item too.
        yield Extreme(f"a list of {count} empty strings", wide(count), count + 1 > cap)
    yield Extreme("349,000 two-item lists (1 MiB)", wide(349_000, b"\xc2\x80\x80"), True)
    # An envelope holds 8 items besides its body's.
    yield Extreme("SUBMIT at the item cap", envelope(Req.SUBMIT, 9, [b"\x01"] * (cap - 8)), False)
    yield Extreme("SUBMIT past the item cap", envelope(Req.SUBMIT, 9, [b"\x01"] * (cap - 7)), True)
    lies = {
        "a string claiming 65,535 bytes, holding 10": b"\xb9\xff\xff" + b"a" * 10,
        "a string claiming 2^64-1 bytes": b"\xbf" + b"\xff" * 8 + b"x",
        "a list claiming 65,535 bytes, holding 1": b"\xf9\xff\xff\xc0",
        "a list claiming 2^64-1 bytes": b"\xff" + b"\xff" * 8 + b"\xc0",
        "an inner list longer than its parent": b"\xc2\xc5\x80\x80",
        "a long form of length 0": b"\xb8\x00",
        "a long form for a short string": b"\xb8\x01a",
        "a truncated long prefix": b"\xf9\xff",
        "an envelope whose body lies": envelope(Req.STATUS, 9, [])[:-1] + b"\xc5\x80",
    }
    for name, frame in lies.items():
        yield Extreme(name, frame, False)


@dataclass
class Outcome:
    error: tuple[Err, str] | None = None
    close_code: int | None = None


async def answer_to(ws: ClientConnection, frame: bytes) -> Outcome:
    """Send ``frame``; the node's error reply, or its closing of the connection."""
    outcome = Outcome()
    try:
        await ws.send(frame)
        async with asyncio.timeout(DEADLINE_S):
            reply = decode_reply(await ws.recv(decode=False))
            assert reply.type is Rep.ERROR, f"{reply.type.name} to a hostile frame"
            outcome.error = error_of(reply)
            await asyncio.wait_for(ws.recv(decode=False), 0.2)  # closing? (or nothing)
    except TimeoutError:
        pass  # the connection stays open and nothing more came: as expected
    except ConnectionClosed as exc:
        outcome.close_code = exc.rcvd.code if exc.rcvd is not None else None
    return outcome


@dataclass
class Kind:
    name: str
    open: Callable[[], contextlib.AbstractAsyncContextManager[ClientConnection]]
    # Authenticates a connection and gives the WELCOME; None: authenticated from the start
    hello: Callable[[ClientConnection], Awaitable[Reply]] | None


def frame_hello(frame: bytes) -> Callable[[ClientConnection], Awaitable[Reply]]:
    async def hello(ws: ClientConnection) -> Reply:
        await ws.send(frame)
        return decode_reply(await asyncio.wait_for(ws.recv(decode=False), DEADLINE_S))

    return hello


async def peer_hello(ws: ClientConnection) -> Reply:
    return await handshake(ws, PEER)


def kinds(node: NodeProcess, token: str, agent_token: str) -> list[Kind]:
    token_bytes = token.encode()

    def tcp() -> contextlib.AbstractAsyncContextManager[ClientConnection]:
        return connect(node.url, compression=None, max_size=None)

    def unix() -> contextlib.AbstractAsyncContextManager[ClientConnection]:
        return unix_connect(
            str(node.data / "node.sock"), "ws://localhost/", compression=None, max_size=None
        )

    return [
        Kind("client", tcp, frame_hello(encode_request(Req.HELLO, 1, CLIENT, (), [token_bytes]))),
        Kind(
            "agent",
            tcp,
            frame_hello(
                encode_request(
                    Req.HELLO, 1, Sender(SenderKind.AGENT, SIGNER), (), [agent_token.encode()]
                )
            ),
        ),
        Kind("peer", tcp, peer_hello),
        Kind("control socket", unix, None),
    ]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Acks:
    """The amounts an honest client got acknowledged, and a way to wait for more."""

    def __init__(self) -> None:
        self.amounts: list[int] = []
        self._more = asyncio.Condition()

    async def add(self, amount: int) -> None:
        async with self._more:
            self.amounts.append(amount)
            self._more.notify_all()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(DEADLINE_S), self._more:
            await self._more.wait_for(lambda: len(self.amounts) >= count)


async def honest_client(url: str, token: str, stop: asyncio.Event, acks: Acks) -> None:
    """Submits one increment at a time and records each acknowledged amount."""
    async with await NodeClient.connect(url, token=token) as client:
        n = 0
        while not stop.is_set():
            n += 1
            receipts = await asyncio.wait_for(client.submit([Increment(n)]), DEADLINE_S)
            assert receipts.receipts[0].error is None
            await acks.add(n)


async def test_structural_extremes_on_every_connection_kind(
    tmp_path: Path, node_process: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    token = create_token(data)
    agent_token = create_token(data, f"signer:{SIGNER.hex()}")
    node = node_process(data=data)
    assert node.proc is not None
    pid = node.proc.pid
    stop = asyncio.Event()
    acks = Acks()
    honest = asyncio.create_task(honest_client(node.url, token, stop, acks))
    await acks.reach(3)
    idle_mb = peak_mb = rss_mb(pid)
    frames = list(extremes())
    for kind in kinds(node, token, agent_token):
        phases = ["before HELLO", "after HELLO"] if kind.hello is not None else ["open"]
        for phase in phases:
            acked_before = len(acks.amounts)
            for extreme in frames:
                frame = extreme.frame
                what = f"{kind.name}, {phase}: {extreme.name} ({len(frame)} bytes)"
                async with kind.open() as ws:
                    if phase == "after HELLO":
                        assert kind.hello is not None
                        welcome = await kind.hello(ws)
                        assert welcome.type is Rep.WELCOME, what
                    outcome = await answer_to(ws, frame)
                    check_outcome(outcome, phase, extreme, what)
                    if outcome.close_code is None:
                        # The same connection still gets answers.
                        await ws.send(encode_request(Req.STATUS, 2, _sender(kind), (), []))
                        answer = decode_reply(
                            await asyncio.wait_for(ws.recv(decode=False), DEADLINE_S)
                        )
                        assert answer.type is Rep.STATUS, what
                assert node.alive, f"the node died on {what}"
                peak_mb = max(peak_mb, rss_mb(pid))
            await acks.reach(acked_before + 1)  # the honest client went on
    stop.set()
    await asyncio.wait_for(honest, DEADLINE_S)
    assert peak_mb <= idle_mb + RSS_BUDGET_MB, f"RSS {idle_mb:.0f} MiB idle, {peak_mb:.0f} peak"
    async with await NodeClient.connect(node.url, token=token) as client:
        status = await client.status()
    assert status.counter == sum(acks.amounts), "a hostile frame changed the state"
    assert node.terminate() == 0


def _sender(kind: Kind) -> Sender:
    if kind.name == "agent":
        return Sender(SenderKind.AGENT, SIGNER)
    if kind.name == "peer":
        return Sender(SenderKind.SERVER, PEER.id)
    return CLIENT


def check_outcome(outcome: Outcome, phase: str, extreme: Extreme, what: str) -> None:
    """What PROTOCOL.md § 1.3 promises for this frame."""
    size = len(extreme.frame)
    if phase == "before HELLO":
        # Refused and closed: 1009 past the WebSocket cap, else an error then 1008.
        if size > limits.PRE_HELLO_WS_BYTES:
            assert outcome.close_code == 1009, f"{what}: {outcome}"
        else:
            assert outcome.error is not None, f"{what}: {outcome}"
            assert outcome.close_code == 1008, f"{what}: {outcome}"
        return
    if size > limits.MAX_FRAME_BYTES:
        assert outcome.close_code == 1009, f"{what}: {outcome}"
        return
    assert outcome.error is not None, f"{what}: {outcome}"
    code, message = outcome.error
    assert code in (Err.MALFORMED, Err.UNKNOWN_TYPE, Err.FORBIDDEN, Err.INVALID_TX), what
    assert outcome.close_code is None, f"{what}: closed after {code.name} {message}"
    assert ("(the cap)" in message) == extreme.over_cap, f"{what}: {message}"


@pytest.mark.parametrize("depth", [17, 100_000])
def test_nested_frames_are_measured_without_recursion(depth: int) -> None:
    """The scan refuses deep nesting by counting, whatever the interpreter's limit."""
    with pytest.raises(LimitExceeded, match="deeper than 16"):
        scan(nested_lists(depth), limits.REQUEST)
