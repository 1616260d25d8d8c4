"""The GUI suite's fixtures: one X display with a window manager for the module,
and a check that the display tools are installed (a missing one fails every GUI
test with the package to install; the suite never skips)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gui.driver import Display, Shots, missing_tools
from tests.wallet.keys.conftest import HOW_TO_GET_ONE
from wallet.keys.backends import BackendError, choose_backend


@pytest.fixture(scope="module")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Display]:
    missing = missing_tools()
    if missing:
        pytest.fail(
            "The GUI suite needs these display tools: "
            + ", ".join(missing)
            + ". `scripts/bootstrap.sh dev` installs them (Debian/Ubuntu).",
            pytrace=False,
        )
    try:
        choose_backend(tmp_path_factory.mktemp("probe"), prefer="system")
    except BackendError as exc:
        pytest.fail(f"{HOW_TO_GET_ONE} ({exc})", pytrace=False)
    screen = Display(tmp_path_factory.mktemp("display"))
    try:
        screen.start()
        yield screen
    finally:
        screen.stop()


@pytest.fixture
def shots(display: Display, request: pytest.FixtureRequest) -> Shots:
    return Shots(display, request.node.name)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the module's wallets keep their data folders in."""
    return tmp_path_factory.mktemp("wallets")
