"""Shared helpers for the benchmarks: node subprocesses, tokens, statistics, machine facts,
and channels agreed by the pure channel machine.

Every node started here listens on 127.0.0.1 only, lives in a temporary data
folder, and is terminated (then killed, if it does not stop) when its context
exits. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.machines import channel as ch
from node.txs import Tx, TxBody

HOST = "127.0.0.1"
LISTENING = re.compile(rb"listening on (ws://127\.0\.0\.1:(\d+))")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
REPO = Path(__file__).resolve().parent.parent


def node_command(profile: Path | None = None) -> list[str]:
    """``xln-node`` from the running interpreter's environment, else ``python -m node.cli``.

    With ``profile``, the node runs under cProfile and writes its stats there
    when it stops (it stops cleanly on SIGTERM).
    """
    if profile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "node.cli"]
    script = Path(sys.executable).parent / "xln-node"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "node.cli"]


def create_token(data: Path, scope: str = "server") -> str:
    """Run ``xln-node token create`` and return the token it prints on stdout."""
    out = subprocess.run(
        [*node_command(), "token", "create", "--data", str(data), "--scope", scope],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )
    lines = out.stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError("xln-node token create printed no token")
    return lines[0]


@dataclass
class NodeProcess:
    """A running ``xln-node run`` subprocess."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    data: Path
    started_s: float  # perf_counter() just before spawning
    listening_s: float  # perf_counter() when the listening line was read

    @property
    def startup_s(self) -> float:
        return self.listening_s - self.started_s

    @property
    def pid(self) -> int:
        return self.proc.pid


def read_until(
    proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float
) -> re.Match[bytes]:
    """Read the child's stdout until ``pattern`` matches; bounded by ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.perf_counter() + timeout
    while True:
        match = pattern.search(buf)
        if match is not None:
            return match
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(
                f"child printed no {pattern.pattern!r} within {timeout:.0f} s: {buf!r}"
            )
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError(f"child exited (code {proc.poll()}) before printing it: {buf!r}")
        buf += chunk


@contextlib.contextmanager
def run_node(
    data: Path,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    profile: Path | None = None,
) -> Iterator[NodeProcess]:
    """Start ``xln-node run --data DATA --port 0`` and yield once it listens."""
    log = open(log_path or data / "node.log", "ab")  # noqa: SIM115 - closed in finally
    cmd = [
        *node_command(profile),
        "run",
        "--data",
        str(data),
        "--host",
        HOST,
        "--port",
        "0",
        *extra_args,
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=REPO)
    try:
        match = read_until(proc, LISTENING, START_TIMEOUT_S)
        listening = time.perf_counter()
        yield NodeProcess(
            proc, match.group(1).decode(), int(match.group(2)), data, started, listening
        )
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, then SIGKILL: never leaves the child behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    if proc.stdout is not None:
        proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return float(ordered[rank - 1])


def lateness_summary(samples_us: Sequence[int]) -> dict[str, float]:
    """p50 / p99 / max of tick lateness samples, in milliseconds."""
    ms = [v / 1000 for v in samples_us]
    return {
        "samples": float(len(ms)),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else 0.0,
    }


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_kb"] = int(line.split()[1])
                break
    git = shutil.which("git")
    if git is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [git, "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                timeout=5,
                check=False,
            )
            info["commit"] = out.stdout.decode().strip()
    return info


def write_json(path: str | None, results: dict[str, Any]) -> None:
    """Write results (with machine facts) to ``path``; ``-`` means stdout."""
    if path is None:
        return
    payload = {"machine": machine_info(), **results}
    text = json.dumps(payload, indent=2, sort_keys=True)
    if path == "-":
        print(text)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")
    print(f"results written to {target}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def exchange(a: ch.ChannelSide, b: ch.ChannelSide, *txs: TxBody) -> tuple[ch.ChannelSide, ...]:
    """``a`` proposes ``txs`` and ``b`` acks them: both sides agree."""
    for body in txs:
        a, _ = ch.step(a, ch.Enqueue(Tx.of(body)))
    a, out = ch.step(a, ch.Propose())
    (sent,) = [o.frame for o in out if isinstance(o, ch.SendFrame)]
    b, out = ch.step(b, ch.ReceiveFrame(sent))
    (ack,) = [o.ack for o in out if isinstance(o, ch.SendAck)]
    a, _ = ch.step(a, ch.ReceiveAck(ack))
    return a, b
