"""ProposalsView over real entity states: the bar per proposal (segments by shares,
filled per vote, the threshold), heights left, Vote (disabled once voted, busy while
it runs, the error shown), closed proposals logged as executed or expired."""

from __future__ import annotations

import asyncio

from pytestqt.qtbot import QtBot

from node.machines.governance import SetShares, SetThreshold
from wallet.model import EntityEntry
from wallet.views.proposals import ProposalsView

from .content_helpers import (
    IDS,
    ME,
    Clock,
    RecordingActions,
    Replica,
    entity,
    model_with,
    queue_with,
    run_qt,
)


def setup(qtbot: QtBot) -> tuple[ProposalsView, RecordingActions, Replica]:
    replica = Replica(entity((50, 30, 20), 67))
    replica.propose(1, SetThreshold(75), ttl=10)  # proposal 1, by member 1
    actions = RecordingActions()
    view = ProposalsView(model_with(replica.state), actions, queue_with(Clock()))
    qtbot.addWidget(view)
    view.resize(760, 420)
    view.show()  # a hidden view defers its rows until shown
    return view, actions, replica


def update(view: ProposalsView, replica: Replica) -> None:
    view.model.set_entity(EntityEntry(IDS[ME], replica.state))


def test_bar_sizes_fill_threshold_and_heights_left(qtbot: QtBot) -> None:
    view, _, replica = setup(qtbot)
    row = view.row(1)
    assert [s.shares for s in row.bar.segments] == [50, 30, 20]
    assert [s.filled for s in row.bar.segments] == [False, True, False]
    assert row.bar.threshold == 67
    assert row.shares.text() == "30/67 shares"
    assert "10 heights left" in row.meta.text()
    assert row.vote_button.isEnabled()
    replica.increment(2, 1)
    update(view, replica)
    assert "9 heights left" in view.row(1).meta.text()
    view.show()
    view.grab().save("/tmp/proposals_view.png")


def test_vote_runs_then_disables(qtbot: QtBot) -> None:
    view, actions, replica = setup(qtbot)

    async def scenario() -> None:
        actions.hold = asyncio.Event()
        row = view.row(1)
        row.vote_button.click()
        assert not row.vote_button.isEnabled()
        assert view.status.progress.isVisibleTo(view.status)
        actions.hold.set()
        await view.runner.wait_idle()
        assert actions.calls == [("vote", IDS[ME], replica.state.entity_id, 1)]
        assert not view.status.progress.isVisibleTo(view.status)
        # Sent but not committed yet: no second vote.
        assert view.row(1).vote_button.text() == "Vote sent"
        assert not view.row(1).vote_button.isEnabled()

    run_qt(scenario())
    replica.vote(2, 1)  # 30 + 20 = 50 < 67: still open, and someone else's vote
    replica.propose(2, SetShares(IDS[2], 25))  # proposal 2, by member 2
    update(view, replica)
    # A new proposal: the user has not voted on it.
    assert view.row(2).vote_button.isEnabled()
    assert [s.filled for s in view.row(1).bar.segments] == [False, True, True]


def test_already_voted_is_disabled_and_errors_are_shown(qtbot: QtBot) -> None:
    view, actions, replica = setup(qtbot)
    replica.propose(ME, SetShares(IDS[2], 25))  # proposal 2 by the user: their vote counts
    update(view, replica)
    assert view.row(2).vote_button.text() == "Voted"
    assert not view.row(2).vote_button.isEnabled()

    async def scenario() -> None:
        actions.fail = "the node refused the batch: nonce 3, expected 2"
        view.row(1).vote_button.click()
        await view.runner.wait_idle()

    run_qt(scenario())
    assert view.status.error == "the node refused the batch: nonce 3, expected 2"
    assert view.row(1).vote_button.isEnabled()


def test_closed_proposals_are_logged_executed_or_expired(qtbot: QtBot) -> None:
    view, _, replica = setup(qtbot)
    replica.propose(2, SetShares(IDS[2], 25), ttl=1)  # proposal 2 expires soon
    update(view, replica)
    replica.vote(ME, 1)  # 30 + 50 >= 67: proposal 1 executes
    update(view, replica)
    replica.increment(ME, 1)
    replica.increment(ME, 1)  # past proposal 2's expiry
    update(view, replica)
    assert replica.state.config.threshold == 75
    assert not replica.state.proposals
    closed = {c.proposal.id: c.outcome for c in view.closed[(IDS[ME], replica.state.entity_id)]}
    assert closed == {1: "executed", 2: "expired"}
    texts = [r.meta.text() for r in view.rows]
    assert any("executed" in t for t in texts)
    assert any("expired" in t for t in texts)
    assert all(not r.vote_button.isVisibleTo(r) for r in view.rows)


def test_new_proposal_opens_the_editor(qtbot: QtBot) -> None:
    view, _, _ = setup(qtbot)
    view.new_button.click()
    assert view.editor.isVisible()
    view.editor.reject()


def test_a_hidden_view_builds_its_rows_when_shown(qtbot: QtBot) -> None:
    replica = Replica(entity((50, 30, 20), 67))
    replica.propose(1, SetThreshold(75), ttl=10)
    view = ProposalsView(model_with(replica.state), RecordingActions(), queue_with(Clock()))
    qtbot.addWidget(view)
    assert view.rows == [], "nothing built while hidden"
    replica.increment(2, 1)
    update(view, replica)
    assert view.rows == []
    view.show()
    assert "9 heights left" in view.row(1).meta.text()
