"""``xln-wallet --self-test``: does this build work here? (Used on frozen builds.)

In a temporary data folder it starts the embedded node and waits for it to
make a block, then stores a secret through the keyring backend the wallet
would choose (under a separate service name), reads it back and deletes it. It
prints the backend's name and exits 1 when that backend is keyring's ``fail``
backend or a plaintext one (``keyrings.alt``), or when any step fails; else 0.

It needs no source files: everything runs in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
from pathlib import Path

from keyring.backend import KeyringBackend

from node.crypto import keystore
from node.machines.server import Increment
from node.net.client import NodeClient
from wallet.embedded import EmbeddedNode
from wallet.keys.backends import choose_backend

SERVICE = "xln-signer-selftest"
PROBE_USER = "selftest"
BLOCK_TIMEOUT_S = 30.0


class SelfTestFailed(Exception):
    pass


def unsafe_backend(backend: KeyringBackend) -> str | None:
    """Why this backend must not hold keys (None if it may)."""
    module = type(backend).__module__
    if module.startswith("keyrings.alt"):
        return f"{type(backend).__name__} from keyrings.alt stores secrets in plaintext"
    if module.startswith("keyring.backends.fail"):
        return "keyring's fail backend cannot store anything"
    if module.startswith("keyring.backends.null"):
        return "keyring's null backend stores nothing"
    return None


async def check_node(data: Path) -> int:
    """Start the embedded node, submit one transaction, return the block height it made."""
    node = EmbeddedNode(data, tick_ms=50)
    url, token = await node.start()
    try:
        async with asyncio.timeout(BLOCK_TIMEOUT_S):
            client = await NodeClient.connect(url, token=token, sender_id=b"xln-wallet-selftest")
            try:
                receipts = await client.submit([Increment(1)])
                status = await client.status()
            finally:
                await client.close()
        if receipts.receipts[0].error is not None:
            raise SelfTestFailed(f"the node refused a transaction: {receipts.receipts[0].error}")
        if status.height < 1 or status.counter != 1:
            raise SelfTestFailed(f"the node made no block (height {status.height})")
        return status.height
    finally:
        await node.stop()


def check_keyring(data: Path) -> str:
    """Round-trip an encrypted probe through the chosen backend; returns its name."""
    choice = choose_backend(data, service=SERVICE)
    why = unsafe_backend(choice.keyring)
    if why is not None:
        raise SelfTestFailed(f"keyring backend {choice.name}: {why}")
    secret = secrets.token_bytes(32)
    password = secrets.token_hex(16)
    entry = json.dumps(keystore.encrypt_data(secret, password, fast=True))
    choice.keyring.set_password(SERVICE, PROBE_USER, entry)
    try:
        got = choice.keyring.get_password(SERVICE, PROBE_USER)
    finally:
        choice.keyring.delete_password(SERVICE, PROBE_USER)
    if got is None or keystore.decrypt_data(json.loads(got), password) != secret:
        raise SelfTestFailed(f"keyring backend {choice.name} did not give the secret back")
    if choice.keyring.get_password(SERVICE, PROBE_USER) is not None:
        raise SelfTestFailed(f"keyring backend {choice.name} did not delete the probe")
    return choice.name


def run(args: argparse.Namespace | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="xln-wallet-selftest-") as tmp:
        data = Path(tmp)
        try:
            height = asyncio.run(check_node(data))
            print(f"embedded node: ok (block {height})", flush=True)
            name = check_keyring(data)
        except Exception as exc:
            print(f"self-test FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
    print(f"keyring backend: {name}", flush=True)
    print("self-test: ok", flush=True)
    return 0
