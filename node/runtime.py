"""The proposer loop: inbox -> transition -> durable batch -> effects.

:class:`Node` is the node's public API, used by the WebSocket server, the CLI
and (later) the embedded wallet. Nothing here is pure; the pure part is
:func:`node.machines.server.apply_block`.

Order of one tick, which is the durability contract:

1. take transactions from the inbox (whole submissions, in arrival order);
2. apply them with the pure transition;
3. write the block in one synced batch, on the writer thread;
4. only then resolve the submitters' futures (acks and error receipts),
   publish events and send the block's outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from node.block import Block
from node.codec import keccak
from node.errors import Busy, NotFound, ShuttingDown, TooLarge, UnknownRoute
from node.evidence import EvidenceLog
from node.machines.entity import EntityState
from node.machines.frames import Certificate
from node.machines.governance import Config
from node.machines.outcomes import Outcomes
from node.machines.replica import Committed, Genesis, Replica
from node.machines.server import Receipt, ServerState, Step, apply_block
from node.mempool import MAX_MEMPOOL_BYTES, Mempool
from node.storage import Store
from node.txs import Tx

log = logging.getLogger(__name__)

DEFAULT_TICK_MS = 100
DEFAULT_INBOX_CAP = 200_000
DEFAULT_MAX_BLOCK_TXS = 50_000
# Transaction bytes per block, leaving room for the mempool's own list headers.
MAX_BLOCK_TX_BYTES = MAX_MEMPOOL_BYTES - 64 * 1024
METRIC_SAMPLES = 4096
# Agreed entity states a replica keeps readable by hash (READ_ENTITY's ``at``), so a
# client can read one state in several parts while frames go on. They share all
# but their changed paths, so each costs what its frame changed.
RECENT_STATES = 16
SUBSCRIPTION_QUEUE = 4096


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class NodeConfig:
    tick_ms: int = DEFAULT_TICK_MS
    empty_blocks: bool = False
    inbox_cap: int = DEFAULT_INBOX_CAP
    max_block_txs: int = DEFAULT_MAX_BLOCK_TXS
    simulation: bool = False  # a new chain's genesis allows the faucet; kept for its life


@dataclass(frozen=True, slots=True)
class Ack:
    """A submission's outcome, known once its block is durable.

    ``receipts`` has one entry per submitted transaction, in order; its
    ``index`` is the transaction's position among the route's transactions in
    the block, and ``error`` is set when the transaction failed when applied.
    """

    height: int
    block_hash: bytes
    receipts: tuple[Receipt, ...]


@dataclass(frozen=True, slots=True)
class Status:
    height: int
    head: bytes
    state_hash: bytes
    counter: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class BlockEvent:
    height: int
    hash: bytes
    state_hash: bytes
    timestamp: int
    tx_count: int


@dataclass(frozen=True, slots=True)
class CommitEvent:
    route: tuple[bytes, ...]
    height: int
    hash: bytes
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FrameEvent:
    """An entity frame was certified and applied on this replica (route: signer, entity)."""

    route: tuple[bytes, ...]
    height: int
    frame_hash: bytes
    cert: Certificate
    batch_hashes: tuple[bytes, ...]


type Event = BlockEvent | CommitEvent | FrameEvent


class Priority:
    """Order of inputs within one machine's share of a block: higher access first."""

    INTERNAL = 0  # the node itself (its clock, its agents' signatures)
    SERVER = 1  # clients with a server token
    SCOPED = 2  # clients with a signer or entity token
    PEER = 3  # other servers


@dataclass(eq=False)
class Subscription:
    """Events for one subscriber.

    A subscriber that falls ``SUBSCRIPTION_QUEUE`` events behind is dropped: its
    queue is cleared and ends with ``None``, so the reader learns it lost events.
    """

    route: tuple[bytes, ...] | None  # None: every block
    queue: asyncio.Queue[Event | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIPTION_QUEUE)
    )


