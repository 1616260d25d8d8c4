"""A hostile peer server, for the tests and the benchmark (issue 13 item 7).

It speaks only the documented peer protocol (PROTOCOL.md § 13), with an identity
key of its own that completes the CHALLENGE and HELLO, to honest ``xln-node run``
processes. What it can do, each a function here:

- **forge round changes**: a report "from" an honest member signed by a fresh
  key that binds itself (:func:`self_bound_round_change`); the hostile member's
  own, genuinely bound, round change replayed at another entity or height
  (:func:`own_round_change`);
- **replay** a HELLO captured on one connection on another (:func:`replay_hello`),
  and old certified frames as ``commit`` inputs (:func:`old_commits`);
- **equivocate as a member**: two pre-commits for different frames at one
  height and round (:func:`equivocation`);
- **flood** ``join_entity`` for made-up entities (naming a frame no server has)
  and ``DELIVER`` of current-height
  pre-commits that do not verify (:func:`flood`), pipelined as fast as the
  server reads them;
- **withhold** as proposer: the hostile member's server is this peer, which never
  proposes (:func:`create_entity_with` makes an entity whose round-0 proposer it is);
- **split** as proposer: frame A to some members' servers and frame B to the
  others at one round (:func:`split_frames`, :func:`propose`), and the polka of
  A shown to one member only (:func:`polka_notice`), so that member locks on A.

The test entity (:data:`SHARES`, :data:`THRESHOLD`): 4 members with 1 share
each, threshold 3, the fourth the hostile one; so ``2t - n = 2`` shares must
equivocate to fork it, and the hostile member holds 1; the 3 honest members
hold the threshold, so every height can be certified without it.

``tests/node/test_hostile_processes.py`` runs it against 3 honest servers;
``bench/finality.py --hostile`` times finality under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from node.cluster import Cluster, SignerKey
from node.codec import ZERO_HASH, as_bytes, as_list, decode, encode_tree, keccak
from node.crypto import bls
from node.identity import Identity
from node.machines import entity as ent
from node.machines.binding import sign_binding
from node.machines.frames import Certificate, Frame, aggregate_approvals, precommit_message
from node.machines.governance import Config, Member, signer_id
from node.machines.replica import (
    AnnounceBinding,
    Commit,
    Genesis,
    PolkaNotice,
    Precommit,
    RoundChange,
    SignedRoundChange,
)
from node.machines.signer import CreateEntity, JoinEntity
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
from node.txs import Tx

SHARES = (1, 1, 1, 1)
THRESHOLD = 3
DEADLINE_S = 30.0


def hostile_member(seed: int = 0x66) -> SignerKey:
    """The hostile member's key (hosted by no honest server)."""
    return SignerKey(bls.keygen(bytes([seed]) * 32), index=-1, server=-1)


async def create_entity_with(
    cluster: Cluster, honest: Sequence[SignerKey], hostile: SignerKey, *, hostile_proposes: bool
) -> bytes:
    """An entity of ``honest`` and ``hostile`` (:data:`SHARES`, :data:`THRESHOLD`),
    created through the first honest member's node; returns once every honest
    replica exists and is watched. The round-0 proposer is ``hostile`` (it
    withholds: every height starts with a round that times out) or ``honest[0]``."""
    genesis = await create_genesis_with(cluster, honest, hostile, hostile_proposes=hostile_proposes)
    return ent.entity_id_for(genesis.config, genesis.salt)


async def create_genesis_with(
    cluster: Cluster, honest: Sequence[SignerKey], hostile: SignerKey, *, hostile_proposes: bool
) -> Genesis:
    """:func:`create_entity_with`, returning the entity's genesis."""
    members = [*honest, hostile]
    proposer = hostile if hostile_proposes else honest[0]
    config = Config(
        tuple(Member(k.pubkey, n) for k, n in zip(members, SHARES, strict=True)),
        THRESHOLD,
        proposer.id,
    )
    salt = keccak(os.urandom(32))
    genesis = Genesis(config, salt, tuple(bls.pop_prove(k.sk) for k in members))
    first = honest[0]
    receipts = await cluster.client(cluster.servers[first.server]).submit(
        [CreateEntity(genesis)], [first.id]
    )
    if receipts.receipts[0].error is not None:
        raise RuntimeError(f"create_entity failed: {receipts.receipts[0].error}")
    entity = ent.entity_id_for(config, salt)
    for key in honest:
        await cluster.wait_replica(key, entity)
        await cluster.watch(key, entity)
    return genesis


