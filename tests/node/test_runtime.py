"""The proposer loop's contracts: durability before acks, busy, failure, shutdown."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from node.errors import Busy, ShuttingDown, TooLarge, UnknownRoute
from node.machines.server import Increment, Step, apply_block
from node.mempool import Mempool
from node.net.protocol import Rep, Req, Sender, SenderKind, encode_request
from node.runtime import Ack, BlockEvent, CommitEvent, Node, NodeConfig
from node.storage import Store
from node.tokens import Scope, TokenStore
from node.txs import Tx
from tests.conftest import recv_reply, start_live_node, stop_live_node

DEADLINE = 10


def inc(n: int = 1) -> list[Tx]:
    return [Tx.of(Increment(n))]


class HeldStore(Store):
    """A real store whose block writes wait until the test releases them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def write_block(self, step: Step, subs: object = None) -> None:
        self.entered.set()
        assert self.release.wait(DEADLINE), "test never released the write"
        super().write_block(step)
        self.returned.set()


async def block_held_in_write(
    tmp_path: Path,
) -> tuple[HeldStore, Node, asyncio.Future[Ack], asyncio.Task[Step | None]]:
    """A node with one submission whose block is now on the writer thread, held there."""
    store = HeldStore(tmp_path / "db")
    node = Node(store, NodeConfig(tick_ms=10))
    future = node.submit((), inc(7))
    producing = asyncio.create_task(node.produce_block())
    assert await asyncio.to_thread(store.entered.wait, DEADLINE)
    return store, node, future, producing


def test_block_pages_respect_count_and_bytes(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store)
        state = node.state
        raws = []
        for i in range(5):
            step = apply_block(state, Mempool.build(txs=inc(i + 1)), i)
            store.write_block(step)
            state = step.state
            raws.append(step.block.raw)
        assert node.blocks(2, 10, 10**6) == raws[1:]
        assert node.blocks(1, 2, 10**6) == raws[:2]
        assert node.blocks(1, 10, len(raws[0]) + 1) == raws[:1]
        assert node.blocks(1, 10, 1) == raws[:1]  # one block always fits
        assert node.blocks(6, 10, 10**6) == []


async def test_no_ack_before_the_block_is_durable(tmp_path: Path) -> None:
    store, node, future, producing = await block_held_in_write(tmp_path)
    # The write is in progress on the writer thread: nothing may be acknowledged,
    # and the node's visible state has not moved.
    assert not future.done()
    assert node.state.height == 0
    store.release.set()
    ack = await asyncio.wait_for(future, DEADLINE)
    assert store.returned.is_set()
    assert (await producing) is not None
    assert ack.height == 1
    assert ack.receipts[0].index == 0
    assert ack.receipts[0].error is None
    assert store.block(ack.block_hash) is not None
    node.close()


async def test_no_receipt_leaves_the_socket_before_the_write_returns(tmp_path: Path) -> None:
    """Over a real WebSocket: while the write is held, STATUS is answered but no RECEIPTS."""
    data = tmp_path / "data"
    store = HeldStore(data / "chain")
    node = Node(store, NodeConfig(tick_ms=10))
    tokens = TokenStore(data)
    token, _ = tokens.create(Scope("server"))
    from node.net.server import ApiServer

    api = ApiServer(node, tokens, bytes(32))
    port = await api.listen_tcp("127.0.0.1", 0)
    stop = asyncio.Event()
    runner = asyncio.create_task(node.run(stop))
    sender = Sender(SenderKind.CLIENT, b"t")
    async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
        await ws.send(encode_request(Req.HELLO, 1, sender, (), [token.encode()]))
        assert (await recv_reply(ws, DEADLINE)).type is Rep.WELCOME
        await ws.send(encode_request(Req.SUBMIT, 2, sender, (), [[1, 5]]))
        assert await asyncio.to_thread(store.entered.wait, DEADLINE)
        await ws.send(encode_request(Req.STATUS, 3, sender, (), []))
        reply = await recv_reply(ws, DEADLINE)
        # Replies on one connection go out in order: had the receipt been sent, it would be first.
        assert (reply.type, reply.request_id) == (Rep.STATUS, 3)
        store.release.set()
        reply = await recv_reply(ws, DEADLINE)
        assert (reply.type, reply.request_id) == (Rep.RECEIPTS, 2)
        assert store.returned.is_set()
    stop.set()
    await asyncio.wait_for(runner, DEADLINE)
    await api.close()
    node.close()


async def test_empty_ticks_make_no_block_unless_asked(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as store:
        node = Node(store)
        assert await node.produce_block() is None
        assert node.state.height == 0
    with Store(tmp_path / "b") as store:
        node = Node(store, NodeConfig(empty_blocks=True))
        step = await node.produce_block()
        assert step is not None
        assert step.block.mempool == Mempool.empty().raw
        assert node.state.height == 1


async def test_inbox_cap_refuses_and_queues_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store, NodeConfig(inbox_cap=3))
        node.submit((), inc() * 2)
        with pytest.raises(Busy, match="inbox full"):
            node.submit((), inc() * 2)
        assert node.inbox_size == 2
        node.submit((), inc())
        step = await node.produce_block()
        assert step is not None
        assert len(Mempool.decode(step.block.mempool).txs) == 3
        assert node.inbox_size == 0


