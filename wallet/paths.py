"""Where the wallet keeps its files: the platform's application-data folder.

Linux ``~/.local/share/xln-signer``, macOS ``~/Library/Application Support/xln-signer``,
Windows ``%APPDATA%\\xln-signer``; ``--data DIR`` or ``XLN_WALLET_DATA`` override it.
The folder is created with mode 0700. Inside it:

- ``node/``: the embedded node's data (its chain, tokens, identity);
- ``guard/<signer id>/``: each agent's double-sign records;
- ``keys/``: the encrypted-file key backend, when there is no system keyring;
- ``keys.json``: the public index of the signer keys (no secrets);
- ``backup-key.json``: the backups' data key under the wallet password (``wallet/flows/backup.py``);
- ``settings.json``, ``rules.toml``, ``wallet.log``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import platformdirs

APP_NAME = "xln-signer"


def app_data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The wallet's data folder, created (0700) if missing."""
    chosen = override or os.environ.get("XLN_WALLET_DATA")
    path = Path(chosen) if chosen else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it (mode 0600, as
    ``mkstemp`` makes it), synced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