class HostilePeer:
    """One connection to one honest server, as a peer server with ``identity``."""

    def __init__(self, ws: ClientConnection, identity: Identity, hello: list[bytes]) -> None:
        self.ws = ws
        self.identity = identity
        self.sender = Sender(SenderKind.SERVER, identity.id)
        self.hello = hello  # the HELLO body it sent (for a replay elsewhere)
        self.rid = 10

    @classmethod
    async def open(cls, url: str, identity: Identity) -> HostilePeer:
        ws = await connect(url, max_size=16 * 1024 * 1024)
        sender = Sender(SenderKind.SERVER, identity.id)
        await ws.send(encode_request(Req.CHALLENGE, 1, sender, (), []))
        reply = await _recv(ws)
        if reply.type is not Rep.CHALLENGE:
            raise ConnectionError(f"no challenge: {error_of(reply)}")
        given = as_bytes(reply.body[1], "challenge")
        receiver = as_bytes(reply.body[2], "receiver id")
        hello = identity.hello(given, receiver)
        await ws.send(encode_request(Req.HELLO, 2, sender, (), hello))
        reply = await _recv(ws)
        if reply.type is not Rep.WELCOME:
            raise ConnectionError(f"not welcomed: {error_of(reply)}")
        return cls(ws, identity, hello)

    async def request(self, req: Req, body: list[object]) -> Reply:
        self.rid += 1
        await self.ws.send(encode_request(req, self.rid, self.sender, (), body))
        return await _recv(self.ws)

    async def deliver(self, to: bytes, entity: bytes, tx: Tx) -> tuple[Err | None, str]:
        """DELIVER ``tx``; (None, "") if DELIVERED, else the error's code and message."""
        reply = await self.request(Req.DELIVER, [to, entity, decode(tx.raw)])
        return (None, "") if reply.type is Rep.DELIVERED else error_of(reply)

    async def close(self) -> None:
        await self.ws.close()


async def _recv(ws: ClientConnection) -> Reply:
    frame = await asyncio.wait_for(ws.recv(decode=False), DEADLINE_S)
    return decode_reply(frame)


async def replay_hello(url: str, captured: HostilePeer) -> tuple[Err | None, str]:
    """Send the HELLO ``captured`` sent (for its own challenge) on a new connection,
    after asking that connection's challenge: the server's answer."""
    async with connect(url) as ws:
        await ws.send(encode_request(Req.CHALLENGE, 1, captured.sender, (), []))
        assert (await _recv(ws)).type is Rep.CHALLENGE
        await ws.send(encode_request(Req.HELLO, 2, captured.sender, (), captured.hello))
        reply = await _recv(ws)
        return (None, "") if reply.type is Rep.WELCOME else error_of(reply)


def self_bound_round_change(
    entity: bytes, height: int, round_: int, member: bytes, forger: Identity
) -> Tx:
    """A round change "from" ``member`` (not the forger's), bound and signed by the
    forger's own key: the binding does not verify under the member's key."""
    rc = RoundChange(height, round_, member, None)
    binding = sign_binding(forger.secret_key, member, forger.pubkey, 1)
    signature = bls.sign(forger.secret_key, SignedRoundChange.message(entity, rc))
    return Tx.of(SignedRoundChange(rc, binding, signature))


def own_round_change(
    member: SignerKey,
    server: Identity,
    entity: bytes,
    height: int,
    round_: int,
    *,
    signed_for: tuple[bytes, int] | None = None,
) -> Tx:
    """The hostile member's round change, under its genuine binding of ``server``. With
    ``signed_for`` (entity, height), the server's signature was made for that other
    entity or height: a replay."""
    rc = RoundChange(height, round_, member.id, None)
    binding = sign_binding(member.sk, member.id, server.pubkey, 1)
    at_entity, at_height = signed_for or (entity, height)
    signature = bls.sign(
        server.secret_key,
        SignedRoundChange.message(at_entity, RoundChange(at_height, round_, member.id, None)),
    )
    return Tx.of(SignedRoundChange(rc, binding, signature))


