"""``xln-node``: run a node, inspect and verify its chain, manage API tokens,
make signer keys, run an agent, and run a multi-process simulation.

The data folder holds ``chain/`` (LevelDB), ``tokens.json``, the node's
encrypted identity key ``identity.json`` (only with peers) and, while a node
runs, the control socket ``node.sock``. LevelDB admits one process, so
``inspect`` and ``verify`` ask the running node over the control socket when
it holds the store; ``token`` only touches ``tokens.json`` and works either way.
Signers' keys never go in the data folder: they live with their agents.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from node import __version__, collector
from node import identity as node_identity
from node.agent import Agent
from node.block import Block
from node.chain_verify import ChainInvalid, Replayer, VerifyReport, verify_chain
from node.codec import ZERO_HASH, DecodeError, as_int, as_list, decode, keccak
from node.coordinator import DEFAULT_RESEND_MS, DEFAULT_ROUND_TIMEOUT_MS, Coordinator, LocalAgent
from node.crypto import bls, keystore
from node.crypto.keystore import KeystoreError
from node.entity_reads import CHANNELS
from node.errors import Refused
from node.machines.accounts import ChannelRecord
from node.machines.governance import signer_id
from node.machines.server import Increment
from node.merkle_store import DEFAULT_CACHE_BYTES
from node.net import limits
from node.net.agent_client import AgentRejected, AgentStats, serve_agent
from node.net.client import KEEPALIVE_S, NodeClient, NodeError
from node.net.entity_client import EntityReader
from node.net.peers import PeerNetwork
from node.net.protocol import MAX_BLOCKS_PER_PAGE
from node.net.server import ApiServer
from node.net.tls import ClientTrust, TlsConfigError, is_loopback, server_context, split_pin
from node.runtime import DEFAULT_TICK_MS, Node, NodeConfig
from node.sim import add_sim_parser, run_sim
from node.state_view import (
    LISTED,
    describe,
    describe_entity,
    describe_evidence,
    describe_server,
    describe_signer,
)
from node.storage import Store, StoreError, StoreLocked
from node.tokens import Scope, ScopeError, TokenStore
from node.txs import Tx

log = logging.getLogger("xln-node")

CHAIN_DIR = "chain"
CONTROL_SOCKET = "node.sock"
DEMO_INCREMENT_EVERY_S = 0.1
SWITCH_INTERVAL_S = 0.001  # how long a thread holds the GIL before others may take it
FIND_PAUSE_MAX_S = 60.0  # a restored agent asks its node to find its entities again


def _data(path: str) -> Path:
    data = Path(path).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    return data


# run ------------------------------------------------------------------------


def listen_refusal(host: str, tls: bool, insecure_plain: bool) -> str | None:
    """Why the node must not listen on ``host`` as asked, or None: beyond loopback it
    serves TLS, unless the operator said ``--insecure-plain-listen``."""
    if tls or insecure_plain or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host or 'every interface'} without TLS: give --tls-cert and "
        "--tls-key (docs/OPERATIONS.md says how to get them), listen on 127.0.0.1, or, "
        "behind a TLS-terminating proxy on a private network, say --insecure-plain-listen"
    )


def _tls_setup(args: argparse.Namespace) -> tuple[ssl.SSLContext | None, ClientTrust]:
    """The server's TLS context (None: plain ws://) and how peers are trusted; raises
    TlsConfigError with what to fix."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise TlsConfigError("--tls-cert and --tls-key go together: give both, or neither")
    context = None
    if args.tls_cert:
        context = server_context(Path(args.tls_cert).expanduser(), Path(args.tls_key).expanduser())
    refusal = listen_refusal(args.host, context is not None, args.insecure_plain_listen)
    if refusal is not None:
        raise TlsConfigError(refusal)
    trust = _client_trust(args.peer_ca)
    for url in args.peer:
        bare, _ = split_pin(url)
        if bare.startswith("ws://") and not is_loopback(urlsplit(bare).hostname):
            log.warning(
                "peer %s is plain ws://: its traffic is neither encrypted nor authenticated by "
                "TLS; use wss:// between machines",
                url,
            )
    if trust.ca_file is not None:
        trust.context()  # a missing or unreadable CA file is said now, not at each connect
    return context, trust


