"""``xln-wallet``: the desktop wallet (default), the headless agent, or the self-test.

    xln-wallet [--data DIR] [--node URL --token T] [--theme light|dark|system]
    xln-wallet agent --node URL --token T [--accountant --rules FILE] ...
    xln-wallet --self-test

Each mode lives in its own module and is imported only when chosen, so the
headless agent and the self-test never load Qt.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    from wallet import headless

    headless.add_arguments(sub.add_parser("agent", help="the signing agent with no window"))
    return parser


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
