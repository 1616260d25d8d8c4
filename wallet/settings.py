"""The wallet's settings: ``settings.json`` in the data folder, read and written atomically.

Node mode and URL, how a remote ``wss://`` node's certificate is trusted (the
SHA-256 fingerprint the person accepted on first use, or a CA file), peers of
the embedded node, theme, the accountant and its rules file, the lock timeout
and the embedded node's tick, the backup schedule. No secrets: a remote node's token is kept in the
vault (``vault.put_secret("node-token", ...)``).

A file that cannot be read or holds bad values gives a clear error
(:class:`SettingsError`); :func:`load_or_default` logs it and uses the
defaults, leaving the bad file as it is until the next save.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from node.net.tls import TlsConfigError, parse_fingerprint

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
NODE_MODES = ("embedded", "remote")
THEMES = ("system", "light", "dark")
BACKUP_SCHEDULES = ("off", "daily", "weekly")
MAX_TICK_MS = 60_000
MAX_LOCK_TIMEOUT_MIN = 24 * 60
MAX_PORT = 65_535


class SettingsError(ValueError):
    """settings.json exists but cannot be used; the message says which field and why."""


@dataclass
class Settings:
    node_mode: str = "embedded"
    node_url: str = ""
    # The remote node's certificate fingerprint (64 hex digits) accepted on first use;
    # empty: none accepted yet. Then only a certificate with it is trusted.
    node_cert_sha256: str = ""
    node_ca_file: str = ""  # PEM CA certificates a wss:// node is verified against
    peers: list[str] = field(default_factory=list)
    # The embedded node's port on 127.0.0.1; 0: a free one at each start (no peer can
    # then be given this node's address for good).
    listen_port: int = 0
    theme: str = "system"
    accountant_on: bool = False
    rules_path: str = ""  # empty: the accountant's default rules
    lock_timeout_min: int = 15  # 0: never lock by itself
    tick_ms: int = 100
    backup_schedule: str = "off"  # off, daily, weekly (wallet/flows/backup.py)
    backup_folder: str = ""  # empty: ~/XLN backups
    last_backup: int = 0  # unix seconds of the last backup made here (0: none)

    def validate(self) -> None:
        """Raise SettingsError naming the first bad field."""
        if self.node_mode not in NODE_MODES:
            raise SettingsError(f"node_mode must be one of {', '.join(NODE_MODES)}")
        if self.node_mode == "remote" and not _is_ws_url(self.node_url):
            raise SettingsError("node_url must be a ws:// or wss:// URL in remote mode")
        if self.node_url and not _is_ws_url(self.node_url):
            raise SettingsError("node_url must be a ws:// or wss:// URL")
        if self.node_cert_sha256:
            try:
                if parse_fingerprint(self.node_cert_sha256) != self.node_cert_sha256:
                    raise TlsConfigError("not in lowercase hex")
            except TlsConfigError:
                raise SettingsError(
                    "node_cert_sha256 must be a certificate's SHA-256 fingerprint: "
                    "64 lowercase hex digits"
                ) from None
        for peer in self.peers:
            if not _is_ws_url(peer):
                raise SettingsError(f"peer {peer!r} is not a ws:// or wss:// URL")
        if not 0 <= self.listen_port <= MAX_PORT:
            raise SettingsError(f"listen_port must be 0 to {MAX_PORT}")
        if self.theme not in THEMES:
            raise SettingsError(f"theme must be one of {', '.join(THEMES)}")
        if not 0 <= self.lock_timeout_min <= MAX_LOCK_TIMEOUT_MIN:
            raise SettingsError(f"lock_timeout_min must be 0 to {MAX_LOCK_TIMEOUT_MIN}")
        if not 1 <= self.tick_ms <= MAX_TICK_MS:
            raise SettingsError(f"tick_ms must be 1 to {MAX_TICK_MS}")
        if self.backup_schedule not in BACKUP_SCHEDULES:
            raise SettingsError(f"backup_schedule must be one of {', '.join(BACKUP_SCHEDULES)}")
        if self.last_backup < 0:
            raise SettingsError("last_backup must be a time (unix seconds)")

    @classmethod
    def from_json(cls, data: object) -> Settings:
        if not isinstance(data, dict):
            raise SettingsError("settings must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        defaults = asdict(cls())
        for name, value in data.items():
            if name not in known:
                continue  # a newer version's setting: ignored, not an error
            want = type(defaults[name])
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise SettingsError(f"{name} must be a whole number")
            if want is bool and not isinstance(value, bool):
                raise SettingsError(f"{name} must be true or false")
            if want is str and not isinstance(value, str):
                raise SettingsError(f"{name} must be text")
            if want is list and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise SettingsError(f"{name} must be a list of text")
            values[name] = list(value) if want is list else value
        settings = cls(**values)
        settings.validate()
        return settings

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_ws_url(url: str) -> bool:
    return url.startswith(("ws://", "wss://")) and len(url) > len("wss://")


def path_in(data_dir: Path) -> Path:
    return data_dir / SETTINGS_FILE


def load(data_dir: Path) -> Settings:
    """The saved settings, defaults if there is no file; raises SettingsError on a bad one."""
    path = path_in(data_dir)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise SettingsError(f"{path} is unreadable: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return Settings.from_json(data)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from exc


def load_or_default(data_dir: Path) -> tuple[Settings, str | None]:
    """The settings and, when the file was bad, the error (the defaults are used)."""
    try:
        return load(data_dir), None
    except SettingsError as exc:
        log.error("%s; using the default settings", exc)
        return Settings(), str(exc)


def save(data_dir: Path, settings: Settings) -> None:
    """Validate, then replace settings.json atomically (temp file, fsync, rename)."""
    settings.validate()
    path = path_in(data_dir)
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(settings.to_json(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