def _client_trust(ca_file: str | None) -> ClientTrust:
    return ClientTrust(ca_file=Path(ca_file).expanduser() if ca_file else None)


async def run_node(args: argparse.Namespace) -> int:
    try:
        tls_context, peer_trust = _tls_setup(args)
    except TlsConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = _data(args.data)
    try:
        store = Store(data / CHAIN_DIR, cache_bytes=args.cache_mb << 20)
    except StoreLocked:
        print(f"error: a node is already running on {data}", file=sys.stderr)
        return 1
    node = Node(
        store,
        NodeConfig(
            tick_ms=args.tick_ms,
            empty_blocks=args.empty_blocks,
            inbox_cap=args.inbox_cap,
            simulation=args.faucet_chain,
        ),
    )
    if args.faucet_chain and not node.state.simulation:
        log.warning("--faucet-chain is ignored: this chain was started without it")
    tokens = TokenStore(data)
    peers = None
    identity = None
    password = _read_secret(args.identity_password_file, "XLN_NODE_PASSWORD")
    if args.peer and password is None:
        print(
            "error: peers need the node identity key; give --identity-password-file "
            "or set XLN_NODE_PASSWORD",
            file=sys.stderr,
        )
        node.close()
        return 2
    if password is not None:
        # Also without --peer: a peer's HELLO names the server it is for by this key's id.
        identity = node_identity.load_or_create(data, password)
    if args.peer:
        assert identity is not None
        peers = PeerNetwork(args.peer, identity, trust=peer_trust)
    coordinator = Coordinator(
        node,
        peers,
        round_timeout_ms=args.round_timeout_ms,
        resend_ms=args.resend_ms,
        identity=identity,
    )
    agents = _builtin_agents(args)
    for agent in agents:
        coordinator.agents[agent.signer_id] = LocalAgent(agent)
        coordinator.agent_connected(agent.signer_id)  # its binding of this server
    api = ApiServer(
        node,
        tokens,
        node_id=ZERO_HASH,
        coordinator=coordinator,
        receiver_id=identity.id if identity is not None else None,
        max_connections=args.max_connections,
    )
    node.tick_hooks.append(api.refresh_tokens)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Imports leave ~40k long-lived objects that every full collection would walk
    # (~30 ms here, a stall of the tick loop). None of them is garbage.
    collector.freeze_startup()
    # The block writer thread needs the GIL for its Python steps; while the loop
    # decodes a flood's slices it would wait up to the 5 ms default per hand-off.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        port = await api.listen_tcp(args.host, args.port, ssl=tls_context)
        if hasattr(socket, "AF_UNIX"):
            await api.listen_unix(data / CONTROL_SOCKET)
        else:
            log.warning("no Unix sockets here: inspect and verify need the node stopped")
        scheme = "wss" if tls_context is not None else "ws"
        print(f"xln-node {__version__} listening on {scheme}://{args.host}:{port}", flush=True)
        print(f"height {node.state.height}, head {node.state.head.hex()}", flush=True)
        if peers is not None:
            peers.start()
        tasks = [asyncio.create_task(node.run(stop))]
        if args.demo_increments:
            tasks.append(asyncio.create_task(_demo_increments(node, stop)))
        await asyncio.gather(*tasks)
    finally:
        await coordinator.close()
        if peers is not None:
            await peers.close()
        await api.close()
        for agent in agents:
            agent.close()
        (data / CONTROL_SOCKET).unlink(missing_ok=True)
        node.close()
    print(f"stopped cleanly at height {node.state.height}", flush=True)
    return 0


def _read_secret(path: str | None, env: str) -> str | None:
    if path:
        return Path(path).read_text(encoding="utf-8").rstrip("\n")
    return os.environ.get(env)


def _builtin_agents(args: argparse.Namespace) -> list[Agent]:
    """Agents in this process for ``--agent KEYSTORE`` (tests, simulation, headless hubs)."""
    if not args.agent:
        return []
    password = _read_secret(args.agent_password_file, "XLN_AGENT_PASSWORD")
    if password is None or not args.agent_guard:
        raise SystemExit("error: --agent needs --agent-password-file and --agent-guard")
    guard = Path(args.agent_guard).expanduser().resolve()
    if guard.is_relative_to(Path(args.data).expanduser().resolve()):
        raise SystemExit("error: the agent's guard folder must be outside the node's data")
    return [Agent.from_keystore(Path(path), password, guard) for path in args.agent]


