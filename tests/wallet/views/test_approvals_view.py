"""ApprovalsView over a real ApprovalQueue and real frames (real BLS): list order and
countdowns, the detail (hash, effects with governance highlighted, raw bytes, the
signer bar), approve and reject by click and by keyboard, the accountant's decisions."""

from __future__ import annotations

from dataclasses import replace

from pytestqt.qtbot import QtBot

from node.machines.entity import Increment, Vote
from node.machines.governance import SetThreshold
from node.machines.refusal import sign_refusal
from wallet.flows.approvals import DECIDED_LIMIT, Status
from wallet.flows.effects import short
from wallet.flows.refusals import CHANNELS_WAIT
from wallet.model import EntityEntry, HistoryItem
from wallet.qt import QGuiApplication, Qt
from wallet.views.approvals import ApprovalsView, countdown

from .content_helpers import (
    IDS,
    ME,
    SKS,
    Clock,
    RecordingActions,
    Replica,
    config,
    entity,
    model_with,
    queue_with,
    request_for,
    run_qt,
    with_channel,
)


def setup(qtbot: QtBot) -> tuple[ApprovalsView, RecordingActions, Clock, Replica]:
    clock = Clock()
    queue = queue_with(clock)
    replica = Replica(entity())
    actions = RecordingActions(queue)
    view = ApprovalsView(model_with(replica.state), actions, queue)
    qtbot.addWidget(view)
    view.resize(960, 560)
    return view, actions, clock, replica


def test_countdown_format() -> None:
    assert countdown(42.2) == "0:43"
    assert countdown(61) == "1:01"
    assert countdown(0) == "0:00"
    assert countdown(-3) == "0:00"


def test_newest_pending_first_with_countdowns(qtbot: QtBot) -> None:
    view, _, clock, replica = setup(qtbot)
    assert view.empty.isVisibleTo(view)
    first = request_for(view.queue, replica, (1, [Increment(3)]), ttl=30)
    clock.now += 5
    second = request_for(view.queue, replica, (1, [Increment(4)]), ttl=30)
    ids = [view.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(view.list.count())]
    assert ids == [second, first]
    # A new arrival never moves the selection from under the user's keyboard.
    current = view.current()
    assert current is not None
    assert current.id == first
    view.select(second)
    view.tick()  # countdowns move once a second, not when another request arrives
    assert "0:30 left" in view.list.item(0).text()
    assert "0:25 left" in view.list.item(1).text()
    clock.now += 12
    view.tick()
    assert "0:18 left" in view.list.item(0).text()
    assert view.countdown.text() == "0:18 left"
    clock.now += 18
    view.tick()
    assert view.countdown.text() == "expiring"
    view.queue.expire_due()
    assert "expired" in view.list.item(0).text()
    assert not view.approve_button.isVisibleTo(view)


def test_detail_shows_hash_effects_raw_and_signers(qtbot: QtBot) -> None:
    view, _, _, replica = setup(qtbot)
    replica.propose(1, SetThreshold(75))  # proposal 1 by member 1 (30 shares)
    view.model.set_entity(EntityEntry(IDS[ME], replica.state))
    # Member 2's vote brings 30 + 20 = 50 shares, short of 67; member 0's (50 more)
    # executes the proposal in the same frame.
    rid = request_for(view.queue, replica, (2, [Vote(1)]), (0, [Vote(1), Increment(3)]))
    view.show()
    request = view.queue.get(rid)
    assert request is not None
    assert view.hash.value == request.frame_hash
    digits = request.frame_hash.hex()
    groups = " ".join(digits[i : i + 8] for i in range(0, 64, 8))
    assert view.hash.label.text() == "0x " + groups, "the whole hash, in groups of eight"
    view.hash.copy()
    assert QGuiApplication.clipboard().text() == "0x" + request.frame_hash.hex()
    text = view.effects.text()
    assert "threshold 67 -&gt; 75" in text or "threshold 67 -> 75" in text
    assert "governance" in text
    assert "background" in text  # highlighted
    assert "counter +3" in text
    assert view.txs_caption.text() == "TRANSACTIONS (3)"
    assert not view.raw.isVisible()
    view.raw_button.click()
    assert view.raw.isVisible()
    raw = view.raw.toPlainText()
    assert request.frame.raw.hex() in raw.replace("\n", "")
    assert request.analysis is not None
    assert all(t.raw_hex in raw for t in request.analysis.txs)
    # The bar: one segment per member, by shares, the threshold marker at 67 of 100.
    assert [s.shares for s in view.bar.segments] == [50, 30, 20]
    assert not any(s.filled for s in view.bar.segments)
    assert view.bar.threshold == 67
    view.grab().save("/tmp/approvals_view.png")


