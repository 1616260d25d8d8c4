"""Qt view tests, offscreen: async tests run on ONE qasync loop per test, and any
unhandled exception (in a loop callback, a task, or a Qt slot through
``sys.excepthook``) fails the test that raised it.

The ``pytest_asyncio_loop_factories`` hook makes every async test's loop a
``qasync.QEventLoop`` on the one ``QApplication``; the ``fail_on_unhandled``
fixture collects what that loop's exception handler and ``sys.excepthook`` saw. Inside
async tests wait with asyncio (events, ``asyncio.timeout``), never
``qtbot.waitUntil``; that is fine only in synchronous tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import pytest
import pytestqt.plugin as pytestqt_plugin

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from wallet.qt import QApplication, QEventLoop

_errors: list[str] = []


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    detail = "".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else ""
    _errors.append(f"{context.get('message', 'loop error')}\n{detail}")


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _errors.append("".join(traceback.format_exception(kind, exc, tb)))


class _TestLoop(QEventLoop):  # type: ignore[misc]
    """qasync's ``run_until_complete`` lets Qt process its events once more after the
    loop stopped, with asyncio's running loop already unset: a task woken in that
    pass (an embedded node's tick) would die with "no running event loop". This
    loop stays marked running through that pass."""

    def _after_run_forever(self) -> None:
        super()._after_run_forever()
        asyncio.events._set_running_loop(self)

    def run_until_complete(self, future: Any) -> Any:
        try:
            return super().run_until_complete(future)
        finally:
            if asyncio.events._get_running_loop() is self:
                asyncio.events._set_running_loop(None)


_loops: list[_TestLoop] = []  # the current test's loop, last


def _qt_loop() -> asyncio.AbstractEventLoop:
    app = QApplication.instance() or QApplication([])
    loop = _TestLoop(app)
    loop.set_exception_handler(_loop_error)
    _loops[:] = [loop]
    return loop


def _process_events_in_loop() -> None:
    """pytest-qt processes Qt events after each test's setup, call and teardown, from
    outside the loop: with qasync, that runs the loop's due callbacks, and a task
    stepped there (an embedded node's tick) died with "no running event loop", so
    the node was gone when the test went on. Mark the test's loop running for it."""
    loop = _loops[0] if _loops else None
    if loop is None or loop.is_closed() or asyncio.events._get_running_loop() is not None:
        _pytestqt_process_events()
        return
    asyncio.events._set_running_loop(loop)
    try:
        _pytestqt_process_events()
    finally:
        asyncio.events._set_running_loop(None)


_pytestqt_process_events: Callable[[], None] = pytestqt_plugin._process_events
pytestqt_plugin._process_events = _process_events_in_loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test in this folder runs on a fresh qasync loop."""
    return {"qasync": _qt_loop}


@pytest.fixture(autouse=True)
def fail_on_unhandled() -> Iterator[None]:
    """Fails the test on any exception nobody handled while it ran."""
    _errors.clear()
    previous = sys.excepthook
    sys.excepthook = _hook
    try:
        yield
    finally:
        sys.excepthook = previous
    if _errors:
        found = list(_errors)
        _errors.clear()
        pytest.fail("unhandled exceptions:\n" + "\n".join(found), pytrace=False)


@pytest.fixture
def app_outlives_dialogs(qapp: QApplication) -> Iterator[None]:
    """A test whose only window is a dialog: its closing must not end the test's loop
    (the wallet's controller turns Qt's quit-on-last-window off too)."""
    before = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    yield
    qapp.setQuitOnLastWindowClosed(before)
