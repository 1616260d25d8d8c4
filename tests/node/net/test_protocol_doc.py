"""docs/PROTOCOL.md is executable: its example exchanges replay byte for byte against a live node.

The document is the source of truth here. Every fenced block with the info string
``exchange <name> [node=...] [via=...]`` is parsed from the document and replayed,
in document order and each on fresh WebSocket connections (one, or one per ``@``
name), against nodes started in-process exactly as the document describes (fixed
clock, fixed tokens, fixed keys). Every frame the node sends must equal the
documented hex, and once a block's lines are done no undocumented frame may follow
on any of its connections. Every frame must carry its decoded meaning as the
comment above it. The document must give an example of every request type, reply
type and error code, apart from the short allow-list below, and its table of
constants must match the code.

A frame counts as an example of its type whichever way it travels: the node sends
one request (``SIGN``, to an agent) and an agent sends replies (``SIGNATURE``, or
``ERROR REFUSED``); the envelope, not the direction, says which it is.

Regenerate the blocks after a protocol change with
``python -m tests.node.net.protocol_examples``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from node.codec import DecodeError, as_int, as_list
from node.net.limits import REQUEST
from node.net.protocol import Err, ProtocolError, Rep, Req, decode_reply, decode_request, error_of
from tests.node.net import protocol_examples as examples
from tests.node.net.protocol_examples import (
    ReplayNodes,
    describe_frame,
    describe_request,
    is_reply_frame,
    recv_close,
    recv_frame,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md"
SENTINEL = bytes.fromhex("c0")  # an empty list: MALFORMED, request id 0, changes nothing
FENCE_RE = re.compile(r"^```([\w-]+)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)

# Error codes without a replayable example, and why. Each must still appear in an
# ``illustration`` block, and must not be in this list once an exchange shows it.
NOT_REPLAYABLE: dict[Err, str] = {
    Err.SUBSCRIPTION_OVERFLOW: (
        "needs a subscriber 4096 events behind, i.e. thousands of blocks while its socket "
        "buffers stay full: slow and timing-dependent"
    ),
    Err.INTERNAL: "sent only when a request hits a bug in the node",
    Err.AGENT_UNAVAILABLE: (
        "reserved: node 0.1.0 never sends it; when no agent is connected for a signer, the "
        "coordinator logs it and does not pre-commit (node/coordinator.py, Coordinator._sign)"
    ),
}
NODES = ("main", "seeded", "slow", "consensus")


@dataclass(frozen=True, slots=True)
class Send:
    frame: bytes


@dataclass(frozen=True, slots=True)
class SendText:
    text: str


@dataclass(frozen=True, slots=True)
class SendZeros:
    size: int


@dataclass(frozen=True, slots=True)
class Receive:
    frame: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    code: int
    reason: str | None  # None: the reason is the WebSocket library's and is not compared


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    arg: str


@dataclass(frozen=True, slots=True)
class Switch:
    """``@ <name>``: the lines below use the connection ``name``, opened at its first use."""

    name: str


type Line = Send | SendText | SendZeros | Receive | Closed | Action | Switch


@dataclass(frozen=True, slots=True)
class DocBlock:
    kind: str
    name: str
    attrs: dict[str, str]
    lines: tuple[tuple[int, Line], ...]  # (line number in the document, line)

    @property
    def node(self) -> str:
        return self.attrs.get("node", "main")

    @property
    def via(self) -> str:
        return self.attrs.get("via", "tcp")


def parse_line(text: str) -> Line | None:
    """One line of an example block; None for blank lines and ``#`` comments."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    head, _, rest = text.partition(" ")
    rest = rest.strip()
    match head:
        case ">":
            return Send(bytes.fromhex(rest))
        case "<":
            return Receive(bytes.fromhex(rest))
        case ">text":
            value = json.loads(rest)
            assert isinstance(value, str), ">text takes a JSON string"
            return SendText(value)
        case ">zeros":
            return SendZeros(int(rest))
        case "<close":
            code, _, reason = rest.partition(" ")
            if not reason:
                return Closed(int(code), None)
            value = json.loads(reason)
            assert isinstance(value, str), "<close takes a code and a JSON string"
            return Closed(int(code), value)
        case "!":
            name, _, arg = rest.partition(" ")
            return Action(name, arg.strip())
        case "@":
            if not rest or " " in rest:
                raise ValueError("@ takes one connection name")
            return Switch(rest)
    raise ValueError(f"unrecognised example line {text!r}")


