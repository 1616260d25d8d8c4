"""The entity configs the wallet trusts, kept across restarts: ``entity-configs.json``.

``node.net.entity_client.EntityReader`` believes an entity's header only under a
config it trusts: the genesis config, or the config it checked last for that
entity (its pin), from which it follows each change through the frame that made
it. A reader with nothing pinned takes a changed config on first use. Keeping the
pins in the data folder narrows that to the wallet's very first contact with an
entity, not every start. Written atomically (temp file, fsync, rename; mode 0600)
when a pin changes, which is only when an entity's config does.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from node.codec import DecodeError, decode, encode_tree
from node.machines.governance import Config, ConfigError

log = logging.getLogger(__name__)

PINS_FILE = "entity-configs.json"
VERSION = 1


def load(data_dir: Path) -> dict[bytes, Config]:
    """The saved pins; an unreadable file is logged and trusted for nothing."""
    path = data_dir / PINS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): entity configs start from first use", path, exc)
        return {}
    pins: dict[bytes, Config] = {}
    try:
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}")
        for entity_hex, config_hex in doc["configs"].items():
            entity = bytes.fromhex(entity_hex)
            if len(entity) != 32:
                raise ValueError(f"entity id {entity_hex!r}")
            pins[entity] = Config.from_item(decode(bytes.fromhex(config_hex)))
    except (AttributeError, KeyError, TypeError, ValueError, DecodeError, ConfigError) as exc:
        log.warning("%s is malformed (%s): entity configs start from first use", path, exc)
        return {}
    return pins


def save(data_dir: Path, pins: dict[bytes, Config]) -> None:
    path = data_dir / PINS_FILE
    doc = {
        "version": VERSION,
        "configs": {e.hex(): encode_tree(c.to_tree()).hex() for e, c in sorted(pins.items())},
    }
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
