"""Names the person gives co-signers (``DATA/contacts.json``): a signer id shows as
"alice" instead of eight hex digits wherever the wallet names signers.

Names are the wallet's own notes, never sent anywhere and never part of what is
signed. A name is 1 to :data:`MAX_NAME` printable characters (trimmed); an empty
one removes the entry. At most :data:`MAX_CONTACTS` names are kept. The file is
written atomically; a damaged one is an error, not silently dropped.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from wallet.paths import write_atomic

CONTACTS_FILE = "contacts.json"
MAX_NAME = 40
MAX_CONTACTS = 10_000
_VERSION = 1


class ContactsError(ValueError):
    """A name the wallet refuses, or a damaged contacts file (the message says which)."""


def clean_name(name: str) -> str:
    """``name`` trimmed; ContactsError if too long or holding control characters."""
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ContactsError(f"a name is at most {MAX_NAME} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ContactsError("a name holds no control characters")
    return name


def load(data_dir: Path) -> dict[bytes, str]:
    path = data_dir / CONTACTS_FILE
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as exc:
        raise ContactsError(f"{path} is damaged: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise ContactsError(f"{path} is not a version-{_VERSION} contacts file")
    names = doc.get("names")
    if not isinstance(names, dict) or len(names) > MAX_CONTACTS:
        raise ContactsError(f"{path}: names must be an object of at most {MAX_CONTACTS}")
    out: dict[bytes, str] = {}
    for sid_hex, name in names.items():
        try:
            sid = bytes.fromhex(sid_hex)
        except ValueError:
            raise ContactsError(f"{path}: {sid_hex!r} is not a signer id") from None
        if len(sid) != 32 or not isinstance(name, str) or not name:
            raise ContactsError(f"{path}: a bad entry for {sid_hex!r}")
        out[sid] = clean_name(name)
    return out


def set_name(data_dir: Path, signer_id: bytes, name: str) -> dict[bytes, str]:
    """Name ``signer_id`` (an empty name forgets it); returns every name now kept."""
    if len(signer_id) != 32:
        raise ContactsError("a signer id is 32 bytes")
    name = clean_name(name)
    names = load(data_dir)
    if name:
        names[signer_id] = name
    else:
        names.pop(signer_id, None)
    if len(names) > MAX_CONTACTS:
        raise ContactsError(f"at most {MAX_CONTACTS} names are kept")
    doc = {"version": _VERSION, "names": {sid.hex(): n for sid, n in sorted(names.items())}}
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    write_atomic(data_dir / CONTACTS_FILE, text.encode("utf-8"))
    return names
