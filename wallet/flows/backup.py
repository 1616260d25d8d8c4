"""Backups of the data folder: what goes in, the data key, a restore from one, and when.

What the recovery phrase cannot bring back (docs/WALLET.md, "Backups of the data
folder") goes in an encrypted file (``wallet/backup.py``):

- the folder's own files: :data:`FILES`;
- the signing record of each signer's guard (``Agent.signing_record``: per entity
  the highest height pre-committed, its round and frame hash), as an interchange
  like EIP-3076's;
- each *node-only* entity (every member of its config hosted on the wallet's
  node: no peer holds it) with its genesis and every certified frame with its
  certificate, read through the node protocol (``MEMBERSHIPS``, ``GET_FRAMES``).

**The data key.** Each backup's payload is under the wallet's backup data key (32
random bytes), kept twice: wrapped under the vault key (the vault secret
``backup-key``, read without a KDF while unlocked) and as an EIP-2335 keystore
under the wallet password (``DATA/backup-key.json``, copied into each backup's
header). :func:`prepare_key` makes or refreshes both (with the password: the
first backup, and after a change of password, :func:`rekey`); :func:`held_key`
gives them while unlocked, so a scheduled backup asks nothing.

**A restore** (:func:`check_wallet`, :func:`write_files`, :func:`import_guards`,
:func:`replay`, :func:`older_report`): refuse a backup none of whose signers is a
key of this wallet; write the files; mark each signer's guard restored and give
it the backup's heights as floors *before* its agent connects (it then signs
nothing at or below them, and the find after a phrase restore raises them to what
the peers show: a floor only rises, so an old backup is never less safe than
none); rebuild node-only entities by replaying their frames; report, per entity,
a backup older than the live state.

Plain Python (no Qt); the node is reached through ``wallet.connection.NodeSession``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from node.agent import Agent
from node.crypto import keystore
from node.entity_reads import EntityHeader
from node.machines.entity import EntityState
from node.memberships import Membership
from wallet import backup as fmt
from wallet import contacts, pins
from wallet import settings as settings_io
from wallet.backup import BackupError, Header, NodeOnlyEntity, Payload, SignedAt
from wallet.flows import restore as restore_flow
from wallet.flows.payments import LEDGER_FILE
from wallet.keys.vault import Locked, Vault
from wallet.paths import write_atomic

log = logging.getLogger(__name__)

FILES: Final = (
    settings_io.SETTINGS_FILE,
    contacts.CONTACTS_FILE,
    pins.PINS_FILE,
    LEDGER_FILE,
    restore_flow.RESTORE_FILE,
)
KEY_FILE: Final = "backup-key.json"
KEY_SECRET: Final = "backup-key"  # noqa: S105 - a vault entry's name
FRAMES_PAGE: Final = 256
DEFAULT_FOLDER_NAME: Final = "XLN backups"
SCHEDULES: Final = {"off": 0.0, "daily": 86_400.0, "weekly": 7 * 86_400.0}
GUARD_DIR: Final = "guard"


class NodeReads(Protocol):
    """What a backup reads from the node (``NodeSession``)."""

    async def hosted_signers(self) -> set[bytes]: ...

    async def entities_of(self, signer: bytes) -> list[bytes]: ...

    async def read_header(self, signer: bytes, entity: bytes) -> EntityHeader | None: ...

    async def genesis_of(self, signer: bytes, entity: bytes) -> bytes | None: ...

    async def certified_frames(
        self, entity: bytes, start: int, count: int
    ) -> list[tuple[bytes, bytes]]: ...


class NodeReplay(Protocol):
    async def read_header(self, signer: bytes, entity: bytes) -> EntityHeader | None: ...

    async def memberships(
        self, signer: bytes, after: bytes = b""
    ) -> tuple[list[Membership], bytes]: ...

    async def replay(
        self, signer: bytes, genesis: bytes, frames: list[tuple[bytes, bytes]]
    ) -> None: ...


# -- the data key ----------------------------------------------------------------------


def prepare_key(vault: Vault, password: str) -> tuple[bytes, dict[str, Any]]:
    """The backup data key and its keystore under ``password``, made if there is none
    (kept as the vault secret and ``DATA/backup-key.json``). Slow: two KDFs (the
    vault's, and the keystore's, written again under ``password`` so it is never
    stale). WrongPassword if ``password`` is not the wallet's."""
    data_key = vault.get_secret(KEY_SECRET, password)
    if data_key is None or len(data_key) != fmt.DATA_KEY_LEN:
        data_key, key = fmt.new_data_key(password, fast=vault.fast_kdf)
        vault.put_secret(KEY_SECRET, data_key, password)
    else:
        key = keystore.encrypt_data(
            data_key, password, description="xln-signer backup key", fast=vault.fast_kdf
        )
    keystore.save(vault.data_dir / KEY_FILE, key, data=True)
    return data_key, key