async def test_unknown_route_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store)
        with pytest.raises(UnknownRoute):
            node.submit((b"\x01" * 32,), inc())
        assert node.inbox_size == 0


async def test_submissions_are_never_split_across_blocks(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store, NodeConfig(max_block_txs=5))
        first = node.submit((), inc() * 3)
        second = node.submit((), inc() * 3)
        await node.produce_block()
        await node.produce_block()
        a, b = await first, await second
        assert (a.height, b.height) == (1, 2)
        assert [r.index for r in b.receipts] == [0, 1, 2]


async def test_failed_transaction_gets_an_error_receipt(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store)
        node.state = node.state.__class__(counter=2**64 - 3)
        future = node.submit((), [Tx.of(Increment(1)), Tx.of(Increment(5)), Tx.of(Increment(1))])
        await node.produce_block()
        ack = await future
        assert [r.error is None for r in ack.receipts] == [True, False, True]
        assert node.state.counter == 2**64 - 1


class FailingStore(Store):
    def write_block(self, step: Step, subs: object = None) -> None:
        raise OSError("No space left on device")


async def test_storage_failure_acks_nothing_and_stops(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "db")
    node = Node(store, NodeConfig(tick_ms=5))
    future = node.submit((), inc())
    with pytest.raises(OSError, match="No space"):
        await asyncio.wait_for(node.run(asyncio.Event()), DEADLINE)
    with pytest.raises(ShuttingDown):
        await future
    assert node.state.height == 0
    with pytest.raises(ShuttingDown):
        node.submit((), inc())
    node.close()


async def test_stop_flushes_the_inbox_into_a_last_block(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store, NodeConfig(tick_ms=60_000))
        stop = asyncio.Event()
        runner = asyncio.create_task(node.run(stop))
        future = node.submit((), inc(3))
        stop.set()
        await asyncio.wait_for(runner, DEADLINE)
        ack = await future
        assert ack.height == 1
        assert node.state.counter == 3
        with pytest.raises(ShuttingDown):
            node.submit((), inc())
        node._writer.shutdown()


async def test_block_and_commit_events(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store)
        blocks = node.subscribe(None)
        commits = node.subscribe(())
        node.submit((), inc() * 2)
        node.submit((), inc())
        step = await node.produce_block()
        assert step is not None
        block_event = blocks.queue.get_nowait()
        assert block_event == BlockEvent(
            1, step.block.hash, step.block.state_hash, step.block.timestamp, 3
        )
        assert commits.queue.get_nowait() == CommitEvent((), 1, step.block.hash, (0, 1, 2))
        node.unsubscribe(commits)
        node.submit((), inc())
        await node.produce_block()
        assert commits.queue.empty()
        assert not blocks.queue.empty()


async def test_a_subscriber_that_falls_behind_is_dropped(tmp_path: Path) -> None:
    from node import runtime

    with Store(tmp_path / "db") as store:
        node = Node(store)
        sub = node.subscribe(None)
        for _ in range(runtime.SUBSCRIPTION_QUEUE + 1):
            node.submit((), inc())
            await node.produce_block()
        assert sub.queue.get_nowait() is None  # the overflow marker, with the backlog cleared
        assert sub not in node._subscriptions


async def test_clock_going_back_never_breaks_the_chain(tmp_path: Path) -> None:
    times = iter([5_000, 1_000, 7_000])
    with Store(tmp_path / "db") as store:
        node = Node(store, clock_ms=lambda: next(times))
        stamps = []
        for _ in range(3):
            node.submit((), inc())
            step = await node.produce_block()
            assert step is not None
            stamps.append(step.block.timestamp)
        assert stamps == [5_000, 5_000, 7_000]


async def test_live_node_restart_keeps_everything(tmp_path: Path) -> None:
    live = await start_live_node(tmp_path / "data")
    future = live.node.submit((), inc(41))
    ack = await asyncio.wait_for(future, DEADLINE)
    head = live.node.state.head
    await stop_live_node(live)
    with Store(tmp_path / "data" / "chain") as store:
        state, block = store.load()
    assert state.counter == 41
    assert state.head == head
    assert block is not None
    assert block.hash == ack.block_hash


async def test_a_write_that_outlives_cancellation_is_still_acknowledged(tmp_path: Path) -> None:
    store, node, future, producing = await block_held_in_write(tmp_path)
    producing.cancel()
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(producing, DEADLINE)
    # The block reached the disk, so its submitter hears so, and the node moved on.
    ack = await asyncio.wait_for(future, DEADLINE)
    assert ack.height == 1
    assert node.state.height == 1
    assert store.block(ack.block_hash) is not None
    node.close()


async def test_submissions_that_can_never_fit_are_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store, NodeConfig(max_block_txs=4, inbox_cap=100))
        with pytest.raises(TooLarge, match="can never fit"):
            node.submit((), inc() * 5)
        node = Node(store, NodeConfig(max_block_txs=100, inbox_cap=3))
        with pytest.raises(TooLarge):
            node.submit((), inc() * 4)
        assert node.inbox_size == 0


async def test_stop_is_prompt_even_with_a_long_tick(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        node = Node(store, NodeConfig(tick_ms=3_600_000))
        stop = asyncio.Event()
        runner = asyncio.create_task(node.run(stop))
        node.submit((), inc())
        stop.set()
        await asyncio.wait_for(runner, DEADLINE)
        assert node.state.height == 1
        node._writer.shutdown()
