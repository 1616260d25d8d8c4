"""Every cap on what crosses the wire, in one place; docs/PROTOCOL.md §1.3 lists them.

A frame from the network is checked in this order, each step bounded by the one
before it:

1. WebSocket: a frame over the connection's size cap closes the connection
   (1009) while its header is read; nothing is buffered. Before HELLO that cap
   is :data:`PRE_HELLO_WS_BYTES`, after it the link's own.
2. :func:`node.codec.scan`: one loop over the item headers, no recursion, stops
   at the first cap crossed. A frame beyond a :class:`~node.codec.Limits` gets
   MALFORMED naming the cap; nothing was decoded.
3. The strict decoder, which only ever sees frames that passed 2: its
   recursion depth is at most ``max_depth`` and its work at most ``max_items``.

The item caps come from the decoder's cost (about 2 us per item with the
per-item encodings kept): the largest frame one connection may send costs
~140 ms of CPU, which :class:`HeavyGate` and ``node.net.sliced_decode`` spread
over many loop turns of a few milliseconds each. The largest legitimate
messages (a proposal of a frame whose batches and inputs fill their item
budgets in ``node.machines.replica``, a SUBMIT of 4,096 small transactions, a
full FRAMES page) fit inside them; ``tests/node/net/test_limits.py`` checks
that.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from node.codec import Limits

MAX_FRAME_BYTES = 1024 * 1024
MAX_DEPTH = 16  # the deepest legitimate message (a DELIVER of a channel frame) has 12 levels
MAX_ITEMS = 65_536

# Before HELLO: what a HELLO can be. A client HELLO with the longest sender id and
# token is about 220 bytes and 11 items; a peer HELLO about 260 bytes.
PRE_HELLO = Limits(max_bytes=1024, max_depth=3, max_items=16)
# WebSocket's own cap before HELLO: larger frames are cut off by the library (1009).
PRE_HELLO_WS_BYTES = 4096

# Requests on an authenticated connection (clients, the control socket, peers,
# agents' replies) and SIGN requests an agent receives.
REQUEST = Limits(max_bytes=MAX_FRAME_BYTES, max_depth=MAX_DEPTH, max_items=MAX_ITEMS)

# Replies and events a client, peer or agent reads from a node. The byte cap is
# large for reads of whole states (issue 11 pages them); items stay bounded, so a
# hostile node costs its client at most ~0.5 s of decoding per reply.
MAX_REPLY_BYTES = 64 * 1024 * 1024
REPLY = Limits(max_bytes=MAX_REPLY_BYTES, max_depth=MAX_DEPTH, max_items=8 * MAX_ITEMS)
# A state a client reads (READ_STATE) travels as one byte string inside the
# reply; it is scanned against these before it is decoded.
# Until reads come in parts (issue 11), a state read carries the whole replica,
# pool included: its item cap is the loosest, and reading it may take seconds.
STATE = Limits(max_bytes=MAX_REPLY_BYTES, max_depth=MAX_DEPTH, max_items=1 << 20)

# One record of an entity read in parts (READ_ENTITY): a byte string inside the
# reply, scanned on its own before it is decoded. A channel record holds up to
# 2 x 8,192 queued payments.
RECORD = Limits(max_bytes=MAX_REPLY_BYTES, max_depth=MAX_DEPTH, max_items=1 << 18)

# Blocks a client reads (GET_BLOCKS, for verify) are byte strings inside the
# reply, scanned on their own: a block holds up to 50,000 transactions. The node
# also counts the items of its own stored frames against this.
BLOCK = Limits(max_bytes=MAX_REPLY_BYTES, max_depth=MAX_DEPTH, max_items=1 << 22)
# What a peer link's reader accepts: FRAMES pages and small replies.
PEER_REPLY = Limits(max_bytes=2 * 8 * 1024 * 1024, max_depth=MAX_DEPTH, max_items=8 * MAX_ITEMS)

# A FRAMES page is filled while it fits these (at least one frame always goes).
MAX_FRAMES_REPLY_BYTES = 8 * 1024 * 1024
MAX_FRAMES_REPLY_ITEMS = REPLY.max_items // 2

# Connections.
MAX_UNAUTHENTICATED = 64  # connections that have not yet sent a good HELLO, at once
MAX_CONNECTIONS = 256  # all connections of the TCP listener, at once
HELLO_TIMEOUT_S = 10.0
# Frames websockets may buffer per connection before it stops reading the socket.
MAX_QUEUED_FRAMES = 4
# Replies a connection may have waiting to be sent (receipts of pipelined
# SUBMITs); past it the node stops reading that connection until they drain.
MAX_PENDING_REPLIES = 1024
# join_entity from peer servers (a signer told to make a replica of an entity it
# was added to), per peer identity key: at most this many accepted per window, and
# at most this many being checked or queued and not yet in a durable block. Past
# either: BUSY, and nothing is checked or queued. One that the signer would ignore
# (it holds the replica) is not counted. Each must name the certified frame that
# added the signer, which the node verifies before it queues the join
# (node/join_proof.py), within these bounds: the frames up to it are at most
# MAX_JOIN_PROOF_FRAMES, verified within JOIN_PROOF_TIMEOUT_S, and the node
# checks at most MAX_JOIN_PROOFS_AT_ONCE proofs at once, whoever asks (identity
# keys cost nothing to make). A refused proof counts against the peer's window.
MAX_PEER_JOINS_PER_WINDOW = 8
PEER_JOIN_WINDOW_S = 60.0
MAX_PEER_JOINS_IN_FLIGHT = 4
MAX_JOIN_PROOF_FRAMES = 4096
JOIN_PROOF_TIMEOUT_S = 60.0
MAX_JOIN_PROOFS_AT_ONCE = 2
# A frame larger than this is heavy: it waits for its turn at the HeavyGate, and
# is scanned, decoded in slices (node.net.sliced_decode) and handled there. A
# smaller one holds at most as many items, decoded in a few milliseconds.
HEAVY_BYTES = 2048


class HeavyGate:
    """Lets one heavy frame at a time be scanned, decoded and handled.

    While it holds the gate, a heavy frame's decoding and handling yield to the
    loop every few milliseconds; other heavy frames wait their turn (FIFO), so
    connections that flood the largest frames the caps allow take turns with
    each other, and small frames (an honest client's SUBMIT) and the block tick
    run between the slices.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.waited = 0  # heavy frames that had to wait for another one

    @staticmethod
    def is_heavy(size: int) -> bool:
        return size > HEAVY_BYTES

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One heavy frame's turn.

        The cycle collector is paused for the turn: a frame's decoded tree (up to
        65,536 lists, alive across the slices) is acyclic and freed by reference
        counting, but every full collection during the turn would walk all of
        it, holding the loop for up to ~120 ms at a time. Collection resumes
        when the turn ends and the tree is gone (the caller must not hold it).
        """
        if self._lock.locked():
            self.waited += 1
        async with self._lock:
            paused = gc.isenabled()
            gc.disable()
            try:
                yield
            finally:
                if paused:
                    gc.enable()
            # Let everything else that is ready run before the next heavy frame.
            await asyncio.sleep(0)


class JoinQuota:
    """Counts each peer's accepted ``join_entity`` inputs: within the window, and
    being checked or queued but not yet durable (see
    :data:`MAX_PEER_JOINS_PER_WINDOW`)."""

    SWEEP_AT = 1024  # peers remembered before the idle ones are forgotten

    def __init__(
        self,
        per_window: int = MAX_PEER_JOINS_PER_WINDOW,
        window_s: float = PEER_JOIN_WINDOW_S,
        in_flight: int = MAX_PEER_JOINS_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self.in_flight = in_flight
        self.clock = clock
        self._accepted: dict[bytes, deque[float]] = {}
        self._pending: dict[bytes, int] = {}

    def refusal(self, peer: bytes) -> str | None:
        """Why one more join_entity from ``peer`` is refused now, or None."""
        now = self.clock()
        times = self._accepted.get(peer)
        if times is not None:
            while times and times[0] <= now - self.window_s:
                times.popleft()
        if self._pending.get(peer, 0) >= self.in_flight:
            return (
                f"a peer may have at most {self.in_flight} join_entity checked or queued"
                " at once; try again once they are applied"
            )
        if times is not None and len(times) >= self.per_window:
            return (
                f"a peer may have at most {self.per_window} join_entity accepted"
                f" per {self.window_s:g} s; try again later"
            )
        return None

    def take(self, peer: bytes) -> None:
        """Count one accepted join_entity (its proof checked now); :meth:`done` once it
        is durable, or refused."""
        if len(self._accepted) >= self.SWEEP_AT:
            self._sweep()
        self._accepted.setdefault(peer, deque()).append(self.clock())
        self._pending[peer] = self._pending.get(peer, 0) + 1

    def done(self, peer: bytes) -> None:
        left = self._pending.get(peer, 0) - 1
        if left > 0:
            self._pending[peer] = left
        else:
            self._pending.pop(peer, None)

    def _sweep(self) -> None:
        horizon = self.clock() - self.window_s
        for peer, times in list(self._accepted.items()):
            if (not times or times[-1] <= horizon) and peer not in self._pending:
                del self._accepted[peer]


# Quotas per party (issue 13 item 6). A party is a peer server (its identity key, all
# its connections together) or a client (its API token, all the connections made
# with it together; an agent is the client of its token). The control socket is the
# operator's and has none. What each bounds, docs/PROTOCOL.md § 1.3 and § 7.
#
# Messages per second: a token bucket per party. A party past its rate is not
# refused: its connections are not read until the bucket has refilled, so a
# flooding party waits for itself while every other connection is read as before.
PEER_MSGS_PER_S = 1000.0
PEER_MSGS_BURST = 2000.0
CLIENT_MSGS_PER_S = 5000.0
CLIENT_MSGS_BURST = 10_000.0
# Share of the inbox: the transactions one party may have queued and not yet in a
# block, as a fraction (1/N) of the node's inbox cap. Past it: BUSY, nothing queued.
PEER_INBOX_SHARE = 16  # 12,500 of the default 200,000
CLIENT_INBOX_SHARE = 4  # 50,000 of the default 200,000
# Early blocks: a peer's consensus input asks for a block before the next tick only
# while its bucket holds one; past it the input waits for the tick (no refusal).
PEER_EARLY_BLOCKS_PER_S = 50.0
PEER_EARLY_BLOCKS_BURST = 50.0
# Subscriptions: per connection, and per client token across its connections.
MAX_SUBSCRIPTIONS_PER_SESSION = 64
MAX_SUBSCRIPTIONS_PER_CLIENT = 256
# Connections one peer identity may hold at once (a link each way, and a
# reconnection while the old one closes). Past it: BUSY on its HELLO, then close.
MAX_CONNECTIONS_PER_PEER = 4
# SIGN and BIND requests a node may have waiting on one agent; past it the request
# fails at once (the agent is treated as not answering) rather than queue.
MAX_PENDING_SIGN_REQUESTS = 64
# Proposals from one peer being checked and answered at once (each costs a signature
# check and, if it is new, a re-execution of its frame). Past it: BUSY.
MAX_PEER_PROPOSALS_IN_FLIGHT = 32


class Rate:
    """A token bucket per key: ``per_s`` tokens a second, at most ``burst`` held.

    :meth:`delay` takes a token even when none is left (the bucket goes into
    debt) and says how long the caller should wait for it; :meth:`try_take` takes
    one only if there is one. Keys idle long enough to have refilled are forgotten
    once :data:`SWEEP_AT` are held, so memory follows the parties active recently.
    """

    SWEEP_AT = 1024

    def __init__(
        self, per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[object, list[float]] = {}  # key -> [tokens, at]

    def _refill(self, key: object) -> list[float]:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.SWEEP_AT:
                self._sweep(now)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.per_s)
            bucket[1] = now
        return bucket

    def delay(self, key: object) -> float:
        """Take one token; the seconds until it is covered (0.0: at once)."""
        bucket = self._refill(key)
        bucket[0] -= 1.0
        return 0.0 if bucket[0] >= 0 else -bucket[0] / self.per_s

    def try_take(self, key: object) -> bool:
        bucket = self._refill(key)
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True

    def _sweep(self, now: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.per_s >= self.burst:
                del self._buckets[key]


class Quotas:
    """The quotas of one server's parties (see :data:`PEER_MSGS_PER_S` and after).

    Tests build one with smaller figures; the node uses the defaults.
    """

    def __init__(
        self,
        peer_rate: tuple[float, float] = (PEER_MSGS_PER_S, PEER_MSGS_BURST),
        client_rate: tuple[float, float] = (CLIENT_MSGS_PER_S, CLIENT_MSGS_BURST),
        early_blocks: tuple[float, float] = (PEER_EARLY_BLOCKS_PER_S, PEER_EARLY_BLOCKS_BURST),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer_msgs = Rate(*peer_rate, clock=clock)
        self.client_msgs = Rate(*client_rate, clock=clock)
        self.early = Rate(*early_blocks, clock=clock)
        self.paced = 0  # messages whose party had to wait for its rate
        self.late = 0  # peer inputs that waited for the tick (early-block quota spent)

    def pace(self, peer: bytes | None, token_id: str | None) -> float:
        """Seconds the connection of this party waits before its next message is read."""
        if peer is not None:
            wait = self.peer_msgs.delay(peer)
        elif token_id is not None:
            wait = self.client_msgs.delay(token_id)
        else:
            return 0.0
        if wait > 0:
            self.paced += 1
        return wait

    def early_block(self, peer: bytes) -> bool:
        """True if ``peer``'s consensus input may ask for an early block now."""
        if self.early.try_take(peer):
            return True
        self.late += 1
        return False


def inbox_share(inbox_cap: int, *, peer: bool) -> int:
    """The transactions one party may have queued (at least 1)."""
    return max(1, inbox_cap // (PEER_INBOX_SHARE if peer else CLIENT_INBOX_SHARE))
