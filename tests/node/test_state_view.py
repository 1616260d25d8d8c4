"""``xln-node inspect``'s view of a hub: how many channels and forwards it holds,
and the first few channels, never all of them."""

from __future__ import annotations

from node.codec import keccak
from node.machines import replica as rep
from node.state_view import LISTED, describe_replica
from tests.node import hub_state


def test_a_hub_is_counted_and_its_first_channels_listed() -> None:
    genesis, state = hub_state.hub(LISTED + 20, forwards=7)
    view = describe_replica(rep.Replica(hub_state.hub_config().ids[0], genesis, state))
    assert view["channel_count"] == LISTED + 20
    assert view["forwards_in_flight"] == 7
    listed = view["channels"]
    assert len(listed) == LISTED
    assert [c["peer"] for c in listed] == [k.hex() for k in list(state.channels.keys())[:LISTED]]
    index = {keccak(b"peer %d" % i).hex(): i for i in range(LISTED + 20)}
    for c in listed:  # the hub put 1000 + i into its channel with peer i
        assert c["assets"][0]["collateral"] == str(1000 + index[c["peer"]])


def test_a_small_entity_lists_every_channel() -> None:
    genesis, state = hub_state.hub(3)
    view = describe_replica(rep.Replica(hub_state.hub_config().ids[0], genesis, state))
    assert view["channel_count"] == 3
    assert len(view["channels"]) == 3
    assert view["forwards_in_flight"] == 0
