"""The encrypted backup file of a wallet's data folder: its format and its encryption.

One file, ``xln-backup-<date>.json`` (docs/WALLET.md, "Backups of the data
folder"), a JSON object:

- ``header``, in clear: the format and version, when it was made, the wallet id,
  the signer ids, per entity the certified height the node showed then, and
  ``key``: the backup's data key (32 random bytes) as an EIP-2335 keystore under
  the wallet password (scrypt, the vault's KDF and cost);
- ``nonce`` and ``payload``: the :class:`Payload` as JSON, compressed, encrypted
  with AES-256-GCM under the data key, the header's canonical JSON as associated
  data (a header changed after the fact makes the payload fail to open).

Opening a backup runs the password's KDF once (on the data key's keystore). A
wrong password raises :class:`~node.crypto.keystore.WrongPassword`; a file that is
not a backup, is truncated or was altered raises :class:`BackupError`. Plain
Python, no Qt, no node I/O: ``wallet/flows/backup.py`` gathers what goes in and
puts it back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.agent import SignedAt  # the highest pre-commit a guard held for an entity
from node.crypto import keystore
from node.crypto.keystore import KeystoreError, WrongPassword
from wallet.paths import write_atomic

__all__ = [
    "BackupError",
    "Header",
    "NodeOnlyEntity",
    "Opened",
    "Payload",
    "SignedAt",
    "WrongPassword",
    "open_backup",
    "read_header",
    "seal",
]

FORMAT: Final = "xln-signer-backup"
VERSION: Final = 1
INTERCHANGE_VERSION: Final = "xln-signing-record-1"  # the signing-record part (EIP-3076-like)
DATA_KEY_LEN: Final = 32
NONCE_LEN: Final = 12
MAX_BACKUP_BYTES: Final = 1 << 30
MAX_PAYLOAD_BYTES: Final = 1 << 31  # decompressed
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class BackupError(ValueError):
    """Not a backup, a truncated or altered one, or one of another wallet: the message
    says which, for the person."""


@dataclass(frozen=True)
class NodeOnlyEntity:
    """An entity every member of which is hosted on the wallet's node: enough to rebuild
    it by replay (its genesis and each certified frame with its certificate, all in the
    node's encodings, opaque here)."""

    entity_id: bytes
    genesis: bytes
    members: tuple[bytes, ...]  # the members this wallet holds keys of (replayed for)
    frames: tuple[tuple[bytes, bytes], ...]  # (frame, certificate) from height 1


@dataclass
class Payload:
    """What the encrypted part holds."""

    files: dict[str, str] = field(default_factory=dict)  # data-folder file name -> text
    # signer -> entity -> the highest pre-commit (the signing-record interchange)
    signing_record: dict[bytes, dict[bytes, SignedAt]] = field(default_factory=dict)
    entities: list[NodeOnlyEntity] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": dict(sorted(self.files.items())),
            "signing_record": {
                "interchange_format_version": INTERCHANGE_VERSION,
                "data": [
                    {
                        "signer": signer.hex(),
                        "entities": [
                            {
                                "entity": entity.hex(),
                                "height": at.height,
                                "round": at.round,
                                "frame_hash": at.frame_hash.hex(),
                            }
                            for entity, at in sorted(record.items())
                        ],
                    }
                    for signer, record in sorted(self.signing_record.items())
                ],
            },
            "entities": [
                {
                    "entity": e.entity_id.hex(),
                    "genesis": e.genesis.hex(),
                    "members": [m.hex() for m in e.members],
                    "frames": [[f.hex(), c.hex()] for f, c in e.frames],
                }
                for e in self.entities
            ],
        }

    @classmethod
    def from_json(cls, doc: object) -> Payload:
        d = _obj(doc, "payload")
        files = _obj(d.get("files"), "files")
        out = cls()
        for name, text in files.items():
            if not isinstance(text, str) or not _safe_name(name):
                raise BackupError(f"the backup's file {name!r} is not a data-folder file")
            out.files[name] = text
        record = _obj(d.get("signing_record"), "signing record")
        if record.get("interchange_format_version") != INTERCHANGE_VERSION:
            raise BackupError("the backup's signing record is of an unknown version")
        for item in _list(record.get("data"), "signing record"):
            s = _obj(item, "signing record entry")
            per: dict[bytes, SignedAt] = {}
            for e in _list(s.get("entities"), "signing record entities"):
                ee = _obj(e, "signing record entity")
                per[_hex(ee.get("entity"), "entity", 32)] = SignedAt(
                    _int(ee.get("height"), "height"),
                    _int(ee.get("round"), "round"),
                    _hex(ee.get("frame_hash"), "frame hash", 32),
                )
            out.signing_record[_hex(s.get("signer"), "signer", 32)] = per
        for item in _list(d.get("entities"), "entities"):
            e = _obj(item, "entity")
            frames = []
            for pair in _list(e.get("frames"), "frames"):
                p = _list(pair, "frame")
                if len(p) != 2:
                    raise BackupError("the backup is damaged: a frame is [frame, certificate]")
                frames.append((_hex(p[0], "frame"), _hex(p[1], "certificate")))
            out.entities.append(
                NodeOnlyEntity(
                    _hex(e.get("entity"), "entity", 32),
                    _hex(e.get("genesis"), "genesis"),
                    tuple(_hex(m, "member", 32) for m in _list(e.get("members"), "members")),
                    tuple(frames),
                )
            )
        return out


