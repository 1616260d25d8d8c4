"""The agent's side of the egg-agent protocol: answer a node's APPROVE and SIGN requests.

The agent connects to its node like a client, with sender kind AGENT, its
signer id as sender id, and a token whose scope reaches that signer. The node
then sends, for each frame (two-step voting, ``docs/CONSENSUS.md``), an
``APPROVE`` request on this connection (route ``[signer, entity]``, body
``[frame, round, config, polka or []]``: the entity's config, and the polka of the
lock the proposal re-proposes), answered ``APPROVAL [signature]``, a signed
``REFUSAL`` (the person or accountant said no), or an ERROR with code REFUSED;
then, once approvals hold the threshold, a ``SIGN`` request (body ``[height,
round, frame_hash, polka, config]``: the frame it approved there, by hash),
answered ``SIGNATURE [sig, [outgoing sig...]]`` (its pre-commit and its
signature over each outgoing hash of the frame) or REFUSED.
The node also asks, once the agent is connected (and again when it needs
one), for the signer's binding of the node's identity key: ``BIND`` (route
``[signer]``, body ``[server_key]``), answered ``BINDING [binding]``
(``node/machines/binding.py``) or REFUSED. After a restore the node tells the
agent what the entity's peers showed in flight: ``FLOOR`` (route ``[signer,
entity]``, body ``[height, binding_serial]``), answered ``FLOOR [floor]`` once
recorded (``Agent.set_floor``). The connection is re-established with
backoff until ``stop``.

:func:`serve_signer` runs the connection for any approving callback
``async (entity, frame_raw, round, config, valid) -> approval`` that raises
:class:`Refused` to say no (the wallet decides through its approvals there; each
request is answered in its own task, so a slow decision never holds up the
others), a pre-commit callback ``async (entity, height, round, frame_hash, polka,
config) -> signatures``, and a binding callback ``async (server_key) -> binding`` (none: BIND
is refused).
:func:`serve_agent` is that loop for a plain :class:`Agent`, whose signing runs
on a thread so a slow disk never stalls the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from node.agent import Agent, Refused
from node.codec import DecodeError, RlpItem, as_bytes, as_int, as_list
from node.machines.binding import ServerBinding
from node.machines.frames import Polka, Signatures
from node.machines.governance import Config
from node.net import limits, tls
from node.net.protocol import (
    PROTOCOL_VERSION,
    Err,
    ProtocolError,
    Rep,
    Req,
    Sender,
    SenderKind,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    error_of,
)

log = logging.getLogger(__name__)

# (entity, frame_raw, round, config, valid polka) -> the approval; raises Refused.
type ApproveCallback = Callable[[bytes, bytes, int, Config, Polka | None], Awaitable[bytes]]
# (entity, height, round, frame_hash, polka, config) -> the pre-commit and outgoing
# signatures of the frame the agent approved there; raises Refused.
type SignCallback = Callable[[bytes, int, int, bytes, Polka, Config], Awaitable[Signatures]]
# server identity key -> the signer's binding of it; raises Refused.
type BindCallback = Callable[[bytes], Awaitable[ServerBinding]]
# (entity, height, binding serial) -> the floor now held; raises Refused.
type FloorCallback = Callable[[bytes, int, int], Awaitable[int]]


@dataclass
class AgentStats:
    """What an agent connection answered: one APPROVE or SIGN request gets one reply."""

    requests: int = 0
    approved: int = 0  # APPROVAL replies
    signed: int = 0  # SIGNATURE replies
    outgoing: int = 0  # outgoing-message signatures in those replies
    refused: int = 0


class AgentRejected(Exception):
    """The node refused this agent's HELLO (bad token, wrong signer), its certificate
    was refused, or the token would go in clear: retrying won't help."""


async def serve_agent(
    url: str,
    token: str,
    agent: Agent,
    stop: asyncio.Event,
    stats: AgentStats | None = None,
    *,
    trust: tls.ClientTrust | None = None,
    on_link: Callable[[bool], None] | None = None,
) -> None:
    """Answer APPROVE and SIGN requests for ``agent``'s signer until ``stop`` (a
    built-in agent approves every frame its node checked); raises AgentRejected.
    ``on_link(up)`` hears each connection made (after WELCOME) and lost."""

    async def approve(
        entity: bytes, frame_raw: bytes, round_: int, config: Config, valid: Polka | None
    ) -> bytes:
        return await asyncio.to_thread(agent.approve, frame_raw, round_, config, valid)

    async def sign(
        entity: bytes, height: int, round_: int, frame_hash: bytes, polka: Polka, config: Config
    ) -> Signatures:
        return await asyncio.to_thread(
            agent.sign_precommit, entity, height, round_, frame_hash, polka, config
        )

    async def bind(server_key: bytes) -> ServerBinding:
        return await asyncio.to_thread(agent.bind_server, server_key)

    async def floor(entity: bytes, height: int, serial: int) -> int:
        return await asyncio.to_thread(agent.set_floor, entity, height, serial)

    await serve_signer(
        url,
        token,
        agent.signer_id,
        approve,
        sign,
        stop,
        stats=stats,
        trust=trust,
        bind=bind,
        floor=floor,
        on_link=on_link,
    )


