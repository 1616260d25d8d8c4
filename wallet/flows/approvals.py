"""The approval queue (pre-commit requests and every decision on them) and the notifications.

Pure Python with an injected clock: no Qt, no wall clock, no network. The agent
(``wallet/agent.py``) adds a request when a frame needs a human, and records the
accountant's automatic decisions here too, so the window lists every decision
with who made it. Listeners are plain callbacks; the GUI turns them into
repaints, tests read the lists directly.

Expiry is driven by :meth:`ApprovalQueue.expire_due`: :meth:`ApprovalQueue.wait`
calls it when the request's time is up (measured on the loop), and tests call
it after moving their clock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from node.machines.frames import Frame

if TYPE_CHECKING:
    from wallet.flows.effects import FrameAnalysis

log = logging.getLogger(__name__)

DECIDED_LIMIT = 1_000
# Decided requests keep their frames: a hub's are ~150 KB each, so fewer of those.
DECIDED_BYTES = 16 * 1024 * 1024
# The newest decided requests keep their analysis whole (the state after the frame,
# which the wallet takes as its own when the frame is certified); older ones keep
# what the frame does (FrameAnalysis.without_state).
DECIDED_WHOLE = 16
NOTIFICATION_LIMIT = 200
YOU = "you"


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(eq=False)
class ApprovalRequest:
    """One SIGN request: the frame, what it would do, and what became of it."""

    id: int
    signer: bytes
    entity: bytes
    frame: Frame
    round: int  # the latest round the node asked at (a pending request follows it)
    analysis: FrameAnalysis | None
    received: float  # the queue's clock, seconds
    expires: float
    status: Status = Status.PENDING
    decided_by: str = ""  # "you", "accountant: RULE", or "" while pending
    reason: str = ""
    decided_at: float | None = None
    signed: bool = False  # the signature left the wallet
    _outcome: asyncio.Event | None = field(default=None, repr=False)

    @property
    def frame_hash(self) -> bytes:
        return self.frame.hash

    @property
    def automatic(self) -> bool:
        return self.decided_by.startswith("accountant")

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires - now)


type Listener = Callable[[ApprovalRequest], None]


def _call(listeners: list[Listener], request: ApprovalRequest) -> None:
    for listener in list(listeners):
        try:
            listener(request)
        except Exception:
            log.exception("an approval listener failed")


class ApprovalQueue:
    """Pending requests in arrival order, and the most recent decided ones."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._ids = itertools.count(1)
        self._pending: dict[int, ApprovalRequest] = {}
        # The newest last; at most DECIDED_LIMIT and DECIDED_BYTES of frames (one at least).
        self.decided: deque[ApprovalRequest] = deque()
        self._decided_bytes = 0
        self.added: list[Listener] = []  # a new request (pending or already decided)
        self.changed: list[Listener] = []  # a request was decided, expired, or signed

    # Reading ----------------------------------------------------------------

    def pending(self) -> list[ApprovalRequest]:
        return list(self._pending.values())

    def get(self, request_id: int) -> ApprovalRequest | None:
        found = self._pending.get(request_id)
        if found is not None:
            return found
        return next((r for r in self.decided if r.id == request_id), None)

    def all(self) -> list[ApprovalRequest]:
        """Pending first (oldest first), then decided (newest first)."""
        return [*self._pending.values(), *reversed(self.decided)]

    # Adding -----------------------------------------------------------------

    def add(
        self,
        signer: bytes,
        entity: bytes,
        frame: Frame,
        round_: int,
        analysis: FrameAnalysis | None,
        ttl_s: float,
    ) -> ApprovalRequest:
        """A request waiting for a human, expiring ``ttl_s`` from now.

        The same frame asked again at a later round (the round timed out while the
        human read it) is the same question, and stays the same request: the pending
        one follows the new round and its expiry is renewed, so the person's list
        keeps one entry per frame and what they are reading does not go away. The
        waiter of the older round is told its round is over (:meth:`wait` returns
        None) and refuses that round; a decision signs the latest one.
        """
        if ttl_s <= 0:
            raise ValueError("an approval request needs a positive time to live")
        now = self.clock()
        for older in self.pending():
            if older.signer == signer and older.frame_hash == frame.hash:
                if round_ > older.round:
                    older.round = round_
                    older.expires = now + ttl_s
                    if analysis is not None:
                        older.analysis = analysis
                    superseded, older._outcome = older._outcome, None
                    if superseded is not None:
                        superseded.set()
                    _call(self.changed, older)
                return older
        request = ApprovalRequest(
            next(self._ids), signer, entity, frame, round_, analysis, now, now + ttl_s
        )
        self._pending[request.id] = request
        _call(self.added, request)
        return request

    def record(
        self,
        signer: bytes,
        entity: bytes,
        frame: Frame,
        round_: int,
        analysis: FrameAnalysis | None,
        status: Status,
        decided_by: str,
        reason: str,
        ttl_s: float = 0.0,
    ) -> ApprovalRequest:
        """A request decided on arrival (the accountant, a re-sign, a headless refusal)."""
        if status is Status.PENDING:
            raise ValueError("record() is for decided requests; use add()")
        now = self.clock()
        request = ApprovalRequest(
            next(self._ids),
            signer,
            entity,
            frame,
            round_,
            analysis,
            now,
            now + ttl_s,
            status,
            decided_by,
            reason,
            now,
        )
        self._push_decided(request)
        _call(self.added, request)
        return request

    def again(
        self, signer: bytes, entity: bytes, frame: Frame, round_: int, ttl_s: float = 0.0
    ) -> ApprovalRequest:
        """A frame already approved, asked at a later round (signed again without
        asking: the agent's lock allows that and nothing else there). Its approved
        entry follows the round, as a pending one does, so the list keeps one entry
        per frame and still says who approved it; if that entry left the list, a
        decided one is recorded."""
        for request in reversed(self.decided):
            if (
                request.signer == signer
                and request.frame_hash == frame.hash
                and request.status is Status.APPROVED
            ):
                if round_ > request.round:
                    request.round = round_
                    request.expires = self.clock() + ttl_s
                _call(self.changed, request)
                return request
        return self.record(
            signer,
            entity,
            frame,
            round_,
            None,
            Status.APPROVED,
            "approved before",
            "the same frame, already approved, at a later round",
            ttl_s,
        )

    # Deciding ---------------------------------------------------------------

    def approve(self, request_id: int, by: str = YOU, reason: str = "") -> ApprovalRequest:
        return self._decide(request_id, Status.APPROVED, by, reason or "approved")

    def reject(self, request_id: int, by: str = YOU, reason: str = "") -> ApprovalRequest:
        return self._decide(request_id, Status.REJECTED, by, reason or "rejected")

    def _decide(self, request_id: int, status: Status, by: str, reason: str) -> ApprovalRequest:
        request = self._pending.get(request_id)
        if request is None:
            known = self.get(request_id)
            if known is None:
                raise KeyError(f"no approval request {request_id}")
            raise ValueError(f"request {request_id} is already {known.status.value}")
        if self.clock() >= request.expires:
            self.expire_due()
            raise ValueError(f"request {request_id} expired")
        self._finish(request, status, by, reason)
        return request

    def expire_due(self) -> list[ApprovalRequest]:
        """Expire every pending request whose time is up; returns them."""
        now = self.clock()
        due = [r for r in self._pending.values() if now >= r.expires]
        for request in due:
            self._finish(request, Status.EXPIRED, "", "no answer before the node's deadline")
        return due

    def _finish(self, request: ApprovalRequest, status: Status, by: str, reason: str) -> None:
        del self._pending[request.id]
        request.status = status
        request.decided_by = by
        request.reason = reason
        request.decided_at = self.clock()
        self._push_decided(request)
        if request._outcome is not None:
            request._outcome.set()
        _call(self.changed, request)

    def _push_decided(self, request: ApprovalRequest) -> None:
        decided = self.decided
        decided.append(request)
        self._decided_bytes += len(request.frame.raw)
        while len(decided) > DECIDED_LIMIT or (
            self._decided_bytes > DECIDED_BYTES and len(decided) > 1
        ):
            self._decided_bytes -= len(decided.popleft().frame.raw)
        if len(decided) > DECIDED_WHOLE:
            older = decided[-DECIDED_WHOLE - 1]
            if older.analysis is not None:
                older.analysis = older.analysis.without_state()

    def update(self, request: ApprovalRequest, *, signed: bool | None = None) -> None:
        """Note what happened after a decision (the signature left, or the key stayed locked)."""
        if signed is not None:
            request.signed = signed
        _call(self.changed, request)

    def expire(self, request: ApprovalRequest, reason: str) -> None:
        """An approved request that could not be signed in time (the wallet stayed locked)."""
        request.status = Status.EXPIRED
        request.reason = reason
        request.decided_at = self.clock()
        _call(self.changed, request)

    # Waiting ----------------------------------------------------------------

    async def wait(self, request: ApprovalRequest, round_: int | None = None) -> Status | None:
        """The request's outcome at ``round_`` (default: its round now): approved,
        rejected, or expired when its time is up; None if the same frame was asked
        again at a later round first (this round is over; the request goes on).

        The remaining time is read from the queue's clock and waited out on the
        loop; then :meth:`expire_due` decides with the same clock.
        """
        at = request.round if round_ is None else round_
        while request.status is Status.PENDING:
            if request.round != at:
                return None
            if request._outcome is None:
                request._outcome = asyncio.Event()
            outcome = request._outcome
            remaining = request.remaining(self.clock())
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await outcome.wait()
                except TimeoutError:
                    pass
            else:
                self.expire_due()
        return request.status


@dataclass(frozen=True, slots=True)
class Notification:
    title: str
    text: str
    time: float  # the clock of the Notifications model


class Notifications:
    """The list of notifications the tray shows (newest last); tests read it headless."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.items: deque[Notification] = deque(maxlen=NOTIFICATION_LIMIT)
        self.added: list[Callable[[Notification], None]] = []

    def notify(self, title: str, text: str) -> Notification:
        item = Notification(title, text, self.clock())
        self.items.append(item)
        for listener in list(self.added):
            try:
                listener(item)
            except Exception:
                log.exception("a notification listener failed")
        return item

    def clear(self) -> None:
        self.items.clear()
