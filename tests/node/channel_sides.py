"""Two sides of a channel brought to agreement by the pure channel machine, for tests
that need agreed channel states (signatures are the entity layer's business)."""

from __future__ import annotations

from node.machines import channel as ch
from node.machines.channel import ChannelSide
from node.txs import Tx, TxBody


def exchange(a: ChannelSide, b: ChannelSide, *txs: TxBody) -> tuple[ChannelSide, ChannelSide]:
    """``a`` proposes ``txs`` and ``b`` acks: both sides agree."""
    for body in txs:
        a, _ = ch.step(a, ch.Enqueue(Tx.of(body)))
    a, out = ch.step(a, ch.Propose())
    (sent,) = [o.frame for o in out if isinstance(o, ch.SendFrame)]
    b, out = ch.step(b, ch.ReceiveFrame(sent))
    (ack,) = [o.ack for o in out if isinstance(o, ch.SendAck)]
    a, _ = ch.step(a, ch.ReceiveAck(ack))
    return a, b