@dataclass
class _Pending:
    route: tuple[bytes, ...]
    txs: Sequence[Tx]
    future: asyncio.Future[Ack] | None  # None: internal, nobody waits
    size: int
    priority: int = Priority.SERVER
    first_index: int = 0
    owner: object = None  # the party whose share of the inbox it counts against
    key: tuple[tuple[bytes, ...], bytes] | None = None  # a peer's input, for duplicates


@dataclass
class Metrics:
    """Recent tick lateness and write latency, in microseconds."""

    tick_lateness_us: deque[int] = field(default_factory=lambda: deque(maxlen=METRIC_SAMPLES))
    write_us: deque[int] = field(default_factory=lambda: deque(maxlen=METRIC_SAMPLES))
    blocks: int = 0
    txs: int = 0


async def _woken_early(early: asyncio.Event, stop: asyncio.Event, delay: float) -> bool:
    """Wait up to ``delay`` seconds: True if ``early`` is set first (and not ``stop``)."""
    if stop.is_set() or delay <= 0:
        return False
    if early.is_set():
        return True
    waiters = [asyncio.ensure_future(early.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return early.is_set() and not stop.is_set()


# A replica read whole (READ_STATE) holds at most this many channels and kept entries
# (each up to kilobytes), and this many forwards in flight (33 bytes each).
MAX_WHOLE_RECORDS = 4096
MAX_WHOLE_FORWARDS = 65_536


def _check_route(state: ServerState, route: tuple[bytes, ...]) -> None:
    if not route:
        return
    signer = state.by_id.get(route[0])
    if signer is None:
        raise UnknownRoute(f"no signer {route[0].hex()} on this server")
    if len(route) >= 2 and route[1] not in signer.by_entity:
        raise UnknownRoute(f"signer {route[0].hex()[:16]} holds no entity {route[1].hex()}")
    if len(route) > 2:
        raise UnknownRoute("channels are not hosted yet")


def _whole(replica: Replica) -> bytes:
    """A replica's whole encoding, if it is small: every record is read (from LevelDB,
    if need be) and encoded, so a hub's is refused, and read in parts instead."""
    records = len(replica.entity.channels) + len(replica.mailbox.kept)
    forwards = len(replica.entity.forwards)
    if records > MAX_WHOLE_RECORDS or forwards > MAX_WHOLE_FORWARDS:
        raise NotFound(
            f"entity {replica.entity_id.hex()[:16]} holds {records:,} channels and kept "
            f"entries and {forwards:,} forwards, more than a whole read takes "
            f"({MAX_WHOLE_RECORDS:,} and {MAX_WHOLE_FORWARDS:,}): read it in parts with "
            "READ_ENTITY"
        )
    return replica.encoded


class Node:
    """One server machine with its chain, inbox and subscribers."""

    def __init__(
        self,
        store: Store,
        config: NodeConfig | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.store = store
        self.config = config or NodeConfig()
        self._clock_ms = clock_ms
        # This node's cache of frame outcomes (node.machines.outcomes): its blocks'
        # replicas and its coordinator's proposal checks execute a frame once.
        self.outcomes = Outcomes()
        self.state, self.head_block = store.load(self.outcomes)
        if self.head_block is None and self.config.simulation:
            self.state = replace(self.state, simulation=True)
        self.metrics = Metrics()
        self._inbox: deque[_Pending] = deque()
        self._inbox_txs = 0
        # Each party's share of the inbox in use (server.py passes the party), and
        # the peers' inputs queued, by route and bytes, so a duplicate costs nothing.
        self._owed: dict[object, int] = {}
        self._queued: dict[tuple[tuple[bytes, ...], bytes], int] = {}
        self._subscriptions: set[Subscription] = set()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="xln-store")
        self._stopping = False
        self.tick_hooks: list[Callable[[], object]] = []
        # Called with each step once its block is durable: where effects go out.
        self.durable_hooks: list[Callable[[Step], object]] = []
        self._expedite = asyncio.Event()
        self._recent: dict[tuple[bytes, bytes], OrderedDict[bytes, EntityState]] = {}
        # Equivocation evidence (node/evidence.py): the node's own, beside its replicas
        # and outside every state hash; written on the writer thread.
        self.evidence = EvidenceLog(store.evidence(), self._write_evidence)

    def _write_evidence(self, writes: list[tuple[int, bytes | None]]) -> None:
        try:
            future = self._writer.submit(self.store.write_evidence, writes)
        except RuntimeError:  # the writer is shut down: the node is closing
            log.warning("evidence not written: the node is closing")
            return
        future.add_done_callback(_log_write_failure)

    # Public API -------------------------------------------------------------

    def submit(
        self,
        route: tuple[bytes, ...],
        txs: Sequence[Tx],
        priority: int = Priority.SERVER,
        *,
        urgent: bool = False,
        owner: object = None,
        share: int | None = None,
    ) -> asyncio.Future[Ack]:
        """Queue transactions for the next block; the future resolves once it is durable.
        ``urgent`` (consensus inputs) asks for an early block rather than the next tick.
        ``owner`` (a party: a peer's identity key, a client's token) may have at most
        ``share`` transactions queued at once.

        Raises Busy, TooLarge, UnknownRoute or ShuttingDown at once, having queued nothing.
        """
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._enqueue(route, txs, priority, future, owner, share)
        if urgent:
            self.expedite()
        return future

    def submit_internal(
        self, route: tuple[bytes, ...], txs: Sequence[Tx], *, urgent: bool = True
    ) -> bool:
        """Queue the node's own inputs (consensus messages); nobody awaits an ack.
        ``urgent`` asks for an early block. False if refused (unknown route,
        shutting down, busy)."""
        try:
            self._enqueue(route, txs, Priority.INTERNAL, None)
        except (Busy, TooLarge, UnknownRoute, ShuttingDown) as exc:
            log.warning("internal input to %s refused: %s", _route_text(route), exc)
            return False
        if urgent:
            self.expedite()
        return True

    def expedite(self) -> None:
        """Make a block as soon as possible rather than at the next tick."""
        self._expedite.set()

    def _enqueue(
        self,
        route: tuple[bytes, ...],
        txs: Sequence[Tx],
        priority: int,
        future: asyncio.Future[Ack] | None,
        owner: object = None,
        share: int | None = None,
    ) -> None:
        if self._stopping:
            raise ShuttingDown("the node is shutting down")
        self.check_route(route)
        size = sum(len(tx.raw) for tx in txs)
        limit = min(self.config.max_block_txs, self.config.inbox_cap)
        if len(txs) > limit or size > MAX_BLOCK_TX_BYTES:
            raise TooLarge(
                f"{len(txs)} transactions of {size} bytes can never fit one block "
                f"(at most {limit} transactions and {MAX_BLOCK_TX_BYTES} bytes)"
            )
        if self._inbox_txs + len(txs) > self.config.inbox_cap:
            raise Busy(
                f"inbox full ({self._inbox_txs} of {self.config.inbox_cap} transactions queued); "
                "retry after the next block"
            )
        if owner is not None and share is not None:
            # A party with nothing queued may always queue one request that fits the
            # inbox: otherwise a request above its share could never be taken.
            owed = self._owed.get(owner, 0)
            if owed and owed + len(txs) > share:
                raise Busy(
                    f"this party's share of the inbox is full ({owed} of {share} transactions"
                    " queued); retry after the next block"
                )
        key = (route, txs[0].raw) if priority == Priority.PEER and len(txs) == 1 else None
        self._inbox.append(_Pending(route, txs, future, size, priority, 0, owner, key))
        self._inbox_txs += len(txs)
        if owner is not None:
            self._owed[owner] = self._owed.get(owner, 0) + len(txs)
        if key is not None:
            self._queued[key] = self._queued.get(key, 0) + 1
        if len(route) == 2:
            # Every signed consensus message for a replica passes here, whoever sent it:
            # two of one member's for different frames at one height and round are kept.
            self.evidence.observe_inputs(route[1], txs, lambda: self._config_of(route))

    def _config_of(self, route: tuple[bytes, ...]) -> Config | None:
        replica = self.state.replica(route[0], route[1])
        return None if replica is None else replica.entity.config

    def check_route(self, route: tuple[bytes, ...]) -> None:
        _check_route(self.state, route)

    def is_queued(self, route: tuple[bytes, ...], tx: Tx) -> bool:
        """True if a peer's input of these very bytes waits in the inbox for ``route``:
        a duplicate would be applied in the same block or after it, and change nothing."""
        return (route, tx.raw) in self._queued

    def _dequeued(self, pending: _Pending) -> None:
        if pending.owner is not None:
            left = self._owed.get(pending.owner, 0) - len(pending.txs)
            if left > 0:
                self._owed[pending.owner] = left
            else:
                self._owed.pop(pending.owner, None)
        if pending.key is not None:
            n = self._queued.get(pending.key, 0) - 1
            if n > 0:
                self._queued[pending.key] = n
            else:
                self._queued.pop(pending.key, None)

    def status(self) -> Status:
        s = self.state
        return Status(s.height, s.head, s.hash(), s.counter, s.timestamp)

    def read_state(self, route: tuple[bytes, ...], state: ServerState | None = None) -> bytes:
        """The RLP state of the machine at ``route``: the server, a signer, or a replica
        (NotFound for a replica too large to read whole), in ``state`` (default: the
        current one; another thread passes the state it read on the loop)."""
        state = self.state if state is None else state
        _check_route(state, route)
        if not route:
            return state.readable()  # its state, then its signers' ids (bounded)
        signer = state.by_id[route[0]]
        if len(route) == 1:
            return signer.readable()  # its state, then its replicas' ids (bounded)
        return _whole(signer.by_entity[route[1]])

    def read_entity(self, route: tuple[bytes, ...], at: bytes) -> tuple[Genesis, EntityState]:
        """A replica's agreed entity state: the current one (``at`` empty), or one of
        its last :data:`RECENT_STATES` by state hash (NotFound if it is older)."""
        self.check_route(route)
        if len(route) != 2:
            raise UnknownRoute("entity reads take the route [signer, entity]")
        replica = self.state.by_id[route[0]].by_entity[route[1]]
        state = replica.entity
        if at and at != state.hash:
            ring = self._recent.get((route[0], route[1]))
            old = None if ring is None else ring.get(at)
            if old is None:
                raise NotFound(
                    f"state {at.hex()[:16]} of that entity is not among the last "
                    f"{RECENT_STATES} this node keeps: read the current one"
                )
            state = old
        return replica.genesis, state

    def _keep_recent(self, step: Step) -> None:
        """Keep, by hash, every agreed state the block's committed frames made (a block
        may commit several frames of one replica: a signer that checks each frame on
        the state before it reads each of them), and a new replica's first state."""
        for effect in step.effects:
            if effect.entity is not None and isinstance(effect.what, Committed):
                self._keep_state(effect.signer, effect.entity, effect.what.state)
        for write in step.changed:
            if len(write.route) == 2:
                replica = self.state.replica(*write.route)
                if replica is not None:
                    self._keep_state(*write.route, replica.entity)

    def _keep_state(self, signer: bytes, entity: bytes, state: EntityState) -> None:
        ring = self._recent.setdefault((signer, entity), OrderedDict())
        ring[state.hash] = state
        while len(ring) > RECENT_STATES:
            ring.popitem(last=False)

    def read_tree(self, state: ServerState | None = None) -> list[tuple[tuple[bytes, ...], bytes]]:
        """Every signer's and replica's state in ``state`` (default: the current one), so
        at one instant (between blocks)."""
        out: list[tuple[tuple[bytes, ...], bytes]] = []
        for signer in (self.state if state is None else state).signers:
            out.append(((signer.id,), signer.encoded))
            out.extend(((signer.id, r.entity_id), _whole(r)) for r in signer.replicas)
        return out

    def blocks(self, start_height: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Raw blocks from ``start_height`` on: at most ``max_count``, and no more than
        ``max_bytes`` in all unless the first block alone is larger. Safe on any thread."""
        out: list[bytes] = []
        size = 0
        for raw in self.store.blocks(start_height):
            if out and size + len(raw) > max_bytes:
                break
            out.append(raw)
            size += len(raw)
            if len(out) >= max_count:
                break
        return out

    def subscribe(self, route: tuple[bytes, ...] | None) -> Subscription:
        if route is not None:
            self.check_route(route)
        sub = Subscription(route)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    @property
    def inbox_size(self) -> int:
        return self._inbox_txs

    # The loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; then flush the inbox in a last block and return.

        Ticks are scheduled against the loop's monotonic clock (start + n*tick),
        so sleeping never accumulates drift. A tick that starts more than a whole
        period late skips the missed ones rather than bursting.

        Between ticks, :meth:`expedite` makes an early block (consensus inputs:
        each hop of an entity frame would otherwise wait for the next tick).
        Tick hooks run only on ticks; the schedule of ticks does not move.
        """
        loop = asyncio.get_running_loop()
        period = self.config.tick_ms / 1000
        start = loop.time()
        n = 0
        try:
            while not stop.is_set():
                n += 1
                deadline = start + n * period
                while await _woken_early(self._expedite, stop, deadline - loop.time()):
                    self._expedite.clear()
                    await self.produce_block(allow_empty=False)
                if stop.is_set():
                    break
                late = loop.time() - deadline
                self.metrics.tick_lateness_us.append(int(late * 1e6))
                if late >= period:
                    n += int(late // period)
                for hook in self.tick_hooks:
                    hook()
                await self.produce_block()
        except BaseException:
            self._stopping = True
            self._fail_inbox("the node stopped before this was in a block; not applied")
            raise
        self._stopping = True
        while self._inbox:
            await self.produce_block(allow_empty=False)

    async def produce_block(self, allow_empty: bool | None = None) -> Step | None:
        """One tick's work. An empty inbox makes a block only if ``allow_empty``
        (by default, the node's ``empty_blocks`` setting)."""
        if allow_empty is None:
            allow_empty = self.config.empty_blocks
        batch = self._take_batch()
        if not batch and not allow_empty:
            return None
        batch.sort(key=lambda p: p.priority)  # stable: arrival order within a priority
        mempool, tx_count = _build_mempool(batch)
        timestamp = max(self._clock_ms(), self.state.timestamp)
        step = apply_block(self.state, mempool, timestamp, outcomes=self.outcomes)
        started = time.perf_counter()
        cancelled = await self._write(step, batch)
        self.metrics.write_us.append(int((time.perf_counter() - started) * 1e6))
        self.metrics.blocks += 1
        self.metrics.txs += tx_count
        log.debug(
            "block %d: %d txs, %.2f ms",
            step.block.height,
            tx_count,
            (time.perf_counter() - started) * 1000,
        )
        self.state, self.head_block = step.state, step.block
        self._keep_recent(step)
        self._acknowledge(batch, step.block, step.receipts)
        self._publish(step, tx_count, batch)
        for hook in self.durable_hooks:
            try:
                hook(step)
            except Exception:
                log.exception("effect hook failed after block %d", step.block.height)
        if cancelled:
            raise asyncio.CancelledError
        return step

    async def _write(self, step: Step, batch: list[_Pending]) -> bool:
        """Write the block on the writer thread; True if we were cancelled meanwhile.

        A write that has started runs to its end even if this task is cancelled,
        and its outcome alone decides what the submitters hear: a block that
        reached the disk is acknowledged, one that failed is not.
        """
        write = asyncio.get_running_loop().run_in_executor(
            self._writer, self.store.write_block, step
        )
        cancelled = False
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:
                break  # the write failed; handled below
        exc = write.exception()
        if exc is not None:
            # Not durable: nothing in it may be acknowledged, and the in-memory
            # state must not move. Storage failure is fatal for the node.
            log.critical("block %d could not be written: %r", step.block.height, exc)
            for pending in batch:
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(ShuttingDown("storage failure; not applied"))
            raise exc
        return cancelled

    def _fail_inbox(self, reason: str) -> None:
        while self._inbox:
            pending = self._inbox.popleft()
            self._dequeued(pending)
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(ShuttingDown(reason))
        self._inbox_txs = 0

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        room, room_bytes = self.config.max_block_txs, MAX_BLOCK_TX_BYTES
        while self._inbox and len(self._inbox[0].txs) <= room and self._inbox[0].size <= room_bytes:
            pending = self._inbox.popleft()
            self._dequeued(pending)
            room -= len(pending.txs)
            room_bytes -= pending.size
            self._inbox_txs -= len(pending.txs)
            batch.append(pending)
        return batch

    def _acknowledge(
        self, batch: list[_Pending], block: Block, receipts: tuple[Receipt, ...]
    ) -> None:
        by_route: dict[tuple[bytes, ...], dict[int, Receipt]] = {}
        for r in receipts:
            by_route.setdefault(r.route, {})[r.index] = r
        for pending in batch:
            if pending.future is None or pending.future.done():
                continue
            errors = by_route.get(pending.route, {})
            mine = tuple(
                errors.get(i, Receipt(pending.route, i))
                for i in range(pending.first_index, pending.first_index + len(pending.txs))
            )
            pending.future.set_result(Ack(block.height, block.hash, mine))

    def _publish(self, step: Step, tx_count: int, batch: list[_Pending]) -> None:
        if not self._subscriptions:
            return
        block = step.block
        block_event = BlockEvent(
            block.height, block.hash, block.state_hash, block.timestamp, tx_count
        )
        committed: dict[tuple[bytes, ...], list[int]] = {}
        for pending in batch:
            indexes = committed.setdefault(pending.route, [])
            indexes.extend(range(pending.first_index, pending.first_index + len(pending.txs)))
        for sub in list(self._subscriptions):
            if sub.route is None:
                self._deliver(sub, block_event)
            elif sub.route in committed:
                event = CommitEvent(
                    sub.route, block.height, block.hash, tuple(committed[sub.route])
                )
                self._deliver(sub, event)
        for effect in step.effects:
            what = effect.what
            if effect.entity is None or not isinstance(what, Committed):
                continue
            route = (effect.signer, effect.entity)
            frame_event = FrameEvent(
                route,
                what.frame.height,
                what.frame.hash,
                what.cert,
                tuple(keccak(b.raw) for b in what.frame.batches),
            )
            for sub in list(self._subscriptions):
                if sub.route == route:
                    self._deliver(sub, frame_event)

    def _deliver(self, sub: Subscription, event: Event) -> None:
        try:
            sub.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._subscriptions.discard(sub)
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.store.close()


def _log_write_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("evidence could not be written: %r", exc)


def _route_text(route: tuple[bytes, ...]) -> str:
    return "/".join(r.hex()[:12] for r in route) or "server"


def _build_mempool(batch: list[_Pending]) -> tuple[Mempool, int]:
    """The block's hierarchical mempool; sets each submission's index in its route."""
    tree: dict[tuple[bytes, ...], list[Tx]] = {}
    count = 0
    for pending in batch:
        txs = tree.setdefault(pending.route, [])
        pending.first_index = len(txs)
        txs.extend(pending.txs)
        count += len(pending.txs)
    return _subtree((), tree), count


def _subtree(route: tuple[bytes, ...], tree: dict[tuple[bytes, ...], list[Tx]]) -> Mempool:
    depth = len(route)
    children = sorted({r[depth] for r in tree if len(r) > depth and r[:depth] == route})
    return Mempool.build(
        children, [_subtree((*route, c), tree) for c in children], tree.get(route, ())
    )