def parse_doc(text: str) -> list[DocBlock]:
    blocks = []
    for m in FENCE_RE.finditer(text):
        kind, info, body = m.group(1), m.group(2).split(), m.group(3)
        if kind not in ("exchange", "illustration"):
            continue
        assert info, f"a {kind} block without a name at offset {m.start()}"
        attrs = dict(word.split("=", 1) for word in info[1:])
        first = text.count("\n", 0, m.start(3)) + 1
        lines = []
        for offset, raw in enumerate(body.splitlines()):
            try:
                line = parse_line(raw)
            except ValueError as exc:
                raise AssertionError(f"PROTOCOL.md line {first + offset}: {exc}") from None
            if line is not None:
                lines.append((first + offset, line))
        blocks.append(DocBlock(kind, info[0], attrs, tuple(lines)))
    return blocks


@pytest.fixture(scope="module")
def doc_text() -> str:
    return DOC.read_text("utf-8")


@pytest.fixture(scope="module")
def blocks(doc_text: str) -> list[DocBlock]:
    return parse_doc(doc_text)


def exchanges(blocks: list[DocBlock]) -> list[DocBlock]:
    return [b for b in blocks if b.kind == "exchange"]


def test_the_document_has_exchanges(blocks: list[DocBlock]) -> None:
    found = exchanges(blocks)
    assert found, "docs/PROTOCOL.md has no exchange blocks"
    names = [b.name for b in blocks]
    assert len(names) == len(set(names)), f"example names repeat: {names}"
    for block in found:
        assert any(isinstance(line, Receive | Closed) for _, line in block.lines), block.name
        assert block.node in NODES, block.name
        assert block.via in ("tcp", "unix"), block.name


def _coverage(blocks: list[DocBlock]) -> tuple[set[Req], set[Rep], set[Err]]:
    """The request types, reply types and error codes the blocks' frames show, in
    either direction."""
    requests: set[Req] = set()
    replies: set[Rep] = set()
    codes: set[Err] = set()
    for block in blocks:
        for _, line in block.lines:
            if not isinstance(line, Send | Receive):
                continue
            if not is_reply_frame(line.frame):
                with contextlib.suppress(ProtocolError):  # a deliberately bad frame
                    requests.add(decode_request(line.frame, limits=REQUEST).type)
                continue
            reply = decode_reply(line.frame)
            replies.add(reply.type)
            if reply.type is Rep.ERROR:
                codes.add(error_of(reply)[0])
            elif reply.type is Rep.RECEIPTS:
                for receipt in as_list(reply.body[2], "receipts"):
                    code = as_int(as_list(receipt, "receipt", size=3)[1], "code")
                    if code:
                        codes.add(Err(code))
    return requests, replies, codes


def test_every_message_type_and_error_code_has_an_example(blocks: list[DocBlock]) -> None:
    requests, replies, codes = _coverage(exchanges(blocks))
    assert set(Req) - requests == set(), "request types without an exchange"
    assert set(Rep) - replies == set(), "reply types without an exchange"
    assert set(Err) - codes - set(NOT_REPLAYABLE) == set(), "error codes without an exchange"
    stale = codes & set(NOT_REPLAYABLE)
    assert stale == set(), f"replayable now; take them off NOT_REPLAYABLE: {stale}"
    _, _, illustrated = _coverage([b for b in blocks if b.kind == "illustration"])
    assert set(NOT_REPLAYABLE) - illustrated == set(), "allow-listed codes need an illustration"


def test_illustrations_are_valid_replies(blocks: list[DocBlock]) -> None:
    for block in blocks:
        if block.kind != "illustration":
            continue
        assert block.lines, block.name
        for number, line in block.lines:
            assert isinstance(line, Receive), f"line {number}: illustrations hold node frames only"
            try:
                decode_reply(line.frame)
            except (DecodeError, ValueError) as exc:
                raise AssertionError(f"PROTOCOL.md line {number}: {exc}") from None


def test_documented_constants_match_the_code(doc_text: str) -> None:
    found = [m for m in FENCE_RE.finditer(doc_text) if m.group(1) == "constants"]
    assert found, "docs/PROTOCOL.md has no constants block"
    for m in found:
        for raw in m.group(3).splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            name, _, value = raw.partition("=")
            assert _resolve(name.strip()) == ast.literal_eval(value.strip()), raw


def test_documented_keys_and_tokens_match_the_replay(doc_text: str) -> None:
    """The fixed keys, ids and tokens that § 15.1 lists in prose are the replay's."""
    for name, value in (
        ("signer A's public key", examples.PK_A),
        ("signer A's id", examples.ID_A),
        ("signer B's public key", examples.PK_B),
        ("signer B's id", examples.ID_B),
        ("the peer's identity key", examples.PEER_IDENTITY.pubkey),
        ("the peer's id", examples.PEER_IDENTITY.id),
        ("E1's id", examples.E1),
        ("E2's id", examples.E2),
    ):
        assert f"`{value.hex()}`" in doc_text, f"PROTOCOL.md does not give {name}"
    for token in examples.DOC_TOKENS:
        assert f"`{token.token}`" in doc_text, f"PROTOCOL.md does not list token {token.id}"