def held_key(vault: Vault) -> tuple[bytes, dict[str, Any]] | None:
    """The data key and its keystore while unlocked, without a KDF; None if locked or
    none was made yet (the first backup takes the password: :func:`prepare_key`)."""
    try:
        data_key = vault.held_secret(KEY_SECRET)
    except Locked:
        return None
    path = vault.data_dir / KEY_FILE
    if data_key is None or not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            key = json.load(f)
        keystore.validate(key, data=True)
    except (OSError, ValueError, keystore.KeystoreError) as exc:
        log.error("%s is unreadable (%s): the next backup asks for the password", path, exc)
        return None
    return data_key, key


def rekey(vault: Vault, password: str) -> None:
    """After a change of password: the data key's keystore under the new one (if a
    backup key was made)."""
    if (vault.data_dir / KEY_FILE).exists():
        prepare_key(vault, password)


# -- what goes in ------------------------------------------------------------------------


def read_files(data_dir: Path) -> dict[str, str]:
    """The folder's files a backup holds (those that exist)."""
    out = {}
    for name in FILES:
        try:
            out[name] = (data_dir / name).read_text("utf-8")
        except FileNotFoundError:
            continue
    return out


async def gather(
    data_dir: Path,
    node: NodeReads,
    signers: Iterable[bytes],
    records: Mapping[bytes, Callable[[], Awaitable[dict[bytes, SignedAt]]]],
) -> tuple[dict[bytes, int], Payload]:
    """Per entity the certified height now, and the payload: the files, each signer's
    signing record (``records[signer]()``), the node-only entities' frames."""
    payload = Payload(files=read_files(data_dir))
    for signer, record in records.items():
        payload.signing_record[signer] = await record()
    try:
        hosted = await node.hosted_signers()
    except Exception as exc:  # a signer-scoped token cannot list the server
        log.warning("the node's signers are not listed (%s): no entity counts as node-only", exc)
        hosted = set()
    heights: dict[bytes, int] = {}
    done: set[bytes] = set()
    own = list(signers)
    for signer in own:
        for entity in await node.entities_of(signer):
            header = await node.read_header(signer, entity)
            if header is None:
                continue
            heights[entity] = max(heights.get(entity, 0), header.height)
            ids = set(header.config.ids)
            if entity in done or not ids <= hosted:
                continue
            done.add(entity)
            genesis = await node.genesis_of(signer, entity)
            if genesis is None:
                continue
            frames = await _frames(node, entity, header.height)
            if len(frames) != header.height:
                log.warning(
                    "entity %s: the node gave %d of its %d certified frames; it is not in"
                    " the backup",
                    entity.hex()[:12],
                    len(frames),
                    header.height,
                )
                continue
            members = tuple(s for s in own if s in ids)
            payload.entities.append(NodeOnlyEntity(entity, genesis, members, tuple(frames)))
    return heights, payload


async def _frames(node: NodeReads, entity: bytes, height: int) -> list[tuple[bytes, bytes]]:
    frames: list[tuple[bytes, bytes]] = []
    while len(frames) < height:
        page = await node.certified_frames(entity, len(frames) + 1, FRAMES_PAGE)
        if not page:
            break
        frames.extend(page)
    return frames[:height]


def node_only(payload: Payload) -> set[bytes]:
    return {e.entity_id for e in payload.entities}


def make(
    vault: Vault,
    key: tuple[bytes, Mapping[str, Any]],
    heights: Mapping[bytes, int],
    payload: Payload,
    now: float,
) -> bytes:
    """The sealed backup."""
    wallet_id = vault.wallet_id or ""
    signers = tuple(k.signer_id for k in list(vault.keys()))
    header = Header(int(now), wallet_id, signers, dict(heights), dict(key[1]))
    return fmt.seal(header, payload, key[0])


# -- a restore ---------------------------------------------------------------------------


@dataclass
class RestoreReport:
    """What a restore from a backup did, for the person."""

    signers: list[bytes] = field(default_factory=list)  # whose records were imported
    missing: list[bytes] = field(default_factory=list)  # the backup's, not keys here
    files: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # files already here, left as they were
    floors: dict[bytes, dict[bytes, int]] = field(default_factory=dict)
    replayed: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def restore_offline(
    data_dir: Path, vault: Vault, raw: bytes, password: str
) -> tuple[fmt.Opened, RestoreReport]:
    """A restore into a folder whose wallet is not running yet (onboarding, after the
    key came back from its phrase, the vault unlocked): open the backup, check it is
    this wallet's, write its files, import its signing record into the guards. The
    wallet then starts with ``WalletService(restored_backup=...)``, which replays the
    node-only entities and reports a backup older than the live state. Raises
    WrongPassword or BackupError before anything is written. Slow (one KDF)."""
    opened = fmt.open_backup(raw, password)
    mine, missing = check_wallet(opened.header, [k.signer_id for k in list(vault.keys())])
    report = RestoreReport(signers=mine, missing=missing)
    report.files, report.kept = write_files(data_dir, opened.payload, only_missing=False)
    report.floors = import_guards(data_dir, vault, opened.payload, mine)
    return opened, report


