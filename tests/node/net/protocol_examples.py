"""Generator of the replayable examples in ``docs/PROTOCOL.md``, and the nodes they replay against.

The document holds fenced blocks with the info string ``exchange <name> [key=value...]``
(frames the replay sends and the frames a live node answers with) and
``illustration <name>`` (hex that cannot be produced on demand, never replayed).
This module knows, for every example name, which frames to send; it runs them
against freshly started, deterministic nodes and rewrites the body of each
block in the document, in document order. The prose around the blocks is not
touched. Regenerate after a protocol change with::

    python -m tests.node.net.protocol_examples          # rewrites docs/PROTOCOL.md

An exchange may use several connections to the same node (``@ <name>`` lines):
a client, an agent and a peer server, say. The replay plays every one of them;
where it plays a signer's agent, its answers to the node's ``SIGN`` requests
come from a real :class:`node.agent.Agent` (with its double-sign guard) holding
a fixed key, so they are what ``xln-node agent`` would send.

``tests/node/net/test_protocol_doc.py`` parses the blocks as written in the
document, replays them against the same kind of nodes and compares every byte.
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

from node import entity_reads as reads
from node.agent import Agent, Refused
from node.codec import (
    UINT64_MAX,
    ZERO_HASH,
    DecodeError,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    decode,
    encode,
    encode_list,
    encode_tree,
    keccak,
)
from node.coordinator import Coordinator
from node.crypto import bls
from node.identity import Identity
from node.machines import accounts
from node.machines import entity as ent
from node.machines import replica as rep
from node.machines import server as srv
from node.machines import signer as sig
from node.machines.binding import sign_binding
from node.machines.frames import (
    Certificate,
    Frame,
    Polka,
    Signatures,
    aggregate_approvals,
    aggregate_precommits,
)
from node.machines.governance import Config, Member, signer_id
from node.machines.refusal import Refusal
from node.machines.server import ServerState, apply_block
from node.memberships import Membership
from node.mempool import Mempool
from node.merkle_map import Proof
from node.net.limits import MAX_DEPTH, PRE_HELLO_WS_BYTES, REQUEST
from node.net.protocol import (
    MAX_BLOCKS_PER_PAGE,
    MAX_FRAME_BYTES,
    Err,
    ProtocolError,
    Rep,
    Req,
    Request,
    Sender,
    SenderKind,
    Topic,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
)
from node.net.server import MAX_SUBSCRIPTIONS_PER_SESSION, UNIX_PATH_MAX, ApiServer
from node.runtime import Metrics, Node, NodeConfig
from node.storage import Store
from node.tokens import FILE_VERSION, TOKENS_FILE, TokenStore
from node.txs import REGISTRIES, Level, Tx, TxBody

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md"

# The replay nodes ---------------------------------------------------------------

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
# The "consensus" node's rounds time out after an hour, so no timeout input (and
# no block) ever comes from its clock while the examples run.
ROUND_TIMEOUT_MS = 3_600_000

ME = Sender(SenderKind.CLIENT, b"example")
SIGNER_ID = bytes([0x11]) * 32


# Fixed keys, entities, batches and frames of the consensus examples ----------------


def _secret_key(i: int) -> int:
    """The docs' i-th BLS key: IETF KeyGen of 32 bytes of value ``i``."""
    return bls.keygen(bytes([i]) * 32)


SK_A = _secret_key(1)  # signer A: hosted on the consensus node; the replay plays its agent
SK_B = _secret_key(2)  # signer B: hosted on the peer server that the replay plays
PEER_IDENTITY = Identity(_secret_key(3))  # that peer server's identity key
NODE_IDENTITY = Identity(_secret_key(4))  # the consensus node's, which its agents bind
PK_A, PK_B = bls.sk_to_pk(SK_A), bls.sk_to_pk(SK_B)
ID_A, ID_B = signer_id(PK_A), signer_id(PK_B)
POP_A, POP_B = bls.pop_prove(SK_A), bls.pop_prove(SK_B)
AGENT_A = Sender(SenderKind.AGENT, ID_A)
PEER = Sender(SenderKind.SERVER, PEER_IDENTITY.id)
UNKNOWN_ENTITY = bytes([0x33]) * 32

# E1: A alone (threshold 1), created by a client. E2: B and A (threshold 2, B
# proposes at round 0), created by B and delivered to A by B's server.
GENESIS_1 = rep.Genesis(Config((Member(PK_A, 1),), 1, ID_A), bytes(31) + b"\x01", (POP_A,))
GENESIS_2 = rep.Genesis(
    Config((Member(PK_B, 1), Member(PK_A, 1)), 2, ID_B), bytes(31) + b"\x02", (POP_B, POP_A)
)
# An entity of B alone, which never added A (a peer's join_entity for it is refused).
GENESIS_B_ONLY = rep.Genesis(Config((Member(PK_B, 1),), 1, ID_B), bytes(31) + b"\x09", (POP_B,))
E1 = ent.entity_id_for(GENESIS_1.config, GENESIS_1.salt)
E2 = ent.entity_id_for(GENESIS_2.config, GENESIS_2.salt)


def _frame_1(genesis: rep.Genesis, batch: ent.Batch) -> Frame:
    state = ent.genesis(genesis.config, genesis.salt)
    post, _ = ent.execute(state, [batch])
    return Frame.make(state.entity_id, 1, ZERO_HASH, [batch], post.hash)


BATCH_A1 = ent.sign_batch(E1, SK_A, ID_A, 1, [Tx.of(ent.Increment(5))])
BATCH_B1 = ent.sign_batch(E2, SK_B, ID_B, 1, [Tx.of(ent.Increment(7))])
# B equivocating: another batch with the same nonce, so another frame at height 1.
BATCH_B1_OTHER = ent.sign_batch(E2, SK_B, ID_B, 1, [Tx.of(ent.Increment(8))])
FRAME_E2 = _frame_1(GENESIS_2, BATCH_B1)
FRAME_E2_OTHER = _frame_1(GENESIS_2, BATCH_B1_OTHER)
PRECOMMIT_B = bls.sign(SK_B, FRAME_E2.message(0))
PRECOMMIT_A = bls.sign(SK_A, FRAME_E2.message(0))  # what A's agent answers; B's server gets it
APPROVAL_B = bls.sign(SK_B, FRAME_E2.approval_message(0))  # B's proposal carries it
APPROVAL_B_OTHER = bls.sign(SK_B, FRAME_E2_OTHER.approval_message(0))
APPROVAL_A = bls.sign(SK_A, FRAME_E2.approval_message(0))  # what A's agent approves with


def _frame_2(genesis: rep.Genesis, first: ent.Batch, frame_1: Frame, batch: ent.Batch) -> Frame:
    state = ent.genesis(genesis.config, genesis.salt)
    after_1, _ = ent.execute(state, [first])
    post, _ = ent.execute(after_1, [batch])
    return Frame.make(state.entity_id, 2, frame_1.hash, [batch], post.hash)


# B's next frame, which A's person refuses.
BATCH_B2 = ent.sign_batch(E2, SK_B, ID_B, 2, [Tx.of(ent.Increment(900))])
FRAME_E2_2 = _frame_2(GENESIS_2, BATCH_B1, FRAME_E2, BATCH_B2)
APPROVAL_B_2 = bls.sign(SK_B, FRAME_E2_2.approval_message(0))
REFUSAL_REASON = "rejected by hand"