async def _demo_increments(node: Node, stop: asyncio.Event) -> None:
    """Demo traffic (``--demo-increments``): one server increment every 100 ms, drift-free."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while not stop.is_set():
        n += 1
        await asyncio.sleep(max(0.0, start + n * DEMO_INCREMENT_EVERY_S - loop.time()))
        if stop.is_set():
            return
        with contextlib.suppress(Refused):
            node.submit((), [Tx.of(Increment(1))])


# inspect / verify ------------------------------------------------------------


@contextlib.asynccontextmanager
async def _running_node(data: Path, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[NodeClient]:
    sock = data / CONTROL_SOCKET
    try:
        client = await NodeClient.connect(
            unix_path=sock,
            sender_id=b"xln-node-cli",
            ping_interval=keepalive_s,
            ping_timeout=keepalive_s,
        )
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
            info = {**describe(state), "source": "store"}
            info["evidence"] = [describe_evidence(e) for _, e in store.evidence()]
            note = store.synthetic()
            if note is not None:
                info["synthetic"] = note
    except StoreLocked:
        info = asyncio.run(_inspect_running(data))
    if args.json:
        print(json.dumps(info))
    else:
        _print_info(info)
    return 0


def _print_info(info: dict[str, Any]) -> None:
    for key, value in info.items():
        if key not in ("signers", "evidence"):
            print(f"{key:>11}  {value}")
    for s in info["signers"]:
        print(f"signer {s['id']}  counter {s['counter']}")
        for e in s["entities"]:
            members = ", ".join(f"{m['id'][:12]}:{m['shares']}" for m in e["members"])
            print(f"  entity {e['id']}")
            print(f"    height {e['height']}  counter {e['counter']}")
            print(f"    members {members}  threshold {e['threshold']}")
            print(f"    proposer {e['proposer'][:12]}")
            if "round" in e:  # read from the store: this replica's consensus state
                print(
                    f"    round {e['round']}  pool {e['pool']}  channels {e['channel_count']}  "
                    f"forwards in flight {e['forwards_in_flight']}"
                )
            else:  # read from a running node, in parts
                more = " and more" if e["more_channels"] else ""
                print(f"    channels {len(e['channels'])}{more}")
            for p in e["proposals"]:
                print(
                    f"    proposal {p['id']} {p['action']} expires at {p['expires_at']}: "
                    f"{len(p['votes'])} votes, {p['shares']} shares"
                )
            cert = e["last_certificate"]
            if cert is not None:
                print(
                    f"    last certificate: round {cert['round']} bits {cert['bitfield']} "
                    f"sig {cert['signature'][:24]}..."
                )
    evidence = info.get("evidence", [])
    print(f"{'evidence':>11}  {len(evidence)} equivocation{'' if len(evidence) == 1 else 's'}")
    for ev in evidence:
        print(
            f"  entity {ev['entity']}: member {ev['member']} pre-committed two frames at "
            f"height {ev['height']} round {ev['round']}: {ev['frames'][0]} and {ev['frames'][1]}"
        )


async def _inspect_running(data: Path) -> dict[str, Any]:
    async with _running_node(data) as client:
        info = await describe_running(client)
    return {**info, "source": "running node"}


async def describe_running(client: NodeClient) -> dict[str, Any]:
    """What ``inspect`` shows, read from a running node in bounded parts: the server's
    and each signer's lists, and each entity's certified header and first channels
    (``READ_ENTITY``, proven), never a whole replica. A replica's own consensus state
    (round, pool, frame in flight, inbox) is not read: ``inspect`` on the stopped
    node's store shows it."""
    encoded, signer_refs = await client.server_listing()
    top = as_list(decode(encoded), "server state", size=6)
    height = as_int(top[1], "height")
    state_hash = keccak(encoded)
    head = ZERO_HASH
    if height:
        page = await client.blocks(height, 1)
        block = Block.decode(page[0]) if page else None
        if block is None or block.state_hash != state_hash:
            raise DecodeError(f"the node's block {height} does not hold the state it sent")
        head = block.hash
    reader = EntityReader(lambda: client)
    signers = []
    evidence: dict[bytes, list[dict[str, Any]]] = {}  # per entity, read once
    for signer, _ in signer_refs:
        pubkey, counter, refs = await client.signer_listing(signer)
        entities = []
        for entity, _ in refs:
            if entity not in evidence:
                _, records = await reader.evidence(signer, entity)
                evidence[entity] = [describe_evidence(e) for e in records]
            header = await reader.header(signer, entity)
            _, first = await reader.page(signer, entity, CHANNELS, limit=LISTED, at=header.hash)
            view = describe_entity(
                header.small,
                header.hash,
                reader.frame_hash(header.hash),
                reader.certificate(header.hash),
                [r for _, r in first.records if isinstance(r, ChannelRecord)],
            )
            entities.append({**view, "more_channels": not first.last})
        signers.append(describe_signer(signer, pubkey, counter, entities))
    server = describe_server(
        height, head, state_hash, as_int(top[3], "counter"), as_int(top[2], "timestamp")
    )
    return {**server, "signers": signers, "evidence": [e for v in evidence.values() for e in v]}


