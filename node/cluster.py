"""Several real node processes on loopback, with their signers, agents and entities.

Used by ``xln-node sim``, the integration tests and the benchmarks. Each server
is an ``xln-node run`` process with its own data folder, identity key and a
server token; every server peers with every other. Signers are spread over the
servers round-robin. Their keys are EIP-2335 keystores (with the weak test KDF)
in ``<root>/keys``, outside every node's data folder; their agents are either
built into the node process (``--agent``) or separate ``xln-node agent``
processes.

The driver here also plays the signers' wallets: it signs batches with the
keys and tracks the per-signer nonces.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node import identity as node_identity
from node.codec import as_bytes, as_list, keccak
from node.crypto import bls, keystore
from node.machines import accounts
from node.machines import entity as ent
from node.machines.governance import Config, Member, signer_id
from node.machines.replica import Genesis, Replica, SubmitBatch
from node.machines.server import CreateSigner
from node.machines.signer import CreateEntity
from node.net.client import NodeClient
from node.net.protocol import Rep, Reply, Topic
from node.tokens import Scope, TokenStore
from node.txs import Tx, TxBody

PASSWORD = "xln-sim"  # noqa: S105 (keys made for a throwaway simulation)
START_TIMEOUT_S = 60.0


@dataclass
class SignerKey:
    sk: int
    index: int
    server: int

    @property
    def pubkey(self) -> bytes:
        return bls.sk_to_pk(self.sk)

    @property
    def id(self) -> bytes:
        return signer_id(self.pubkey)


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key (PEM files) and the certificate's SHA-256
    fingerprint (hex), which its peers, agents and clients pin."""

    cert: Path
    key: Path
    fingerprint: str


@dataclass
class Server:
    index: int
    data: Path
    port: int
    token: str
    proc: asyncio.subprocess.Process | None = None
    client: NodeClient | None = None
    tls: ServerTls | None = None  # serves wss:// with it

    @property
    def url(self) -> str:
        """Its URL, with the pinned fingerprint on a wss:// one (``#sha256=<hex>``)."""
        if self.tls is None:
            return f"ws://127.0.0.1:{self.port}"
        return f"wss://127.0.0.1:{self.port}#sha256={self.tls.fingerprint}"