def _certificate(frame: Frame, config: Config, precommits: dict[int, bytes]) -> Certificate:
    """The frames of the examples have no outbox, so no outgoing signatures."""
    assert not frame.outbox
    sigs = {slot: Signatures(pc) for slot, pc in precommits.items()}
    cert, bad = aggregate_precommits(config, frame, 0, sigs)
    assert cert is not None
    assert not bad
    return cert


CERT_E2 = _certificate(FRAME_E2, GENESIS_2.config, {0: PRECOMMIT_B, 1: PRECOMMIT_A})


def _polka(frame: Frame, config: Config, approvals: dict[int, bytes]) -> Polka:
    polka, bad = aggregate_approvals(config, frame, 0, approvals)
    assert polka is not None
    assert not bad
    return polka


# The approvals of B and A at round 0: what B's server tells A's once it has both.
POLKA_E2 = _polka(FRAME_E2, GENESIS_2.config, {0: APPROVAL_B, 1: APPROVAL_A})
# B's binding of its server's identity key: how that server proves it hosts B.
BINDING_B = sign_binding(SK_B, ID_B, PEER_IDENTITY.pubkey, 1)
# A legacy mint input (older chains), as a client or a peer might try to send it:
# it speaks for no member, and both are refused.


def _item(tx: TxBody) -> RlpItem:
    return decode(Tx.of(tx).raw)


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
AGENT_TOKEN = DocToken(
    "00000004",
    "BvOXqKfQN65IbyQvasX34P-OFEwlOvuPIRENgDFxWNI",
    f"signer:{ID_A.hex()}",
    "docs, the agent of signer A",
)
DOC_TOKENS = (SERVER_TOKEN, SIGNER_TOKEN, REVOKED_TOKEN, AGENT_TOKEN)


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
    coordinator: Coordinator | None = None
    ticked: asyncio.Event = field(default_factory=asyncio.Event)


