"""Benchmark: payments per second through a hub entity with 3 signers on 3 server processes.

A cluster (``node/cluster.py``) of three ``xln-node run --faucet-chain`` processes
peering on loopback. The hub H has three signers, one per server (threshold
2); the payer A (a signer on server 0) and the payee B (on server 1) have one
each. Every signer's key is held by its own agent process (``xln-node agent``),
so every approval, pre-commit and channel-message signature crosses the agent
protocol. The faucet funds A and H; channels A-H and H-B are opened by
proposals on both sides.

Then A's signer submits signed batches of ``--batch`` ``pay(H -> B, 1)``
transactions, keeping at most ``--window`` payments in flight (submitted but
not yet in B's channel balance), for ``--seconds`` after a warm-up. The rate is
the growth of B's agreed balance with H: payments that crossed both channels,
each agreed by both sides' quorums. BLS is paid per batch and per frame: one
signature per batch of payments, one pre-commit plus one signature per
outgoing channel message per signer per entity frame, and one approval per signer
per entity frame (two-step voting, docs/CONSENSUS.md).

When the agents stop they print how many APPROVE and SIGN requests they
answered; the script checks that each hub signer's agent was asked at most once
of each per hub entity frame, and answered each SIGN with one reply carrying
both kinds of signature.

Target (issue 5): at least 2,500 payments/s on this 2-core machine.

Usage (from the repo root)::

    .venv/bin/python -m bench.payments --json bench/out/payments.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import benchlib
except ModuleNotFoundError:  # run as ``python -m bench.payments``: benchlib is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib
import hub_store

from node.cluster import PASSWORD, Cluster, SignerKey
from node.entity_reads import ProofError, UnverifiedRead
from node.machines.accounts import OpenChannel, Pay
from node.machines.entity import MAX_BATCH_TXS
from node.net.client import NodeError
from node.net.entity_client import EntityReader

ASSET = 1
POLL_S = 0.1
FUNDS = 10**15
FIELDS = ("requests", "approved", "signed", "outgoing", "refused")
OUTGOING = re.compile(r": pre-committed frame \w+ at round \d+ \(and (\d+) outgoing")
STATS = re.compile(
    r"agent stopped: (\d+) APPROVE and SIGN requests, (\d+) approvals, (\d+) pre-commits "
    r"\((\d+) outgoing-message signatures\), (\d+) refused"
)


async def _balance(cluster: Cluster, key: SignerKey, entity: bytes, peer: bytes) -> int:
    replica = await cluster.replica(key, entity)
    record = None if replica is None else replica.entity.channel(peer)
    if record is None:
        return 0
    side = record.side
    return side.agreed.asset(ASSET).balance(side.me)


async def _settled(cluster: Cluster, views: list[tuple[SignerKey, bytes, bytes]]) -> None:
    """Until every channel is open on both sides, with its collateral agreed."""
    async with asyncio.timeout(60):
        while True:
            ready = []
            for key, entity, peer in views:
                replica = await cluster.replica(key, entity)
                record = None if replica is None else replica.entity.channel(peer)
                ready.append(
                    record is not None
                    and record.side.status == "ready"
                    and not record.side.queue
                    and record.side.agreed.height > 0
                )
            if all(ready):
                return
            await cluster.next_commit(0.2)


WALLET_PASSWORD = "bench wallet password"  # noqa: S105 (a throwaway wallet)
# The hub's accountant: its default rules, and the set-up's channel openings (which
# the defaults leave to a human).
HUB_RULES = """\
[[rule]]
name = "hub set-up"
approve = ["open_channel", "proposal", "vote"]

[[rule]]
name = "channel routine"
approve = ["paid", "received", "forward", "forwarded", "refunded", "rejected", "minted",
           "channel_note"]

