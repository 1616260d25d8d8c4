"""Fixtures for the key tests: a throwaway keyring service name, the encrypted-file
backend, and the real Secret Service that scripts/test.sh starts (a private D-Bus
session with an unlocked GNOME Keyring)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from wallet.keys.backends import BackendChoice, BackendError, choose_backend

HOW_TO_GET_ONE = (
    "No Secret Service is reachable, so the real system-keyring tests cannot run. "
    "Run the tests through scripts/test.sh: it starts pytest inside dbus-run-session "
    "with an unlocked gnome-keyring-daemon (Debian packages gnome-keyring, dbus, dbus-daemon)."
)


@pytest.fixture
def service() -> str:
    """A keyring service name of this test alone, so tests never see each other's entries."""
    return f"xln-signer-test-{secrets.token_hex(6)}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "wallet"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def file_choice(data_dir: Path, service: str) -> BackendChoice:
    return choose_backend(data_dir, prefer="file", service=service)


@pytest.fixture
def no_system_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point D-Bus at a socket that does not exist: genuinely no Secret Service here."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/xln-no-bus")


@pytest.fixture
def secret_service(data_dir: Path, service: str) -> Iterator[BackendChoice]:
    """The Secret Service backend; FAILS (never skips) when none is reachable.

    Deletes every entry of this test's service afterwards.
    """
    try:
        choice = choose_backend(data_dir, prefer="system", service=service)
    except BackendError as exc:
        pytest.fail(f"{HOW_TO_GET_ONE}\n({exc})")
    if choice.name != "Secret Service":
        pytest.fail(f"{HOW_TO_GET_ONE}\n(the system keyring here is {choice.name})")
    yield choice
    _delete_service_items(service)


def _delete_service_items(service: str) -> None:
    import secretstorage

    with closing(secretstorage.dbus_init()) as connection:
        collection = secretstorage.get_default_collection(connection)
        for item in list(collection.search_items({"service": service})):
            item.delete()