async def serve_signer(
    url: str,
    token: str,
    signer: bytes,
    approve: ApproveCallback,
    sign: SignCallback,
    stop: asyncio.Event,
    *,
    on_link: Callable[[bool], object] | None = None,
    stats: AgentStats | None = None,
    trust: tls.ClientTrust | None = None,
    bind: BindCallback | None = None,
    floor: FloorCallback | None = None,
) -> None:
    """Be ``signer``'s agent at ``url`` until ``stop``, reconnecting with backoff.

    ``url`` is ``ws://`` or ``wss://``; a ``wss://`` node's certificate is checked
    as ``trust`` says, or against the pin on the URL (``#sha256=<hex>``).
    ``on_link(True/False)`` is told when the node accepts the agent and when the
    connection is lost. A HELLO the node refuses, a refused certificate, or a
    plain ``ws://`` URL to a host that is not loopback (the token would cross the
    network in clear) raises AgentRejected.
    """
    try:
        refusal = tls.token_transport_refusal(tls.split_pin(url)[0])
    except tls.TlsConfigError as exc:
        raise AgentRejected(str(exc)) from None
    if refusal is not None:
        raise AgentRejected(refusal)
    backoff = 0.05
    while not stop.is_set():
        try:
            async with await tls.connect(
                url,
                trust,
                max_size=limits.MAX_FRAME_BYTES,
                max_queue=limits.MAX_QUEUED_FRAMES,
                compression=None,
            ) as ws:
                await _hello(ws, token, signer)
                backoff = 0.05
                log.info("agent of %s connected to %s", signer.hex()[:12], url)
                if on_link is not None:
                    on_link(True)
                try:
                    calls = _Calls(approve, sign, bind, floor)
                    await _serve(ws, signer, calls, stop, stats or AgentStats())
                finally:
                    if on_link is not None:
                        on_link(False)
        except (tls.CertificateRefused, tls.TlsConfigError) as exc:
            raise AgentRejected(str(exc)) from None
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, DecodeError) as exc:
            log.info("agent connection to %s: %r", url, exc)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff):
                await stop.wait()
        backoff = min(backoff * 2, 2.0)


async def _hello(ws: ClientConnection, token: str, signer: bytes) -> None:
    sender = Sender(SenderKind.AGENT, signer)
    await ws.send(encode_request(Req.HELLO, 1, sender, (), [token.encode()]))
    async with asyncio.timeout(limits.HELLO_TIMEOUT_S):  # a node that never answers
        reply = decode_reply(await ws.recv(decode=False))
    if reply.type is Rep.ERROR:
        code, message = error_of(reply)
        raise AgentRejected(f"the node refused the agent: {code.name} {message}")
    version = as_int(reply.body[0], "protocol version") if reply.body else None
    if version != PROTOCOL_VERSION:
        raise AgentRejected(
            f"the node speaks protocol version {version}; this agent speaks only"
            f" {PROTOCOL_VERSION} (two-step voting): upgrade the older of the two"
        )


@dataclass(frozen=True, slots=True)
class _Calls:
    approve: ApproveCallback
    sign: SignCallback
    bind: BindCallback | None
    floor: FloorCallback | None


async def _serve(
    ws: ClientConnection,
    signer: bytes,
    calls: _Calls,
    stop: asyncio.Event,
    stats: AgentStats,
) -> None:
    stopper = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            receive = asyncio.create_task(ws.recv(decode=False))
            done, _ = await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                return
            frame = receive.result()
            task = asyncio.create_task(_answer(ws, signer, calls, frame, stats))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        stopper.cancel()
        for task in pending:
            task.cancel()


