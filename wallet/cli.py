"""``xln-wallet``: the desktop wallet (default), the headless agent, or the self-test.

    xln-wallet [--data DIR] [--node URL [--token-file F]] [--theme light|dark|system]
    xln-wallet agent --node URL --token-file F [--accountant --rules FILE] ...
    xln-wallet --self-test
    xln-wallet embedded-node     # the wallet's own child process: its embedded node

Secrets never come on the command line, where other users' ``ps`` shows them:
the node's API token comes from a file (``--token-file``) or ``XLN_TOKEN``, the
agent's wallet password from ``--password-file`` or ``XLN_WALLET_PASSWORD``.

Each mode lives in its own module and is imported only when chosen, so the
headless agent and the self-test never load Qt, and the GUI's start does not
wait for the agent's imports (the node's codec, ~0.3 s).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from node import collector

PASSWORD_ENV = "XLN_WALLET_PASSWORD"  # noqa: S105 (the variable's name)
TOKEN_ENV = "XLN_TOKEN"  # noqa: S105 (the variable's name)
KEYRING_CHOICES = ("file", "system")  # choose_backend's ``prefer``


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: "--token T" must not pass for "--token-file T".
    parser = argparse.ArgumentParser(
        prog="xln-wallet", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--data", help="the wallet's data folder (default: the platform's)")
    parser.add_argument("--node", help="a remote node's ws:// URL (default: embedded node)")
    parser.add_argument(
        "--token-file", help=f"a file holding the remote node's API token (or {TOKEN_ENV})"
    )
    parser.add_argument("--theme", choices=["light", "dark", "system"])
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="start the embedded node, store and read a key through the keyring, exit",
    )
    sub = parser.add_subparsers(dest="command")
    _agent_arguments(
        sub.add_parser("agent", help="the signing agent with no window", allow_abbrev=False)
    )
    return parser


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
    # --data, --node and --token-file also exist on the main parser: SUPPRESS keeps a
    # value given before "agent" from being reset by this parser's default.
    parser.add_argument("--node", default=argparse.SUPPRESS, help="the node's ws:// URL")
    parser.add_argument(
        "--token-file",
        default=argparse.SUPPRESS,
        help=f"a file holding an API token of that node (or {TOKEN_ENV})",
    )
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


def secret(path: str | None, env: str) -> str | None:
    """A secret from the file at ``path`` (its first line, without the line's end), else
    from ``env``; None if neither gives one."""
    if path:
        lines = Path(path).read_text("utf-8").splitlines()
        return lines[0] if lines and lines[0] else None
    return os.environ.get(env) or None


def token(args: argparse.Namespace) -> str | None:
    """The node's API token: ``--token-file``, else ``XLN_TOKEN``."""
    return secret(getattr(args, "token_file", None), TOKEN_ENV)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given == ["embedded-node"]:
        # Started by the wallet (wallet.embedded), its settings on stdin; not a command
        # for people, so not in the help.
        from wallet import node_child

        return node_child.main()
    args = build_parser().parse_args(argv)
    collector.tune()
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