async def start_node(
    data: Path,
    *,
    seed_counter: int | None = None,
    control_socket: bool,
    tick_ms: int = TICK_MS,
    consensus: bool = False,
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
    # As xln-node run does, without peer links: no --peer, and no built-in agent.
    # Its identity key signs round changes and is what its agents bind (BIND); the
    # challenges it gives peers keep the receiver id NODE_ID.
    coordinator = (
        Coordinator(node, round_timeout_ms=ROUND_TIMEOUT_MS, identity=NODE_IDENTITY)
        if consensus
        else None
    )
    tokens = TokenStore(data)
    api = ApiServer(
        node,
        tokens,
        NODE_ID,
        hello_timeout_s=HELLO_DEADLINE_S,
        coordinator=coordinator,
        challenges=CountingChallenges(),
    )
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
    live = LiveNode(data, node, tokens, api, port, stop, task, unix_path, coordinator)
    node.tick_hooks.append(live.ticked.set)
    return live


async def close_node(live: LiveNode) -> None:
    live.stop.set()
    try:
        await asyncio.wait_for(live.task, DEADLINE_S)
    finally:
        if live.coordinator is not None:
            await live.coordinator.close()
        await live.api.close()
        live.node.close()
        if live.unix_path is not None and live.unix_path.parent != live.data:
            shutil.rmtree(live.unix_path.parent, ignore_errors=True)


class CountingChallenges:
    """The challenges a replay node gives peers, in place of random ones: the n-th
    (from 1) is n as 32 bytes BE, so the HELLOs answering them are reproducible."""

    def __init__(self) -> None:
        self.given = 0

    def __call__(self) -> bytes:
        self.given += 1
        return challenge_no(self.given)


def challenge_no(n: int) -> bytes:
    return n.to_bytes(32, "big")


class ReplayNodes:
    """The replay nodes: ``main`` (with a control socket), ``seeded``, ``slow`` and
    ``consensus`` (the only one with a coordinator, so the only one that takes
    agents and peer servers)."""

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
            nodes["consensus"] = await start_node(
                root / "consensus", control_socket=False, consensus=True
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
        """An operator action between frames: ``revoke <token id>``, ``tick`` (wait for
        the node's next tick) or ``stop-node``."""
        live = self.nodes[node]
        if action == "revoke":
            # Revoke as the CLI does, through the file, then wait for the node's next tick,
            # whose first hook reloads tokens.json.
            assert TokenStore(live.data).revoke(arg), f"no token {arg}"
            live.ticked.clear()
            await asyncio.wait_for(live.ticked.wait(), DEADLINE_S)
        elif action == "tick":
            # Let the node finish what it is doing (an agent's answer just sent).
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


async def answer_sign(agent: Agent, frame: bytes, refuse: str = "") -> bytes:
    """An agent's answer to the node's ``APPROVE`` or ``SIGN`` request, as
    ``node/net/agent_client.py`` makes it: ``APPROVAL [signature]``, ``SIGNATURE
    [signature, [outgoing signature...]]``, ``ERROR REFUSED`` from the agent's guard,
    or with ``refuse``, ``REFUSAL [refusal]`` to an APPROVE (its person or accountant
    said no); and to ``BIND`` and ``FLOOR`` as it does."""
    req = decode_request(frame, limits=REQUEST)
    if req.type is Req.BIND:
        binding = await asyncio.to_thread(agent.bind_server, as_bytes(req.body[0], "key"))
        return encode_reply(Rep.BINDING, req.request_id, [binding.to_tree()])
    if req.type is Req.FLOOR:
        assert req.route[:1] == (agent.signer_id,)
        assert len(req.route) == 2
        height, serial = as_int(req.body[0], "height"), as_int(req.body[1], "serial")
        held = await asyncio.to_thread(agent.set_floor, req.route[1], height, serial)
        return encode_reply(Rep.FLOOR, req.request_id, [held])
    assert req.type in (Req.APPROVE, Req.SIGN), f"expected APPROVE or SIGN: {describe_frame(frame)}"
    try:
        if req.route[:1] != (agent.signer_id,):
            raise Refused("this agent does not hold that signer's key")
        if req.type is Req.APPROVE:
            if len(req.body) != 4:
                raise DecodeError("APPROVE body has 4 items")
            frame_raw = encode_tree(as_list(req.body[0], "frame"))
            round_ = as_int(req.body[1], "round", max_value=2**32 - 1)
            if refuse:
                refusal = await asyncio.to_thread(agent.sign_refusal, frame_raw, round_, refuse)
                return encode_reply(Rep.REFUSAL, req.request_id, [refusal.to_tree()])
            config = Config.from_item(req.body[2])
            valid = Polka.from_item(req.body[3]) if req.body[3] else None
            approval = await asyncio.to_thread(agent.approve, frame_raw, round_, config, valid)
            return encode_reply(Rep.APPROVAL, req.request_id, [approval])
        polka, config = Polka.from_item(req.body[3]), Config.from_item(req.body[4])
        signed = await asyncio.to_thread(
            agent.sign_precommit,
            req.route[1],
            as_int(req.body[0], "height"),
            as_int(req.body[1], "round"),
            as_bytes(req.body[2], "frame hash"),
            polka,
            config,
        )
    except (DecodeError, Refused) as exc:
        return encode_error(Err.REFUSED, str(exc), req.request_id)
    body: list[RlpItem] = [signed.precommit, list(signed.outbox)]
    return encode_reply(Rep.SIGNATURE, req.request_id, body)


# Annotations --------------------------------------------------------------------


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex() if raw else '""'


def _text(raw: bytes) -> str:
    try:
        return json.dumps(raw.decode("utf-8"), ensure_ascii=False)
    except UnicodeDecodeError:
        return _hex(raw)


def _name(raw: bytes) -> str:
    """A sender id: quoted when it is printable ASCII (a client's name), else hex."""
    if all(0x20 <= b < 0x7F for b in raw):
        return json.dumps(raw.decode("ascii"))
    return _hex(raw)


def _generic(item: RlpItem) -> str:
    if isinstance(item, bytes):
        return _hex(item)
    return "[" + ", ".join(_generic(i) for i in item) + "]"


def _hexes(items: Sequence[bytes]) -> str:
    return "[" + ", ".join(_hex(i) for i in items) + "]"


def _config(c: Config) -> str:
    members = ", ".join(f"({_hex(m.pubkey)}, {m.shares})" for m in c.members)
    return f"config(members=[{members}] threshold={c.threshold} proposer={_hex(c.proposer)})"


def _batch(b: ent.Batch) -> str:
    txs = ", ".join(_tx_body(t.body) for t in b.txs)
    return (
        f"batch(signer={_hex(b.signer)} nonce={b.nonce} txs=[{txs}] "
        f"signature={_hex(b.signature)}; batch hash {_hex(keccak(b.raw))})"
    )


def _message(m: accounts.Message) -> str:
    return (
        f"message({m.describe()} body_hash={_hex(m.hash)} config_height={m.config_height} "
        f"bitfield={_hex(m.bits)} signature={_hex(m.signature)})"
    )


def _input(i: accounts.FrameInput) -> str:
    return _message(i)


def _outgoing(o: accounts.Outgoing) -> str:
    return f"({accounts.KIND_NAMES[o.kind]} to={_hex(o.peer)} hash={_hex(o.hash)})"


def _frame(f: Frame) -> str:
    batches = ", ".join(_batch(b) for b in f.batches)
    inputs = ", ".join(_input(i) for i in f.inputs)
    outbox = ", ".join(_outgoing(o) for o in f.outbox)
    return (
        f"frame(entity={_hex(f.entity_id)} height={f.height} prev={_hex(f.prev_hash)} "
        f"batches=[{batches}] inputs=[{inputs}] outbox=[{outbox}] "
        f"state_hash={_hex(f.state_hash)}; frame hash {_hex(f.hash)})"
    )


def _cert(c: Certificate) -> str:
    return (
        f"certificate(round={c.round} bitfield={_hex(c.bits)} signature={_hex(c.signature)} "
        f"outbox_signatures={_hexes(c.outbox)})"
    )


def _lock(lock: rep.Lock) -> str:
    return f"lock({_frame(lock.frame)} {_polka_text(lock.polka)})"


def _polka_text(p: Polka) -> str:
    return f"polka(round={p.round} bitfield={_hex(p.bits)} signature={_hex(p.signature)})"


def _tx_body(body: TxBody) -> str:
    match body:
        case srv.Increment(n=n) | sig.Increment(n=n) | ent.Increment(n=n):
            return f"increment({n})"
        case srv.Faucet(entity=entity, asset=asset, amount=amount):
            return f"faucet(entity={_hex(entity)} asset={asset} amount={amount})"
        case srv.CreateSigner(pubkey=pubkey, pop=pop):
            return (
                f"create_signer(pubkey={_hex(pubkey)} proof_of_possession={_hex(pop)}; "
                f"signer id {_hex(signer_id(pubkey))})"
            )
        case sig.CreateEntity(genesis=g) as create:
            return (
                f"create_entity({_config(g.config)} salt={_hex(g.salt)} "
                f"proofs_of_possession={_hexes(g.pops)}; entity id {_hex(create.entity_id)})"
            )
        case sig.JoinEntity(genesis=g, height=h) as join:
            named = f" height={h}" if h else ""
            return (
                f"join_entity({_config(g.config)} salt={_hex(g.salt)} "
                f"proofs_of_possession={_hexes(g.pops)}{named}; entity id {_hex(join.entity_id)})"
            )
        case rep.SubmitBatch(batch=batch):
            return f"submit_batch({_batch(batch)})"
        case rep.Precommit(
            height=h, round=r, frame_hash=fh, signer=s, signature=signature, outbox=outbox
        ):
            return (
                f"precommit(height={h} round={r} frame_hash={_hex(fh)} signer={_hex(s)} "
                f"signature={_hex(signature)} outbox_signatures={_hexes(outbox)})"
            )
        case rep.Approve(height=h, round=r, frame_hash=fh, signer=s, signature=signature):
            return (
                f"approve(height={h} round={r} frame_hash={_hex(fh)} signer={_hex(s)} "
                f"signature={_hex(signature)})"
            )
        case rep.PolkaNotice(height=h, frame_hash=fh, polka=p):
            return f"polka(height={h} frame_hash={_hex(fh)} {_polka_text(p)})"
        case rep.Commit(frame=frame, cert=cert):
            return f"commit({_frame(frame)}, {_cert(cert)})"
        case rep.Timeout(height=h, round=r):
            return f"timeout(height={h} round={r})"
        case rep.SeenLock(lock=lock):
            return f"seen_lock({_lock(lock)})"
        case rep.RoundChange(height=h, round=r, signer=s, lock=lock):
            held = _lock(lock) if lock is not None else "no lock"
            return f"round_change(height={h} round={r} signer={_hex(s)} {held})"
        case rep.Deliver(message=message):
            return f"deliver({_message(message)})"
        case rep.RefusalInput(refusal=r):
            return _refusal(r.to_tree())
        case rep.AnnounceBinding(binding=b):
            return (
                f"server_binding(signer={_hex(b.signer)} server_key={_hex(b.server_key)}"
                f" serial={b.serial} signature={_hex(b.signature)})"
            )
        case ent.Propose(action=action, expires_at=expires_at):
            name = ent.ACTION_NAMES[type(action)]
            return f"propose({name}{_generic(action.fields())} expires_at={expires_at})"
        case ent.Vote(proposal_id=pid):
            return f"vote({pid})"
        case accounts.Pay(route=route, asset=asset, amount=amount):
            return f"pay(route={_hexes(route)} asset={asset} amount={amount})"
    return f"{body.NAME}(...)"


def _refusal(item: RlpItem) -> str:
    r = Refusal.from_item(item)
    return (
        f"refusal(entity={_hex(r.entity)} height={r.height} round={r.round}"
        f" frame_hash={_hex(r.frame_hash)} signer={_hex(r.signer)}"
        f" reason={json.dumps(r.reason)} signature={_hex(r.signature)})"
    )


def _tx(item: RlpItem, level: Level) -> str:
    """A transaction (an input) for a machine at ``level``, as that level decodes it."""
    try:
        return _tx_body(REGISTRIES[level].decode(item, encode_tree(item)).body)
    except DecodeError:
        pass
    if level in (Level.SERVER, Level.SIGNER):  # name an out-of-range increment all the same
        with contextlib.suppress(DecodeError):
            fields = as_list(item, "tx")
            if len(fields) == 2 and as_int(fields[0], "type") == 1:
                return f"increment({as_int(fields[1], 'n', max_value=2**256)})"
    return _generic(item)


def _route(items: Sequence[RlpItem]) -> str:
    return "[" + ", ".join(_generic(r) for r in items) + "]"


def _block(raw: bytes) -> str:
    items = as_list(decode(raw), "block", size=5)
    keys_values = as_list(decode(as_bytes(items[3], "mempool")), "mempool", size=2)
    txs = ", ".join(_tx(t, Level.SERVER) for t in as_list(keys_values[1], "values"))
    return (
        f"block(height={as_int(items[0], 'h')} prev={_generic(items[1])} "
        f"timestamp={as_int(items[2], 't')} mempool=[keys {_generic(keys_values[0])}, txs [{txs}]] "
        f"state_hash={_generic(items[4])}; block hash {_hex(keccak(raw))})"
    )


def _state(route: Sequence[RlpItem], raw: bytes) -> str:
    """The state of the machine at ``route``: the server, a signer or a replica."""
    if not route:
        encoded, refs = ServerState.read_listing(raw)  # as READ_STATE [] returns it
        items = as_list(decode(encoded), "server state", size=6)
        signers = "[" + ", ".join(f"({_hex(i)}, {_hex(h)})" for i, h in refs) + "]"
        return (
            f"state(version={as_int(items[0], 'v')} height={as_int(items[1], 'h')} "
            f"timestamp={as_int(items[2], 't')} counter={as_int(items[3], 'c')} "
            f"signers_root={_hex(ServerState.signers_root(encoded))} "
            f"simulation={as_int(items[5], 's')} signers={signers} "
            f"more={as_int(as_list(decode(raw), 'as read')[7], 'more')}; "
            f"state hash {_hex(keccak(encoded))})"
        )
    if len(route) == 1:
        items = as_list(decode(raw), "signer state")
        if len(items) == 4:  # as stored and hashed (a deep read lists the replicas apart)
            pubkey, counter, root = sig.SignerState.decode_root(raw)
            return (
                f"signer(version={sig.STATE_VERSION} pubkey={_hex(pubkey)} counter={counter} "
                f"replicas_root={_hex(root)}; state hash {_hex(keccak(raw))})"
            )
        pubkey, counter, refs = sig.SignerState.decode_header(raw)  # as READ_STATE [signer]
        replicas = "[" + ", ".join(f"({_hex(e)}, {_hex(h)})" for e, h in refs) + "]"
        return (
            f"signer(version={sig.STATE_VERSION} pubkey={_hex(pubkey)} counter={counter} "
            f"replicas_root={_generic(items[3])} replicas={replicas} "
            f"more={as_int(items[5], 'more')}; state hash {_hex(keccak(encode_tree(items[:4])))})"
        )
    r = rep.Replica.decode(raw)
    pending = _hex(r.pending.frame.hash) if r.pending else "none"
    lock = f"round {r.lock.round} frame {_hex(r.lock.frame.hash)}" if r.lock else "none"
    return (
        f"replica(version={r.version} signer={_hex(r.signer)} entity={_hex(r.entity_id)} "
        f"height={r.entity.height} counter={r.entity.counter} head={_hex(r.head)} "
        f"round={r.round} pool={len(r.pool)} pending={pending} lock={lock} "
        f"inbox={len(r.inbox)} signed={len(list(r.mailbox.messages()))}; "
        f"state hash {_hex(r.hash)})"
    )


def _hello_body(req: Request) -> str:
    match req.sender.kind, req.body:
        case (
            SenderKind.SERVER,
            [bytes() as pubkey, bytes() as challenge, bytes() as receiver, bytes() as signature],
        ):
            return (
                f"identity_key={_hex(pubkey)} challenge={_hex(challenge)} "
                f"receiver_id={_hex(receiver)} signature={_hex(signature)}; "
                f"peer id {_hex(signer_id(pubkey))}"
            )
        case SenderKind.SERVER, [bytes() as pubkey, bytes() as stamp, bytes() as signature]:
            with contextlib.suppress(DecodeError):
                return (
                    f"identity_key={_hex(pubkey)} timestamp={as_int(stamp, 't')} "
                    f"signature={_hex(signature)} (protocol version 3's form)"
                )
        case _, [bytes() as token]:
            return f"token={_text(token)}"
    return f"body={_generic(req.body)}"


def _request_body(req: Request) -> str:
    body = req.body
    with contextlib.suppress(DecodeError, ValueError, IndexError):
        match req.type, body:
            case Req.HELLO, _:
                return _hello_body(req)
            case Req.SUBMIT, _ if body and len(req.route) <= Level.CHANNEL:
                level = Level(len(req.route))
                return "txs=[" + ", ".join(_tx(t, level) for t in body) + "]"
            case Req.READ_STATE, [bytes() as deep]:
                return f"deep={as_int(deep, 'deep')}"
            case Req.SUBSCRIBE, [bytes() as topic]:
                return f"topic={Topic(as_int(topic, 'topic', max_value=255)).name}"
            case Req.UNSUBSCRIBE, [bytes() as sub]:
                return f"subscription={as_int(sub, 'sub')}"
            case Req.GET_BLOCKS, [bytes() as start, bytes() as count]:
                return f"from_height={as_int(start, 's')} max_count={as_int(count, 'c')}"
            case Req.DELIVER, [bytes() as to, bytes() as entity, list() as tx]:
                level = Level.ENTITY if entity else Level.SIGNER
                return f"to_signer={_hex(to)} entity={_hex(entity)} input={_tx(tx, level)}"
            case Req.PROPOSAL, [
                bytes() as to,
                list() as frame,
                bytes() as rnd,
                bytes() as psig,
                list() as valid,
            ]:
                proof = _polka_text(Polka.from_item(valid)) if valid else "no polka"
                return (
                    f"to_signer={_hex(to)} {_frame(Frame.decode(encode_tree(frame)))} "
                    f"round={as_int(rnd, 'r')} proposer_approval={_hex(psig)} {proof}"
                )
            case Req.GET_FRAMES, [bytes() as entity, bytes() as start, bytes() as count]:
                return (
                    f"entity={_hex(entity)} from_height={as_int(start, 's')} "
                    f"max_count={as_int(count, 'c')}"
                )
            case Req.READ_ENTITY, [bytes() as part, bytes() as at, *rest]:
                return _entity_request(as_int(part, "part"), at, rest)
            case Req.APPROVE, [list() as frame, bytes() as rnd, list() as config, list() as valid]:
                proof = _polka_text(Polka.from_item(valid)) if valid else "no polka"
                return (
                    f"{_frame(Frame.decode(encode_tree(frame)))} round={as_int(rnd, 'r')} "
                    f"{_config(Config.from_item(config))} {proof}"
                )
            case Req.SIGN, [
                bytes() as height,
                bytes() as rnd,
                bytes() as frame_hash,
                list() as polka,
                list() as config,
            ]:
                return (
                    f"height={as_int(height, 'h')} round={as_int(rnd, 'r')} "
                    f"frame_hash={_hex(frame_hash)} {_polka_text(Polka.from_item(polka))} "
                    f"{_config(Config.from_item(config))}"
                )
            case Req.BIND, [bytes() as key]:
                return f"server_key={_hex(key)}"
            case Req.FLOOR, [bytes() as height, bytes() as serial]:
                return f"height={as_int(height, 'h')} binding_serial={as_int(serial, 's')}"
            case Req.MEMBERSHIPS, [bytes() as signer, bytes() as after, bytes() as limit, *rest]:
                text = (
                    f"signer={_hex(signer)} after={_hex(after) if after else 'start'}"
                    f" limit={as_int(limit, 'l')}"
                )
                return text + (f" binding={_generic(rest[0])}" if rest else "")
            case _, []:
                return "body=[]"
    return f"body={_generic(body)}"


def _memberships(items: list[RlpItem]) -> str:
    out = []
    for item in items:
        m = Membership.from_item(item)
        out.append(
            f"membership(entity={_hex(m.entity_id)} height={m.height} head={_hex(m.head)}"
            f" in_flight={m.in_flight} threshold={m.genesis.config.threshold}"
            f" members={len(m.genesis.config.members)} bindings={len(m.bound)})"
        )
    return "[" + ", ".join(out) + "]"


def _entity_request(part: int, at: bytes, rest: list[RlpItem]) -> str:
    text = f"part={reads.PART_NAMES[part]} at={_hex(at) if at else 'current'}"
    if rest:
        text += f" map={reads.MAP_NAMES[as_int(rest[0], 'map')]}"
    if part == reads.RECORD:
        text += f" key={_hex(as_bytes(rest[1], 'key'))}"
    elif part == reads.PAGE:
        after = as_bytes(rest[1], "after")
        text += f" after={_hex(after) if after else 'start'} limit={as_int(rest[2], 'limit')}"
    return text


def _entity_header(item: RlpItem) -> str:
    genesis, header = as_list(item, "header part", size=2)
    small, channels_root, forwards_root = ent.EntityState.header_fields(header)
    return (
        f"genesis(salt={_hex(as_bytes(as_list(genesis, 'g')[1], 'salt'))}) "
        f"header(height={small.height} counter={small.counter} "
        f"channels_root={_hex(channels_root)} forwards_root={_hex(forwards_root)}; "
        f"state hash {_hex(keccak(encode_tree(header)))})"
    )


def _proof(item: RlpItem) -> str:
    proof = Proof.from_item(item)
    end = "" if proof.end is None else f" end=({_hex(proof.end[0])}, {_hex(proof.end[1])})"
    return f"proof(steps={len(proof.steps)}{end})"


def _entity_reply(b: list[RlpItem]) -> str:
    part = as_int(b[1], "part")
    text = (
        f"route={_route(as_list(b[0], 'r'))} part={reads.PART_NAMES[part]} {_entity_header(b[2])}"
    )
    if part == reads.RECORD:
        value, proof = as_list(b[3], "record", size=2)
        text += f" record={'present' if as_list(value, 'v') else 'absent'} {_proof(proof)}"
    elif part == reads.PAGE:
        anchor, entries = as_list(b[3], "page", size=2)
        text += (
            f" page(anchor={'given' if as_list(anchor, 'a') else 'none'} "
            f"records={len(as_list(entries, 'e'))})"
        )
    elif part == reads.EVIDENCE:
        text += f" evidence(records={len(as_list(b[3], 'evidence'))})"
    elif part == reads.REFUSALS:
        text += f" refusals({', '.join(_refusal(r) for r in as_list(b[3], 'refusals'))})"
    return text


def describe_request(frame: bytes) -> str:
    """One line saying what a request frame means (for comments and failure messages)."""
    try:
        req = decode_request(frame, limits=REQUEST)
    except ProtocolError as exc:
        return f"not a valid request ({exc.code.name}: {exc.message})"
    sender = f"{req.sender.kind.name.lower()}:{_name(req.sender.id)}"
    return (
        f"{req.type.name} id={req.request_id} sender={sender} route={_route(list(req.route))} "
        f"{_request_body(req)}"
    )


def _reply_body(rep_type: Rep, b: list[RlpItem]) -> str:
    def i(k: int, name: str) -> int:
        return as_int(b[k], name)

    def ids(item: RlpItem) -> str:
        return _hexes([as_bytes(x, "id") for x in as_list(item, "ids")])

    match rep_type:
        case Rep.WELCOME:
            hosted = f" hosted_signers={ids(b[4])}" if len(b) == 5 else ""
            return (
                f"version={i(0, 'v')} scope={_text(as_bytes(b[1], 's'))} "
                f"node_id={_generic(b[2])} height={i(3, 'h')}{hosted}"
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
            route = as_list(b[0], "r")
            text = f"route={_route(route)} {_state(route, as_bytes(b[1], 'state'))}"
            if len(b) == 3:
                tree = []
                for entry in as_list(b[2], "tree"):
                    sub_route, raw = as_list(entry, "entry", size=2)
                    sub = as_list(sub_route, "route")
                    tree.append(f"({_route(sub)}, {_state(sub, as_bytes(raw, 'state'))})")
                text += " machines=[" + ", ".join(tree) + "]"
            return text
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
        case Rep.DELIVERED:
            return f"body={_generic(b)}"
        case Rep.FRAMES:
            frames = []
            for entry in as_list(b[0], "frames"):
                frame, cert = as_list(entry, "entry", size=2)
                frames.append(
                    f"({_frame(Frame.decode(encode_tree(frame)))}, "
                    f"{_cert(Certificate.from_item(cert))})"
                )
            return f"{len(frames)} frame(s): [" + ", ".join(frames) + "]"
        case Rep.PEER_INFO:
            return f"hosted_signers={ids(b[0])}"
        case Rep.FRAME_EVENT:
            return (
                f"route={_route(as_list(b[0], 'r'))} height={i(1, 'h')} "
                f"frame_hash={_generic(b[2])} {_cert(Certificate.from_item(b[3]))} "
                f"batch_hashes={ids(b[4])}"
            )
        case Rep.ENTITY:
            return _entity_reply(b)
        case Rep.SIGNATURE:
            return f"signature={_generic(b[0])} outbox_signatures={_generic(b[1])}"
        case Rep.APPROVAL:
            return f"approval={_generic(b[0])}"
        case Rep.REFUSAL:
            return _refusal(b[0])
        case Rep.BINDING:
            f = as_list(b[0], "binding")
            return (
                f"binding(signer={_generic(f[0])} server_key={_generic(f[1])}"
                f" serial={as_int(f[2], 's')} signature={_generic(f[3])})"
            )
        case Rep.MEMBERSHIPS:
            return f"{_memberships(as_list(b[0], 'memberships'))} next_after={_generic(b[1])}"
        case Rep.FOUND:
            found = [as_list(x, "found", size=3) for x in as_list(b[0], "found")]
            items = [
                f"({_memberships([f[0]])} floor={as_int(f[1], 'f')} joined={as_int(f[2], 'j')})"
                for f in found
            ]
            return (
                f"found=[{', '.join(items)}] peers_asked={i(1, 'a')} peers_answered={i(2, 'n')}"
                f" errors={_generic(b[3])}"
            )
        case Rep.FLOOR:
            return f"floor={i(0, 'f')}"
        case Rep.CHALLENGE:
            return f"version={i(0, 'v')} challenge={_generic(b[1])} receiver_id={_generic(b[2])}"
        case Rep.ERROR:
            return f"code={Err(i(0, 'code')).name} message={_text(as_bytes(b[1], 'm'))}"


EVENTS = (Rep.BLOCK_EVENT, Rep.COMMIT_EVENT, Rep.FRAME_EVENT)


def describe_reply(frame: bytes | str) -> str:
    if isinstance(frame, str):
        return f"a text frame {json.dumps(frame)}"
    try:
        reply = decode_reply(frame)
        label = "subscription" if reply.type in EVENTS else "id"
        return f"{reply.type.name} {label}={reply.request_id} {_reply_body(reply.type, reply.body)}"
    except (DecodeError, ValueError, IndexError) as exc:
        return f"not a valid reply ({exc})"


def is_reply_frame(frame: bytes) -> bool:
    """True for a 3-item envelope (a reply or event), False for anything else.

    Replies usually go node to client, but an agent sends them too (its answers to
    ``SIGN``), and the node sends one request (``SIGN``); the envelope tells them apart.
    """
    try:
        item = decode(frame)
    except DecodeError:
        return False
    return isinstance(item, list) and len(item) == 3


def describe_frame(frame: bytes | str) -> str:
    """One line for any frame, in either direction: a reply or a request, by its envelope."""
    if isinstance(frame, str) or is_reply_frame(frame):
        return describe_reply(frame)
    return describe_request(frame)


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
    """Record the next ``count`` frames the node sends on the current connection."""

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


@dataclass(frozen=True, slots=True)
class On:
    """Switch to the connection ``conn`` (opened at its first use)."""

    conn: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """As signer A's agent: answer the ``SIGN`` request last received on this connection
    (with ``refuse``: a signed refusal with that reason, as a wallet whose person said no)."""

    note: str = ""
    refuse: str = ""


type Step = Send | SendText | SendZeros | Expect | ExpectClose | Act | On | Answer


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


def peer_challenge(rid: int = 1) -> bytes:
    return req(Req.CHALLENGE, rid, [], sender=PEER)


def peer_hello(challenge: int, rid: int = 2) -> bytes:
    """The peer's HELLO answering the consensus node's ``challenge``-th challenge."""
    return req(Req.HELLO, rid, PEER_IDENTITY.hello(challenge_no(challenge), NODE_ID), sender=PEER)


def old_peer_hello(rid: int = 0) -> bytes:
    """A peer HELLO as a server of protocol version 3 sent it, first thing, with
    request id 0: a signed timestamp."""
    pubkey = PEER_IDENTITY.pubkey
    message = b"XLN/peer-hello/v1" + pubkey + FIXED_CLOCK_MS.to_bytes(8, "big")
    signature = bls.sign(PEER_IDENTITY.secret_key, message)
    return req(Req.HELLO, rid, [pubkey, FIXED_CLOCK_MS, signature], sender=PEER)


def peer(req_type: Req, rid: int, body: list[Any]) -> bytes:
    return req(req_type, rid, body, sender=PEER)


def inc(n: int) -> list[int]:
    return [1, n]


def _ask(frame: bytes, note: str = "", replies: int = 1) -> tuple[Step, Step]:
    return Send(frame, note), Expect(replies)


def _examples() -> dict[str, Example]:
    return {**_server_examples(), **_consensus_examples()}


def _server_examples() -> dict[str, Example]:
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
                *_ask(req_raw(99, 2), "type 99 is not assigned"),
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
                *_ask(req(Req.SUBMIT, 4, [[3, 1]]), "no server transaction type 3"),
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
                    "inside the scope, but no such signer",
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
                    "HELLO from an agent whose sender id is not a signer id",
                ),
                ExpectClose(),
            )
        ),
        "peer-without-consensus": Example(
            (
                *_ask(
                    peer_challenge(), "a peer server's CHALLENGE to a node that runs no consensus"
                ),
                ExpectClose(),
            )
        ),
        "pre-hello": Example(
            (
                *_ask(
                    bytes.fromhex("c30102"),
                    "truncated, before HELLO: the error, then the connection closes",
                ),
                ExpectClose(),
            )
        ),
        "pre-hello-cap": Example(
            (
                *_ask(
                    req(Req.STATUS, 1, [b"\x00" * 1003]),
                    "a well-formed STATUS of 1,025 bytes before HELLO: over the 1 KiB cap",
                ),
                ExpectClose(),
            )
        ),
        "pre-hello-oversize": Example(
            (
                SendZeros(PRE_HELLO_WS_BYTES + 1, "4,097 bytes before HELLO: not even read"),
                ExpectClose(with_reason=False),
            )
        ),
        "too-deep": Example(
            (
                *_ask(hello()),
                *_ask(
                    req(Req.STATUS, 2, [_nested(MAX_DEPTH - 1)]),
                    "STATUS whose body nests lists 17 levels deep in all: over the depth cap",
                ),
                *_ask(req(Req.STATUS, 3, []), "the connection stays open"),
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


def _consensus_examples() -> dict[str, Example]:
    create_signer = _item(srv.CreateSigner(PK_A, POP_A))
    create_e1 = _item(sig.CreateEntity(GENESIS_1))
    create_e2 = _item(sig.CreateEntity(GENESIS_2))
    commit_e2 = _item(rep.Commit(FRAME_E2, CERT_E2))
    polka_e2 = _item(rep.PolkaNotice(1, FRAME_E2.hash, POLKA_E2))
    binding_b = _item(rep.AnnounceBinding(sign_binding(SK_B, ID_B, PEER_IDENTITY.pubkey, 1)))
    at_e1 = (ID_A, E1)
    return {
        "signers-and-entities": Example(
            (
                *_ask(hello()),
                *_ask(
                    req(Req.SUBMIT, 2, [create_signer]),
                    "host signer A: its public key and proof of possession",
                ),
                *_ask(
                    req(Req.SUBMIT, 3, [create_e1], route=(ID_A,)),
                    "entity E1, whose only member is A",
                ),
                *_ask(req(Req.READ_STATE, 4, [1]), "every machine at once"),
                *_ask(
                    req(Req.READ_STATE, 5, [], route=(ID_A,)),
                    "signer A alone: its state, then the list of its replicas",
                ),
            ),
            node="consensus",
        ),
        "agent-sign": Example(
            (
                On("agent", "the agent of signer A connects, with token 00000004"),
                *_ask(hello(token=AGENT_TOKEN, sender=AGENT_A)),
                Expect(1, "the node asks the agent to bind the node's identity key"),
                Answer("the agent records its binding (serial 1), then answers"),
                On("wallet", "a client watches E1, then submits a batch that A signed"),
                *_ask(hello()),
                *_ask(req(Req.SUBSCRIBE, 2, [Topic.COMMITS], route=at_e1)),
                *_ask(
                    req(Req.SUBMIT, 3, [_item(rep.SubmitBatch(BATCH_A1))], route=at_e1),
                    replies=2,
                ),
                On("agent"),
                Expect(1, "A proposes frame 1 of E1; the node asks A's agent to approve it"),
                Answer("the agent checks the frame, records its approval, then answers"),
                On("wallet"),
                Expect(
                    1,
                    "A's approval reaches the replica: approvals hold the threshold (1), a polka",
                ),
                On("agent"),
                Expect(1, "the node asks A's agent to pre-commit the frame, with the polka"),
                Answer("the agent checks the polka, records its pre-commit, then answers"),
                On("wallet"),
                Expect(
                    2,
                    "A's pre-commit (and its lock) reach the replica: the threshold (1) is met, "
                    "the frame is certified and applied",
                ),
            ),
            node="consensus",
        ),
        "read-entity": Example(
            (
                *_ask(hello()),
                *_ask(
                    req(Req.READ_ENTITY, 2, [0, b""], route=at_e1),
                    "the header of A's replica of E1, now at height 1",
                ),
                *_ask(
                    req(Req.GET_FRAMES, 3, [E1, 1, 1]),
                    "the certified frame at that height, which names the header's hash",
                ),
                *_ask(
                    req(Req.READ_ENTITY, 4, [1, b"", 0, ID_B], route=at_e1),
                    "E1's channel with B: there is none, and the proof says so",
                ),
                *_ask(
                    req(Req.READ_ENTITY, 5, [2, b"", 1, b"", 16], route=at_e1),
                    "the first page of E1's forwards: empty, and the last",
                ),
                *_ask(
                    req(Req.READ_ENTITY, 6, [0, b"\x11" * 32], route=at_e1),
                    "a state this node does not keep",
                ),
                *_ask(
                    req(Req.READ_ENTITY, 7, [2, b"", 0, b"", 257], route=at_e1),
                    "a page of more than 256 records",
                ),
                *_ask(
                    req(Req.READ_ENTITY, 8, [4, b""], route=at_e1),
                    "the node's equivocation evidence about E1: none",
                ),
            ),
            node="consensus",
        ),
        "between-servers": Example(
            (
                On("agent", "the agent of signer A"),
                *_ask(hello(token=AGENT_TOKEN, sender=AGENT_A)),
                Expect(1, "the node asks again: the agent answers with the same binding"),
                Answer(),
                On("wallet", "a client watching signer A"),
                *_ask(hello()),
                *_ask(req(Req.SUBSCRIBE, 2, [Topic.COMMITS], route=(ID_A,))),
                On("peer", "the server hosting signer B introduces itself"),
                *_ask(peer_challenge(), "it asks for this connection's challenge"),
                *_ask(peer_hello(1), "and answers it, for this server's id"),
                *_ask(peer(Req.PEER_INFO, 3, [])),
                *_ask(
                    peer(Req.DELIVER, 4, [ID_A, b"", create_e2]),
                    "B created E2 (members B and A, threshold 2); its server hands A the "
                    "create_entity",
                ),
                On("wallet"),
                Expect(1, "the block that created A's replica of E2"),
                *_ask(req(Req.SUBSCRIBE, 3, [Topic.COMMITS], route=(ID_A, E2))),
                On("peer"),
                *_ask(
                    peer(Req.DELIVER, 5, [ID_A, E2, binding_b]),
                    "B's server introduces B's binding of its identity key: its consensus"
                    " traffic for E2 is taken from here on",
                ),
                On("wallet"),
                Expect(1, "the block that recorded the binding on A's replica of E2"),
                On("peer"),
                *_ask(
                    peer(Req.PROPOSAL, 6, [ID_A, decode(FRAME_E2.raw), 0, APPROVAL_B, []]),
                    "B, the proposer of round 0, proposes frame 1 with its own approval",
                ),
                On("agent"),
                Expect(1, "A's replica re-executed the frame and accepts it: APPROVE"),
                Answer(
                    "A's agent approves (its approval goes to B's server over this node's own"
                    " peer links, none here); nothing is locked yet"
                ),
                On("peer"),
                *_ask(
                    peer(
                        Req.PROPOSAL, 7, [ID_A, decode(FRAME_E2_OTHER.raw), 0, APPROVAL_B_OTHER, []]
                    ),
                    "B equivocates: another frame at the same height and round",
                ),
                On("agent"),
                Expect(1, "it passes the replica's checks: one vote per round is the agent's rule"),
                Answer("the agent's guard refuses"),
                On("peer"),
                *_ask(
                    peer(Req.DELIVER, 8, [ID_A, E2, polka_e2]),
                    "B's server gathered B's and A's approvals (the threshold): the polka",
                ),
                On("wallet"),
                Expect(1, "the block that took the polka on A's replica"),
                On("agent"),
                Expect(1, "the node asks A's agent to pre-commit, with the polka: SIGN"),
                Answer("no one is asked again: A approved this frame at this round"),
                On("wallet"),
                Expect(
                    1,
                    "the frame with its polka is recorded as A's lock; A's pre-commit goes to"
                    " B's server over this node's own peer links (none here)",
                ),
                On("peer"),
                *_ask(
                    peer(Req.DELIVER, 9, [ID_A, E2, commit_e2]),
                    "B's server aggregated B's and A's pre-commits: the frame is certified",
                ),
                On("wallet"),
                Expect(2, "A's replica verifies the certificate and applies the frame"),
                On("peer"),
                *_ask(peer(Req.GET_FRAMES, 10, [E2, 1, 16]), "catch-up reads certified frames"),
                *_ask(
                    peer(Req.PROPOSAL, 11, [ID_A, decode(FRAME_E2_2.raw), 0, APPROVAL_B_2, []]),
                    "B proposes frame 2: a batch adding 900",
                ),
                On("agent"),
                Expect(1, "A's replica accepts it and the node asks A's agent"),
                Answer(
                    "A's person says no: the agent signs a refusal with the reason",
                    refuse=REFUSAL_REASON,
                ),
                Act("tick", "", "one tick of the node"),
                On("wallet"),
                *_ask(
                    req(Req.READ_ENTITY, 4, [5, b""], route=(ID_A, E2)),
                    "the node kept A's refusal (and sends it to B's server over its own"
                    " peer links, none here): who refused which frame, and why",
                ),
            ),
            node="consensus",
        ),
        "restore": Example(
            (
                On("agent", "the agent of signer A"),
                *_ask(hello(token=AGENT_TOKEN, sender=AGENT_A)),
                Expect(1),
                Answer(),
                On("wallet", "a client whose token reaches A (here: server scope)"),
                *_ask(hello()),
                *_ask(
                    req(Req.MEMBERSHIPS, 2, [ID_A, b"", 256]),
                    "the entities hosted here whose config names A, in id order",
                ),
                *_ask(
                    req(Req.MEMBERSHIPS, 3, [ID_A, b"", 1]),
                    "one at a time: a page of one, and the cursor to ask after",
                ),
                *_ask(req(Req.MEMBERSHIPS, 4, [ID_A, min(E1, E2), 1]), "the last page"),
                Send(
                    req(Req.FIND_ENTITIES, 5, [], route=(ID_A,)),
                    "find A's entities here and on this node's peers (it has none)",
                ),
                On("agent"),
                Expect(
                    1,
                    "first, for each entity found, the node tells A's agent the highest height "
                    "in flight there (with the highest binding serial seen for A)",
                ),
                Answer("the agent records the floor (synced), then answers the floor it holds"),
                Expect(1),
                Answer(),
                On("wallet"),
                Expect(1, "both entities found; both replicas are held here, so none is joined"),
                On("peer", "B's server asks which entities hosted here name B"),
                *_ask(peer_challenge()),
                *_ask(peer_hello(2)),
                *_ask(
                    peer(Req.MEMBERSHIPS, 3, [ID_B, b"", 256, BINDING_B.to_tree()]),
                    "a peer proves it hosts B with B's binding of the peer's identity key",
                ),
                *_ask(
                    peer(Req.MEMBERSHIPS, 4, [ID_A, b"", 256, BINDING_B.to_tree()]),
                    "B's binding proves nothing about A",
                ),
            ),
            node="consensus",
        ),
        "peer-forbidden": Example(
            (
                On("peer"),
                *_ask(peer_challenge()),
                *_ask(peer_hello(3)),
                *_ask(peer(Req.SUBMIT, 3, [inc(1)]), "peers deliver; they do not submit"),
                *_ask(
                    peer(Req.DELIVER, 4, [ID_A, E1, _item(rep.Timeout(2, 0))]),
                    "a timeout comes only from a node's own clock",
                ),
                *_ask(
                    peer(Req.DELIVER, 5, [ID_A, b"", inc(1)]),
                    "a signer takes only create_entity and join_entity from peers",
                ),
                *_ask(
                    peer(Req.DELIVER, 6, [ID_A, b"", [2, 1]]),
                    "an input that does not decode for its level",
                ),
                *_ask(
                    peer(
                        Req.DELIVER,
                        7,
                        [
                            ID_A,
                            UNKNOWN_ENTITY,
                            _item(rep.Precommit(1, 0, FRAME_E2.hash, ID_B, PRECOMMIT_B)),
                        ],
                    ),
                    "A holds no such entity",
                ),
                *_ask(
                    peer(
                        Req.DELIVER,
                        8,
                        [ID_A, E1, _item(rep.Precommit(2, 0, FRAME_E2.hash, ID_B, PRECOMMIT_B))],
                    ),
                    "E1 has no member bound to this server: its consensus traffic is refused",
                ),
                *_ask(peer(Req.GET_FRAMES, 9, [E1, 2, 16]), "nothing past E1's height 1"),
                *_ask(
                    peer(Req.DELIVER, 10, [ID_A, b"", _item(sig.JoinEntity(GENESIS_B_ONLY))]),
                    "a peer's join_entity names the certified frame that added the signer",
                ),
                *_ask(
                    peer(Req.DELIVER, 11, [ID_A, b"", _item(sig.JoinEntity(GENESIS_B_ONLY, 1))]),
                    "an entity B made up, naming a frame that adds A: no server here has it",
                ),
                On("client", "and a client may not speak for a server"),
                *_ask(hello()),
                *_ask(req(Req.DELIVER, 2, [ID_A, E1, _item(rep.Timeout(2, 0))])),
                *_ask(req(Req.PEER_INFO, 3, [])),
                *_ask(
                    req(Req.SUBMIT, 4, [_item(rep.Timeout(2, 0))], route=at_e1),
                    "nor forge the node's clock",
                ),
            ),
            node="consensus",
        ),
        "peer-replayed-hello": Example(
            (
                *_ask(peer_challenge()),
                *_ask(
                    peer_hello(3),
                    "the HELLO that opened peer-forbidden's connection, sent again",
                ),
                ExpectClose(),
            ),
            node="consensus",
        ),
        "peer-old-hello": Example(
            (
                *_ask(
                    old_peer_hello(),
                    "a server of protocol version 3 sends a signed timestamp, with request id 0",
                ),
                ExpectClose(),
            ),
            node="consensus",
        ),
    }


def _nested(depth: int) -> RlpItem:
    """``depth`` levels of lists around nothing: ``[[[...]]]``."""
    item: RlpItem = []
    for _ in range(depth - 1):
        item = [item]
    return item


def req_raw(type_id: int, rid: int) -> bytes:
    return encode([type_id, rid, [ME.kind, ME.id], [], []])


def _malformed() -> tuple[Step, ...]:
    status = req(Req.STATUS, 2, [])
    return (
        *_ask(hello()),
        *_ask(
            bytes.fromhex("c30102"),
            "truncated: a list announcing 3 bytes holds 2; after HELLO, MALFORMED does not"
            " close the connection",
        ),
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
    "agent-unavailable": lambda: [
        (
            "the encoding only; node 0.1.0 never sends this code",
            encode_error(Err.AGENT_UNAVAILABLE, "no agent is connected for this signer", 1),
        )
    ],
}


# Recording and rendering ------------------------------------------------------------


def _comment(text: str) -> str:
    return f"# {text}" if text else "#"


async def record(nodes: ReplayNodes, example: Example, agent: Agent) -> list[str]:
    """Runs one example on fresh connections; returns the lines of its block."""
    lines: list[str] = []
    conns: dict[str, ClientConnection] = {}
    last: dict[str, bytes] = {}  # the last frame received on each connection
    current = ""
    try:
        for step in example.steps:
            if isinstance(step, Act):
                lines.append(_comment(step.note))
                lines.append(f"! {step.action} {step.arg}".rstrip())
                await nodes.act(example.node, step.action, step.arg)
                continue
            if isinstance(step, On):
                if step.note:
                    lines.append(_comment(step.note))
                lines.append(f"@ {step.conn}")
                current = step.conn
                continue
            ws = conns.get(current)
            if ws is None:
                ws = conns[current] = await nodes.connect(example.node, example.via)
            match step:
                case Send(frame, note):
                    if note:
                        lines.append(_comment(note))
                    lines.append(_comment("> " + describe_frame(frame)))
                    lines.append(f"> {frame.hex()}")
                    await ws.send(frame)
                case Answer(note, refuse):
                    frame = await answer_sign(agent, last[current], refuse)
                    if note:
                        lines.append(_comment(note))
                    lines.append(_comment("> " + describe_frame(frame)))
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
                        last[current] = got
                        lines.append(_comment("< " + describe_frame(got)))
                        lines.append(f"< {got.hex()}")
                case ExpectClose(with_reason, note):
                    closed = await recv_close(ws)
                    assert isinstance(closed, tuple), (
                        f"expected a close, got {describe_frame(closed)}"
                    )
                    code, reason = closed
                    if note:
                        lines.append(_comment(note))
                    lines.append(_comment("the node closes the connection"))
                    lines.append(
                        f"<close {code} {json.dumps(reason)}" if with_reason else f"<close {code}"
                    )
    finally:
        for ws in conns.values():
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
    for kind, known in (("exchange", set(examples)), ("illustration", set(ILLUSTRATIONS))):
        in_doc = {name for k, name in names if k == kind}
        missing, unknown = sorted(known - in_doc), sorted(in_doc - known)
        if missing or unknown:
            raise SystemExit(
                f"{kind} blocks missing from the document: {missing}; unknown in it: {unknown}"
            )
    bodies: dict[tuple[str, str], list[str]] = {}
    # Signer A's agent, with its own double-sign guard, as xln-node agent runs it.
    agent = Agent(SK_A, root / "agent-guard")
    try:
        async with ReplayNodes.started(root / "nodes") as nodes:
            for kind, name in names:
                if kind == "exchange":
                    bodies[kind, name] = await record(nodes, examples[name], agent)
                else:
                    bodies[kind, name] = render_illustration(name)
    finally:
        agent.close()

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