async def _answer(
    ws: ClientConnection, signer: bytes, calls: _Calls, frame: bytes, stats: AgentStats
) -> None:
    try:
        req = decode_request(frame, limits=limits.REQUEST)
    except ProtocolError:
        return  # replies to our HELLO or garbage: nothing to answer
    if req.type is Req.BIND:
        await _answer_bind(ws, signer, calls.bind, req.request_id, req.route, req.body)
        return
    if req.type is Req.FLOOR:
        await _answer_floor(ws, signer, calls.floor, req.request_id, req.route, req.body)
        return
    if req.type not in (Req.APPROVE, Req.SIGN):
        return
    stats.requests += 1
    reply: tuple[Rep, list[RlpItem]]
    try:
        if req.route[:1] != (signer,):
            raise Refused("this agent does not hold that signer's key")
        if len(req.route) != 2:
            raise Refused(f"a {req.type.name} route is [signer, entity]")
        entity = req.route[1]
        if req.type is Req.APPROVE:
            if len(req.body) != 4:
                raise DecodeError("APPROVE body is [frame, round, config, polka or []]")
            as_list(req.body[0], "frame")
            frame_raw = req.body_raws[0][0]
            round_ = as_int(req.body[1], "round", max_value=2**32 - 1)
            config = Config.from_item(req.body[2])
            valid = Polka.from_item(req.body[3]) if req.body[3] else None
            approval = await calls.approve(entity, frame_raw, round_, config, valid)
            stats.approved += 1
            reply = (Rep.APPROVAL, [approval])
        else:
            if len(req.body) != 5:
                raise DecodeError("SIGN body is [height, round, frame_hash, polka, config]")
            height = as_int(req.body[0], "height", min_value=1, max_value=2**64 - 1)
            round_ = as_int(req.body[1], "round", max_value=2**32 - 1)
            frame_hash = as_bytes(req.body[2], "frame hash", size=32)
            polka = Polka.from_item(req.body[3])
            config = Config.from_item(req.body[4])
            signature = await calls.sign(entity, height, round_, frame_hash, polka, config)
            stats.signed += 1
            stats.outgoing += len(signature.outbox)
            reply = (Rep.SIGNATURE, [signature.precommit, list(signature.outbox)])
    except Refused as exc:
        stats.refused += 1
        with contextlib.suppress(ConnectionClosed):
            if exc.refusal is not None:  # a decision, signed: the node passes it on
                refusal = [exc.refusal.to_tree()]
                await ws.send(encode_reply(Rep.REFUSAL, req.request_id, refusal))
            else:
                await ws.send(encode_error(Err.REFUSED, str(exc), req.request_id))
        return
    except DecodeError as exc:
        stats.refused += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.REFUSED, str(exc), req.request_id))
        return
    except Exception:
        log.exception("%s callback failed", req.type.name)
        stats.refused += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.REFUSED, "the agent failed", req.request_id))
        return
    with contextlib.suppress(ConnectionClosed):
        await ws.send(encode_reply(reply[0], req.request_id, reply[1]))


async def _answer_bind(
    ws: ClientConnection,
    signer: bytes,
    bind: BindCallback | None,
    rid: int,
    route: tuple[bytes, ...],
    body: list[RlpItem],
) -> None:
    """Answer a BIND: the signer's binding of the node's identity key, or REFUSED."""
    try:
        if bind is None:
            raise Refused("this agent binds no server")
        if route != (signer,):
            raise Refused("this agent does not hold that signer's key")
        if len(body) != 1:
            raise DecodeError("BIND body is [server_key]")
        binding = await bind(as_bytes(body[0], "server key", size=48))
    except (DecodeError, Refused) as exc:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.REFUSED, str(exc), rid))
        return
    except Exception:
        log.exception("binding callback failed")
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.REFUSED, "the agent failed", rid))
        return
    with contextlib.suppress(ConnectionClosed):
        await ws.send(encode_reply(Rep.BINDING, rid, [binding.to_tree()]))


async def _answer_floor(
    ws: ClientConnection,
    signer: bytes,
    floor: FloorCallback | None,
    rid: int,
    route: tuple[bytes, ...],
    body: list[RlpItem],
) -> None:
    """Answer a FLOOR: record it (durably, the max kept) and say the floor held."""
    try:
        if floor is None:
            raise Refused("this agent keeps no floors")
        if len(route) != 2 or route[0] != signer:
            raise Refused("a FLOOR route is [signer, entity] of this agent's signer")
        if len(body) != 2:
            raise DecodeError("FLOOR body is [height, binding_serial]")
        held = await floor(route[1], as_int(body[0], "height"), as_int(body[1], "binding serial"))
    except (DecodeError, Refused) as exc:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.REFUSED, str(exc), rid))
        return
    except Exception:
        log.exception("floor callback failed")
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_error(Err.REFUSED, "the agent failed", rid))
        return
    with contextlib.suppress(ConnectionClosed):
        await ws.send(encode_reply(Rep.FLOOR, rid, [held]))