[[rule]]
name = "routine"
approve = ["counter", "proposal", "vote", "expired", "voided"]
"""


async def _add_idle_channels(
    cluster: Cluster,
    n: int,
    hub: bytes,
    ka: SignerKey,
    a: bytes,
    kb: SignerKey,
    b: bytes,
) -> int:
    """Give the hub ``n`` idle channels besides its two busy ones: stop the three nodes,
    add the same channels to each hub replica in its store (``hub_store.add_idle_channels``:
    the stores are then synthetic), start them again, and pay once so that the hub
    certifies its new state in a frame (the wallet agents read only certified states).
    Returns the payments made."""
    for server in cluster.servers:
        await cluster.kill_server(server.index)
    started = time.perf_counter()
    for server in cluster.servers:
        added = hub_store.add_idle_channels(server.data / hub_store.CHAIN_DIR, hub, n)
        assert added == 1, f"server {server.index} holds {added} replicas of the hub"
    took = time.perf_counter() - started
    print(f"  {n:,} idle channels added to each hub replica in {took:.1f} s")
    for server in cluster.servers:
        await cluster.restart_server(server.index)
    before = await _balance(cluster, kb, b, hub)
    await cluster.submit(ka, a, [Pay((hub, b), ASSET, 1)])
    async with asyncio.timeout(120):
        while await _balance(cluster, kb, b, hub) < before + 1:
            await cluster.next_commit(0.2)
    return 1


async def _wallet_agents(cluster: Cluster, keys: list[SignerKey]) -> list[Path]:
    """Replace ``keys``' ``xln-node agent`` processes with the wallet's headless agent in
    accountant mode (``xln-wallet agent --accountant``), each with its own wallet
    folder holding the key; returns their log files."""
    from node.crypto import keystore
    from node.tokens import Scope, TokenStore
    from wallet.keys.backends import choose_backend
    from wallet.keys.vault import Vault

    logs = []
    secret = cluster.root / "wallet-password"
    secret.write_text(WALLET_PASSWORD)
    rules = cluster.root / "hub-rules.toml"
    rules.write_text(HUB_RULES)
    for key in keys:
        proc = cluster.agents.pop(key.index)
        proc.terminate()
        await proc.wait()
        data = cluster.root / f"wallet{key.index}"
        data.mkdir()
        vault = Vault(data, choose_backend(data, "file"), fast_kdf=True)
        stored = keystore.load(cluster.keystore(key))
        vault.add_keystore(stored, PASSWORD, WALLET_PASSWORD, f"hub signer {key.index}")
        server = cluster.servers[key.server]
        token, _ = TokenStore(server.data).create(Scope("signer", key.id), "wallet")
        token_file = data / "node-token"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
        log = data / "agent.log"
        with log.open("wb") as out:
            profile = (
                ["-m", "cProfile", "-o", str(cluster.profile_dir / f"wallet{key.index}.prof")]
                if cluster.profile_dir is not None
                else []
            )
            cluster.agents[key.index] = await asyncio.create_subprocess_exec(
                sys.executable,
                *profile,
                "-m",
                "wallet.cli",
                "agent",
                "--node",
                server.url,
                "--token-file",
                str(token_file),
                "--accountant",
                "--rules",
                str(rules),
                "--data",
                str(data),
                "--password-file",
                str(secret),
                "--keyring",
                "file",
                stdout=out,
                stderr=out,
            )
        logs.append(log)
    # Payments start once every wallet serves its signer and has read its entities (a
    # wallet reads a hub's channels whole for its views, a minute at 100,000, and
    # answers nothing meanwhile): a frame proposed before would wait out its rounds.
    async with asyncio.timeout(600):
        while not all("read and watching" in _text(log) for log in logs):  # noqa: ASYNC110 - another process writes it
            await asyncio.sleep(0.05)
    return logs


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _wallet_counts(log: Path) -> dict[str, int]:
    text = log.read_text(encoding="utf-8", errors="replace")
    return {
        "approved": text.count(": approved frame "),
        "signed": text.count(": pre-committed frame "),
        "outgoing": sum(int(n) for n in OUTGOING.findall(text)),
        "approved_by_accountant": text.count("approved by accountant"),
        "asked": text.count("the accountant asks"),
        "refused": text.count("refused an APPROVE") + text.count("rejected by"),
    }


async def _hub_height(cluster: Cluster, key: SignerKey, entity: bytes) -> int:
    """The certified height of ``key``'s replica of the hub, read as a wallet reads it
    (its header only: a hub of many channels is not read whole)."""
    server = cluster.servers[key.server]
    reader = EntityReader(lambda: cluster.client(server))
    for attempt in range(3):
        try:
            return (await reader.header(key.id, entity)).height
        except (NodeError, ProofError, UnverifiedRead) as exc:
            # A header whose frame the node has not written yet, and the like: the
            # next block settles it.
            if attempt == 2:
                raise
            print(f"  reading the hub's height again: {exc}")
            await cluster.next_commit(1.0)
    raise AssertionError("unreachable")


async def _quiet_height(cluster: Cluster, members: list[SignerKey], entity: bytes) -> int:
    """The entity's height once every replica agrees on it and it stays there for a
    second (nothing left in flight)."""
    async with asyncio.timeout(60):
        last = -1
        while True:
            heights = {await _hub_height(cluster, k, entity) for k in members}
            if len(heights) == 1 and heights == {last}:
                return last
            last = heights.pop() if len(heights) == 1 else -1
            await asyncio.sleep(1.0)


def _disk(cluster: Cluster) -> list[int]:
    """The bytes of each server's chain folder (LevelDB's files, as they are now)."""
    return [
        sum(f.stat().st_size for f in (s.data / "chain").iterdir() if f.is_file())
        for s in cluster.servers
    ]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    keep = contextlib.nullcontext(tempfile.mkdtemp(prefix="xln-payments-", dir=args.root))
    with keep if args.root else tempfile.TemporaryDirectory(prefix="xln-payments-") as tmp:
        cluster = Cluster(
            Path(tmp),
            servers=3,
            signers=5,
            tick_ms=args.tick_ms,
            round_timeout_ms=5_000,
            external_agents=True,
            simulation=True,
            debug_logs=args.debug_logs,
            profile_dir=Path(args.profile) if args.profile else None,
        )
        await cluster.start()
        wallet_logs: list[Path] = []
        try:
            h0, h1, h2, ka, kb = cluster.keys
            hub = [h0, h1, h2]
            H = await cluster.create_entity(hub, [1, 1, 1], 2)
            A = await cluster.create_entity([ka], [1], 1)
            B = await cluster.create_entity([kb], [1], 1)
            await cluster.faucet(ka, A, ASSET, FUNDS)
            await cluster.faucet(h0, H, ASSET, FUNDS)
            h_card = await cluster.channel_card(h0, H)
            await cluster.pass_proposal([ka], A, OpenChannel(H, *h_card, ASSET, FUNDS))
            await cluster.pass_proposal(
                hub, H, OpenChannel(A, *await cluster.channel_card(ka, A), ASSET, 0)
            )
            await cluster.pass_proposal(
                hub, H, OpenChannel(B, *await cluster.channel_card(kb, B), ASSET, FUNDS)
            )
            await cluster.pass_proposal([kb], B, OpenChannel(H, *h_card, ASSET, 0))

            await _settled(cluster, [(ka, A, H), (h0, H, A), (h0, H, B), (kb, B, H)])
            pay = Pay((H, B), ASSET, 1)
            submitted = 0
            if args.idle_channels:
                submitted = await _add_idle_channels(cluster, args.idle_channels, H, ka, A, kb, B)
            swapped_at = 0  # the hub's height when the agents counted took over
            if args.agents == "accountant":
                # The wallets judge the payments' frames (the set-up's were signed by the
                # nodes' agents).
                swapped_at = await _quiet_height(cluster, hub, H)
                wallet_logs = await _wallet_agents(cluster, hub)
            received = 0
            marks: list[tuple[float, int]] = []
            start = time.perf_counter()
            measure_from = start + args.warmup
            end = measure_from + args.seconds
            hub_start = await _hub_height(cluster, h0, H)
            hub_at_mark = hub_start
            disk_at_mark = _disk(cluster)
            polled = 0.0
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                if submitted - received + args.batch <= args.window:
                    await cluster.submit(ka, A, [pay] * args.batch)
                    submitted += args.batch
                    if now - polled < POLL_S:
                        continue  # reading B's replica costs its node and us: 10 times a second
                polled = now
                received = await _balance(cluster, kb, B, H)
                if args.verbose:
                    print(f"{now - start:6.2f}s submitted {submitted} received {received}")
                if not marks and now >= measure_from:
                    marks.append((now, received))
                    hub_at_mark = await _hub_height(cluster, h0, H)
                    disk_at_mark = _disk(cluster)
                if submitted - received + args.batch > args.window:
                    await cluster.next_commit(0.05)
            received = await _balance(cluster, kb, B, H)
            done = time.perf_counter()
            marks.append((done, received))
            hub_end = await _hub_height(cluster, h0, H)
            disk_end = _disk(cluster)
            (t0, r0), (t1, r1) = marks[0], marks[-1]
            rate = (r1 - r0) / (t1 - t0)
            # Let everything in flight land, then stop the agents to read their counts.
            async with asyncio.timeout(60):
                while await _balance(cluster, kb, B, H) < submitted:
                    await cluster.next_commit(0.2)
            hub_frames = await _quiet_height(cluster, hub, H) - swapped_at
        finally:
            await cluster.stop()
        agents: dict[int, dict[str, int] | None] = {}
        for key in hub:
            m = STATS.search(cluster.agent_output(key))
            agents[key.index] = (
                None if m is None else dict(zip(FIELDS, map(int, m.groups()), strict=True))
            )
        for key, log in zip(hub, wallet_logs, strict=False):
            counts = _wallet_counts(log)
            # The wallet logs each signature it sends; a request it did not sign is
            # refused or asked about, and logged as such.
            agents[key.index] = {
                "requests": counts["approved"]
                + counts["signed"]
                + counts["asked"]
                + counts["refused"],
                "approved": counts["approved"],
                "signed": counts["signed"],
                "outgoing": counts["outgoing"],
                "refused": counts["refused"] + counts["asked"],
                "approved_by_accountant": counts["approved_by_accountant"],
            }
        return {
            "idle_channels": args.idle_channels,
            "payments_per_s": rate,
            "payments_measured": r1 - r0,
            "seconds": t1 - t0,
            "payments_total": submitted,
            "batch": args.batch,
            "window": args.window,
            "tick_ms": args.tick_ms,
            "hub_frames_total": hub_frames,
            "hub_frames_per_s": (hub_end - hub_at_mark) / (t1 - t0),
            "payments_per_hub_frame": (r1 - r0) / max(1, hub_end - hub_at_mark),
            "hub_agents": agents,
            # Each server's chain folder (LevelDB: blocks, frames, the state's records and
            # trie nodes), grown over the measured time, and that per day at this rate.
            "disk_bytes_per_s": [
                (e - b) / (t1 - t0) for b, e in zip(disk_at_mark, disk_end, strict=True)
            ],
            "disk_gb_per_day": [
                (e - b) / (t1 - t0) * 86_400 / 1e9
                for b, e in zip(disk_at_mark, disk_end, strict=True)
            ],
            # One APPROVE per frame (a member whose answer was not needed for a frame may
            # not be asked), and one SIGN at most per frame approved (a member's polka
            # may come after the frame was certified without it), each answered once.
            "one_request_per_frame": all(
                a is not None
                and hub_frames - 2 <= a["approved"] <= hub_frames
                and a["signed"] <= a["approved"]
                and a["approved"] + a["signed"] + a["refused"] == a["requests"]
                for a in agents.values()
            ),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--batch", type=int, default=MAX_BATCH_TXS, help="payments per batch")
    parser.add_argument("--window", type=int, default=3_000, help="payments in flight at most")
    parser.add_argument("--tick-ms", type=int, default=20, help="the nodes' block period")
    parser.add_argument("--json", help="write every figure here (- for stdout)")
    parser.add_argument("--root", help="keep the cluster folders here (default: removed)")
    parser.add_argument(
        "--agents",
        choices=["accountant", "node"],
        default="accountant",
        help="the hub signers' agents: the wallet's headless accountant (default) or "
        "xln-node agent",
    )
    parser.add_argument(
        "--idle-channels",
        type=int,
        default=0,
        help="idle channels the hub holds besides its two busy ones (written into its stores)",
    )
    parser.add_argument("--profile", help="run the nodes under cProfile, stats in this folder")
    parser.add_argument("--debug-logs", action="store_true", help="nodes log at debug level")
    parser.add_argument("-v", "--verbose", action="store_true", help="print progress")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    print(
        f"payments through a 3-signer hub on 3 processes"
        f" ({args.idle_channels:,} idle channels besides): {result['payments_per_s']:,.0f}/s "
        f"({result['payments_measured']} in {result['seconds']:.1f} s; "
        f"{result['hub_frames_per_s']:.1f} hub frames/s, "
        f"{result['payments_per_hub_frame']:.0f} payments per hub frame)"
    )
    print(f"  target >= 2,500/s: {benchlib.verdict(result['payments_per_s'] >= 2_500)}")
    growth = ", ".join(f"{g:.2f}" for g in result["disk_gb_per_day"])
    print(f"  disk growth per server at this rate: {growth} GB/day")
    for index, stats in result["hub_agents"].items():
        print(f"  hub signer {index}'s agent: {stats}")
    print(
        f"  at most one APPROVE and one SIGN per signer per hub frame, each answered once "
        f"({result['hub_frames_total']} frames): "
        f"{benchlib.verdict(result['one_request_per_frame'])}"
    )
    benchlib.write_json(args.json, {"payments": result, "machine": benchlib.machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