def split_frames(genesis: Genesis, member: SignerKey) -> tuple[Frame, Frame]:
    """Two valid frames at height 1 of the entity ``genesis`` makes, each with one batch
    of ``member`` at nonce 1 (``increment(1)`` and ``increment(2)``): what a proposer
    that splits proposes to either half."""
    state = ent.genesis(genesis.config, genesis.salt)
    frames = []
    for n in (1, 2):
        batch = ent.sign_batch(state.entity_id, member.sk, member.id, 1, [Tx.of(ent.Increment(n))])
        post, events = ent.execute(state, [batch])
        frames.append(
            Frame.make(state.entity_id, 1, ZERO_HASH, [batch], post.hash, (), events.outbox)
        )
    return frames[0], frames[1]


async def propose(
    peer: HostilePeer, to: bytes, frame: Frame, round_: int, member: SignerKey
) -> tuple[Err | None, str]:
    """``member``'s proposal of ``frame`` at ``round_`` to signer ``to``, with its approval."""
    approval = bls.sign(member.sk, frame.approval_message(round_))
    reply = await peer.request(Req.PROPOSAL, [to, decode(frame.raw), round_, approval, []])
    return (None, "") if reply.type is Rep.DELIVERED else error_of(reply)


def polka_notice(frame: Frame, config: Config, approvers: Sequence[SignerKey]) -> Tx:
    """The polka of ``frame`` at round 0 by ``approvers`` (their keys: what they sent the
    proposer), as the proposer's server delivers it."""
    approvals = {config.index[k.id]: bls.sign(k.sk, frame.approval_message(0)) for k in approvers}
    polka, bad = aggregate_approvals(config, frame, 0, approvals)
    assert polka is not None
    assert not bad
    return Tx.of(PolkaNotice(frame.height, frame.hash, polka))


def introduction(member: SignerKey, server: Identity) -> Tx:
    """The hostile member's genuine binding of ``server``, as that server introduces it on
    its connection: its consensus traffic for the member's entities counts from then on."""
    return Tx.of(AnnounceBinding(sign_binding(member.sk, member.id, server.pubkey, 1)))


def equivocation(member: SignerKey, entity: bytes, height: int, round_: int) -> tuple[Tx, Tx]:
    """Two pre-commits of ``member`` for different (made-up) frames at one height and round."""
    out = []
    for tag in (b"\xa1", b"\xb2"):
        frame_hash = keccak(tag + entity + height.to_bytes(8, "big"))
        sig = bls.sign(member.sk, precommit_message(entity, height, round_, frame_hash))
        out.append(Tx.of(Precommit(height, round_, frame_hash, member.id, sig)))
    return out[0], out[1]


async def old_commits(peer: HostilePeer, entity: bytes, heights: int) -> list[Tx]:
    """Certified frames 1 … ``heights`` read back from the server, as ``commit`` inputs."""
    reply = await peer.request(Req.GET_FRAMES, [entity, 1, heights])
    assert reply.type is Rep.FRAMES, reply
    out = []
    for item in as_list(reply.body[0], "frames"):
        pair = as_list(item, "frame", size=2)
        frame = Frame.decode(encode_tree(as_list(pair[0], "frame")))
        out.append(Tx.of(Commit(frame, Certificate.from_item(pair[1]))))
    return out


def made_up_join(n: int) -> Tx:
    """A join_entity for an entity of one made-up member, naming a frame at height 1
    that no server holds: each one the server takes costs it a proof check that
    finds no frame (node/join_proof.py), within the per-peer caps."""
    sk = 50_000 + n
    member = Member(bls.sk_to_pk(sk), 1)
    salt = n.to_bytes(32, "big")
    genesis = Genesis(Config((member,), 1, member.id), salt, (bls.pop_prove(sk),))
    return Tx.of(JoinEntity(genesis, 1))