def cmd_verify(args: argparse.Namespace) -> int:
    data = _data(args.data)
    started = time.perf_counter()
    try:
        with Store(data / CHAIN_DIR) as store:
            note = store.synthetic()
            if note is not None:
                print(
                    f"error: {data} holds a synthetic store ({note}): its state was written "
                    "directly, not made by its blocks, so its chain cannot be verified",
                    file=sys.stderr,
                )
                return 1
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


def replay_page(replayer: Replayer, page: Sequence[bytes]) -> None:
    """Replay one page of raw blocks, in order."""
    for raw in page:
        replayer.push(raw)


async def _verify_running(
    data: Path,
    *,
    page_blocks: int = MAX_BLOCKS_PER_PAGE,
    keepalive_s: float = KEEPALIVE_S,
    replay: Callable[[Replayer, Sequence[bytes]], None] = replay_page,
) -> VerifyReport:
    """Verify up to the node's head at the time of asking, fetching pages of blocks.

    Each page is replayed in a worker thread, so the event loop keeps answering the
    connection's keepalive pings however long a page takes (a page of big blocks
    can take minutes), and fetches the next page meanwhile. One line of progress
    on stderr per page.
    """
    async with _running_node(data, keepalive_s) as client:
        status = await client.status()
        print(f"verifying {status.height} blocks through the running node", file=sys.stderr)
        progress = _Progress(status.height)
        replayer = Replayer()

        def fetch(start: int) -> asyncio.Task[list[bytes]]:
            count = min(page_blocks, status.height - start + 1)
            return asyncio.create_task(client.blocks(start, count))

        start = 1
        next_page = fetch(start) if status.height else None
        try:
            while next_page is not None:
                page = await next_page
                if not page:
                    raise ChainInvalid(f"the node has no block {start}")
                start += len(page)
                next_page = fetch(start) if start <= status.height else None
                await asyncio.to_thread(replay, replayer, page)
                progress(replayer.state.height)
            replayer.finish((status.height, status.head))
        except ChainInvalid as exc:
            return VerifyReport(replayer.state.height, replayer.state, str(exc))
        finally:
            if next_page is not None:
                next_page.cancel()
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


# key / agent ------------------------------------------------------------------------


def cmd_key(args: argparse.Namespace) -> int:
    password = _read_secret(args.password_file, "XLN_AGENT_PASSWORD")
    if password is None:
        print("error: give --password-file or set XLN_AGENT_PASSWORD", file=sys.stderr)
        return 2
    path = Path(args.keystore)
    if args.key_cmd == "create":
        if path.exists():
            print(f"error: {path} exists; not overwriting a key", file=sys.stderr)
            return 1
        sk = bls.keygen(secrets.token_bytes(32))
        pubkey = bls.sk_to_pk(sk)
        keystore.save(
            path,
            keystore.encrypt(sk.to_bytes(32, "big"), password, pubkey=pubkey, fast=args.fast_kdf),
        )
    else:
        sk = int.from_bytes(keystore.decrypt(keystore.load(path), password), "big")
        pubkey = bls.sk_to_pk(sk)
    info = {
        "signer_id": signer_id(pubkey).hex(),
        "pubkey": pubkey.hex(),
        "proof_of_possession": bls.pop_prove(sk).hex(),
    }
    print(json.dumps(info))
    return 0