def _resolve(dotted: str) -> Any:
    """``package.module.Name.ATTR``: the longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"no module in {dotted!r}")


async def _replay(nodes: ReplayNodes, block: DocBlock) -> None:
    conns: dict[str, ClientConnection] = {}
    closed: set[str] = set()
    current = ""  # the connection of a block without @ lines
    try:
        for number, line in block.lines:
            where = f"PROTOCOL.md line {number} ({block.name})"
            if isinstance(line, Action):
                await nodes.act(block.node, line.name, line.arg)
                continue
            if isinstance(line, Switch):
                current = line.name
                continue
            ws = conns.get(current)
            if ws is None:
                ws = conns[current] = await nodes.connect(block.node, block.via)
            match line:
                case Send(frame):
                    await ws.send(frame)
                case SendText(text):
                    await ws.send(text)
                case SendZeros(size):
                    await ws.send(bytes(size))
                case Receive(expected):
                    try:
                        got = await recv_frame(ws)
                    except (TimeoutError, ConnectionClosed) as exc:
                        raise AssertionError(
                            f"{where}: no frame ({exc!r}); expected {describe_frame(expected)}"
                        ) from None
                    assert got == expected, (
                        f"{where}: the node sent\n  {describe_frame(got)}\n"
                        f"  {got.hex() if isinstance(got, bytes) else got!r}\n"
                        f"the document says\n  {describe_frame(expected)}\n  {expected.hex()}"
                    )
                case Closed(code, reason):
                    close = await recv_close(ws)
                    assert isinstance(close, tuple), (
                        f"{where}: expected the node to close, got {describe_frame(close)}"
                    )
                    assert close[0] == code, f"{where}: close code {close[0]}, expected {code}"
                    if reason is not None:
                        assert close[1] == reason, f"{where}: close reason {close[1]!r}"
                    closed.add(current)
        for name, ws in conns.items():
            if name not in closed:
                await _expect_nothing_more(ws, f"{block.name} (@ {name})" if name else block.name)
    finally:
        for ws in conns.values():
            await ws.close()


async def _expect_nothing_more(ws: ClientConnection, name: str) -> None:
    """Sends a frame that changes nothing (``c0``, not an envelope) and expects its ERROR next.

    The node answers in arrival order, so any other frame before that ERROR is one the
    document does not show.
    """
    try:
        await ws.send(SENTINEL)
        got = await recv_frame(ws)
    except (TimeoutError, ConnectionClosed) as exc:
        raise AssertionError(f"{name}: the connection failed after the exchange: {exc!r}") from None
    assert isinstance(got, bytes), f"{name}: an undocumented text frame {got!r}"
    undocumented = f"{name}: an undocumented frame at the end: {describe_frame(got)}"
    assert is_reply_frame(got), undocumented
    reply = decode_reply(got)
    assert reply.type is Rep.ERROR, undocumented
    assert reply.request_id == 0, undocumented
    assert error_of(reply)[0] is Err.MALFORMED, undocumented


async def test_exchanges_replay_against_a_live_node(blocks: list[DocBlock], tmp_path: Path) -> None:
    found = exchanges(blocks)
    assert found
    async with ReplayNodes.started(tmp_path) as nodes:
        for block in found:
            await _replay(nodes, block)


def test_every_frame_is_annotated_with_its_meaning(doc_text: str) -> None:
    """The comment above each frame is what the frame decodes to, so the prose cannot lie."""
    for m in FENCE_RE.finditer(doc_text):
        if m.group(1) not in ("exchange", "illustration"):
            continue
        first = doc_text.count("\n", 0, m.start(3)) + 1
        previous = ""
        for offset, raw in enumerate(m.group(3).splitlines()):
            where = f"PROTOCOL.md line {first + offset}"
            if raw.startswith(("> ", "< ")):
                meaning = f"# {raw[0]} " + describe_frame(bytes.fromhex(raw[2:]))
                if m.group(1) == "illustration":
                    assert previous.endswith(meaning[4:]), f"{where}: annotation {previous!r}"
                else:
                    assert previous == meaning, f"{where}: {previous!r}, expected {meaning!r}"
            previous = raw


def test_annotations_read_the_envelope() -> None:
    frame = bytes.fromhex("c70302c20180c0c0")  # [3, 2, [1, ""], [], []]
    assert describe_request(frame) == 'STATUS id=2 sender=client:"" route=[] body=[]'