def test_approve_and_reject_by_click(qtbot: QtBot) -> None:
    view, actions, _, replica = setup(qtbot)
    a = request_for(view.queue, replica, (1, [Increment(1)]))
    b = request_for(view.queue, replica, (1, [Increment(2)]))
    view.show()
    view.select(b)
    view.approve_button.click()
    assert actions.calls == [("approve", b)]
    assert view.queue.get(b).status is Status.APPROVED  # type: ignore[union-attr]
    # The selection moves on to the next pending request.
    assert view.current().id == a  # type: ignore[union-attr]
    view.reject_button.click()
    assert actions.calls[-1] == ("reject", a)
    assert view.queue.get(a).status is Status.REJECTED  # type: ignore[union-attr]
    assert "rejected by you" in view.list.item(1).text()


def test_an_approval_says_when_it_is_signed_or_not(qtbot: QtBot) -> None:
    """ "Approved; signing" does not stay: it becomes "signed and sent" once the
    signature leaves, or says why it was not signed."""
    view, _, _, replica = setup(qtbot)
    a = request_for(view.queue, replica, (1, [Increment(1)]))
    b = request_for(view.queue, replica, (1, [Increment(2)]))
    view.select(b)
    view.approve_button.click()
    assert view.status.text == "Approved; signing"
    signed = view.queue.get(b)
    assert signed is not None
    view.queue.update(signed, signed=True)
    assert view.status.text == "Approved; signed and sent"

    view.select(a)
    view.approve_button.click()
    assert view.status.text == "Approved; signing"
    late = view.queue.get(a)
    assert late is not None
    view.queue.expire(late, "the wallet stayed locked past the sign timeout")
    assert view.status.text == (
        "Approved, but not signed: the wallet stayed locked past the sign timeout"
    )