async def run_agent(args: argparse.Namespace) -> int:
    password = _read_secret(args.password_file, "XLN_AGENT_PASSWORD")
    token = _read_secret(args.token_file, "XLN_TOKEN")
    if password is None or token is None:
        print("error: the agent needs --password-file and --token-file", file=sys.stderr)
        return 2
    agent = Agent.from_keystore(Path(args.keystore), password, Path(args.guard))
    if args.restored:
        agent.mark_restored()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"agent for signer {agent.signer_id.hex()} serving {args.node}", flush=True)
    stats = AgentStats()
    trust = _client_trust(args.ca_file)
    linked = asyncio.Event()

    def on_link(up: bool) -> None:
        if up:
            linked.set()
        else:
            linked.clear()

    finding = (
        asyncio.create_task(_find_restored(args.node, token, agent.signer_id, trust, linked, stop))
        if agent.restored
        else None
    )
    collector.freeze_startup()
    try:
        await serve_agent(args.node, token, agent, stop, stats, trust=trust, on_link=on_link)
    except AgentRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if finding is not None:
            finding.cancel()
            await asyncio.gather(finding, return_exceptions=True)
        agent.close()
        print(
            f"agent stopped: {stats.requests} APPROVE and SIGN requests, {stats.approved}"
            f" approvals, {stats.signed} pre-commits ({stats.outgoing} outgoing-message"
            f" signatures), {stats.refused} refused",
            flush=True,
        )
    return 0


