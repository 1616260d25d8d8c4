"""Peering the embedded node with co-signers' nodes: Settings' "Listen port",
"This node" and "Peers" (the thin view is ``wallet.views.settings``).

Two embedded nodes reach each other as servers do: each dials the other's
address (``node.net.peers``: an outbound link per peer, authenticated by the
node's identity key, so no token is exchanged). Each side must therefore list
the other, and each must listen at an address that outlives a restart: a fixed
port on ``127.0.0.1`` (:data:`LOCAL_HOST`) instead of a free one chosen at each
start. So a person peers two wallets by giving each a listen port, copying each
one's address into the other's Peers, and restarting both (the node reads its
peers and port when it starts; its identity key needs the wallet's password,
which the unlock gives).
"""

from __future__ import annotations

import re

from wallet.settings import MAX_PORT, Settings

LOCAL_HOST = "127.0.0.1"
_SPLIT = re.compile(r"[\s,]+")
_URL = re.compile(r"^wss?://(?P<host>\[[0-9a-fA-F:.]+\]|[^/:\s\[\]]+):(?P<port>\d{1,5})(/\S*)?$")
_LOCAL_NAMES = frozenset({LOCAL_HOST, "localhost"})


class PeeringError(ValueError):
    """The peers or port typed cannot be used; the message names the bad part."""


def own_address(port: int) -> str | None:
    """The address co-signers' wallets list to reach this node, if it has a fixed one."""
    return f"ws://{LOCAL_HOST}:{port}" if port else None


def parse_peers(text: str, listen_port: int = 0) -> list[str]:
    """The peer URLs typed in one field (separated by spaces, commas or new lines):
    each ``ws://host:port`` or ``wss://host:port`` with its port, none twice, none
    this node's own address. Raises PeeringError naming the first bad one."""
    peers: list[str] = []
    for url in (u for u in _SPLIT.split(text.strip()) if u):
        m = _URL.match(url)
        if m is None:
            raise PeeringError(f"peer {url!r} is not a ws:// or wss:// address with its port")
        port = int(m["port"])
        if not 1 <= port <= MAX_PORT:
            raise PeeringError(f"peer {url!r}: the port must be 1 to {MAX_PORT}")
        if listen_port and port == listen_port and m["host"] in _LOCAL_NAMES:
            raise PeeringError(f"{url} is this node's own address: give a co-signer's node's")
        if url not in peers:
            peers.append(url)
    return peers


def peers_text(peers: list[str]) -> str:
    return " ".join(peers)


def restart_needed(old: Settings, new: Settings) -> bool:
    """Whether a saved change applies only when the node starts again."""
    return (
        new.node_mode != old.node_mode
        or new.node_url != old.node_url
        or (
            new.node_mode == "embedded"
            and (new.peers != old.peers or new.listen_port != old.listen_port)
        )
    )


def address_line(settings: Settings, running_url: str = "") -> str:
    """What "This node" says: the address to give co-signers, or why there is none yet.
    ``running_url``: the embedded node's URL in this run, if it is up."""
    fixed = own_address(settings.listen_port)
    if fixed is None:
        now = f" (now {running_url})" if running_url else ""
        return f"a free port at each start{now}: set a listen port to be peered with"
    if running_url and running_url != fixed:
        return f"{fixed} from the next start (now {running_url})"
    return f"{fixed}: each co-signer's wallet lists it in its Peers"


def warning(settings: Settings) -> str | None:
    """A setup that cannot work both ways, said before the person relies on it."""
    if settings.node_mode == "embedded" and settings.peers and not settings.listen_port:
        return (
            "Peers reach this node only at a fixed port: set a listen port, "
            "and give its address to each peer's wallet."
        )
    return None