@dataclass(frozen=True)
class Header:
    """The part in clear (read without the password)."""

    created: int  # unix seconds
    wallet_id: str
    signers: tuple[bytes, ...]
    heights: Mapping[bytes, int]  # entity -> certified height at backup time
    key: Mapping[str, Any]  # the data key's EIP-2335 keystore

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "wallet_id": self.wallet_id,
            "signers": [s.hex() for s in self.signers],
            "heights": {e.hex(): h for e, h in sorted(self.heights.items())},
            "key": dict(self.key),
        }

    @classmethod
    def from_json(cls, doc: object) -> Header:
        d = _obj(doc, "header")
        if d.get("format") != FORMAT:
            raise BackupError("this file is not an xln-signer backup")
        if d.get("version") != VERSION:
            raise BackupError(f"a backup of version {d.get('version')!r}: this wallet reads 1")
        wallet_id = d.get("wallet_id")
        if not isinstance(wallet_id, str):
            raise BackupError("the backup's header is damaged (wallet id)")
        heights = {
            _hex(e, "entity", 32): _int(h, "height")
            for e, h in _obj(d.get("heights"), "heights").items()
        }
        key = _obj(d.get("key"), "data key")
        try:
            keystore.validate(key, data=True)
        except KeystoreError as exc:
            raise BackupError(f"the backup's key is damaged: {exc}") from None
        return cls(
            _int(d.get("created"), "created"),
            wallet_id,
            tuple(_hex(s, "signer", 32) for s in _list(d.get("signers"), "signers")),
            heights,
            dict(key),
        )


@dataclass(frozen=True)
class Opened:
    header: Header
    payload: Payload


def new_data_key(password: str, *, fast: bool = False) -> tuple[bytes, dict[str, Any]]:
    """A random data key and its EIP-2335 keystore under ``password`` (one slow KDF)."""
    data_key = secrets.token_bytes(DATA_KEY_LEN)
    return data_key, keystore.encrypt_data(
        data_key, password, description="xln-signer backup key", fast=fast
    )


def seal(header: Header, payload: Payload, data_key: bytes) -> bytes:
    """The backup file's bytes. ``header.key`` must be ``data_key``'s keystore."""
    if len(data_key) != DATA_KEY_LEN:
        raise ValueError("a backup's data key is 32 bytes")
    head = header.to_json()
    plain = zlib.compress(_canonical(payload.to_json()), 6)
    nonce = secrets.token_bytes(NONCE_LEN)
    sealed = AESGCM(data_key).encrypt(nonce, plain, _canonical(head))
    doc = {"header": head, "nonce": nonce.hex(), "payload": base64.b64encode(sealed).decode()}
    return json.dumps(doc, indent=1).encode("utf-8") + b"\n"


def read_header(raw: bytes) -> Header:
    """The header in clear, without the password (BackupError if not a backup)."""
    return Header.from_json(_document(raw).get("header"))


def open_backup(raw: bytes, password: str) -> Opened:
    """The header and the payload; WrongPassword or BackupError."""
    doc = _document(raw)
    header = Header.from_json(doc.get("header"))
    data_key = keystore.decrypt_data(header.key, password)
    if len(data_key) != DATA_KEY_LEN:
        raise BackupError("the backup's key is damaged")
    return Opened(header, open_payload(raw, data_key))


def open_payload(raw: bytes, data_key: bytes) -> Payload:
    """The payload, with the data key already opened; BackupError."""
    doc = _document(raw)
    nonce = _hex(doc.get("nonce"), "nonce", NONCE_LEN)
    sealed = doc.get("payload")
    if not isinstance(sealed, str):
        raise BackupError("the backup is damaged: no payload")
    try:
        ciphertext = base64.b64decode(sealed, validate=True)
        plain = AESGCM(data_key).decrypt(nonce, ciphertext, _canonical(doc["header"]))
    except (binascii.Error, ValueError, InvalidTag):
        raise BackupError(
            "the backup is damaged or was altered (its payload does not authenticate)"
        ) from None
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(plain, MAX_PAYLOAD_BYTES)
        if inflater.unconsumed_tail:
            raise BackupError("the backup's payload is too large")
        return Payload.from_json(json.loads(text))
    except (zlib.error, ValueError, RecursionError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"the backup's payload is damaged: {exc}") from None


def load(path: Path) -> bytes:
    """A backup file's bytes (BackupError if too large; OSError if unreadable)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BACKUP_BYTES + 1)
    if len(raw) > MAX_BACKUP_BYTES:
        raise BackupError(f"{path} is over {MAX_BACKUP_BYTES} bytes: not a backup")
    return raw


def save(path: Path, raw: bytes) -> None:
    """Write a backup atomically (temp file, fsync, rename), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, raw)


def file_name(created: int) -> str:
    """``xln-backup-<UTC date and time>.json``."""
    return time.strftime("xln-backup-%Y-%m-%d-%H%M%S.json", time.gmtime(created))


def _document(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BackupError("this file is not a backup, or it is truncated") from None
    if not isinstance(doc, dict) or "header" not in doc:
        raise BackupError("this file is not an xln-signer backup")
    return doc


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _safe_name(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name)) and ".." not in name


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BackupError(f"the backup is damaged ({what})")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BackupError(f"the backup is damaged ({what})")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise BackupError(f"the backup is damaged ({what})")
    return value


def _hex(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise BackupError(f"the backup is damaged ({what})")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise BackupError(f"the backup is damaged ({what})")
    return raw
