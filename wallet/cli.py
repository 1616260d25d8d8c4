"""``xln-wallet``: the desktop wallet (default), the headless agent, or the self-test.

    xln-wallet [--data DIR] [--node URL --token T] [--theme light|dark|system]
    xln-wallet agent --node URL --token T [--accountant --rules FILE] ...
    xln-wallet --self-test

Each mode lives in its own module and is imported only when chosen, so the
headless agent and the self-test never load Qt, and the GUI's start does not
wait for the agent's imports (the node's codec, ~0.3 s).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PASSWORD_ENV = "XLN_WALLET_PASSWORD"  # noqa: S105 (the variable's name)
KEYRING_CHOICES = ("file", "system")  # choose_backend's ``prefer``


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xln-wallet", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="the wallet's data folder (default: the platform's)")
    parser.add_argument("--node", help="a remote node's ws:// URL (default: embedded node)")
    parser.add_argument("--token", help="the remote node's API token")
    parser.add_argument("--theme", choices=["light", "dark", "system"])
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="start the embedded node, store and read a key through the keyring, exit",
    )
    sub = parser.add_subparsers(dest="command")
    _agent_arguments(sub.add_parser("agent", help="the signing agent with no window"))
    return parser


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
    # --data, --node and --token also exist on the main parser: SUPPRESS keeps a
    # value given before "agent" from being reset by this parser's default.
    parser.add_argument("--node", default=argparse.SUPPRESS, help="the node's ws:// URL")
    parser.add_argument("--token", default=argparse.SUPPRESS, help="an API token of that node")
    parser.add_argument(
        "--data", default=argparse.SUPPRESS, help="the wallet's data folder (its keys)"
    )
    parser.add_argument("--accountant", action="store_true", help="approve what the rules approve")
    parser.add_argument("--rules", help="the accountant's TOML rules (default: built-in)")
    parser.add_argument("--password-file", help=f"the wallet password (or {PASSWORD_ENV})")
    parser.add_argument(
        "--keyring",
        choices=KEYRING_CHOICES,
        help="where the keys are: the encrypted files, or the system keyring",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_test:
        from wallet import selftest

        return selftest.run(args)
    if args.command == "agent":
        from wallet import headless

        return headless.run(args)
    from wallet import app

    return app.run(args)


if __name__ == "__main__":
    sys.exit(main())
