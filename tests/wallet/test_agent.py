"""The wallet's agent on a real embedded node, with real BLS keys: alice's key is in
the wallet, bob's is a plain agent; their entity needs both signatures."""

from __future__ import annotations

import pytest

from node.agent import Refused
from node.crypto import bls
from node.machines.entity import EntityState, Increment, Vote
from node.machines.governance import SetShares
from tests.wallet.conftest import PASSWORD, Duo
from wallet.flows.approvals import ApprovalRequest, Status
from wallet.flows.effects import short
from wallet.flows.refusals import refusal_lines


def _all(duo: Duo) -> list[ApprovalRequest]:
    return duo.service.queue.all()


def _frames(duo: Duo) -> list[int]:
    return [h.height for h in duo.model.history if h.kind == "frame"]


async def test_accountant_signs_a_routine_frame(duo: Duo) -> None:
    await duo.service.increment(duo.alice, duo.entity, 3)
    await duo.waiter.until(lambda: duo.counter() == 3 and 1 in _frames(duo))
    auto = [
        r
        for r in _all(duo)
        if r.status is Status.APPROVED and r.decided_by.startswith("accountant")
    ]
    assert auto
    assert all(r.signed for r in auto)
    assert auto[0].analysis is not None
    assert auto[0].analysis.counter_delta == 3
    first = next(h for h in duo.model.history if h.kind == "frame" and h.height == 1)
    assert first.entity_id == duo.entity
    # The item says what the frame did (searching "counter" finds it), not "1 batch".
    assert first.text == f"frame 1 of {short(duo.entity)}: counter +3 (0 -> 3)"
    assert first.cert_valid is True
    assert set(first.cert_signers) == {duo.alice, duo.bob}
    assert duo.model.finality_ms, "the batch's finality was charted"
    assert any("approved by accountant" in m for m in duo.logs)


async def test_headless_refuses_a_governance_frame(duo: Duo) -> None:
    duo.service.policy.headless = True
    # Alice proposes 2 shares for herself: a new proposal is routine, so it is signed.
    await duo.service.propose(duo.alice, duo.entity, SetShares(duo.alice, 2), expires_at=100)

    def proposals() -> int:
        entry = duo.model.entities.get((duo.alice, duo.entity))
        return 0 if entry is None else len(entry.state.proposals)

    await duo.waiter.until(lambda: proposals() == 1)
    # Bob's vote would execute it: a governance effect, which the default rules ask
    # about, and a headless agent refuses.
    await duo.bob_submits([Vote(1)])
    await duo.waiter.until(
        lambda: any(r.decided_by == "headless" for r in _all(duo) if r.status is Status.REJECTED)
    )
    refused = next(r for r in _all(duo) if r.decided_by == "headless")
    assert refused.analysis is not None
    assert refused.analysis.governance
    assert any("rejected by headless" in m for m in duo.logs)
    await duo.service.refresh(duo.alice, duo.entity)
    entry = duo.model.entities[(duo.alice, duo.entity)]
    assert entry.state.config.shares_of([duo.alice]) == 1, "the governance frame was refused"
    assert len(entry.state.proposals) == 1


async def test_locked_wallet_signs_nothing_until_unlocked(duo: Duo) -> None:
    duo.service.lock()
    assert duo.model.locked
    await duo.bob_submits([Increment(2)])
    # The accountant approves the frame, but the key is locked: the request waits.
    await duo.waiter.until(
        lambda: any(r.status is Status.APPROVED and not r.signed for r in _all(duo))
    )
    await duo.service.refresh(duo.alice, duo.entity)
    assert duo.counter() == 0, "nothing is certified while the wallet is locked"
    await duo.service.unlock(PASSWORD)
    assert duo.service.unlocked.is_set()
    await duo.waiter.until(lambda: duo.counter() == 2)
    assert any(r.signed for r in _all(duo))


