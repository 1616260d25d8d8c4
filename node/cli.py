"""``xln-node``: run a node, inspect and verify its chain, manage API tokens.

The data folder holds ``chain/`` (LevelDB), ``tokens.json`` and, while a node
runs, the control socket ``node.sock``. LevelDB admits one process, so
``inspect`` and ``verify`` ask the running node over the control socket when
it holds the store; ``token`` only touches ``tokens.json`` and works either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from node import __version__
from node.chain_verify import ChainInvalid, Replayer, VerifyReport, verify_chain
from node.codec import ZERO_HASH
from node.errors import Refused
from node.machines.server import Increment
from node.net.client import NodeClient
from node.net.protocol import MAX_BLOCKS_PER_PAGE
from node.net.server import ApiServer
from node.runtime import DEFAULT_TICK_MS, Node, NodeConfig
from node.storage import Store, StoreError, StoreLocked
from node.tokens import Scope, ScopeError, TokenStore
from node.txs import Tx

log = logging.getLogger("xln-node")

CHAIN_DIR = "chain"
CONTROL_SOCKET = "node.sock"
SIMULATE_EVERY_S = 0.1


def _data(path: str) -> Path:
    data = Path(path).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    return data


# run ------------------------------------------------------------------------


async def run_node(args: argparse.Namespace) -> int:
    data = _data(args.data)
    try:
        store = Store(data / CHAIN_DIR)
    except StoreLocked:
        print(f"error: a node is already running on {data}", file=sys.stderr)
        return 1
    node = Node(
        store,
        NodeConfig(tick_ms=args.tick_ms, empty_blocks=args.empty_blocks, inbox_cap=args.inbox_cap),
    )
    tokens = TokenStore(data)
    api = ApiServer(node, tokens, node_id=ZERO_HASH)
    node.tick_hooks.append(api.refresh_tokens)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Imports leave ~40k long-lived objects that every full collection would walk
    # (~30 ms here, a stall of the tick loop). None of them is garbage.
    gc.collect()
    gc.freeze()
    try:
        port = await api.listen_tcp(args.host, args.port)
        if hasattr(socket, "AF_UNIX"):
            await api.listen_unix(data / CONTROL_SOCKET)
        else:
            log.warning("no Unix sockets here: inspect and verify need the node stopped")
        print(f"xln-node {__version__} listening on ws://{args.host}:{port}", flush=True)
        print(f"height {node.state.height}, head {node.state.head.hex()}", flush=True)
        tasks = [asyncio.create_task(node.run(stop))]
        if args.simulate:
            tasks.append(asyncio.create_task(_simulate(node, stop)))
        await asyncio.gather(*tasks)
    finally:
        await api.close()
        (data / CONTROL_SOCKET).unlink(missing_ok=True)
        node.close()
    print(f"stopped cleanly at height {node.state.height}", flush=True)
    return 0


async def _simulate(node: Node, stop: asyncio.Event) -> None:
    """The seed's MVP traffic: one increment every 100 ms, drift-free."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while not stop.is_set():
        n += 1
        await asyncio.sleep(max(0.0, start + n * SIMULATE_EVERY_S - loop.time()))
        if stop.is_set():
            return
        with contextlib.suppress(Refused):
            node.submit((), [Tx.of(Increment(1))])


# inspect / verify ------------------------------------------------------------


@contextlib.asynccontextmanager
async def _running_node(data: Path) -> AsyncIterator[NodeClient]:
    sock = data / CONTROL_SOCKET
    try:
        client = await NodeClient.connect(unix_path=sock, sender_id=b"xln-node-cli")
    except OSError as exc:
        raise StoreLocked(
            f"{data} is locked by another process, and its control socket does not answer ({exc})"
        ) from exc
    try:
        yield client
    finally:
        await client.close()


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _data(args.data)
    try:
        with Store(data / CHAIN_DIR) as store:
            state, _ = store.load()
            info = {
                "height": state.height,
                "head": state.head.hex(),
                "state_hash": state.hash().hex(),
                "counter": state.counter,
                "blocks": state.height,
                "timestamp": state.timestamp,
                "source": "store",
            }
    except StoreLocked:
        info = asyncio.run(_inspect_running(data))
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>11}  {value}")
    return 0


async def _inspect_running(data: Path) -> dict[str, object]:
    async with _running_node(data) as client:
        s = await client.status()
    return {
        "height": s.height,
        "head": s.head.hex(),
        "state_hash": s.state_hash.hex(),
        "counter": s.counter,
        "blocks": s.height,
        "timestamp": s.timestamp,
        "source": "running node",
    }