def test_approve_and_reject_by_keyboard(qtbot: QtBot) -> None:
    view, actions, _, replica = setup(qtbot)
    a = request_for(view.queue, replica, (1, [Increment(1)]))
    b = request_for(view.queue, replica, (1, [Increment(2)]))
    view.select(b)
    view.show()
    view.activateWindow()
    qtbot.waitUntil(view.isActiveWindow)
    view.list.setFocus()
    qtbot.keyClick(view.list, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # type: ignore[no-untyped-call]
    assert actions.calls == [("approve", b)]
    qtbot.keyClick(view.list, Qt.Key.Key_Delete)  # type: ignore[no-untyped-call]
    assert actions.calls == [("approve", b), ("reject", a)]


def test_error_from_a_late_decision_is_shown(qtbot: QtBot) -> None:
    view, _, clock, replica = setup(qtbot)
    request_for(view.queue, replica, (1, [Increment(1)]), ttl=10)
    clock.now += 11  # past the deadline, the queue refuses the decision
    view.approve_button.click()
    assert view.status.error is not None
    assert "expired" in view.status.error
    assert "expired" in view.list.item(0).text()


def test_accountant_decisions_are_greyed_with_their_rule(qtbot: QtBot) -> None:
    view, _, _, replica = setup(qtbot)
    _, frame = replica.frame((1, [Increment(5)]))
    view.queue.record(
        IDS[ME],
        replica.state.entity_id,
        frame,
        0,
        None,
        Status.APPROVED,
        "accountant: small-counter",
        "counter +5 within the limit",
    )
    item = view.list.item(0)
    assert "approved by accountant: small-counter" in item.text()
    assert item.foreground().color().red() == 128
    assert "automatically" in view.title.text().lower()
    assert "counter +5 within the limit" in view.subtitle.text()
    assert not view.approve_button.isVisibleTo(view)


def test_rows_follow_each_event_without_rebuilding(qtbot: QtBot) -> None:
    view, _, _, replica = setup(qtbot)
    ids = [request_for(view.queue, replica, (1, [Increment(n)])) for n in (1, 2, 3)]
    rows = view.list.item(0), view.list.item(1), view.list.item(2)
    view.queue.reject(ids[1])  # the middle one leaves the pending section
    order = [view.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(3)]
    assert order == [ids[2], ids[0], ids[1]], "pending newest first, then decided"
    now = [view.list.item(i) for i in range(3)]
    assert all(any(r is n for n in now) for r in rows), "rows moved, not rebuilt"
    assert "rejected" in view.list.item(2).text()
    # The queue keeps the latest decisions only; the list drops the rows it forgot.
    request = view.queue.get(ids[2])
    assert request is not None
    for _ in range(DECIDED_LIMIT + 5):
        view.queue.record(
            request.signer, request.entity, request.frame, 0, None, Status.APPROVED, "test", ""
        )
    assert view.list.count() == len(view.queue.all()) == DECIDED_LIMIT + 2
    assert view.current() is not None


def test_co_signers_refusals_of_the_frame_are_shown_with_their_reasons(qtbot: QtBot) -> None:
    view, _, _, replica = setup(qtbot)
    rid = request_for(view.queue, replica, (0, [Increment(5000)]))
    request = view.queue.get(rid)
    assert request is not None
    view.show()
    assert not view.refused.isVisibleTo(view)
    reason = "rejected by accountant: limit: +5000 is over 1,000"
    refused = [
        sign_refusal(SKS[1], IDS[1], request.entity, 1, 0, request.frame_hash, "rejected by hand"),
        sign_refusal(SKS[2], IDS[2], request.entity, 1, 0, request.frame_hash, reason),
        sign_refusal(SKS[2], IDS[2], request.entity, 1, 1, request.frame_hash, reason),
        # Another frame's refusal is not this one's.
        sign_refusal(SKS[1], IDS[1], request.entity, 1, 0, b"\x01" * 32, "no"),
    ]
    view.model.set_refusals(request.entity, refused)  # as the service reads them
    assert view.refused.isVisibleTo(view)
    assert view.refused.text().split("\n") == [
        f"Refused by {short(IDS[1])} at round 0: rejected by hand",
        f"Refused by {short(IDS[2])} at round 1: {reason}",
    ]
    view.model.set_refusals(request.entity, [])
    assert not view.refused.isVisibleTo(view)


def test_a_refused_frame_offers_to_withdraw_this_signers_batch(qtbot: QtBot) -> None:
    view, actions, _, replica = setup(qtbot)
    rid = request_for(view.queue, replica, (0, [Increment(5000)]), (1, [Increment(1)]))
    request = view.queue.get(rid)
    assert request is not None
    view.show()
    assert not view.withdraw_button.isVisibleTo(view)  # nobody refused it
    reason = "rejected by accountant: limit: +5000 is over 1,000"
    view.model.set_refusals(
        request.entity,
        [sign_refusal(SKS[2], IDS[2], request.entity, 1, 0, request.frame_hash, reason)],
    )
    assert view.withdraw_button.isVisibleTo(view)
    assert view.withdraw_button.text() == "&Withdraw my batch"  # ME's alone, not signer 1's

    async def click() -> None:
        view.withdraw_button.click()
        await view.runner.wait_idle()

    run_qt(click())
    assert view.status.text == "Withdrawn: nonce 1"
    assert actions.calls == [("withdraw", IDS[ME], request.entity, 1)]


def test_a_pending_frame_of_an_entity_with_channels_says_its_channels_wait(
    qtbot: QtBot,
) -> None:
    view, _, _, replica = setup(qtbot)
    rid = request_for(view.queue, replica, (0, [Increment(1)]))
    view.show()
    assert not view.refused.isVisibleTo(view)  # no channel: nothing waits but the frame
    peer = entity((1,), 1)
    state = with_channel(replica.state, replace(peer, entity_id=b"\x77" * 32), 10, 10)
    view.model.set_entity(EntityEntry(IDS[ME], state))
    assert view.refused.isVisibleTo(view)
    assert view.refused.text() == CHANNELS_WAIT
    view.queue.approve(rid)
    assert not view.refused.isVisibleTo(view)  # decided: nothing waits on the person


def test_the_detail_keeps_the_config_the_frame_was_signed_under(qtbot: QtBot) -> None:
    """Once a frame applies, the entity's config may have changed (a signer added, the
    shares moved): the request's detail still names the proposer and counts the
    shares of the config it was proposed under."""
    view, _, _, replica = setup(qtbot)
    rid = request_for(view.queue, replica, (0, [Increment(1)]))
    view.show()
    view.select(rid)
    assert [s.shares for s in view.bar.segments] == [50, 30, 20]
    assert "from you (proposer)" in view.subtitle.text()
    later = replace(replica.state, config=config((20, 30, 50), 51, proposer=2))
    view.model.set_entity(EntityEntry(IDS[ME], later))
    assert [s.shares for s in view.bar.segments] == [50, 30, 20]
    assert view.bar.threshold == 67
    assert "from you (proposer)" in view.subtitle.text()


def test_a_certified_frame_shows_who_signed_its_certificate(qtbot: QtBot) -> None:
    """Once the wallet sees the frame certified, its bar shows the certificate's
    signers and says "certified" (it showed this wallet's share alone, "1/2 of 2
    shares", after both had signed: seen by the GUI suite)."""
    view, _, _, replica = setup(qtbot)
    rid = request_for(view.queue, replica, (0, [Increment(1)]))
    view.show()
    view.select(rid)
    request = view.queue.get(rid)
    assert request is not None
    view.queue.approve(rid)
    view.queue.update(request, signed=True)
    view.select(rid)
    assert [s.filled for s in view.bar.segments] == [True, False, False]  # us: member 0
    assert view.bar_text.text() == "50/67 of 100 shares"
    view.model.add_history(
        HistoryItem(
            "frame",
            request.frame.height,
            request.frame_hash,
            0,
            "frame",
            entity_id=request.entity,
            signer_id=IDS[ME],
            cert_signers=(IDS[ME], IDS[1]),
        )
    )
    view.model.set_entity(EntityEntry(IDS[ME], replica.state))  # the service moves it next
    assert [s.filled for s in view.bar.segments] == [True, True, False]
    assert view.bar_text.text() == "80/67 of 100 shares  ·  certified"
