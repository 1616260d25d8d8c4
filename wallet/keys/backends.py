"""Where the signer keys live: the system keyring when one works, else encrypted files.

The backend is chosen explicitly, never by ``keyring.get_keyring()``: keyring's
automatic choice would take whatever has the highest priority, and installing
``keyrings.alt`` makes that a plaintext file. Ranked:

1. Secret Service (GNOME Keyring, KWallet's bridge, KeePassXC) on Linux;
2. the macOS Keychain;
3. the Windows Credential Locker.

Each is used only if its ``priority`` check passes *and* a probe entry can be
written, read back and deleted under the service name. Otherwise the wallet
uses :class:`EncryptedFileKeyring` in ``DATA/keys/``, and says so with a
warning the window shows. That backend accepts only EIP-2335 keystore JSON,
so nothing unencrypted can ever be written through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import KeyringError, PasswordDeleteError

from node.crypto import keystore

SERVICE: Final = "xln-signer"
FILE_BACKEND_NAME: Final = "encrypted files"
PREFER_CHOICES: Final = ("file", "system")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class BackendError(RuntimeError):
    """No backend fits what was asked (``prefer="system"`` with no working system keyring)."""


@dataclass(frozen=True)
class BackendChoice:
    """The backend the vault uses, how to name it to the user, and any warning to show."""

    keyring: KeyringBackend
    name: str
    system: bool
    warning: str | None
    service: str = SERVICE
    tried: tuple[str, ...] = ()  # why each system keyring was passed over (for the log)


class EncryptedFileKeyring(KeyringBackend):
    """A keyring of EIP-2335 keystore files, one per entry, in one folder.

    ``folder/<service>/<username>.json``, each written atomically with mode 0600
    (the folders 0700). ``set_password`` refuses any value that is not keystore
    JSON, so what lands on disk is always encrypted under the wallet password.
    Never chosen by keyring's automatic selection: its ``priority`` refuses.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.folder = Path(folder)

    @properties.classproperty
    def priority(cls) -> float:
        raise RuntimeError("the encrypted-file keyring is only ever chosen explicitly")

    def __str__(self) -> str:
        return f"EncryptedFileKeyring({self.folder})"

    def _path(self, service: str, username: str) -> Path:
        for what, value in (("service", service), ("username", username)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise ValueError(f"{what} {value!r}: letters, digits, '_', '.', '-' (1-128)")
        return self.folder / service / f"{username}.json"

    def get_password(self, service: str, username: str) -> str | None:
        path = self._path(service, username)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            keystore.validate(json.loads(text), data=True)
        except (ValueError, RecursionError) as exc:
            raise KeyringError(f"{path} is not a keystore: {exc}") from exc
        return text

    def set_password(self, service: str, username: str, password: str) -> None:
        path = self._path(service, username)
        try:
            value = json.loads(password)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError("the encrypted-file keyring stores only EIP-2335 keystores") from exc
        if not isinstance(value, dict):
            raise ValueError("the encrypted-file keyring stores only EIP-2335 keystores")
        try:
            keystore.validate(value, data=True)
        except keystore.KeystoreError as exc:
            raise ValueError(f"the encrypted-file keyring stores only keystores: {exc}") from exc
        _private_dir(self.folder)
        _private_dir(path.parent)
        keystore.save(path, value, data=True)

    def delete_password(self, service: str, username: str) -> None:
        path = self._path(service, username)
        try:
            path.unlink()
        except FileNotFoundError as exc:
            raise PasswordDeleteError(f"no entry {username!r} for {service!r}") from exc


def _private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):  # Windows has no POSIX modes
        os.chmod(folder, 0o700)


# The system keyrings, best first: (name, loader). Imported lazily: some
# modules only import on their own platform.
def _secret_service() -> type[KeyringBackend]:
    from keyring.backends import SecretService

    cls: type[KeyringBackend] = SecretService.Keyring
    return cls


def _macos() -> type[KeyringBackend]:
    from keyring.backends import macOS

    cls: type[KeyringBackend] = macOS.Keyring
    return cls


def _windows() -> type[KeyringBackend]:
    from keyring.backends import Windows

    cls: type[KeyringBackend] = Windows.WinVaultKeyring
    return cls


SYSTEM_BACKENDS: Final[tuple[tuple[str, Callable[[], type[KeyringBackend]]], ...]] = (
    ("Secret Service", _secret_service),
    ("macOS Keychain", _macos),
    ("Windows Credential Locker", _windows),
)


def probe(backend: KeyringBackend, service: str) -> None:
    """Write, read back and delete a random probe entry; raises if any step fails."""
    username = f"probe-{secrets.token_hex(8)}"
    value = secrets.token_hex(16)
    backend.set_password(service, username, value)
    try:
        got = backend.get_password(service, username)
    finally:
        backend.delete_password(service, username)
    if got != value:
        raise KeyringError("the probe entry read back differently")


def _try_system(
    name: str, load: Callable[[], type[KeyringBackend]], service: str
) -> tuple[KeyringBackend | None, str]:
    try:
        cls = load()
        priority = cls.priority
        if not priority > 0:
            return None, f"{name}: priority {priority}"
        backend = cls()
        probe(backend, service)
    except Exception as exc:  # any failure means "not usable here"
        return None, f"{name}: {type(exc).__name__}: {exc}"
    return backend, ""


def file_backend(
    data_dir: Path, service: str = SERVICE, tried: tuple[str, ...] = ()
) -> BackendChoice:
    """The encrypted-file backend in ``data_dir/keys``, with the warning to show."""
    folder = Path(data_dir) / "keys"
    warning = (
        f"No system keyring is in use, so your signer keys are kept in encrypted files "
        f"in {folder}, not in the system keyring. They are encrypted with your wallet "
        f"password; keep that folder private and backed up with your recovery phrase."
    )
    return BackendChoice(
        EncryptedFileKeyring(folder), FILE_BACKEND_NAME, False, warning, service, tried
    )


def choose_backend(
    data_dir: Path, prefer: str | None = None, *, service: str = SERVICE
) -> BackendChoice:
    """The best backend that works here (see the module's docstring).

    ``prefer="file"`` forces the encrypted files (headless agents, tests);
    ``prefer="system"`` raises BackendError when no system keyring works.
    Probing may be slow (D-Bus): call it off the GUI thread.
    """
    if prefer is not None and prefer not in PREFER_CHOICES:
        raise ValueError(f"prefer must be None, 'file' or 'system', not {prefer!r}")
    if prefer == "file":
        return file_backend(data_dir, service)
    tried: list[str] = []
    for name, load in SYSTEM_BACKENDS:
        backend, reason = _try_system(name, load, service)
        if backend is not None:
            return BackendChoice(backend, name, True, None, service, tuple(tried))
        tried.append(reason)
    if prefer == "system":
        raise BackendError("no system keyring works here: " + "; ".join(tried))
    return file_backend(data_dir, service, tuple(tried))