async def test_a_request_expires_while_locked(duo: Duo) -> None:
    duo.service.policy.ttl_s = 0.5
    duo.service.lock()
    await duo.bob_submits([Increment(1)])
    await duo.waiter.until(
        lambda: any(r.status is Status.EXPIRED and "locked" in r.reason for r in _all(duo))
    )
    await duo.waiter.until(
        lambda: any(m.startswith("node.coordinator") and "refused" in m for m in duo.logs)
    )
    await duo.service.refresh(duo.alice, duo.entity)
    assert duo.counter() == 0


async def test_human_rejects_and_the_node_hears_refused(duo: Duo) -> None:
    duo.service.set_accountant(False)
    await duo.bob_submits([Increment(5)])
    await duo.waiter.until(lambda: bool(duo.service.queue.pending()))
    request = duo.service.queue.pending()[0]
    assert request.analysis is not None
    assert request.analysis.counter_delta == 5
    assert duo.service.notifications.items, "the tray was told"
    duo.service.reject(request.id)
    assert request.status is Status.REJECTED
    assert request.decided_by == "you"
    await duo.waiter.until(
        lambda: any(
            m.startswith("node.coordinator") and "refused" in m and "rejected" in m
            for m in duo.logs
        )
    )
    await duo.service.refresh(duo.alice, duo.entity)
    assert duo.counter() == 0
    # Alice's refusal is signed, kept by the node and read back (checked against the
    # entity's config): who refused which frame at which round, and why.
    await duo.service.read_evidence(duo.alice, duo.entity)
    (refusal,) = duo.model.refusals[duo.entity]
    assert (refusal.signer, refusal.frame_hash) == (duo.alice, request.frame_hash)
    assert (refusal.height, refusal.round) == (request.frame.height, request.round)
    assert refusal.reason == "rejected by hand"
    assert refusal.verify(duo.kit.key.pubkey)
    lines = refusal_lines(duo.model.refusals[duo.entity], request.frame_hash, short)
    assert lines == [f"Refused by {short(duo.alice)} at round {request.round}: rejected by hand"]


async def test_human_approves_and_a_later_round_is_signed_without_asking(duo: Duo) -> None:
    duo.service.set_accountant(False)
    await duo.bob_submits([Increment(4)])
    await duo.waiter.until(lambda: bool(duo.service.queue.pending()))
    duo.service.approve(duo.service.queue.pending()[0].id)
    await duo.waiter.until(lambda: duo.counter() == 4)


async def test_a_frame_after_one_not_analyzed_is_checked_on_the_wallets_state(duo: Duo) -> None:
    """When a frame does not follow one this agent analyzed (the others made the last
    quorum without it), the agent checks it on the state the wallet holds (the certified
    frames applied to its proven read), and reads nothing from the node."""
    await duo.service.increment(duo.alice, duo.entity, 1)
    await duo.waiter.until(lambda: duo.counter() == 1)
    agent = duo.service.agents[duo.alice]
    agent._after.clear()  # as if the agent had not seen the frame before
    reads: list[bytes] = []
    read = agent.read_entity

    async def counted(signer: bytes, entity: bytes) -> EntityState | None:
        reads.append(entity)
        return await read(signer, entity)

    agent.read_entity = counted
    await duo.service.increment(duo.alice, duo.entity, 2)
    await duo.waiter.until(lambda: duo.counter() == 3)
    assert reads == []
    deltas = [r.analysis.counter_delta for r in _all(duo) if r.signed and r.analysis]
    assert 2 in deltas


async def test_the_wallet_binds_its_node_once_and_not_while_locked(duo: Duo) -> None:
    """BIND (PROTOCOL.md § 12.6): the guard's binding, the same again for the same key,
    the next serial for another; while locked the request waits, then is refused."""
    agent = duo.service.agents[duo.alice]
    server = bls.sk_to_pk(bls.keygen(b"\x42" * 32))
    first = await agent.bind(server)
    assert (first.signer, first.server_key, first.serial) == (duo.alice, server, 1)
    assert await agent.bind(server) == first
    other = bls.sk_to_pk(bls.keygen(b"\x43" * 32))
    assert (await agent.bind(other)).serial == 2
    duo.service.policy.ttl_s = 0.2
    duo.service.lock()
    with pytest.raises(Refused, match="locked"):
        await agent.bind(server)
