"""Log records into the wallet's model (the Logs view), with API tokens masked.

Light on purpose (no node imports): the app routes logs here from its first
window on, before the service and the node are loaded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading

from wallet.model import LogLine, WalletModel

_TOKEN_RE = re.compile(r"xln_([0-9A-Za-z]+)_[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """Mask API tokens (``xln_<id>_<secret>`` keeps its public id)."""
    return _TOKEN_RE.sub(lambda m: f"xln_{m.group(1)}_***", text)


class ModelLogHandler(logging.Handler):
    """Log records into the model's log list, on the loop's thread, tokens masked."""

    def __init__(self, model: WalletModel, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self.model = model
        self.loop = loop
        self._loop_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = redact(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            line = LogLine(int(record.created * 1000), record.levelname, record.name, message)
            if threading.get_ident() == self._loop_thread:
                self.model.add_log(line)
            elif not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.model.add_log, line)
        except Exception:
            self.handleError(record)
