"""API tokens: created from the console, stored hashed, listable and revocable.

Tokens live in ``tokens.json`` in the data folder, not in LevelDB, so that
``xln-node token ...`` works while a node holds the database. Writers take an
exclusive lock (``flock``; ``msvcrt.locking`` on Windows) and replace the file
atomically (temp file, fsync, rename); a running node notices the change on
its next tick and reloads.

A token reads ``xln_<id>_<secret>``. Only its SHA-256 is stored: the secret is
32 random bytes, so a slow KDF adds nothing. The id is public and names the
token in ``list`` and ``revoke``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from node.codec import HASH_LEN

log = logging.getLogger(__name__)

if sys.platform == "win32":
    import msvcrt

    def _lock_exclusive(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)

else:
    import fcntl

    def _lock_exclusive(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)


TOKENS_FILE = "tokens.json"
FILE_VERSION = 1


class ScopeError(ValueError):
    pass


class TokenFileError(ValueError):
    """tokens.json exists but cannot be used."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token reaches: the server and everything under it, or one signer or entity."""

    kind: str  # "server" | "signer" | "entity"
    id: bytes = b""

    @classmethod
    def parse(cls, text: str) -> Scope:
        if text == "server":
            return cls("server")
        kind, sep, hex_id = text.partition(":")
        if sep and kind in ("signer", "entity"):
            try:
                machine_id = bytes.fromhex(hex_id)
            except ValueError:
                machine_id = b""
            if len(machine_id) == HASH_LEN:
                return cls(kind, machine_id)
        raise ScopeError(f"scope {text!r}: expected server, signer:<64 hex> or entity:<64 hex>")

    def __str__(self) -> str:
        return self.kind if self.kind == "server" else f"{self.kind}:{self.id.hex()}"

    def allows(self, route: tuple[bytes, ...]) -> bool:
        """Access widens upward: a scope reaches its machine and everything below it."""
        if self.kind == "server":
            return True
        if self.kind == "signer":
            return len(route) >= 1 and route[0] == self.id
        return len(route) >= 2 and route[1] == self.id

    @property
    def is_server(self) -> bool:
        return self.kind == "server"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    sha256: str
    scope: str
    created: str
    label: str = ""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The token file of one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / TOKENS_FILE
        self._lock_path = data_dir / (TOKENS_FILE + ".lock")
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, TokenRecord] = {}
        self.refresh()

    # Reading --------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload if the file changed since the last read; True when it did.

        A file that cannot be read (hand-edited into invalid JSON, say) is
        logged and the last good set stays in force: a running node never
        stops over it, and ``token`` commands refuse to overwrite it.
        """
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            records = self._read()
        except TokenFileError as exc:
            log.error("%s; keeping the %d tokens loaded before", exc, len(self._records))
            return False
        self._records = {r.id: r for r in records}
        return True

    def _read(self) -> list[TokenRecord]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise TokenFileError(f"{self.path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
            raise TokenFileError(f"{self.path}: not a version {FILE_VERSION} token file")
        records = []
        try:
            for raw in data["tokens"]:
                record = TokenRecord(**raw)
                Scope.parse(record.scope)
                records.append(record)
        except (KeyError, TypeError, ScopeError) as exc:
            raise TokenFileError(f"{self.path}: bad token record: {exc}") from exc
        return records

    def records(self) -> list[TokenRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created, r.id))

    def authenticate(self, token: str) -> TokenRecord | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "xln":
            return None
        record = self._records.get(parts[1])
        if record is None or not hmac.compare_digest(record.sha256, _hash(token)):
            return None
        return record

    def is_live(self, token_id: str) -> bool:
        return token_id in self._records

    # Writing --------------------------------------------------------------

    def create(self, scope: Scope, label: str = "") -> tuple[str, TokenRecord]:
        """A new token; the plaintext is returned once and never stored."""
        with self._locked():
            records = {r.id: r for r in self._read()}
            token_id = secrets.token_hex(4)
            while token_id in records:
                token_id = secrets.token_hex(4)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
            token = f"xln_{token_id}_{secret}"
            created = datetime.now(UTC).isoformat(timespec="seconds")
            record = TokenRecord(token_id, _hash(token), str(scope), created, label)
            records[token_id] = record
            self._write(records.values())
        self.refresh()
        return token, record

    def revoke(self, token_id: str) -> bool:
        with self._locked():
            records = {r.id: r for r in self._read()}
            if records.pop(token_id, None) is None:
                return False
            self._write(records.values())
        self.refresh()
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            _lock_exclusive(fd)
            yield
        finally:
            os.close(fd)

    def _write(self, records: Iterable[TokenRecord]) -> None:
        payload = {"version": FILE_VERSION, "tokens": [asdict(r) for r in records]}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
