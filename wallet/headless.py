"""``xln-wallet agent``: the wallet's agents and accountant with no window.

    xln-wallet agent --node URL --token-file F [--accountant [--rules FILE]] [--data DIR]
                     [--password-file F | env XLN_WALLET_PASSWORD] [--keyring file|system]

It unlocks the vault with the wallet password and runs one agent per key
against the node, exactly as the GUI does, except that nobody is there to
ask: a frame the accountant would ASK about (or every frame, without
``--accountant``) is refused, and the refusal is logged. SIGINT or SIGTERM
stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from node import collector
from node.crypto.keystore import WrongPassword
from wallet import settings as settings_io
from wallet.cli import PASSWORD_ENV, TOKEN_ENV, secret, token
from wallet.flows.accountant import Rules, RulesError
from wallet.keys.backends import BackendError, choose_backend
from wallet.keys.vault import Vault, VaultError
from wallet.model import WalletModel
from wallet.paths import app_data_dir

log = logging.getLogger("wallet.headless")


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    url = getattr(args, "node", None)
    try:
        node_token = token(args)
        password = secret(args.password_file, PASSWORD_ENV)
    except OSError as exc:
        return _error(f"cannot read a secret: {exc}")
    if not url or not node_token:
        return _error(f"the agent needs --node URL and --token-file FILE (or {TOKEN_ENV})")
    if not password:
        return _error(f"give --password-file or set {PASSWORD_ENV}")
    rules: Rules | None = None
    if args.rules:
        try:
            rules = Rules.load(args.rules)
        except RulesError as exc:
            return _error(f"{args.rules}: {exc}")
    data = app_data_dir(getattr(args, "data", None))
    try:
        vault = Vault(data, choose_backend(data, args.keyring))
    except (BackendError, VaultError) as exc:
        return _error(str(exc), 1)
    if not vault.keys():
        return _error(f"no signer keys in {data}: add one in the wallet first", 1)
    try:
        vault.unlock(password)
    except WrongPassword:
        return _error("wrong wallet password", 1)
    except VaultError as exc:
        return _error(str(exc), 1)
    settings, _ = settings_io.load_or_default(data)
    settings.accountant_on = bool(args.accountant)
    return asyncio.run(_serve(data, vault, settings, url, node_token, rules))


async def _serve(
    data: Path,
    vault: Vault,
    settings: settings_io.Settings,
    url: str,
    token: str,
    rules: Rules | None,
) -> int:
    from wallet.service import WalletService

    service = WalletService(
        data,
        WalletModel(),
        vault,
        settings,
        node_url=url,
        token=token,
        headless=True,
        rules=rules,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await service.start()
    except Exception as exc:
        await service.stop()
        return _error(f"cannot start: {exc}", 1)
    collector.freeze_startup()
    names = ", ".join(k.label for k in list(vault.keys()))
    mode = "accountant" if settings.accountant_on else "refuse all (no accountant)"
    print(f"xln-wallet agent for {names} serving {url} ({mode})", flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()
        vault.lock()
    return 0