def junk_precommits(entity: bytes, height: int, round_: int, signer: bytes, n: int) -> list[Tx]:
    """``n`` distinct pre-commits at the current height and round whose signatures do
    not verify (a valid point, signing something else): each one new to the server."""
    sig = bls.sign(1, b"junk")
    return [
        Tx.of(Precommit(height, round_, keccak(i.to_bytes(8, "big")), signer, sig))
        for i in range(n)
    ]


@dataclass
class FloodStats:
    sent: int = 0
    answered: Counter[str] = field(default_factory=Counter)  # DELIVERED or the error code
    seconds: float = 0.0


async def flood(
    url: str, identity: Identity, messages: Sequence[tuple[bytes, bytes, Tx]], seconds: float
) -> FloodStats:
    """DELIVER ``messages`` (to, entity or b"", input), over and over, pipelined, for
    ``seconds``; the replies counted by kind. The server paces the sending as it
    reads (its quotas): the socket's buffers fill and ``send`` waits."""
    stats = FloodStats()
    peer = await HostilePeer.open(url, identity)
    frames = [
        encode_request(Req.DELIVER, 0, peer.sender, (), [to, entity, decode(tx.raw)])
        for to, entity, tx in messages
    ]

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in peer.ws:
                assert isinstance(frame, bytes)
                reply = decode_reply(frame)
                key = "DELIVERED" if reply.type is Rep.DELIVERED else error_of(reply)[0].name
                stats.answered[key] += 1

    reader = asyncio.create_task(read())
    started = time.monotonic()
    try:
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            async with asyncio.timeout(seconds):
                while True:
                    for frame in frames:
                        await peer.ws.send(frame)
                        stats.sent += 1
    finally:
        stats.seconds = time.monotonic() - started
        await peer.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return stats


def rss_kib(pid: int) -> int:
    """A process's resident set (Linux, /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def member_id(key: SignerKey) -> bytes:
    return signer_id(key.pubkey)


def flood_messages(
    kind: str,
    to: bytes,
    entity: bytes,
    height: int,
    honest: Sequence[bytes],
    member: SignerKey | None,
    server: Identity,
) -> list[tuple[bytes, bytes, Tx]]:
    """What a flood sends, cycled: ``outsider``: join_entity for made-up entities,
    pre-commits for the next 1,000 heights that do not verify (none is stale, so
    each is queued), and round changes "from" honest members bound by its own key;
    ``member``: the hostile ``member``'s genuinely bound round changes to high
    rounds, and its equivocating pre-commits at the next 500 heights."""
    out: list[tuple[bytes, bytes, Tx]] = []
    if kind == "outsider":
        out += [(to, b"", made_up_join(n)) for n in range(40)]
        for h in range(height, height + 1000):
            out += [(to, entity, tx) for tx in junk_precommits(entity, h, 0, honest[0], 1)]
            if h % 50 == 0:
                for m in honest:
                    out.append((to, entity, self_bound_round_change(entity, h, 50, m, server)))
    elif kind == "member":
        assert member is not None
        out.append((to, entity, introduction(member, server)))
        for h in range(height, height + 500):
            out += [(to, entity, tx) for tx in equivocation(member, entity, h, 0)]
            if h % 25 == 0:
                out.append((to, entity, own_round_change(member, server, entity, h, 60)))
    else:
        raise ValueError(f"no flood of kind {kind!r}")
    return out


def run_flood(
    url: str,
    server_sk: int,
    kind: str,
    to: bytes,
    entity: bytes,
    height: int,
    honest: Sequence[bytes],
    member_sk: int | None,
    seconds: float,
) -> None:
    """A flood in a process of its own (``multiprocessing``'s target): the benchmark's
    hostile peer, so that its CPU is not the driver's."""
    server = Identity(server_sk)
    member = None if member_sk is None else SignerKey(member_sk, index=-1, server=-1)
    messages = flood_messages(kind, to, entity, height, honest, member, server)
    stats = asyncio.run(flood(url, server, messages, seconds))
    print(f"hostile {kind}: sent {stats.sent}, answered {dict(stats.answered)}", flush=True)