def cmd_verify(args: argparse.Namespace) -> int:
    data = _data(args.data)
    started = time.perf_counter()
    try:
        with Store(data / CHAIN_DIR) as store:
            state, _ = store.load()
            print(f"verifying {state.height} blocks in {data}", file=sys.stderr)
            report = verify_chain(
                store.blocks(),
                expected_head=(state.height, state.head),
                progress=_Progress(state.height),
            )
    except StoreLocked:
        report = asyncio.run(_verify_running(data))
    elapsed = time.perf_counter() - started
    if report.ok:
        rate = report.blocks / elapsed if elapsed > 0 else 0.0
        print(
            f"ok: {report.blocks} blocks verified in {elapsed:.2f} s ({rate:,.0f} blocks/s); "
            f"head {report.state.head.hex()}"
        )
        return 0
    print(f"FAILED after {report.blocks} good blocks: {report.error}")
    return 2


class _Progress:
    def __init__(self, total: int) -> None:
        self.total = max(total, 1)

    def __call__(self, done: int) -> None:
        print(f"  {done}/{self.total} blocks ({100 * done / self.total:.0f}%)", file=sys.stderr)


async def _verify_running(data: Path) -> VerifyReport:
    """Verify up to the node's head at the time of asking, fetching pages of blocks."""
    async with _running_node(data) as client:
        status = await client.status()
        print(f"verifying {status.height} blocks through the running node", file=sys.stderr)
        progress = _Progress(status.height)
        replayer = Replayer()
        try:
            while replayer.state.height < status.height:
                start = replayer.state.height + 1
                page = await client.blocks(
                    start, min(MAX_BLOCKS_PER_PAGE, status.height - start + 1)
                )
                if not page:
                    raise ChainInvalid(f"the node has no block {start}")
                for raw in page:
                    replayer.push(raw)
                    if replayer.state.height % 10_000 == 0:
                        progress(replayer.state.height)
            replayer.finish((status.height, status.head))
        except ChainInvalid as exc:
            return VerifyReport(replayer.state.height, replayer.state, str(exc))
    progress(replayer.state.height)
    return VerifyReport(replayer.state.height, replayer.state)


# token ------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    tokens = TokenStore(_data(args.data))
    if args.token_cmd == "create":  # noqa: S105 (a subcommand name)
        try:
            scope = Scope.parse(args.scope)
        except ScopeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        token, record = tokens.create(scope, args.label)
        print(token)
        print(
            f"token {record.id} ({record.scope}) created; it is shown only once",
            file=sys.stderr,
        )
        return 0
    if args.token_cmd == "list":  # noqa: S105 (a subcommand name)
        records = tokens.records()
        if args.json:
            print(
                json.dumps(
                    [
                        {k: getattr(r, k) for k in ("id", "scope", "created", "label")}
                        for r in records
                    ]
                )
            )
        else:
            for r in records:
                print(f"{r.id}  {r.scope:<8}  {r.created}  {r.label}")
        return 0
    if tokens.revoke(args.id):
        print(f"token {args.id} revoked")
        return 0
    print(f"error: no token {args.id}", file=sys.stderr)
    return 1


# entry --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xln-node", description="XLN light node")
    parser.add_argument("--version", action="version", version=f"xln-node {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run a node")
    run.add_argument("--data", required=True, help="data folder")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument(
        "--port", type=int, default=8765, help="port; 0 picks a free one and prints it"
    )
    run.add_argument(
        "--tick-ms", type=_positive, default=DEFAULT_TICK_MS, help="block period in ms"
    )
    run.add_argument(
        "--empty-blocks", action="store_true", help="make a block every tick, even empty"
    )
    run.add_argument("--simulate", action="store_true", help="inject one increment every 100 ms")
    run.add_argument(
        "--inbox-cap", type=_positive, default=NodeConfig().inbox_cap, help=argparse.SUPPRESS
    )

    inspect = sub.add_parser("inspect", help="show height, head, state hash and counter")
    inspect.add_argument("--data", required=True)
    inspect.add_argument("--json", action="store_true", help="one JSON object")

    verify = sub.add_parser("verify", help="replay the chain from genesis and check every hash")
    verify.add_argument("--data", required=True)

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_cmd", required=True)
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--data", required=True)
    create.add_argument("--scope", required=True, help="server, signer:<id> or entity:<id>")
    create.add_argument("--label", default="", help="a note to recognise it by")
    lst = token_sub.add_parser("list", help="list tokens (never their secrets)")
    lst.add_argument("--data", required=True)
    lst.add_argument("--json", action="store_true")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("--data", required=True)
    revoke.add_argument("id")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.cmd == "run":
            return asyncio.run(run_node(args))
        if args.cmd == "inspect":
            return cmd_inspect(args)
        if args.cmd == "verify":
            return cmd_verify(args)
        return cmd_token(args)
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
