"""The wallet shows equivocation evidence: bob pre-commits two frames at one height and
round of the duo's entity; the node keeps one record (a forged pair none), ``inspect``
of the running node shows it, and the wallet reads it through the protocol
(READ_ENTITY's evidence part), checks it, and words it for the Entities view."""

from __future__ import annotations

from node.cli import describe_running
from node.crypto import bls
from node.machines.frames import precommit_message
from node.machines.replica import Precommit
from tests.wallet.conftest import Duo
from wallet.flows import evidence as ev

FRAME_A = b"\xaa" * 32
FRAME_B = b"\xbb" * 32


def _precommit(duo: Duo, sk: int, height: int, round_: int, frame_hash: bytes) -> Precommit:
    signature = bls.sign(sk, precommit_message(duo.entity, height, round_, frame_hash))
    return Precommit(height, round_, frame_hash, duo.bob, signature)


async def test_an_equivocating_member_is_shown_once_and_forgeries_never(duo: Duo) -> None:
    route = [duo.alice, duo.entity]  # the proposer's replica: where pre-commits go
    pair = [_precommit(duo, duo.bob_sk, 1, 7, FRAME_A), _precommit(duo, duo.bob_sk, 1, 7, FRAME_B)]
    await duo.client.submit(pair, route)
    await duo.client.submit(list(reversed(pair)), route)  # again: counted once
    forger = bls.keygen(b"\x42" * 32)  # bob's id, another key: a forged second message
    await duo.client.submit(
        [_precommit(duo, duo.bob_sk, 1, 8, FRAME_A), _precommit(duo, forger, 1, 8, FRAME_B)],
        route,
    )

    info = await describe_running(duo.client)  # what `xln-node inspect` shows, running
    (shown,) = info["evidence"]
    assert shown["member"] == duo.bob.hex()
    assert (shown["entity"], shown["height"], shown["round"]) == (duo.entity.hex(), 1, 7)
    assert shown["frames"] == [FRAME_A.hex(), FRAME_B.hex()]

    service, model = duo.service, duo.model
    await service.read_evidence(duo.alice, duo.entity)
    (record,) = model.evidence[duo.entity]
    assert record.problem() is None
    entry = model.entities[(duo.alice, duo.entity)]
    found = ev.equivocations(entry.state.config, model.evidence[duo.entity])
    assert ev.badges(found) == {duo.bob: 1}
    (line,) = ev.lines(found, lambda sid: "bob" if sid == duo.bob else sid.hex()[:8])
    assert line.startswith("\u26a0 bob signed two frames at height 1, round 7: 0xaaaaaa\u2026aaaa")
    # The entity still works: a frame is certified with bob's honest pre-commit.
    await service.increment(duo.alice, duo.entity, 3)
    await duo.waiter.until(lambda: duo.counter() == 3)
    await service.read_evidence(duo.alice, duo.entity)
    assert len(model.evidence[duo.entity]) == 1
