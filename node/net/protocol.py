"""Wire format of the node's WebSocket API. ``docs/PROTOCOL.md`` is its specification.

Every frame is one binary WebSocket message holding one RLP list.

Request (client to node)::

    [type, request_id, [sender_kind, sender_id], route, body]

Reply or event (node to client)::

    [type, request_id, body]

Events carry the subscription id in place of ``request_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from node.codec import (
    HASH_LEN,
    UINT64_MAX,
    DecodeError,
    Limits,
    RlpItem,
    as_bytes,
    as_int,
    as_list,
    as_text,
    decode_with_raw,
    encode,
    encode_list,
    encode_uint,
    item_header,
)
from node.net.limits import MAX_FRAME_BYTES, REPLY
from node.txs import MAX_TX_BYTES, Level

# 3: READ_ENTITY; READ_STATE lists a server's signers, a signer's replicas.
# 4: a peer's HELLO answers the receiver's CHALLENGE (node/identity.py).
# 5: a peer's consensus traffic for an entity needs a member's binding of its key,
#    introduced on the connection or recorded on the replica (node/net/peer_auth.py).
# 6: two-step voting: APPROVE before SIGN, polkas, proposals carry the proposer's
#    approval (docs/CONSENSUS.md); agents and peers must speak 6.
PROTOCOL_VERSION = 6
# The versions whose nodes this one's clients may talk to: versions 4 to 6 changed
# only what passes between servers and agents. An agent speaks only this version.
CLIENT_VERSIONS = frozenset({3, 4, 5, PROTOCOL_VERSION})
MAX_TXS_PER_SUBMIT = 4096
MAX_SENDER_ID_BYTES = 64
MAX_TOKEN_BYTES = 128
MAX_ROUTE_DEPTH = int(Level.CHANNEL)
MAX_BLOCKS_PER_PAGE = 1000


class Req(IntEnum):
    HELLO = 1
    SUBMIT = 2
    STATUS = 3
    READ_STATE = 4
    SUBSCRIBE = 5
    UNSUBSCRIBE = 6
    GET_BLOCKS = 7
    METRICS = 8
    # Between servers (sender kind SERVER, authenticated by the node identity key)
    DELIVER = 9  # [to_signer, entity_id or b"", input]: an input for a hosted machine
    PROPOSAL = 10  # [to_signer, frame, round, proposer_approval, polka or []]
    GET_FRAMES = 11  # [entity_id, from_height, max_count]
    PEER_INFO = 12  # []: which signers this server hosts
    READ_ENTITY = 13  # route [signer, entity]: an agreed state in parts, with proofs
    CHALLENGE = 14  # []: before a peer server's HELLO, the challenge it must sign
    # [signer, after, limit] (+ [binding] from a peer): the entities a signer is a member of
    MEMBERSHIPS = 15
    FIND_ENTITIES = 16  # route [signer]: ask the peers, set the agent's floors, join
    # Node to agent (on the agent's own connection)
    SIGN = 20  # route [signer, entity], body [frame, round, polka, config]: pre-commit
    BIND = 21  # route [signer], body [server_identity_key]: the signer's server binding
    FLOOR = 22  # route [signer, entity], body [height, binding_serial]: after a restore
    APPROVE = 23  # route [signer, entity], body [frame, round, config, polka or []]


class Rep(IntEnum):
    WELCOME = 64
    RECEIPTS = 65
    STATUS = 66
    STATE = 67
    SUBSCRIBED = 68
    UNSUBSCRIBED = 69
    BLOCK_EVENT = 70
    COMMIT_EVENT = 71
    BLOCKS = 72
    METRICS = 73
    DELIVERED = 74
    FRAMES = 75
    PEER_INFO = 76
    FRAME_EVENT = 77
    ENTITY = 78
    CHALLENGE = 79  # [protocol_version, challenge, receiver_id]
    SIGNATURE = 80
    BINDING = 81  # [binding]: the answer to BIND
    REFUSAL = 85  # [refusal]: an agent's signed refusal of a SIGN (node/machines/refusal.py)
    MEMBERSHIPS = 82  # [[membership...], next_after]
    FOUND = 83  # [[found...], peers_asked, peers_answered, [error...]]
    FLOOR = 84  # [floor]: the answer to FLOOR
    APPROVAL = 86  # [signature]: the answer to APPROVE
    ERROR = 127


class SenderKind(IntEnum):
    CLIENT = 1
    SERVER = 2
    AGENT = 3


class Topic(IntEnum):
    BLOCKS = 1
    COMMITS = 2  # on an entity route: also FRAME_EVENT when a frame is certified


class Err(IntEnum):
    """Error codes; the connection stays open unless the table in PROTOCOL.md says otherwise."""

    MALFORMED = 1
    UNAUTHORIZED = 2
    FORBIDDEN = 3
    UNKNOWN_ROUTE = 4
    BUSY = 5
    INVALID_TX = 6
    UNKNOWN_TYPE = 7
    UNSUPPORTED_SENDER = 8
    NOT_FOUND = 9
    TX_FAILED = 10
    SHUTTING_DOWN = 11
    SUBSCRIPTION_OVERFLOW = 12
    INTERNAL = 13
    REFUSED = 14  # an agent will not sign (double sign, lock, malformed frame)
    AGENT_UNAVAILABLE = 15


class ProtocolError(Exception):
    """A request the node refuses; becomes an ERROR reply."""

    def __init__(self, code: Err, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Sender:
    kind: SenderKind
    id: bytes


@dataclass(frozen=True, slots=True)
class Request:
    type: Req
    request_id: int
    sender: Sender
    route: tuple[bytes, ...]
    body: list[RlpItem]
    body_raws: list[Any]  # per-item encodings of body, as decode_with_raw gives them


def is_reply(frame: bytes) -> bool:
    """True if ``frame`` is a 3-item reply envelope (agents send replies to SIGN).

    Reads only the outer list's header and counts its items' headers: no decoding.
    """
    try:
        return _top_items(frame) == 3
    except (IndexError, ValueError):
        return False


def _top_items(frame: bytes) -> int:
    """How many items the outer list of ``frame`` holds (at most 6 are counted)."""
    is_list, pos, end = item_header(frame, 0)
    if not is_list:
        return -1
    count = 0
    while pos < end and count < 6:
        pos = item_header(frame, pos)[2]
        count += 1
    return count


def decode_request(frame: bytes, *, limits: Limits | None) -> Request:
    """Parse a request envelope; raises ProtocolError (MALFORMED or UNKNOWN_TYPE).

    ``limits`` are the caps of the link the frame came on (``node.net.limits``);
    ``None`` only for a frame that the caller has already scanned against them.
    """
    try:
        item, raws = decode_with_raw(frame, limits=limits)
    except DecodeError as exc:
        raise ProtocolError(Err.MALFORMED, str(exc)) from None
    return request_from(item, raws)


def request_from(item: RlpItem, raws: list[Any]) -> Request:
    """The request a decoded envelope holds (``raws`` as decode_with_raw gives them)."""
    try:
        top = as_list(item, "envelope", size=5)
    except DecodeError as exc:
        raise ProtocolError(Err.MALFORMED, str(exc)) from None
    try:
        request_id = as_int(top[1], "request_id")
    except DecodeError as exc:
        raise ProtocolError(Err.MALFORMED, str(exc)) from None
    try:
        type_id = as_int(top[0], "type", max_value=255)
        sender_items = as_list(top[2], "sender", size=2)
        kind_id = as_int(sender_items[0], "sender kind", max_value=255)
        sender_id = as_bytes(sender_items[1], "sender id", max_len=MAX_SENDER_ID_BYTES)
        route = tuple(
            as_bytes(r, f"route[{i}]", size=HASH_LEN)
            for i, r in enumerate(as_list(top[3], "route", max_len=MAX_ROUTE_DEPTH))
        )
        body = as_list(top[4], "body")
    except DecodeError as exc:
        raise ProtocolError(Err.MALFORMED, str(exc), request_id) from None
    try:
        kind = SenderKind(kind_id)
    except ValueError:
        raise ProtocolError(Err.MALFORMED, f"unknown sender kind {kind_id}", request_id) from None
    try:
        req_type = Req(type_id)
    except ValueError:
        raise ProtocolError(
            Err.UNKNOWN_TYPE, f"unknown request type {type_id}", request_id
        ) from None
    return Request(req_type, request_id, Sender(kind, sender_id), route, body, raws[5][1:])


def encode_request(
    req_type: Req, request_id: int, sender: Sender, route: tuple[bytes, ...], body: list[Any]
) -> bytes:
    return encode([req_type, request_id, [sender.kind, sender.id], list(route), body])


def encode_request_raw(
    req_type: Req,
    request_id: int,
    sender: Sender,
    route: tuple[bytes, ...],
    body_items: list[bytes],
) -> bytes:
    """The same bytes as :func:`encode_request` for a body whose items are already
    RLP-encoded (a whole frame, say: no decoding it to encode it again)."""
    return encode_list(
        [
            encode_uint(req_type),
            encode_uint(request_id),
            encode([sender.kind, sender.id]),
            encode(list(route)),
            encode_list(body_items),
        ]
    )


def encode_reply(rep_type: Rep, request_id: int, body: list[Any]) -> bytes:
    return encode([rep_type, request_id, body])


def encode_error(code: Err, message: str, request_id: int = 0) -> bytes:
    return encode_reply(Rep.ERROR, request_id, [code, message.encode("utf-8")])


@dataclass(frozen=True, slots=True)
class Reply:
    type: Rep
    request_id: int
    body: list[RlpItem]


def decode_reply(frame: bytes, limits: Limits = REPLY) -> Reply:
    """Parse a reply or event from a node; its structure is checked against ``limits``."""
    return reply_from(decode_with_raw(frame, limits=limits)[0])


def reply_from(item: RlpItem) -> Reply:
    """The reply or event a decoded envelope holds; DecodeError if it is none."""
    top = as_list(item, "reply", size=3)
    type_id = as_int(top[0], "reply type", max_value=255)
    try:
        rep_type = Rep(type_id)
    except ValueError:
        raise DecodeError(f"unknown reply type {type_id}") from None
    return Reply(
        rep_type, as_int(top[1], "request_id", max_value=UINT64_MAX), as_list(top[2], "body")
    )


def error_of(reply: Reply) -> tuple[Err, str]:
    """The code and message of an ERROR reply."""
    code = as_int(reply.body[0], "error code")
    return Err(code), as_text(reply.body[1], "error message", max_len=MAX_FRAME_BYTES)


__all__ = [
    "CLIENT_VERSIONS",
    "MAX_BLOCKS_PER_PAGE",
    "MAX_FRAME_BYTES",
    "MAX_TOKEN_BYTES",
    "MAX_TXS_PER_SUBMIT",
    "MAX_TX_BYTES",
    "PROTOCOL_VERSION",
    "Err",
    "ProtocolError",
    "Rep",
    "Reply",
    "Req",
    "Request",
    "Sender",
    "SenderKind",
    "Topic",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_reply",
    "encode_request",
    "error_of",
    "is_reply",
    "reply_from",
    "request_from",
]