@dataclass
class Commits:
    """When each replica saw each batch certified: batch hash -> {replica route: time}."""

    seen: dict[bytes, dict[tuple[bytes, bytes], float]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(
        self,
        root: Path,
        servers: int,
        signers: int,
        *,
        tick_ms: int = 100,
        round_timeout_ms: int = 2000,
        external_agents: bool = False,
        seed: int = 1,
        debug_logs: bool = False,
        simulation: bool = False,
        resend_ms: int | None = None,
        profile_dir: Path | None = None,
        cache_mb: int | None = None,
        tls: Sequence[ServerTls] | None = None,
    ) -> None:
        """``tls``: one certificate per server; then every server serves wss:// and
        everyone pins its certificate's fingerprint."""
        self.root = root
        self.cache_mb = cache_mb  # --cache-mb: the servers' node caches (0: none)
        self.simulation = simulation  # --faucet-chain: the faucet works
        self.resend_ms = resend_ms
        self.profile_dir = profile_dir  # servers run under cProfile, stats in server<i>.prof
        self.debug_logs = debug_logs
        self.tick_ms = tick_ms
        self.round_timeout_ms = round_timeout_ms
        self.external_agents = external_agents
        self.keys = [
            SignerKey(bls.keygen(seed.to_bytes(8, "big") + i.to_bytes(24, "big")), i, i % servers)
            for i in range(signers)
        ]
        self.servers: list[Server] = []
        for i in range(servers):
            data = root / f"server{i}"
            data.mkdir(parents=True, exist_ok=True)
            token, _ = TokenStore(data).create(Scope("server"), "cluster")
            self.servers.append(
                Server(i, data, free_port(), token, tls=tls[i] if tls is not None else None)
            )
        self.agents: dict[int, asyncio.subprocess.Process] = {}
        self.nonces: dict[tuple[bytes, bytes], int] = {}
        self.commits = Commits()
        self._watchers: list[asyncio.Task[None]] = []
        (root / "keys").mkdir(exist_ok=True)
        (root / "secret").write_text(PASSWORD)
        for key in self.keys:
            path = self.keystore(key)
            if not path.exists():
                keystore.save(
                    path,
                    keystore.encrypt(
                        key.sk.to_bytes(32, "big"), PASSWORD, pubkey=key.pubkey, fast=True
                    ),
                )
        for server in self.servers:
            node_identity.load_or_create(server.data, PASSWORD, fast_kdf=True)

    def keystore(self, key: SignerKey) -> Path:
        return self.root / "keys" / f"signer{key.index}.json"

    def key_of(self, sid: bytes) -> SignerKey:
        return next(k for k in self.keys if k.id == sid)

    def host(self, sid: bytes) -> Server:
        return self.servers[self.key_of(sid).server]

    # Processes ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.gather(*(self.start_server(s.index) for s in self.servers))
        for server in self.servers:
            server.client = await NodeClient.connect(server.url, token=server.token)
        for key in self.keys:
            await self.host_signer(key)
        if self.external_agents:
            for key in self.keys:
                await self.start_agent(key)

    def client(self, server: Server) -> NodeClient:
        assert server.client is not None, "server not connected"
        return server.client

    async def start_server(self, index: int) -> None:
        s = self.servers[index]
        peers = [arg for o in self.servers if o is not s for arg in ("--peer", o.url)]
        agents: list[str] = []
        if not self.external_agents:
            for key in self.keys:
                if key.server == index:
                    agents += ["--agent", str(self.keystore(key))]
            if agents:
                agents += [
                    "--agent-password-file",
                    str(self.root / "secret"),
                    "--agent-guard",
                    str(self.root / "guards"),
                ]
        tls = (
            ["--tls-cert", str(s.tls.cert), "--tls-key", str(s.tls.key)]
            if s.tls is not None
            else []
        )
        log = (s.data / "node.log").open("ab")
        profile = (
            ["-m", "cProfile", "-o", str(self.profile_dir / f"server{index}.prof")]
            if self.profile_dir is not None
            else []
        )
        s.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *profile,
            "-m",
            "node.cli",
            *(["-v"] if self.debug_logs else []),
            "run",
            "--data",
            str(s.data),
            "--port",
            str(s.port),
            "--tick-ms",
            str(self.tick_ms),
            "--round-timeout-ms",
            str(self.round_timeout_ms),
            "--identity-password-file",
            str(self.root / "secret"),
            *(["--faucet-chain"] if self.simulation else []),
            *(["--resend-ms", str(self.resend_ms)] if self.resend_ms else []),
            *(["--cache-mb", str(self.cache_mb)] if self.cache_mb is not None else []),
            *tls,
            *peers,
            *agents,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        log.close()
        assert s.proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                line = await s.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"server {index} exited before listening; see node.log")
                if b"listening on" in line:
                    break

    async def start_agent(
        self, key: SignerKey, *, guards: Path | None = None, restored: bool = False
    ) -> None:
        """``guards``: the guard folder (default ``<root>/guards``); ``restored``: the
        agent runs with ``--restored`` (its guard was lost)."""
        server = self.servers[key.server]
        token_file = self.root / "keys" / f"token{key.index}"
        if not token_file.exists():
            token, _ = TokenStore(server.data).create(Scope("signer", key.id), "agent")
            token_file.write_text(token)
        out = (self.root / "keys" / f"agent{key.index}.out").open("ab")
        self.agents[key.index] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node.cli",
            "agent",
            "--node",
            server.url,
            "--token-file",
            str(token_file),
            "--keystore",
            str(self.keystore(key)),
            "--password-file",
            str(self.root / "secret"),
            "--guard",
            str(guards or self.root / "guards"),
            *(["--restored"] if restored else []),
            stdout=out,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out.close()

    def agent_output(self, key: SignerKey) -> str:
        """What ``key``'s agent process printed (its counts, once it stopped)."""
        path = self.root / "keys" / f"agent{key.index}.out"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    async def kill_server(self, index: int) -> None:
        """SIGKILL: the node gets no chance to clean up."""
        s = self.servers[index]
        if s.client is not None:
            with contextlib.suppress(Exception):
                await s.client.close()
            s.client = None
        if s.proc is not None and s.proc.returncode is None:
            s.proc.send_signal(signal.SIGKILL)
            await s.proc.wait()

    async def lose_server(self, index: int) -> None:
        """SIGKILL server ``index`` and lose its data folder: the next start is a new
        node (a new identity key and token) at the same URL, hosting no signer. Its
        agents' tokens are forgotten too (they were for the lost folder)."""
        await self.kill_server(index)
        s = self.servers[index]
        shutil.rmtree(s.data)
        s.data.mkdir(parents=True)
        s.token, _ = TokenStore(s.data).create(Scope("server"), "cluster")
        node_identity.load_or_create(s.data, PASSWORD, fast_kdf=True)
        for key in self.keys:
            if key.server == index:
                (self.root / "keys" / f"token{key.index}").unlink(missing_ok=True)

    async def host_signer(self, key: SignerKey) -> None:
        """Register ``key``'s signer on its server (create_signer)."""
        client = self.client(self.servers[key.server])
        receipts = await client.submit([CreateSigner(key.pubkey, bls.pop_prove(key.sk))])
        error = receipts.receipts[0].error
        if error is not None and "already exists" not in error:
            raise RuntimeError(f"create_signer failed: {error}")

    async def restart_server(self, index: int) -> None:
        await self.start_server(index)
        s = self.servers[index]
        s.client = await NodeClient.connect(s.url, token=s.token)

    async def stop(self) -> None:
        for task in self._watchers:
            task.cancel()
        for server in self.servers:
            if server.client is not None:
                with contextlib.suppress(Exception):
                    await server.client.close()
        procs = [s.proc for s in self.servers if s.proc] + list(self.agents.values())
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    # Entities ------------------------------------------------------------------------

    async def create_entity(
        self,
        members: Sequence[SignerKey],
        shares: Sequence[int],
        threshold: int,
        *,
        proposer: int = 0,
        salt: bytes | None = None,
    ) -> bytes:
        """Create the entity through its first member's node; returns once every
        member's replica exists and is watched for commits."""
        config = Config(
            tuple(Member(k.pubkey, n) for k, n in zip(members, shares, strict=True)),
            threshold,
            members[proposer].id,
        )
        salt = salt or keccak(os.urandom(32))
        genesis = Genesis(config, salt, tuple(bls.pop_prove(k.sk) for k in members))
        first = members[0]
        client = self.client(self.servers[first.server])
        receipts = await client.submit([CreateEntity(genesis)], [first.id])
        if receipts.receipts[0].error is not None:
            raise RuntimeError(f"create_entity failed: {receipts.receipts[0].error}")
        entity_id = ent.entity_id_for(config, salt)
        for key in members:
            await self.wait_replica(key, entity_id)
            await self.watch(key, entity_id)
        return entity_id

    async def wait_replica(self, key: SignerKey, entity_id: bytes, timeout_s: float = 30) -> None:
        client = self.client(self.servers[key.server])
        deadline = time.monotonic() + timeout_s
        sub_id, queue = await client.subscribe(Topic.BLOCKS)
        try:
            while (await client.server_state()).replica(key.id, entity_id) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"replica of {key.index} never appeared")
                async with asyncio.timeout(remaining):
                    await queue.get()
        finally:
            with contextlib.suppress(Exception):
                await client.unsubscribe(sub_id)

    async def replica(self, key: SignerKey, entity_id: bytes) -> Replica | None:
        state = await self.client(self.servers[key.server]).read_state([key.id, entity_id])
        return Replica.decode(state)

    async def watch(self, key: SignerKey, entity_id: bytes) -> None:
        client = self.client(self.servers[key.server])
        _, queue = await client.subscribe(Topic.COMMITS, [key.id, entity_id])
        self._watchers.append(asyncio.create_task(self._collect((key.id, entity_id), queue)))

    async def _collect(self, route: tuple[bytes, bytes], queue: asyncio.Queue[Reply]) -> None:
        while True:
            reply = await queue.get()
            if reply.type is not Rep.FRAME_EVENT:
                continue
            now = time.perf_counter()
            for h in as_list(reply.body[4], "batch hashes"):
                self.commits.seen.setdefault(as_bytes(h, "hash"), {})[route] = now
            self.commits.changed.set()

    # Batches ---------------------------------------------------------------------------

    async def submit(self, key: SignerKey, entity_id: bytes, txs: Sequence[TxBody]) -> bytes:
        """Sign a batch as ``key`` and submit it to its node; returns the batch hash once
        the batch is durable in that node's block."""
        nonce = self.nonces.get((entity_id, key.id), 0) + 1
        encoded: dict[int, Tx] = {}  # a batch of one body repeated is encoded once
        for t in txs:
            if id(t) not in encoded:
                encoded[id(t)] = Tx.of(t)
        batch = ent.sign_batch(entity_id, key.sk, key.id, nonce, [encoded[id(t)] for t in txs])
        client = self.client(self.servers[key.server])
        receipts = await client.submit([SubmitBatch(batch)], [key.id, entity_id])
        error = receipts.receipts[0].error
        if error is not None:
            raise RuntimeError(f"batch refused: {error}")
        self.nonces[(entity_id, key.id)] = nonce
        return keccak(batch.raw)

    async def resync_nonce(self, key: SignerKey, entity_id: bytes) -> None:
        """After a batch was dropped (it failed the rules), continue from the state's nonce."""
        replica = await self.replica(key, entity_id)
        if replica is not None:
            self.nonces[(entity_id, key.id)] = replica.entity.nonce_of(key.id)

    async def wait_committed(
        self, batch_hash: bytes, routes: Sequence[tuple[bytes, bytes]], timeout_s: float
    ) -> float | None:
        """When the last of ``routes`` saw the batch certified (perf_counter), or None."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.commits.seen.get(batch_hash, {})
            if all(r in seen for r in routes):
                return max(seen[r] for r in routes)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.commits.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.commits.changed.wait()

    # Channels (simulation) -----------------------------------------------------------------

    async def faucet(self, key: SignerKey, entity_id: bytes, asset: int, amount: int) -> bytes:
        """Credit ``entity_id``'s reserve: member ``key`` signs ``faucet(asset, amount)``
        and submits it to its own server; returns the batch hash once it is durable
        there (the reserve grows when a frame holding it is certified)."""
        return await self.submit(key, entity_id, [accounts.Faucet(asset, amount)])

    async def pass_proposal(
        self, members: Sequence[SignerKey], entity_id: bytes, action: ent.EntityAction
    ) -> None:
        """Propose ``action`` as ``members[0]`` and vote with the others until it executes."""
        replica = await self.replica(members[0], entity_id)
        assert replica is not None
        pid = replica.entity.next_proposal_id
        expires = replica.entity.height + 10_000
        await self.submit(members[0], entity_id, [ent.Propose(action, expires)])
        voters = list(members[1:])
        deadline = time.monotonic() + 60
        while True:
            replica = await self.replica(members[0], entity_id)
            assert replica is not None
            if replica.entity.next_proposal_id > pid:
                proposal = next((p for p in replica.entity.proposals if p.id == pid), None)
                if proposal is None:
                    return  # executed (or voided: the frame's events say why)
                if voters and len(proposal.votes) == len(members) - len(voters):
                    # open, and every vote so far counted: the next member votes
                    await self.submit(voters.pop(0), entity_id, [ent.Vote(pid)])
            if time.monotonic() > deadline:
                raise TimeoutError(f"proposal {pid} did not execute")
            await self.next_commit(1.0)

    async def next_commit(self, timeout_s: float) -> None:
        """Until a watched replica reports a certified frame, or ``timeout_s``."""
        self.commits.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.commits.changed.wait()

    async def channel_card(self, key: SignerKey, entity_id: bytes) -> tuple[Config, int]:
        """The entity's signer set and its height, as a counterparty needs them to open."""
        replica = await self.replica(key, entity_id)
        assert replica is not None
        return replica.entity.config, replica.entity.config_height
