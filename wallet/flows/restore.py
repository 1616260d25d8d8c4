"""A restore from the phrase: which signers were restored into this folder, and what
finding their entities said.

A wallet restored from its recovery phrase into a new data folder holds the key
and nothing else: not the entities the signer is a member of, and not its
signing record (the guard). So, for each signer restored here:

- its agent's guard is marked restored before it signs anything
  (``Agent.mark_restored``): it signs for an entity only above the floor the
  node gives it (docs/CONSENSUS.md, "A restore never makes its signer sign
  twice");
- once its agent is connected, the wallet asks the node to find its entities
  (``FIND_ENTITIES``, docs/PROTOCOL.md § 9): the node asks its peers, sets the
  agent's floors, joins the entities and catches up; the wallet watches what
  was found. This is asked again at each connection until every peer of the
  node has answered (:func:`complete`), and then never again: a later find
  would raise a floor to a height the signer is about to sign, which only
  delays it;
- an entity the wallet creates afterwards starts at floor 0 (nobody signed for
  it before).

The folder keeps this in ``restore.json``: the signers restored here, and those
whose find is still pending. Plain functions, no Qt, no node I/O.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from node.memberships import FindResult

RESTORE_FILE = "restore.json"


class RestoreFileError(ValueError):
    """restore.json cannot be read."""


@dataclass
class RestoreRecord:
    """The signers restored into this folder, and those still to be found."""

    restored: list[bytes] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)

    def is_restored(self, signer: bytes) -> bool:
        return signer in self.restored

    def is_pending(self, signer: bytes) -> bool:
        return signer in self.pending

    def add(self, signer: bytes) -> None:
        if signer not in self.restored:
            self.restored.append(signer)
        if signer not in self.pending:
            self.pending.append(signer)

    def found(self, signer: bytes) -> None:
        if signer in self.pending:
            self.pending.remove(signer)


def load(data_dir: Path) -> RestoreRecord:
    """The record (empty if there is none); raises RestoreFileError if unreadable."""
    path = data_dir / RESTORE_FILE
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return RestoreRecord()
    except (OSError, ValueError) as exc:
        raise RestoreFileError(f"{path} is unreadable: {exc}") from None
    try:
        return RestoreRecord(
            [bytes.fromhex(s) for s in raw["restored"]],
            [bytes.fromhex(s) for s in raw["pending"]],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RestoreFileError(f"{path}: not a restore record ({exc})") from None


def save(data_dir: Path, record: RestoreRecord) -> None:
    """Write the record atomically (0600)."""
    path = data_dir / RESTORE_FILE
    tmp = path.with_suffix(".tmp")
    payload = {
        "restored": [s.hex() for s in record.restored],
        "pending": [s.hex() for s in record.pending],
    }
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def mark(data_dir: Path, signer: bytes) -> None:
    """Record that ``signer`` was restored from its phrase into this folder."""
    record = load(data_dir)
    record.add(signer)
    save(data_dir, record)


def complete(result: FindResult) -> bool:
    """Whether a find is final (``FindResult.complete``): every peer the node has
    answered, and there was a peer to ask or an entity found. A node with no peers
    that found nothing is asked again at each connection: peers may be added."""
    return result.complete


def summary(result: FindResult, *, peers_configured: bool = True) -> str:
    """What a find found, in a line fit for the person. ``peers_configured``: False
    for the embedded node without peers in the settings (the person can add them)."""
    found = len(result.found)
    joined = sum(1 for f in result.found if f.joined)
    if result.asked:
        servers = f"{result.answered} of {result.asked} other servers answered"
    elif peers_configured:
        servers = "the node has no peers to ask"
    else:
        servers = "this node has no peers: add your co-signers' servers in Settings"
    if found:
        what = f"Found {found} entit{'y' if found == 1 else 'ies'} of this signer"
        if joined:
            what += f" ({joined} new here, catching up)"
    else:
        what = "No entity of this signer found yet"
    text = f"{what}; {servers}."
    if not complete(result):
        text += " Asked again at the next connection."
    return text