def check_wallet(header: Header, keys: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The backup's signers this wallet holds keys of, and the others; BackupError if
    none is: the backup is another wallet's."""
    held = set(keys)
    mine = [s for s in header.signers if s in held]
    if not mine:
        raise BackupError(
            "this backup is of another wallet: none of its signers is a key of this wallet "
            "(restore the key from its phrase first)"
        )
    return mine, [s for s in header.signers if s not in held]


def write_files(
    data_dir: Path, payload: Payload, *, only_missing: bool
) -> tuple[list[str], list[str]]:
    """Write the backup's files into the folder (atomically, 0600); with
    ``only_missing``, those the folder lacks (a running wallet keeps its own).
    Returns (written, kept)."""
    written, kept = [], []
    for name in FILES:
        text = payload.files.get(name)
        if text is None:
            continue
        path = data_dir / name
        if only_missing and path.exists():
            kept.append(name)
            continue
        _write(path, text)
        written.append(name)
    return written, kept


def _write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def import_guards(
    data_dir: Path, vault: Vault, payload: Payload, signers: Iterable[bytes]
) -> dict[bytes, dict[bytes, int]]:
    """Before the agents connect (the wallet not running yet): mark each signer's guard
    restored and give it the backup's heights as floors; the signers are marked
    restored in ``restore.json`` too, so the wallet then finds their entities as after
    a phrase restore. Needs the vault unlocked. Returns the floors now held."""
    floors: dict[bytes, dict[bytes, int]] = {}
    for signer in signers:
        agent = Agent(vault.secret_key(signer), data_dir / GUARD_DIR / signer.hex())
        try:
            agent.mark_restored()
            floors[signer] = {
                entity: agent.set_floor(entity, at.height)
                for entity, at in sorted(payload.signing_record.get(signer, {}).items())
            }
        finally:
            agent.close()
        restore_flow.mark(data_dir, signer)
    return floors


async def import_floors(
    payload: Payload,
    signers: Iterable[bytes],
    set_floor: Callable[[bytes, bytes, int], Awaitable[int]],
) -> dict[bytes, dict[bytes, int]]:
    """Into a running wallet: each entry of the backup's signing record as a floor,
    through the signer's agent (``set_floor(signer, entity, height)``)."""
    floors: dict[bytes, dict[bytes, int]] = {}
    for signer in signers:
        floors[signer] = {}
        for entity, at in sorted(payload.signing_record.get(signer, {}).items()):
            floors[signer][entity] = await set_floor(signer, entity, at.height)
    return floors


async def replay(node: NodeReplay, payload: Payload, signers: Iterable[bytes]) -> list[bytes]:
    """Rebuild the backup's node-only entities on the node, for each of their members
    this wallet holds (``signers``), unless the node holds that replica already.
    Returns the entities replayed."""
    held = set(signers)
    replayed = []
    for e in payload.entities:
        for member in e.members:
            if member not in held or await node.read_header(member, e.entity_id) is not None:
                continue
            await node.replay(member, e.genesis, list(e.frames))
            if e.entity_id not in replayed:
                replayed.append(e.entity_id)
            log.info(
                "entity %s rebuilt for %s from the backup: %d frames",
                e.entity_id.hex()[:12],
                member.hex()[:12],
                len(e.frames),
            )
    return replayed


def older_report(header: Header, live: Mapping[bytes, int], now: float) -> list[str]:
    """Per entity whose live certified height is above the backup's, a line saying how
    much older the backup is."""
    lines = []
    age = _age(now - header.created)
    for entity, height in sorted(live.items()):
        backed = header.heights.get(entity)
        if backed is None or height <= backed:
            continue
        n = height - backed
        lines.append(
            f"This backup is {age} older than entity {entity.hex()[:12]}: "
            f"{n} frame{'s' if n != 1 else ''} since (certified at {height}, "
            f"the backup at {backed})."
        )
    return lines


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "less than a minute"


# -- when --------------------------------------------------------------------------------


def due(schedule: str, last: float, now: float) -> bool:
    """Whether a scheduled backup is due: ``schedule`` off/daily/weekly, ``last`` the
    last backup's time (0: none yet)."""
    every = SCHEDULES.get(schedule, 0.0)
    return every > 0 and now - last >= every


def only_here(
    entries: Iterable[tuple[bytes, EntityState]], hosted: frozenset[bytes]
) -> dict[bytes, str]:
    """Per entity only this computer holds (every member hosted on its node) that has
    reserves or channels, the warning line: losing the data folder loses its funds."""
    out: dict[bytes, str] = {}
    for entity, state in entries:
        if not hosted or not set(state.config.ids) <= hosted:
            continue
        if state.reserves or state.channels:
            out[entity] = (
                f"Only this computer holds entity {entity.hex()[:12]}: back it up "
                "(Settings, Back up now). Losing this folder loses its funds."
            )
    return out
