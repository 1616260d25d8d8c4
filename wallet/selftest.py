"""``xln-wallet --self-test``: does this build work here? (Used on frozen builds.)

In a temporary data folder it starts the embedded node and waits for it to
make a block, then stores a secret through the keyring backend the wallet
would choose (under a separate service name), reads it back and deletes it. It
prints the backend's name and exits 1 when that backend is keyring's ``fail``
backend or a plaintext one (``keyrings.alt``), or when any step fails; else 0.
Last it checks the GUI's parts (offscreen unless a display is set): Qt starts,
finds fonts (a bundle without them draws every glyph as an empty box), loads
the style sheets and icons from ``resources/``, and draws text into an image.

It needs no source files: everything runs in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def check_gui() -> str:
    """Qt, fonts, resources: returns the first font family Qt found."""
    headless = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    if headless and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from wallet.qt import QApplication, QColor, QFontDatabase, QImage, QLabel
    from wallet.views import theme

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(["xln-wallet"])
    families = QFontDatabase.families()
    if not families:
        raise SelfTestFailed("Qt finds no fonts: install a font package (fonts-dejavu-core)")
    for name in ("light", "dark"):
        if not theme.style_sheet(name).strip():
            raise SelfTestFailed(f"the {name} style sheet is missing from resources/")
    theme.apply(app, "light")
    if theme.app_icon().isNull():
        raise SelfTestFailed("the app icon (resources/icons/app.svg) did not load")
    label = QLabel("XLN Signer 0123456789")
    label.resize(240, 40)
    image = QImage(label.size(), QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    label.render(image)
    inked = sum(
        1
        for x in range(image.width())
        for y in range(image.height())
        if image.pixelColor(x, y).lightness() < 128
    )
    if inked == 0:
        raise SelfTestFailed("Qt drew no text")
    return f"font {families[0]}"


def run(args: argparse.Namespace | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="xln-wallet-selftest-") as tmp:
        data = Path(tmp)
        try:
            height = asyncio.run(check_node(data))
            print(f"embedded node: ok (block {height})", flush=True)
            name = check_keyring(data)
            print(f"keyring backend: {name}", flush=True)
            gui = check_gui()
            print(f"gui: ok ({gui})", flush=True)
        except Exception as exc:
            print(f"self-test FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
    print("self-test: ok", flush=True)
    return 0