async def _find_restored(
    url: str,
    token: str,
    signer: bytes,
    trust: ClientTrust,
    linked: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """A restored agent's find (FIND_ENTITIES, on a client connection of its own with
    the agent's token): once the agent is connected, and again after a pause until
    a find is complete (every peer answered; ``FindResult.complete``)."""
    pause = 1.0
    while not stop.is_set():
        await linked.wait()
        try:
            async with await NodeClient.connect(url, token=token, trust=trust) as client:
                result = await client.find_entities(signer)
        except (NodeError, ConnectionError, OSError) as exc:
            print(f"finding the signer's entities: {exc}", flush=True)
        else:
            print(f"restored: {result.summary()}", flush=True)
            if result.complete:
                return
        # Peers not answering yet: ask again later, the pause doubling up to a minute.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await stop.wait()
        pause = min(pause * 2, FIND_PAUSE_MAX_S)


# entry --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xln-node", description="XLN light node")
    parser.add_argument("--version", action="version", version=f"xln-node {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run a node")
    run.add_argument("--data", required=True, help="data folder")
    run.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); any other needs --tls-cert and "
        "--tls-key, or --insecure-plain-listen",
    )
    run.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve wss:// (TLS 1.2+) with this PEM certificate (its chain after it); "
        "needs --tls-key",
    )
    run.add_argument(
        "--tls-key", metavar="FILE", help="the PEM private key of --tls-cert (unencrypted)"
    )
    run.add_argument(
        "--insecure-plain-listen",
        action="store_true",
        help="listen on a --host other than loopback without TLS (only behind a "
        "TLS-terminating proxy on a private network); API tokens are still refused "
        "on plain connections from other machines",
    )
    run.add_argument(
        "--port", type=int, default=8765, help="port; 0 picks a free one and prints it"
    )
    run.add_argument(
        "--tick-ms", type=_positive, default=DEFAULT_TICK_MS, help="block period in ms"
    )
    run.add_argument(
        "--cache-mb",
        type=_not_negative,
        default=DEFAULT_CACHE_BYTES >> 20,
        help="memory for the stored channels and trie nodes read back (MiB, default "
        f"{DEFAULT_CACHE_BYTES >> 20}); beyond it the least recently used are dropped",
    )
    run.add_argument(
        "--empty-blocks", action="store_true", help="make a block every tick, even empty"
    )
    run.add_argument(
        "--demo-increments",
        action="store_true",
        help="demo traffic: the node submits one server increment(1) every 100 ms",
    )
    run.add_argument(
        "--faucet-chain",
        action="store_true",
        help=(
            "on a chain with no block yet: make it a chain whose server transaction faucet "
            "works (simulation), fixed for the chain's life; ignored on a chain with blocks"
        ),
    )
    run.add_argument(
        "--max-connections",
        type=_positive,
        default=limits.MAX_CONNECTIONS,
        metavar="N",
        help=(
            "TCP connections served at once; more are refused with BUSY, close 1013 "
            f"(default {limits.MAX_CONNECTIONS}; of them at most {limits.MAX_UNAUTHENTICATED} "
            "may be waiting for their HELLO)"
        ),
    )
    run.add_argument(
        "--inbox-cap",
        type=_positive,
        default=NodeConfig().inbox_cap,
        metavar="N",
        help=(
            "transactions the inbox holds before SUBMIT gets BUSY "
            f"(default {NodeConfig().inbox_cap})"
        ),
    )
    run.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="URL",
        help="a peer server (repeatable): ws://host:port on loopback, wss://host:port "
        "(certificate checked against the CAs) or wss://host:port#sha256=<fingerprint> "
        "(certificate pinned)",
    )
    run.add_argument(
        "--peer-ca",
        metavar="FILE",
        help="PEM CA certificates that wss:// peers without a pinned fingerprint are "
        "verified against (default: the system's CAs)",
    )
    run.add_argument(
        "--identity-password-file",
        help=(
            "password of the node identity key (needed with --peer; without --peer it "
            "still names this server in the challenges it gives peers; or XLN_NODE_PASSWORD)"
        ),
    )
    run.add_argument(
        "--round-timeout-ms",
        type=_positive,
        default=DEFAULT_ROUND_TIMEOUT_MS,
        help="silence after which an entity's height moves to the next round",
    )
    run.add_argument(
        "--resend-ms",
        type=_positive,
        default=DEFAULT_RESEND_MS,
        help="how long a channel frame waits for its ack before it is sent again",
    )
    run.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="KEYSTORE",
        help="built-in agent: a signer's EIP-2335 keystore (repeatable)",
    )
    run.add_argument("--agent-password-file", help="keystore password (or XLN_AGENT_PASSWORD)")
    run.add_argument("--agent-guard", help="the built-in agents' double-sign records folder")

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

    key = sub.add_parser("key", help="signer keys in EIP-2335 keystores (for agents)")
    key_sub = key.add_subparsers(dest="key_cmd", required=True)
    for name, text in (("create", "make a new key"), ("show", "show id, key and proof")):
        k = key_sub.add_parser(name, help=text)
        k.add_argument("--keystore", required=True, help="keystore file (never in a data folder)")
        k.add_argument("--password-file", help="keystore password (or XLN_AGENT_PASSWORD)")
        if name == "create":
            k.add_argument(
                "--fast-kdf",
                action="store_true",
                help="a weak KDF for tests and simulation only",
            )

    agent = sub.add_parser("agent", help="run a signer's agent against its node")
    agent.add_argument(
        "--node",
        required=True,
        help="the node's URL: ws:// on loopback, wss://host:port, or "
        "wss://host:port#sha256=<fingerprint> to pin its certificate",
    )
    agent.add_argument(
        "--ca-file",
        metavar="FILE",
        help="PEM CA certificates a wss:// node is verified against (default: the "
        "system's CAs; not used with a pinned fingerprint)",
    )
    agent.add_argument("--token-file", help="a token reaching the signer (or XLN_TOKEN)")
    agent.add_argument("--keystore", required=True)
    agent.add_argument("--password-file", help="keystore password (or XLN_AGENT_PASSWORD)")
    agent.add_argument("--guard", required=True, help="folder for the double-sign records")
    agent.add_argument(
        "--restored",
        action="store_true",
        help="the guard was lost (a restore): sign for an entity only above the height "
        "its peers show in flight; once connected, ask the node to find the signer's "
        "entities (FIND_ENTITIES) until every peer has answered",
    )

    add_sim_parser(sub)
    return parser


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


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
    logging.getLogger("websockets").setLevel(logging.WARNING)
    collector.tune()
    try:
        if args.cmd == "run":
            return asyncio.run(run_node(args))
        if args.cmd == "inspect":
            return cmd_inspect(args)
        if args.cmd == "verify":
            return cmd_verify(args)
        if args.cmd == "key":
            return cmd_key(args)
        if args.cmd == "agent":
            return asyncio.run(run_agent(args))
        if args.cmd == "sim":
            return asyncio.run(run_sim(args))
        return cmd_token(args)
    except KeystoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
