"""Peering the embedded node (Settings' listen port, This node, Peers), headless."""

from __future__ import annotations

import pytest

from wallet.flows import peering
from wallet.settings import Settings


def test_peers_typed_in_one_field() -> None:
    text = " ws://127.0.0.1:7002, wss://node.example:443\nws://127.0.0.1:7002 ws://[::1]:7003 "
    assert peering.parse_peers(text, 7001) == [
        "ws://127.0.0.1:7002",
        "wss://node.example:443",
        "ws://[::1]:7003",
    ]
    assert peering.parse_peers("  ") == []
    assert peering.peers_text(["ws://a:1", "ws://b:2"]) == "ws://a:1 ws://b:2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://127.0.0.1:7002", "not a ws:// or wss:// address with its port"),
        ("ws://127.0.0.1", "with its port"),
        ("ws://127.0.0.1:70000", "the port must be 1 to 65535"),
        ("ws://127.0.0.1:0", "the port must be 1 to 65535"),
        ("ws://127.0.0.1:7001", "this node's own address"),
        ("ws://localhost:7001", "this node's own address"),
    ],
)
def test_bad_peers_are_named(text: str, message: str) -> None:
    with pytest.raises(peering.PeeringError, match=message):
        peering.parse_peers(f"ws://127.0.0.1:7002 {text}", listen_port=7001)


def test_this_nodes_address_and_what_needs_a_restart() -> None:
    fixed = Settings(listen_port=7001)
    assert peering.own_address(7001) == "ws://127.0.0.1:7001"
    assert peering.own_address(0) is None
    assert peering.address_line(fixed, "ws://127.0.0.1:7001") == (
        "ws://127.0.0.1:7001: each co-signer's wallet lists it in its Peers"
    )
    assert peering.address_line(fixed, "ws://127.0.0.1:40000") == (
        "ws://127.0.0.1:7001 from the next start (now ws://127.0.0.1:40000)"
    )
    assert peering.address_line(Settings(), "ws://127.0.0.1:40000") == (
        "a free port at each start (now ws://127.0.0.1:40000): set a listen port to be peered with"
    )
    assert peering.restart_needed(Settings(), fixed)
    assert peering.restart_needed(fixed, Settings(listen_port=7001, peers=["ws://h:1"]))
    assert not peering.restart_needed(fixed, Settings(listen_port=7001, theme="dark"))
    remote = Settings(node_mode="remote", node_url="ws://127.0.0.1:9")
    assert not peering.restart_needed(remote, Settings(**{**remote.to_json(), "listen_port": 5}))


def test_peers_without_a_fixed_port_are_warned_about() -> None:
    assert peering.warning(Settings(peers=["ws://127.0.0.1:7002"])) is not None
    assert peering.warning(Settings(peers=["ws://127.0.0.1:7002"], listen_port=7001)) is None
    assert peering.warning(Settings()) is None
