"""Generator of the replayable examples in ``docs/PROTOCOL.md``, and the node they replay against.

The document holds fenced blocks with the info string ``exchange <name> [key=value...]``
(frames a client sends and the frames a live node answers with) and
``illustration <name>`` (hex that cannot be produced on demand, never replayed).
This module knows, for every example name, which requests to send; it runs them
against a freshly started, deterministic node and rewrites the body of each
block in the document, in document order. The prose around the blocks is not
touched. Regenerate after a protocol change with::

    python -m tests.node.net.protocol_examples          # rewrites docs/PROTOCOL.md

``tests/node/net/test_protocol_doc.py`` parses the blocks as written in the
document, replays them against the same kind of node and compares every byte.
It shares with this generator only the node set-up (:class:`ReplayNodes`), the
receive helpers and the one-line descriptions of frames (``describe_*``), which
it uses to check the comment above each frame.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from node.codec import (
    UINT64_MAX,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode,
    encode_list,
    keccak,
)
from node.machines.server import ServerState, apply_block
from node.mempool import Mempool
from node.net.protocol import (
    MAX_BLOCKS_PER_PAGE,
    MAX_FRAME_BYTES,
    Err,
    ProtocolError,
    Rep,
    Req,
    Sender,
    SenderKind,
    Topic,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
)
from node.net.server import MAX_SUBSCRIPTIONS_PER_SESSION, UNIX_PATH_MAX, ApiServer
from node.runtime import Metrics, Node, NodeConfig
from node.storage import Store
from node.tokens import FILE_VERSION, TOKENS_FILE, TokenStore

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md"

# The replay node ----------------------------------------------------------------

FIXED_CLOCK_MS = 1_700_000_000_000
TICK_MS = 20
HELLO_DEADLINE_S = 1.0  # the node's default is 10 s
INBOX_CAP = 16
NODE_ID = bytes(32)
DEADLINE_S = 5.0
MAX_REPLY_BYTES = 64 * 1024 * 1024
RECORDS_CREATED = "2023-11-14T22:13:20+00:00"
CONTROL_SOCKET = "node.sock"
# The "seeded" node starts from a forged state three below the counter's maximum,
# the only cheap way to reach an increment that fails when applied.
SEED_COUNTER = UINT64_MAX - 2
# The "slow" node makes its first block an hour after it starts, so an inbox filled
# during an example stays full: the only deterministic way to show BUSY.
SLOW_TICK_MS = 3_600_000

ME = Sender(SenderKind.CLIENT, b"example")
SIGNER_ID = bytes([0x11]) * 32


@dataclass(frozen=True, slots=True)
class DocToken:
    id: str
    secret: str  # 43 characters of unpadded base64url, as xln-node token create makes them
    scope: str
    label: str

    @property
    def token(self) -> str:
        return f"xln_{self.id}_{self.secret}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.token.encode("utf-8")).hexdigest()


SERVER_TOKEN = DocToken("00000001", "M82Gn00lujwiStEg7ML7Ukp_MoQXLr5bHRAONaXEtlA", "server", "docs")
SIGNER_TOKEN = DocToken(
    "00000002",
    "PbV5xV24ZfTOaOEm0x-BX4Euff4vajS4b24K_G4yqjM",
    f"signer:{SIGNER_ID.hex()}",
    "docs, signer scope",
)
REVOKED_TOKEN = DocToken(
    "00000003", "vyLNddEI6hRubbCERdtN84Q-Uam5H8gb0cxD7zNBJLc", "server", "docs, revoked"
)
DOC_TOKENS = (SERVER_TOKEN, SIGNER_TOKEN, REVOKED_TOKEN)


def write_token_file(data: Path, tokens: Sequence[DocToken] = DOC_TOKENS) -> None:
    """``tokens.json`` exactly as PROTOCOL.md documents it (only SHA-256 of each token)."""
    payload = {
        "version": FILE_VERSION,
        "tokens": [
            {
                "id": t.id,
                "sha256": t.sha256,
                "scope": t.scope,
                "created": RECORDS_CREATED,
                "label": t.label,
            }
            for t in tokens
        ],
    }
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data / TOKENS_FILE).write_text(json.dumps(payload, indent=2), "utf-8")


@dataclass
class LiveNode:
    """One node in this process, on 127.0.0.1 and (optionally) its control socket."""

    data: Path
    node: Node
    tokens: TokenStore
    api: ApiServer
    port: int
    stop: asyncio.Event
    task: asyncio.Task[None]
    unix_path: Path | None
    ticked: asyncio.Event = field(default_factory=asyncio.Event)


async def start_node(
    data: Path, *, seed_counter: int | None = None, control_socket: bool, tick_ms: int = TICK_MS
) -> LiveNode:
    write_token_file(data)
    store = Store(data / "chain")
    if seed_counter is not None:
        forged = ServerState(counter=seed_counter)
        store.write_block(apply_block(forged, Mempool.empty(), FIXED_CLOCK_MS))
    node = Node(
        store,
        NodeConfig(tick_ms=tick_ms, inbox_cap=INBOX_CAP),
        clock_ms=lambda: FIXED_CLOCK_MS,
    )
    # Latency samples are timing noise; keep none so METRICS replies are reproducible.
    node.metrics = Metrics(tick_lateness_us=deque(maxlen=0), write_us=deque(maxlen=0))
    tokens = TokenStore(data)
    api = ApiServer(node, tokens, NODE_ID, hello_timeout_s=HELLO_DEADLINE_S)
    node.tick_hooks.append(api.refresh_tokens)  # as xln-node run does
    port = await api.listen_tcp("127.0.0.1", 0)
    unix_path = None
    if control_socket:
        unix_path = data / CONTROL_SOCKET
        if len(os.fsencode(unix_path)) > UNIX_PATH_MAX:  # a deep temporary folder
            unix_path = Path(tempfile.mkdtemp(prefix="xln-")) / CONTROL_SOCKET
        await api.listen_unix(unix_path)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    live = LiveNode(data, node, tokens, api, port, stop, task, unix_path)
    node.tick_hooks.append(live.ticked.set)
    return live


async def close_node(live: LiveNode) -> None:
    live.stop.set()
    try:
        await asyncio.wait_for(live.task, DEADLINE_S)
    finally:
        await live.api.close()
        live.node.close()
        if live.unix_path is not None and live.unix_path.parent != live.data:
            shutil.rmtree(live.unix_path.parent, ignore_errors=True)


class ReplayNodes:
    """The replay nodes: ``main`` (with a control socket), ``seeded`` and ``slow``."""

    def __init__(self, nodes: dict[str, LiveNode]) -> None:
        self.nodes = nodes

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, root: Path) -> AsyncIterator[ReplayNodes]:
        nodes: dict[str, LiveNode] = {}
        try:
            nodes["main"] = await start_node(root / "main", control_socket=True)
            nodes["seeded"] = await start_node(
                root / "seeded", seed_counter=SEED_COUNTER, control_socket=False
            )
            nodes["slow"] = await start_node(
                root / "slow", control_socket=False, tick_ms=SLOW_TICK_MS
            )
            yield cls(nodes)
        finally:
            async with contextlib.AsyncExitStack() as stack:
                for live in nodes.values():
                    stack.push_async_callback(close_node, live)

    async def connect(self, node: str, via: str) -> ClientConnection:
        live = self.nodes[node]
        if via == "unix":
            assert live.unix_path is not None, f"node {node} has no control socket"
            return await unix_connect(
                str(live.unix_path), "ws://localhost/", max_size=MAX_REPLY_BYTES, compression=None
            )
        if via != "tcp":
            raise ValueError(f"unknown transport {via!r}")
        return await connect(
            f"ws://127.0.0.1:{live.port}/", max_size=MAX_REPLY_BYTES, compression=None, proxy=None
        )

    async def act(self, node: str, action: str, arg: str) -> None:
        """An operator action between frames: ``revoke <token id>`` or ``stop-node``."""
        live = self.nodes[node]
        if action == "revoke":
            # Revoke as the CLI does, through the file, then wait for the node's next tick,
            # whose first hook reloads tokens.json.
            assert TokenStore(live.data).revoke(arg), f"no token {arg}"
            live.ticked.clear()
            await asyncio.wait_for(live.ticked.wait(), DEADLINE_S)
        elif action == "stop-node":
            live.stop.set()
            await asyncio.wait_for(live.task, DEADLINE_S)
        else:
            raise ValueError(f"unknown action {action!r}")


async def recv_frame(ws: ClientConnection) -> bytes | str:
    """The next frame, or ConnectionClosed; TimeoutError after the deadline."""
    return await asyncio.wait_for(ws.recv(), DEADLINE_S)


async def recv_close(ws: ClientConnection) -> tuple[int, str] | bytes | str:
    """Waits for the node to close: its close code and reason, or the frame that came instead."""
    try:
        frame = await recv_frame(ws)
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return (1006, "")
        return (exc.rcvd.code, exc.rcvd.reason)
    return frame


# Annotations --------------------------------------------------------------------


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex() if raw else '""'


def _text(raw: bytes) -> str:
    try:
        return json.dumps(raw.decode("utf-8"), ensure_ascii=False)
    except UnicodeDecodeError:
        return _hex(raw)


def _generic(item: RlpItem) -> str:
    if isinstance(item, bytes):
        return _hex(item)
    return "[" + ", ".join(_generic(i) for i in item) + "]"


def _tx(item: RlpItem) -> str:
    try:
        fields = as_list(item, "tx")
        type_id = as_int(fields[0], "type")
        if type_id == 1 and len(fields) == 2:
            return f"increment({as_int(fields[1], 'n', max_value=2**256)})"
    except (DecodeError, IndexError):
        pass
    return _generic(item)


def _route(items: Sequence[RlpItem]) -> str:
    return "[" + ", ".join(_generic(r) for r in items) + "]"


def _block(raw: bytes) -> str:
    items = as_list(decode(raw), "block", size=5)
    keys_values = as_list(decode(as_bytes(items[3], "mempool")), "mempool", size=2)
    txs = ", ".join(_tx(t) for t in as_list(keys_values[1], "values"))
    return (
        f"block(height={as_int(items[0], 'h')} prev={_generic(items[1])} "
        f"timestamp={as_int(items[2], 't')} mempool=[keys {_generic(keys_values[0])}, txs [{txs}]] "
        f"state_hash={_generic(items[4])}; block hash {_hex(keccak(raw))})"
    )


def _state(raw: bytes) -> str:
    s = ServerState.decode(raw)
    subs = "[" + ", ".join(f"({_hex(i)}, {_hex(h)})" for i, h in s.subs) + "]"
    return (
        f"state(version=1 height={s.height} timestamp={s.timestamp} counter={s.counter} "
        f"subs={subs}; state hash {_hex(s.hash())})"
    )


def _request_body(req_type: Req, body: list[RlpItem]) -> str:
    match req_type, body:
        case Req.HELLO, [bytes() as token]:
            return f"token={_text(token)}"
        case Req.SUBMIT, _ if body:
            return "txs=[" + ", ".join(_tx(t) for t in body) + "]"
        case Req.SUBSCRIBE, [bytes() as topic]:
            with contextlib.suppress(DecodeError, ValueError):
                return f"topic={Topic(as_int(topic, 'topic', max_value=255)).name}"
        case Req.UNSUBSCRIBE, [bytes() as sub]:
            with contextlib.suppress(DecodeError):
                return f"subscription={as_int(sub, 'sub')}"
        case Req.GET_BLOCKS, [bytes() as start, bytes() as count]:
            with contextlib.suppress(DecodeError):
                return f"from_height={as_int(start, 's')} max_count={as_int(count, 'c')}"
        case _, []:
            return "body=[]"
    return f"body={_generic(body)}"


def describe_request(frame: bytes) -> str:
    """One line saying what a request frame means (for comments and failure messages)."""
    try:
        req = decode_request(frame)
    except ProtocolError as exc:
        return f"not a valid request ({exc.code.name}: {exc.message})"
    sender = f"{req.sender.kind.name.lower()}:{_text(req.sender.id)}"
    return (
        f"{req.type.name} id={req.request_id} sender={sender} route={_route(list(req.route))} "
        f"{_request_body(req.type, req.body)}"
    )


def _reply_body(rep: Rep, b: list[RlpItem]) -> str:
    def i(k: int, name: str) -> int:
        return as_int(b[k], name)

    match rep:
        case Rep.WELCOME:
            return (
                f"version={i(0, 'v')} scope={_text(as_bytes(b[1], 's'))} "
                f"node_id={_generic(b[2])} height={i(3, 'h')}"
            )
        case Rep.RECEIPTS:
            receipts = []
            for r in as_list(b[2], "receipts"):
                index, code, message = as_list(r, "receipt", size=3)
                code_id = as_int(code, "code")
                what = (
                    "applied"
                    if code_id == 0
                    else f"{Err(code_id).name} {_text(as_bytes(message, 'm'))}"
                )
                receipts.append(f"({as_int(index, 'i')}, {what})")
            return f"height={i(0, 'h')} block={_generic(b[1])} receipts=[{', '.join(receipts)}]"
        case Rep.STATUS:
            return (
                f"height={i(0, 'h')} head={_generic(b[1])} state_hash={_generic(b[2])} "
                f"counter={i(3, 'c')} timestamp={i(4, 't')} inbox={i(5, 'i')}"
            )
        case Rep.STATE:
            return f"route={_route(as_list(b[0], 'r'))} {_state(as_bytes(b[1], 'state'))}"
        case Rep.SUBSCRIBED | Rep.UNSUBSCRIBED:
            return f"subscription={i(0, 's')}"
        case Rep.BLOCK_EVENT:
            return (
                f"height={i(0, 'h')} hash={_generic(b[1])} state_hash={_generic(b[2])} "
                f"timestamp={i(3, 't')} tx_count={i(4, 'n')}"
            )
        case Rep.COMMIT_EVENT:
            indexes = [as_int(x, "index") for x in as_list(b[3], "indexes")]
            return (
                f"route={_route(as_list(b[0], 'r'))} height={i(1, 'h')} hash={_generic(b[2])} "
                f"indexes={indexes}"
            )
        case Rep.BLOCKS:
            blocks = [_block(as_bytes(x, "block")) for x in as_list(b[0], "blocks")]
            return f"{len(blocks)} block(s): [" + ", ".join(blocks) + "]"
        case Rep.METRICS:
            lateness = [as_int(x, "l") for x in as_list(b[1], "l")]
            writes = [as_int(x, "w") for x in as_list(b[2], "w")]
            return (
                f"tick_ms={i(0, 't')} tick_lateness_us={lateness} write_us={writes} "
                f"blocks={i(3, 'b')} txs={i(4, 'x')}"
            )
        case Rep.ERROR:
            return f"code={Err(i(0, 'code')).name} message={_text(as_bytes(b[1], 'm'))}"


def describe_reply(frame: bytes | str) -> str:
    if isinstance(frame, str):
        return f"a text frame {json.dumps(frame)}"
    try:
        reply = decode_reply(frame)
        label = "subscription" if reply.type in (Rep.BLOCK_EVENT, Rep.COMMIT_EVENT) else "id"
        return f"{reply.type.name} {label}={reply.request_id} {_reply_body(reply.type, reply.body)}"
    except (DecodeError, ValueError, IndexError) as exc:
        return f"not a valid reply ({exc})"


# Example specifications -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    frame: bytes
    note: str = ""


@dataclass(frozen=True, slots=True)
class SendText:
    text: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class SendZeros:
    size: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Expect:
    """Record the next ``count`` frames the node sends."""

    count: int = 1
    note: str = ""


@dataclass(frozen=True, slots=True)
class ExpectClose:
    with_reason: bool = True  # False when the reason text is the websockets library's
    note: str = ""


@dataclass(frozen=True, slots=True)
class Act:
    action: str
    arg: str = ""
    note: str = ""


type Step = Send | SendText | SendZeros | Expect | ExpectClose | Act


@dataclass(frozen=True, slots=True)
class Example:
    steps: tuple[Step, ...]
    node: str = "main"
    via: str = "tcp"


def req(
    req_type: Req,
    rid: int,
    body: list[Any],
    route: tuple[bytes, ...] = (),
    sender: Sender = ME,
) -> bytes:
    return encode_request(req_type, rid, sender, route, body)


def hello(rid: int = 1, token: DocToken = SERVER_TOKEN, sender: Sender = ME) -> bytes:
    return req(Req.HELLO, rid, [token.token.encode()], sender=sender)


def inc(n: int) -> list[int]:
    return [1, n]


def _ask(frame: bytes, note: str = "", replies: int = 1) -> tuple[Step, Step]:
    return Send(frame, note), Expect(replies)


def _examples() -> dict[str, Example]:
    status = Req.STATUS
    return {
        "hello": Example((*_ask(hello()), *_ask(req(status, 2, [])))),
        "submit": Example((*_ask(hello()), *_ask(req(Req.SUBMIT, 2, [inc(5), inc(7)])))),
        "read-state": Example(
            (*_ask(hello()), *_ask(req(Req.READ_STATE, 2, [])), *_ask(req(status, 3, [])))
        ),
        "get-blocks": Example(
            (
                *_ask(hello()),
                *_ask(req(Req.GET_BLOCKS, 2, [1, 10])),
                *_ask(req(Req.GET_BLOCKS, 3, [2, 10]), "from_height past the head: an empty page"),
            )
        ),
        "subscribe-blocks": Example(
            (
                *_ask(hello()),
                *_ask(req(Req.SUBSCRIBE, 2, [Topic.BLOCKS])),
                *_ask(req(Req.SUBMIT, 3, [inc(1)]), replies=2),
                *_ask(req(Req.UNSUBSCRIBE, 4, [1])),
            )
        ),
        "pipelining": Example(
            (
                *_ask(hello()),
                Send(req(Req.SUBMIT, 2, [inc(1)]), "sent at once, without waiting for replies:"),
                Send(req(Req.SUBMIT, 3, [inc(2), inc(3)])),
                Send(req(Req.SUBSCRIBE, 4, [Topic.COMMITS])),
                Expect(4),
            )
        ),
        "metrics": Example((*_ask(hello()), *_ask(req(Req.METRICS, 2, [])))),
        "control-socket": Example(
            (
                *_ask(req(status, 1, []), "no HELLO needed on the control socket"),
                *_ask(req(Req.HELLO, 2, [b""]), "HELLO is optional here and its token is ignored"),
                *_ask(req(Req.GET_BLOCKS, 3, [3, 1])),
            ),
            via="unix",
        ),
        "malformed": Example(_malformed()),
        "unknown-type": Example(
            (
                *_ask(hello()),
                *_ask(req_raw(9, 2), "type 9 is not assigned"),
                *_ask(req_raw(256, 3), "a type above 255 is MALFORMED, not UNKNOWN_TYPE"),
            )
        ),
        "invalid-tx": Example(
            (
                *_ask(hello()),
                *_ask(
                    req(Req.SUBMIT, 2, [inc(1), inc(0)]), "n = 0 is out of range; nothing is queued"
                ),
                *_ask(req(Req.SUBMIT, 3, [inc(2**32)]), "n = 2^32 is out of range"),
                *_ask(req(Req.SUBMIT, 4, [[2, 1]]), "no server transaction type 2"),
                *_ask(req(Req.SUBMIT, 5, [[1, 1, 1]]), "increment takes exactly one field"),
                *_ask(req(Req.SUBMIT, 6, [b"\x01"]), "a transaction is a list, not a byte string"),
            )
        ),
        "unknown-route": Example(
            (
                *_ask(hello()),
                *_ask(req(Req.READ_STATE, 2, [], route=(SIGNER_ID,))),
                *_ask(req(Req.SUBMIT, 3, [inc(1)], route=(SIGNER_ID,))),
                *_ask(req(Req.SUBSCRIBE, 4, [Topic.COMMITS], route=(SIGNER_ID,))),
            )
        ),
        "not-found": Example((*_ask(hello()), *_ask(req(Req.UNSUBSCRIBE, 2, [7])))),
        "second-hello": Example(
            (
                *_ask(hello()),
                *_ask(hello(2), "HELLO again on an authenticated TCP connection"),
                *_ask(req(status, 3, []), "the connection stays open"),
            )
        ),
        "other-sender": Example(
            (
                *_ask(hello()),
                *_ask(
                    req(status, 2, [], sender=Sender(SenderKind.CLIENT, b"someone-else")),
                    "a sender other than HELLO's",
                ),
            )
        ),
        "signer-scope": Example(
            (
                *_ask(hello(token=SIGNER_TOKEN)),
                *_ask(req(Req.SUBMIT, 2, [inc(1)]), "the server is above a signer scope"),
                *_ask(req(Req.READ_STATE, 3, [])),
                *_ask(req(Req.GET_BLOCKS, 4, [1, 1])),
                *_ask(req(Req.SUBSCRIBE, 5, [Topic.BLOCKS])),
                *_ask(req(Req.SUBSCRIBE, 6, [Topic.COMMITS])),
                *_ask(
                    req(Req.READ_STATE, 7, [], route=(SIGNER_ID,)),
                    "inside the scope, but no such signer yet",
                ),
                *_ask(req(status, 8, []), "STATUS needs no particular scope"),
            )
        ),
        "busy-inbox": Example(
            (
                *_ask(hello()),
                *_ask(
                    req(Req.SUBMIT, 2, [inc(1)] * (INBOX_CAP + 1)),
                    f"{INBOX_CAP + 1} transactions: more than this node's inbox ({INBOX_CAP}) "
                    "can ever hold, so MALFORMED rather than BUSY",
                ),
                Send(
                    req(Req.SUBMIT, 3, [inc(1)] * INBOX_CAP),
                    f"{INBOX_CAP} transactions fill the inbox; no reply until the block, "
                    "an hour away on this node",
                ),
                *_ask(req(Req.SUBMIT, 4, [inc(1)]), "one more does not fit now"),
                *_ask(req(status, 5, []), f"the inbox holds {INBOX_CAP}; nothing else was queued"),
            ),
            node="slow",
        ),
        "busy-subscriptions": Example(
            (
                *_ask(hello()),
                *(
                    step
                    for n in range(MAX_SUBSCRIPTIONS_PER_SESSION + 1)
                    for step in _ask(req(Req.SUBSCRIBE, n + 2, [Topic.BLOCKS]))
                ),
            )
        ),
        "no-hello": Example((*_ask(req(status, 1, []), "a request before HELLO"), ExpectClose())),
        "hello-deadline": Example(
            (
                Expect(note=f"the client sends nothing for {HELLO_DEADLINE_S:g} s"),
                ExpectClose(),
            )
        ),
        "bad-token": Example(
            (
                *_ask(
                    hello(token=DocToken("00000001", "A" * 43, "server", "")),
                    "token 00000001 with a wrong secret",
                ),
                ExpectClose(),
            )
        ),
        "revoked-token": Example(
            (
                *_ask(hello(token=REVOKED_TOKEN)),
                *_ask(req(status, 2, [])),
                Act("revoke", REVOKED_TOKEN.id, "xln-node token revoke 00000003, then one tick"),
                Expect(1, "at that tick the node cuts the session off, unasked"),
                ExpectClose(),
            )
        ),
        "agent-sender": Example(
            (
                *_ask(
                    hello(sender=Sender(SenderKind.AGENT, b"agent-1")),
                    "HELLO from an agent sender",
                ),
                ExpectClose(),
            )
        ),
        "oversize": Example(
            (
                *_ask(hello()),
                SendZeros(MAX_FRAME_BYTES + 1, "a binary frame one byte over 1 MiB"),
                ExpectClose(with_reason=False),
            )
        ),
        "tx-failed": Example(
            (
                *_ask(hello()),
                *_ask(req(status, 2, [])),
                *_ask(req(Req.SUBMIT, 3, [inc(1), inc(5), inc(1)])),
                *_ask(req(status, 4, [])),
            ),
            node="seeded",
        ),
        "shutting-down": Example(
            (
                Act(
                    "stop-node",
                    "",
                    "the operator stops the node (SIGINT); its listener is still open",
                ),
                *_ask(hello()),
                *_ask(req(Req.SUBMIT, 2, [inc(1)])),
            )
        ),
    }


def req_raw(type_id: int, rid: int) -> bytes:
    return encode([type_id, rid, [ME.kind, ME.id], [], []])


def _malformed() -> tuple[Step, ...]:
    status = req(Req.STATUS, 2, [])
    return (
        *_ask(
            bytes.fromhex("c30102"), "truncated: a list announcing 3 bytes holds 2; before HELLO"
        ),
        *_ask(hello(), "MALFORMED does not close the connection"),
        *_ask(status + b"\x00", "a valid STATUS followed by one trailing byte"),
        *_ask(
            encode_list(
                [
                    encode(Req.STATUS),
                    b"\x82\x00\x02",
                    encode([ME.kind, ME.id]),
                    encode([]),
                    encode([]),
                ]
            ),
            "request_id 2 written with a leading zero byte (82 00 02)",
        ),
        *_ask(encode([Req.STATUS, 3, [ME.kind, ME.id], []]), "an envelope of 4 items"),
        *_ask(req(Req.STATUS, 4, [1]), "STATUS with a non-empty body"),
        *_ask(req(Req.STATUS, 5, [], route=(SIGNER_ID,)), "STATUS with a route"),
        *_ask(
            req(Req.STATUS, 6, [], sender=Sender(SenderKind.CLIENT, b"x" * 65)),
            "a 65-byte sender id",
        ),
        *_ask(encode([Req.STATUS, 7, [9, ME.id], [], []]), "sender kind 9"),
        *_ask(req(Req.READ_STATE, 8, [], route=(b"\x11" * 31,)), "a 31-byte route element"),
        *_ask(req(Req.SUBMIT, 9, []), "SUBMIT without transactions"),
        *_ask(req(Req.SUBSCRIBE, 10, [3]), "topic 3"),
        *_ask(req(Req.GET_BLOCKS, 11, [0, 10]), "from_height 0"),
        *_ask(req(Req.GET_BLOCKS, 12, [1, MAX_BLOCKS_PER_PAGE + 1]), "max_count above 1000"),
        SendText("hello", "a text frame"),
        Expect(),
    )


ILLUSTRATIONS: dict[str, Callable[[], list[tuple[str, bytes]]]] = {
    "subscription-overflow": lambda: [
        (
            "node -> client, not replayed",
            encode_error(
                Err.SUBSCRIPTION_OVERFLOW,
                "subscriber fell too far behind; events were dropped; subscribe again",
                1,
            ),
        )
    ],
    "internal": lambda: [
        (
            "node -> client, not replayed",
            encode_error(Err.INTERNAL, "internal error; see the node log"),
        )
    ],
}


# Recording and rendering ------------------------------------------------------------


def _comment(text: str) -> str:
    return f"# {text}" if text else "#"


async def record(nodes: ReplayNodes, example: Example) -> list[str]:
    """Runs one example on a fresh connection; returns the lines of its block."""
    lines: list[str] = []
    ws: ClientConnection | None = None
    try:
        for step in example.steps:
            if isinstance(step, Act):
                lines.append(_comment(step.note))
                lines.append(f"! {step.action} {step.arg}".rstrip())
                await nodes.act(example.node, step.action, step.arg)
                continue
            if ws is None:
                ws = await nodes.connect(example.node, example.via)
            match step:
                case Send(frame, note):
                    if note:
                        lines.append(_comment(note))
                    lines.append(_comment("> " + describe_request(frame)))
                    lines.append(f"> {frame.hex()}")
                    await ws.send(frame)
                case SendText(text, note):
                    lines.append(_comment(note))
                    lines.append(f">text {json.dumps(text)}")
                    await ws.send(text)
                case SendZeros(size, note):
                    lines.append(_comment(note))
                    lines.append(f">zeros {size}")
                    await ws.send(bytes(size))
                case Expect(count, note):
                    if note:
                        lines.append(_comment(note))
                    for _ in range(count):
                        got = await recv_frame(ws)
                        assert isinstance(got, bytes), f"the node sent a text frame {got!r}"
                        lines.append(_comment("< " + describe_reply(got)))
                        lines.append(f"< {got.hex()}")
                case ExpectClose(with_reason, note):
                    closed = await recv_close(ws)
                    assert isinstance(closed, tuple), (
                        f"expected a close, got {describe_reply(closed)}"
                    )
                    code, reason = closed
                    if note:
                        lines.append(_comment(note))
                    lines.append(_comment("the node closes the connection"))
                    lines.append(
                        f"<close {code} {json.dumps(reason)}" if with_reason else f"<close {code}"
                    )
    finally:
        if ws is not None:
            await ws.close()
    return lines


def render_illustration(name: str) -> list[str]:
    lines: list[str] = []
    for note, frame in ILLUSTRATIONS[name]():
        lines.append(_comment(f"{note}: {describe_reply(frame)}"))
        lines.append(f"< {frame.hex()}")
    return lines


BLOCK_RE = re.compile(r"^```(exchange|illustration) ([\w-]+)[^\n]*\n(.*?)^```$", re.M | re.S)


async def regenerate(doc: str, root: Path) -> str:
    """The document with every example block re-recorded, in document order."""
    examples = _examples()
    names = [(m.group(1), m.group(2)) for m in BLOCK_RE.finditer(doc)]
    in_doc = {name for kind, name in names if kind == "exchange"}
    missing = sorted(set(examples) - in_doc)
    unknown = sorted(in_doc - set(examples))
    if missing or unknown:
        raise SystemExit(
            f"exchange blocks missing from the document: {missing}; unknown in it: {unknown}"
        )
    bodies: dict[tuple[str, str], list[str]] = {}
    async with ReplayNodes.started(root) as nodes:
        for kind, name in names:
            if kind == "exchange":
                bodies[kind, name] = await record(nodes, examples[name])
            else:
                bodies[kind, name] = render_illustration(name)

    def replace(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        info = f"{kind} {name}"
        if kind == "exchange":
            ex = examples[name]
            info += "".join(
                f" {k}={v}"
                for k, v, default in (("node", ex.node, "main"), ("via", ex.via, "tcp"))
                if v != default
            )
        return f"```{info}\n" + "\n".join(bodies[kind, name]) + "\n```"

    return BLOCK_RE.sub(replace, doc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("doc", nargs="?", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    doc_path: Path = args.doc
    with tempfile.TemporaryDirectory(prefix="xln-doc-") as tmp:
        new = asyncio.run(regenerate(doc_path.read_text("utf-8"), Path(tmp)))
    doc_path.write_text(new, "utf-8")
    print(f"rewrote the example blocks of {doc_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
