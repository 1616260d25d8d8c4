"""``WalletService``: what the wallet does, behind the views; implements ``WalletActions``.

It owns the vault, the settings, the node session (embedded or remote), one
:class:`~wallet.agent.WalletAgent` per key, the approval queue and the
notifications, and keeps :class:`~wallet.model.WalletModel` current:

- on each connection it registers every key's signer if the node lacks it,
  lists each signer's entities, and watches ``COMMITS`` on each
  ``[signer, entity]`` (and ``BLOCKS``);
- after each ``FRAME_EVENT`` it takes the entity's new state from the frame it
  checked when asked to sign, else reads it (``READ_ENTITY``, proven; a large
  entity partially: its header, and its channels as they are needed), and adds a
  history item with the certificate's signers and whether it verifies;
- it signs and submits batches (nonce: the replica's nonce for the signer plus
  the batches in flight) and charts their finality, submission to
  ``FRAME_EVENT``;
- channels: a page of an entity's channels for the views (``channel_page``),
  ``pay`` (checked against the channel's capacity first), the
  channel card of an entity on the node (for ``open_channel``), the simulation
  faucet; each certified frame's payments become history items, read from the
  analysis the agent made when it was asked to sign that frame (the node's
  FRAME_EVENT does not carry the frame); the spend ledger the accountant's
  period limits read lives in ``DATA/spend.json``;
- the lock state follows the vault; log records reach the model through
  :class:`ModelLogHandler`, which masks API tokens.

Everything runs on the event loop (qasync's in the GUI); slow work (KDFs,
signing) goes to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from node.agent import Refused
from node.codec import DecodeError, keccak
from node.entity_reads import EntityHeader
from node.machines import accounts
from node.machines import entity as ent
from node.machines.entity import EntityAction, EntityState
from node.machines.frames import (
    Certificate,
    Frame,
    signers_of,
    verify_certificate_of,
)
from node.machines.governance import Config, ConfigError, Member, signer_id
from node.machines.replica import Genesis
from node.machines.signer import CreateEntity
from node.memberships import FindResult
from node.merkle_map import MerkleMap
from node.net.client import NodeError
from node.net.entity_client import ProofError, UnverifiedRead
from node.net.protocol import Err, Rep, Reply, Topic
from node.net.remote_map import is_partial
from node.net.tls import ClientTrust
from node.runtime import wall_clock_ms
from node.txs import TxBody
from wallet import backup as backup_fmt
from wallet import contacts
from wallet import pins as wallet_pins
from wallet import settings as settings_io
from wallet.agent import GUARD_DIR, Policy, WalletAgent, analyze_frame
from wallet.connection import (
    WHOLE_UP_TO,
    BlockNews,
    FrameNews,
    NodeSession,
    NotConnected,
    SubmitRefused,
    holdable,
)
from wallet.embedded import EmbeddedNode, EmbeddedNodeError, exit_text
from wallet.flows import backup as backup_flow
from wallet.flows import compose, node_trust
from wallet.flows import restore as restore_flow
from wallet.flows.accountant import Rules
from wallet.flows.approvals import ApprovalQueue, ApprovalRequest, Notifications
from wallet.flows.channel_pages import PAGE_SIZE, ChannelPage, local_page
from wallet.flows.effects import Effect, FrameAnalysis, short
from wallet.flows.payments import LEDGER_FILE, SpendLedger
from wallet.keys.vault import Locked, Vault
from wallet.logsink import ModelLogHandler
from wallet.model import EntityEntry, HistoryItem, NewMember, WalletLocked, WalletModel
from wallet.settings import Settings

log = logging.getLogger("wallet.service")

NODE_TOKEN_SECRET = "node-token"  # noqa: S105 (the vault entry's name)
IN_FLIGHT_STALE_S = 120.0
NONCE_ATTEMPTS = 3  # signings of one batch whose nonce another batch took first
JOIN_TIMEOUT_S = 300.0
FIND_WAIT_S = 60.0  # after a restore: for the signer's agent to connect
AUTO_LOCK_CHECK_S = 5.0
BACKUP_CHECK_S = 60.0  # how often a scheduled backup is checked for
EVIDENCE_EVERY_S = 2.0  # how often the node's evidence and refusals are read again
# Frames analysed for signing and not certified yet, kept for their payments in history
# and the state after them (a certified frame's is dropped once used).
ANALYSIS_MEMO = 64
SHOWN_MEMO = 1024  # frames whose payments are in history
HISTORY_TEXT = 300  # characters of a frame's history item
# A crashed embedded node is started again; after this many crashes within
# RESTART_WINDOW_S, the wallet stops trying and says so.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0
RESTART_BACKOFF_S = 1.0


class WalletError(Exception):
    """An action that cannot be done; the message is for the user."""


class LockedError(WalletError, WalletLocked):
    """The action needs the keys, and the wallet is locked."""


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """A composed transaction that does not check out, as a WalletError."""
    try:
        yield
    except compose.ComposeError as exc:
        raise WalletError(str(exc)) from None


def frame_summary(analysis: FrameAnalysis | None, batches: int) -> str:
    """What a certified frame did, for its history item: its effects in words (the
    counter, proposals made, voted, executed or expired; payments have items of their
    own) when the wallet checked it, else how many batches it held."""
    words = [] if analysis is None else [e.text for e in analysis.effects if not e.is_payment]
    if words:
        text = "; ".join(words)
        return text if len(text) <= HISTORY_TEXT else text[: HISTORY_TEXT - 1] + "\u2026"
    if analysis is not None and analysis.effects:
        return "payments"
    return f"{batches} batch" + ("" if batches == 1 else "es")


# Certificates ----------------------------------------------------------------------------


def cert_signer_ids(config: Config, cert: Certificate) -> tuple[bytes, ...]:
    """The certificate's signer ids, in member order; () if its bitfield does not fit."""
    try:
        return tuple(config.members[i].id for i in signers_of(config, cert))
    except ValueError:
        return ()


def check_certificate(
    config: Config, entity_id: bytes, height: int, frame_hash: bytes, cert: Certificate
) -> tuple[tuple[bytes, ...], bool]:
    """The certificate's signer ids (member order) under ``config``, and whether it verifies."""
    signers = cert_signer_ids(config, cert)
    return signers, verify_certificate_of(config, entity_id, height, frame_hash, cert) is None


@dataclass
class _InFlight:
    signer: bytes
    entity: bytes
    nonce: int
    submitted: float  # monotonic


# The service -------------------------------------------------------------------------------


class WalletService:
    def __init__(
        self,
        data_dir: Path,
        model: WalletModel,
        vault: Vault,
        settings: Settings,
        *,
        node_url: str | None = None,
        token: str | None = None,
        headless: bool = False,
        rules: Rules | None = None,
        identity_password: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        ttl_s: float | None = None,
        simulation: bool = False,
        whole_up_to: int = WHOLE_UP_TO,
        restored_backup: backup_fmt.Opened | None = None,
    ) -> None:
        """``whole_up_to``: entities of at most this many channels and forwards are held
        whole, larger ones partially (``NodeSession.read_entity_lazily``)."""
        self.data_dir = data_dir
        self.model = model
        self.vault = vault
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock  # backups: their times and schedule
        self.queue = ApprovalQueue(clock)
        self.notifications = Notifications(clock)
        self.policy = Policy(accountant_on=settings.accountant_on, rules=rules, headless=headless)
        if ttl_s is not None:
            self.policy.ttl_s = ttl_s
        self.ledger = SpendLedger(data_dir / LEDGER_FILE)
        self.policy.ledger = self.ledger
        self.simulation = simulation
        self._analyses: OrderedDict[bytes, FrameAnalysis] = OrderedDict()
        self._payments_shown: OrderedDict[bytes, None] = OrderedDict()
        self.queue.added.append(self._remember_analysis)
        self.remote = node_url is not None or settings.node_mode == "remote"
        self._url = node_url or (settings.node_url if self.remote else "")
        self._token = token
        self._trust: ClientTrust | None = None  # how the session trusted the node
        # Asks the person whether a certificate no CA vouches for is their node's (the
        # GUI's dialog); None (headless): such a node is refused.
        self.confirm_certificate: node_trust.Ask | None = None
        self._identity_password = identity_password
        self.session = NodeSession(
            model, "remote" if self.remote else "embedded", clock=clock, whole_up_to=whole_up_to
        )
        # The entity configs trusted before, so a restart follows changes from them.
        self.session.reader.pins = wallet_pins.load(data_dir)
        self.session.reader.on_pin = lambda pins: wallet_pins.save(data_dir, pins)
        self.session.on_connect.append(self._on_connected)
        self.embedded: EmbeddedNode | None = None
        self._restarts: list[float] = []  # when the embedded node was restarted
        self.agents: dict[bytes, WalletAgent] = {}
        self.unlocked = asyncio.Event()
        self._in_flight: dict[bytes, _InFlight] = {}
        self._nonce_locks: dict[tuple[bytes, bytes], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._log_handler: ModelLogHandler | None = None
        self._block_seen = asyncio.Event()
        self._rescan_due = False
        self._started = False
        self._last_activity = clock()
        try:
            self.restore = restore_flow.load(data_dir)
        except restore_flow.RestoreFileError as exc:
            log.error("%s", exc)
            self.restore = restore_flow.RestoreRecord()
        self._finding: asyncio.Task[None] | None = None
        self._floored: set[tuple[bytes, bytes]] = set()  # restored signers' entities with floors
        # A backup restored into this folder before start (onboarding): its node-only
        # entities are replayed at the first connection, and each find reports the
        # entities the live state shows past it.
        self.restored_backup = restored_backup
        self._replayed = False

    # Lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the node (embedded) or connect (remote), then the agents.

        In remote mode with no token given, the token is read from the vault at
        the first unlock, and the connection starts then.
        """
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._log_handler = ModelLogHandler(self.model, self._loop)
        logging.getLogger().addHandler(self._log_handler)
        self.vault.on_change.append(self._vault_changed)
        self.model.set_accountant_on(self.policy.accountant_on)
        try:
            self.model.set_contacts(await asyncio.to_thread(contacts.load, self.data_dir))
        except contacts.ContactsError as exc:
            log.error("co-signers' names not read: %s", exc)
        self._apply_lock_state()
        self._spawn(self._auto_lock())
        self._spawn(self._backup_schedule())
        self._spawn(self._watch_evidence())
        if not self.remote:
            await self._start_embedded()
        elif not self._url:
            raise WalletError("remote mode needs the node's URL")
        if self._token is not None:
            await self._connect()
        else:
            log.info("the remote node's token is in the vault: unlock to connect")

    async def _start_embedded(self) -> None:
        """Start the embedded node's process (the status bar says so meanwhile)."""
        self.session.set_starting("starting the node")
        embedded = EmbeddedNode(
            self.data_dir,
            self.settings.tick_ms,
            self.settings.peers,
            self._identity_password,
            simulation=self.simulation,
            listen_port=self.settings.listen_port,
        )
        try:
            self._url, self._token = await embedded.start()
        except EmbeddedNodeError as exc:
            self.session.set_error(str(exc))
            raise
        embedded.on_exit.append(self._embedded_ended)
        self.embedded = embedded
        log.info("the embedded node runs as process %s", embedded.pid)

    def _embedded_ended(self, code: int) -> None:
        """The embedded node's process ended without being asked: show it, start another."""
        now = self.clock()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
        if len(self._restarts) >= MAX_RESTARTS:
            text = (
                f"the embedded node stopped ({exit_text(code)}) {MAX_RESTARTS + 1} times in "
                f"{RESTART_WINDOW_S:.0f} s; not restarting it: see Logs, then restart the wallet"
            )
            log.error("%s", text)
            self._spawn(self._drop_node(text))
            return
        self._restarts.append(now)
        text = f"the embedded node stopped ({exit_text(code)}); restarting it"
        log.error("%s", text)
        self._spawn(self._restart_embedded(text))

    async def _drop_node(self, text: str) -> None:
        for agent in list(self.agents.values()):
            await agent.stop()
        self.agents.clear()
        await self.session.close()
        self.session.set_error(text)
        self.embedded = None

    async def _restart_embedded(self, text: str) -> None:
        await self._drop_node(text)
        await asyncio.sleep(RESTART_BACKOFF_S * len(self._restarts))
        try:
            await self._start_embedded()
        except EmbeddedNodeError as exc:
            log.error("the embedded node could not start again: %s", exc)
            return
        await self._connect()
        log.info("the embedded node is back (process %s)", self.embedded and self.embedded.pid)

    async def _connect(self) -> None:
        """Connect to the node; a remote ``wss://`` node's certificate is trusted as
        the settings say, or, if no CA vouches for it, once the person accepts its
        fingerprint (``confirm_certificate``; ``wallet.flows.node_trust``)."""
        assert self._token is not None
        if not self.remote:
            await self.session.connect(self._url, self._token)
            self._start_agents()
            return
        token = self._token

        async def open_(trust: ClientTrust) -> None:
            self._trust = trust
            await self.session.connect(self._url, token, trust=trust)

        try:
            trusted = await node_trust.connect_trusting(
                open_, self._url, self.settings, self.confirm_certificate, self._save_settings
            )
            # In place: the settings view and the app hold this same object.
            self.settings.node_cert_sha256 = trusted.node_cert_sha256
        except (node_trust.CertificateNotTrusted, node_trust.CertificateChanged) as exc:
            self.session.set_error(str(exc))
            log.error("%s", exc)
            raise WalletError(str(exc)) from None
        self._start_agents()

    def _save_settings(self, settings: Settings) -> None:
        settings_io.save(self.data_dir, settings)

    def _start_agents(self) -> None:
        assert self._token is not None
        guard_root = self.data_dir / GUARD_DIR
        guard_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for key in list(self.vault.keys()):
            if key.signer_id in self.agents:
                continue
            agent = WalletAgent(
                key.signer_id,
                self.vault,
                guard_root,
                self.session.read_entity_lazily,
                self.queue,
                self.policy,
                self.unlocked,
                self.notifications,
                key.label,
                known_state=functools.partial(self._state, key.signer_id),
                whole_up_to=self.session.whole_up_to,
                restored=self.restore.is_restored(key.signer_id),
            )
            self.agents[key.signer_id] = agent
            agent.start(self._url, self._token, self._trust)
        self._find_pending()

    async def stop(self) -> None:
        for agent in list(self.agents.values()):
            await agent.stop()
        self.agents.clear()
        await self.session.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None
        with contextlib.suppress(ValueError):
            self.vault.on_change.remove(self._vault_changed)
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None
        self._started = False

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, (NotConnected, NodeError, ConnectionError)):
                log.warning("%s", exc)
            else:
                log.error("wallet task failed", exc_info=exc)

    # Lock ----------------------------------------------------------------------------

    def _vault_changed(self) -> None:
        """Vault callback; runs on the thread that locked or unlocked."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._apply_lock_state()
        else:
            loop.call_soon_threadsafe(self._apply_lock_state)

    def _apply_lock_state(self) -> None:
        locked = self.vault.locked
        if locked:
            self.unlocked.clear()
            for agent in self.agents.values():
                self._spawn(agent.forget_key())
        else:
            self.unlocked.set()
        if self.model.locked != locked:
            self.model.set_locked(locked)

    def touch(self) -> None:
        """The user did something: the idle lock timer starts again."""
        self._last_activity = self.clock()

    def idle_s(self) -> float:
        """Seconds since the user last did something (the idle lock counts these)."""
        return self.clock() - self._last_activity

    def check_idle(self) -> bool:
        """Lock when idle for ``settings.lock_timeout_min`` (0: never); True if it locked."""
        timeout_s = self.settings.lock_timeout_min * 60
        if not timeout_s or self.vault.locked:
            return False
        if self.idle_s() < timeout_s:
            return False
        log.info("locking after %d minutes without activity", self.settings.lock_timeout_min)
        self.lock()
        return True

    async def _auto_lock(self) -> None:
        while True:
            self.check_idle()
            await asyncio.sleep(AUTO_LOCK_CHECK_S)

    async def unlock(self, password: str) -> None:
        self.touch()
        await asyncio.to_thread(self.vault.unlock, password)
        self._apply_lock_state()
        log.info("wallet unlocked")
        if self.remote and self._token is None and self._started:
            secret = await asyncio.to_thread(self.vault.get_secret, NODE_TOKEN_SECRET, password)
            if secret is None:
                raise WalletError("no token for the remote node is stored: set it in Settings")
            self._token = secret.decode("utf-8")
            await self._connect()
        self._find_pending()  # a find that failed while locked (its floors wait for the key)

    def lock(self) -> None:
        self.vault.lock()
        self._apply_lock_state()
        log.info("wallet locked")

    # Approvals and accountant ----------------------------------------------------------

    def approve(self, request_id: int) -> None:
        self.touch()
        self.queue.approve(request_id)

    def reject(self, request_id: int) -> None:
        self.touch()
        self.queue.reject(request_id)

    async def name_signer(self, signer: bytes, name: str) -> None:
        try:
            names = await asyncio.to_thread(contacts.set_name, self.data_dir, signer, name)
        except contacts.ContactsError as exc:
            raise WalletError(str(exc)) from None
        self.model.set_contacts(names)

    def set_accountant(self, on: bool) -> None:
        self.policy.accountant_on = on
        self.model.set_accountant_on(on)
        self.settings.accountant_on = on
        try:
            settings_io.save(self.data_dir, self.settings)
        except (OSError, settings_io.SettingsError) as exc:
            log.error("could not save the settings: %s", exc)
        log.info("accountant %s", "on" if on else "off")

    # Node events ------------------------------------------------------------------------

    async def _on_connected(self) -> None:
        if self.session.scope == "server" and not self.session.watching(Topic.BLOCKS, ()):
            await self.session.watch(Topic.BLOCKS, (), self._on_block)
        await self.rescan()
        await self._replay_backup()
        self._find_pending()

    async def rescan(self) -> None:
        """Register missing signers, and watch every entity each signer holds."""
        watched = 0
        for key in list(self.vault.keys()):
            if self.session.scope == "server":
                await self.session.ensure_signer(key)
            elif not await self.session.signer_exists(key.signer_id):
                continue
            for entity in await self.session.entities_of(key.signer_id):
                await self.watch_entity(key.signer_id, entity)
                watched += 1
        log.info("read and watching %d entities", watched)
        if not self.remote:
            try:
                self.model.set_hosted(frozenset(await self.session.hosted_signers()))
            except (NodeError, NotConnected) as exc:
                log.warning("the node's signers were not listed: %s", exc)

    # A restore from the phrase (wallet/flows/restore.py) ------------------------------

    def _find_pending(self) -> None:
        """Start finding the entities of the restored signers whose find is pending,
        once connected with their agents made (and not while a find runs)."""
        if not self.session.connected or not any(s in self.agents for s in self.restore.pending):
            return
        if self._finding is None or self._finding.done():
            self._finding = asyncio.ensure_future(self._find_restored())
            self._tasks.add(self._finding)
            self._finding.add_done_callback(self._done)

    async def _find_restored(self) -> None:
        """Find the entities of each signer restored here whose find is pending."""
        for signer in list(self.restore.pending):
            if signer not in self.agents:
                continue
            try:
                await self.find_entities(signer)
            except (WalletError, NodeError, NotConnected) as exc:
                note = f"Looking for this signer's entities failed: {exc}"
                self.model.set_restore_note(note)
                log.error("%s", note)

    async def find_entities(self, signer: bytes) -> FindResult:
        """Ask the node to find ``signer``'s entities (its peers are asked; the agent's
        floors are set; the entities are joined and catch up), then watch them. Once
        every peer asked has answered, the find is no longer pending."""
        agent = self.agents.get(signer)
        if agent is None:
            raise WalletError("no agent for that signer")
        waiter = asyncio.Event()

        def linked(_up: bool) -> None:
            waiter.set()

        agent.on_link.append(linked)
        try:
            async with asyncio.timeout(FIND_WAIT_S):
                while not agent.connected:
                    waiter.clear()
                    await waiter.wait()
        except TimeoutError:
            raise WalletError("the signer's agent did not connect to the node") from None
        finally:
            agent.on_link.remove(linked)
        self.model.set_restore_note("Looking for this signer's entities on the node's peers…")
        result = await self.session.find_entities(signer)
        for found in result.found:
            await self.watch_entity(signer, found.membership.entity_id)
        if restore_flow.complete(result) and self.restore.is_pending(signer):
            self.restore.found(signer)
            await asyncio.to_thread(restore_flow.save, self.data_dir, self.restore)
        peers = self.remote or bool(self.settings.peers)
        note = restore_flow.summary(result, peers_configured=peers)
        if self.restored_backup is not None:
            live = {f.membership.entity_id: f.membership.height for f in result.found}
            older = backup_flow.older_report(self.restored_backup.header, live, self.wall_clock())
            note = " ".join([note, *older])
        self.model.set_restore_note(note)
        log.info("%s: %s", agent.label, note)
        return result

    # Backups (wallet/flows/backup.py) ---------------------------------------------------

    async def back_up(self, path: Path | None = None, password: str | None = None) -> Path:
        """Write an encrypted backup of the data folder to ``path`` (default: the
        settings' folder, or ``~/XLN backups``, under ``xln-backup-<date>.json``).
        With ``password`` (Back up now), it is checked and the data key's keystore made
        under it; without (the schedule), the data key held while unlocked is used, and
        the first backup needs the password. Raises WalletError, or WrongPassword."""
        if self.vault.locked:
            raise WalletError("The wallet is locked: unlock it to back up.")
        if password is not None:  # checked, and the data key's keystore made under it
            key = await asyncio.to_thread(backup_flow.prepare_key, self.vault, password)
        else:
            held = await asyncio.to_thread(backup_flow.held_key, self.vault)
            if held is None:
                raise WalletError("The first backup needs the wallet password.")
            key = held
        signers = self._signer_ids()
        records = {s: a.signing_record for s, a in self.agents.items()}
        try:
            heights, payload = await backup_flow.gather(
                self.data_dir, self.session, signers, records
            )
        except (NodeError, NotConnected, ProofError, UnverifiedRead) as exc:
            raise WalletError(f"The node could not be read for the backup: {exc}") from None
        except Refused as exc:
            raise WalletError(f"A signer's record could not be read: {exc}") from None
        now = self.wall_clock()
        raw = await asyncio.to_thread(backup_flow.make, self.vault, key, heights, payload, now)
        target = path or self.backup_folder() / backup_fmt.file_name(int(now))
        try:
            await asyncio.to_thread(backup_fmt.save, target, raw)
        except OSError as exc:
            raise WalletError(f"The backup could not be written to {target}: {exc}") from None
        self.settings.last_backup = int(now)
        await asyncio.to_thread(self._save_settings, self.settings)
        log.info(
            "backed up to %s: %d entities, %d of them held only here",
            target,
            len(heights),
            len(payload.entities),
        )
        return target

    def only_here(self) -> dict[bytes, str]:
        """Per entity only this computer holds, with funds: the warning line."""
        entries = [(entity, e.state) for (_, entity), e in self.model.entities.items()]
        return backup_flow.only_here(entries, self.model.hosted)

    def _signer_ids(self) -> list[bytes]:
        return [key.signer_id for key in list(self.vault.keys())]

    def backup_folder(self) -> Path:
        chosen = self.settings.backup_folder
        return Path(chosen).expanduser() if chosen else Path.home() / "XLN backups"

    async def backup_if_due(self) -> Path | None:
        """A scheduled backup, if one is due (``settings.backup_schedule``): never while
        locked, and only once a first backup made the data key."""
        if self.vault.locked or not self.session.connected:
            return None
        if not backup_flow.due(
            self.settings.backup_schedule, self.settings.last_backup, self.wall_clock()
        ):
            return None
        if await asyncio.to_thread(backup_flow.held_key, self.vault) is None:
            log.warning("a scheduled backup waits for a first backup (Settings, Back up now)")
            return None
        try:
            return await self.back_up()
        except WalletError as exc:
            log.error("the scheduled backup failed: %s", exc)
            return None

    async def _backup_schedule(self) -> None:
        while True:
            await asyncio.sleep(BACKUP_CHECK_S)
            try:
                await self.backup_if_due()
            except Exception:  # the next check tries again; the schedule never stops
                log.exception("the scheduled backup failed")

    async def restore_backup(self, raw: bytes, password: str) -> backup_flow.RestoreReport:
        """Settings' Restore from a backup, into this running wallet: the files this
        folder lacks, the backup's signing record as floors through the agents, its
        node-only entities replayed if the node lacks them, and which entities moved on
        since the backup. Raises WrongPassword, BackupError, WalletError."""
        opened = await asyncio.to_thread(backup_fmt.open_backup, raw, password)
        keys = self._signer_ids()
        mine, missing = backup_flow.check_wallet(opened.header, keys)
        report = backup_flow.RestoreReport(signers=mine, missing=missing)
        report.files, report.kept = await asyncio.to_thread(
            backup_flow.write_files, self.data_dir, opened.payload, only_missing=True
        )

        async def floor(signer: bytes, entity: bytes, height: int) -> int:
            return await self.agents[signer].set_floor(entity, height)

        present = [s for s in mine if s in self.agents]
        report.floors = await backup_flow.import_floors(opened.payload, present, floor)
        report.replayed = await self._replay(opened.payload)
        live: dict[bytes, int] = {}
        for signer in present:
            for entity in await self.session.entities_of(signer):
                header = await self.session.read_header(signer, entity)
                if header is not None:
                    live[entity] = max(live.get(entity, 0), header.height)
        report.notes = backup_flow.older_report(opened.header, live, self.wall_clock())
        return report

    async def _replay_backup(self) -> None:
        """At the first connection after a restore from a backup: rebuild its node-only
        entities (before the find, which then finds them on this node)."""
        if self.restored_backup is None or self._replayed:
            return
        self._replayed = True
        try:
            replayed = await self._replay(self.restored_backup.payload)
        except (WalletError, NodeError, NotConnected) as exc:
            note = f"Rebuilding the entities held only here failed: {exc}"
            self.model.set_restore_note(note)
            log.error("%s", note)
            return
        if replayed:
            n = len(replayed)
            self.model.set_restore_note(
                f"Rebuilt {n} entit{'y' if n == 1 else 'ies'} held only here from the backup."
            )

    async def _replay(self, payload: backup_fmt.Payload) -> list[bytes]:
        keys = self._signer_ids()
        try:
            replayed = await backup_flow.replay(self.session, payload, keys)
        except (SubmitRefused, DecodeError) as exc:
            raise WalletError(f"an entity of the backup could not be rebuilt: {exc}") from None
        for e in payload.entities:
            if e.entity_id in replayed:
                for member in e.members:
                    if member in keys:
                        await self.watch_entity(member, e.entity_id)
        return replayed

    async def _floor_new_entity(self, signer: bytes, entity: bytes) -> None:
        """A restored signer's entity that came after the find (a co-signer added it):
        its agent signs nothing at or below what is in flight on this node now."""
        agent = self.agents.get(signer)
        if agent is None or self.restore.is_pending(signer) or (signer, entity) in self._floored:
            return  # the pending find sets every floor
        try:
            if await agent.floor_of(entity) is not None:
                self._floored.add((signer, entity))
                return
        except Refused as exc:  # locked past the wait: asked again at the next rescan
            log.warning("%s: no floor for %s yet: %s", agent.label, entity.hex()[:12], exc)
            return
        in_flight, serial = 0, 0
        after = b""
        while True:
            page, after = await self.session.memberships(signer, after)
            for m in page:
                if m.entity_id == entity:
                    in_flight, serial = m.in_flight, m.serial_of(signer)
            if not after:
                break
        floor = await agent.set_floor(entity, in_flight, serial)
        self._floored.add((signer, entity))
        log.info("%s: a new entity %s, from height %d", agent.label, entity.hex()[:12], floor + 1)

    async def watch_entity(self, signer: bytes, entity: bytes) -> None:
        if self.restore.is_restored(signer):
            self._spawn(self._floor_new_entity(signer, entity))
        if not self.session.watching(Topic.COMMITS, (signer, entity)):

            def handler(reply: Reply) -> None:
                self._on_commits(signer, entity, reply)

            await self.session.watch(Topic.COMMITS, (signer, entity), handler)
        await self.refresh(signer, entity)
        await self.read_evidence(signer, entity)

    async def read_evidence(self, signer: bytes, entity: bytes) -> None:
        """Read the node's equivocation evidence about ``entity`` into the model (each
        record's signatures checked by the reader; ``wallet.flows.evidence``)."""
        found = await self.session.read_evidence(signer, entity)
        if found is not None:
            self.model.set_evidence(entity, found)
        refused = await self.session.read_refusals(signer, entity)
        if refused is not None:
            self.model.set_refusals(entity, refused)

    async def _watch_evidence(self) -> None:
        """Read every watched entity's evidence and refusals again every
        ``EVIDENCE_EVERY_S``: an equivocation or a refusal may stall a height, so no
        frame event need come to prompt it."""
        while True:
            await asyncio.sleep(EVIDENCE_EVERY_S)
            if not self.session.connected:
                continue
            done: set[bytes] = set()
            for signer, entity in list(self.model.entities):
                if entity in done:
                    continue
                done.add(entity)
                try:
                    await self.read_evidence(signer, entity)
                except (NotConnected, NodeError, ConnectionError, OSError) as exc:
                    log.info("cannot read the evidence of %s: %s", entity.hex()[:12], exc)
                    break
                except (ProofError, UnverifiedRead) as exc:  # its header did not check
                    log.warning("evidence of %s not read: %s", entity.hex()[:12], exc)

    def _on_block(self, reply: Reply) -> None:
        news = BlockNews.of(reply)
        self._block_seen.set()
        self.model.add_history(
            HistoryItem(
                "block",
                news.height,
                news.hash,
                wall_clock_ms(),
                f"block {news.height}: {news.tx_count} transaction"
                + ("" if news.tx_count == 1 else "s"),
            )
        )
        if news.tx_count and not self._rescan_due:
            # A block may have given a signer a new entity (created or invited).
            self._rescan_due = True
            self._spawn(self._rescan_soon())

    async def _rescan_soon(self) -> None:
        try:
            await self.rescan()
        finally:
            self._rescan_due = False

    def _on_commits(self, signer: bytes, entity: bytes, reply: Reply) -> None:
        if reply.type is not Rep.FRAME_EVENT:
            return
        news = FrameNews.of(reply)
        now = self.clock()
        finalized = False
        for batch_hash in news.batch_hashes:
            flight = self._in_flight.pop(batch_hash, None)
            if flight is not None:
                self.model.finality_ms.append((now, (now - flight.submitted) * 1000))
                finalized = True
        if finalized:
            self.model.metrics_changed.emit()
        before = self.model.entities.get((signer, entity))
        signers: tuple[bytes, ...] = ()
        valid: bool | None = None
        if before is not None and before.state.height == news.height - 1:
            signers, valid = check_certificate(
                before.state.config, entity, news.height, news.frame_hash, news.cert
            )
        # Certified: its analysis is wanted once more, here (the wallet may hold
        # only the last few whole: each pins a state).
        analysis = self._analyses.pop(news.frame_hash, None)
        self.model.add_history(
            HistoryItem(
                "frame",
                news.height,
                news.frame_hash,
                wall_clock_ms(),
                f"frame {news.height} of {short(entity)}: "
                + frame_summary(analysis, len(news.batch_hashes)),
                entity_id=entity,
                signer_id=signer,
                cert_signers=signers,
                cert_bitfield=news.cert.bits,
                cert_valid=valid,
            )
        )
        self._add_payments(entity, news.height, news.frame_hash, analysis)
        follows = before is not None and before.state.height == news.height - 1 and valid
        if follows and analysis is not None and analysis.new_state is not None:
            if holdable(analysis.new_state, self.session.whole_up_to):
                # We re-executed this very frame when asked to sign it: its outcome is
                # the state now, no need to read the replica again.
                self.model.set_entity(EntityEntry(signer, analysis.new_state, signers))
                self._prune_in_flight(signer, entity, analysis.new_state.nonce_of(signer))
            else:
                self._spawn(self.refresh(signer, entity))  # grown too large: partially
        elif follows:
            assert before is not None
            # A frame this wallet was not asked to sign (the others made its quorum):
            # read it, to know what it did and show its payments.
            self._spawn(self._learn_frame(signer, entity, before.state, news, signers))
        else:
            self._spawn(self.refresh(signer, entity))

    async def _learn_frame(
        self,
        signer: bytes,
        entity: bytes,
        before: EntityState,
        news: FrameNews,
        signers: tuple[bytes, ...],
    ) -> None:
        try:
            raw = await self.session.frame(entity, news.height)
        except (ConnectionError, OSError, NodeError) as exc:
            log.info("cannot read frame %d of %s: %s", news.height, entity.hex()[:12], exc)
            raw = None
        analysis = None
        if raw is not None:
            frame = Frame.decode(raw)
            if frame.hash == news.frame_hash:
                analysis = await self._analyze(before, frame)
        if (
            analysis is None
            or analysis.new_state is None
            or not holdable(analysis.new_state, self.session.whole_up_to)
        ):
            await self.refresh(signer, entity)
            return
        self._add_payments(entity, news.height, news.frame_hash, analysis)
        current = self.model.entities.get((signer, entity))
        if current is None or current.state.height < news.height:
            self.model.set_entity(EntityEntry(signer, analysis.new_state, signers))
        self._prune_in_flight(signer, entity, analysis.new_state.nonce_of(signer))

    async def _analyze(self, before: EntityState, frame: Frame) -> FrameAnalysis | None:
        """``analyze_frame``: None if a read it needed failed (a headless agent's states
        may be partial, their maps read from the node as the execution walks them)."""
        try:
            return await analyze_frame(before, frame)
        except (ConnectionError, OSError, TimeoutError, NodeError) as exc:
            where = f"frame {frame.height} of {frame.entity_id.hex()[:12]}"
            log.info("cannot check %s: %s", where, exc)
            return None

    def _remember_analysis(self, request: ApprovalRequest) -> None:
        a = request.analysis
        if a is not None and a.ok and a.frame_hash not in self._analyses:
            self._analyses[a.frame_hash] = a
            while len(self._analyses) > ANALYSIS_MEMO:
                self._analyses.popitem(last=False)

    def _add_payments(
        self, entity: bytes, height: int, frame_hash: bytes, analysis: FrameAnalysis | None
    ) -> None:
        """The certified frame's payment effects as history items (once per frame). A
        hub's frame carries thousands: payments of one kind, asset and counterparty are
        one item with their count and total."""
        if analysis is None or frame_hash in self._payments_shown:
            return
        self._payments_shown[frame_hash] = None
        while len(self._payments_shown) > SHOWN_MEMO:
            self._payments_shown.popitem(last=False)
        groups: dict[tuple[str, int | None, bytes | None], list[Effect]] = {}
        for effect in analysis.effects:
            if effect.is_payment:
                groups.setdefault((effect.kind, effect.asset, effect.counterparty), []).append(
                    effect
                )
        for (kind, asset, counterparty), effects in groups.items():
            total = sum(e.amount or 0 for e in effects)
            text = effects[0].text
            if len(effects) > 1:
                text = f"{len(effects)} payments ({kind}), {total} in all of asset {asset}"
                if counterparty is not None:
                    text += f", counterparty {short(counterparty)}"
            self.model.add_history(
                HistoryItem(
                    "payment",
                    height,
                    frame_hash,
                    wall_clock_ms(),
                    text,
                    entity_id=entity,
                    payment=kind,
                    amount=total if len(effects) > 1 else effects[0].amount,
                    asset=asset,
                    counterparty=counterparty,
                )
            )

    async def refresh(self, signer: bytes, entity: bytes) -> EntityState | None:
        """Read the entity's agreed state (proven) and put it in the model: a large
        entity's header only, its channels and forwards read as frames' executions walk
        them and, for the views, a page at a time (:meth:`channel_page`)."""
        state = await self.session.read_entity_lazily(signer, entity)
        if state is None:
            return None
        cert = self.session.reader.certificate(state.hash)
        cert_signers = () if cert is None else cert_signer_ids(state.config, cert)
        current = self.model.entities.get((signer, entity))
        if current is None or current.state.height <= state.height:
            self.model.set_entity(EntityEntry(signer, state, cert_signers))
        self._prune_in_flight(signer, entity, state.nonce_of(signer))
        return state

    # Batches ---------------------------------------------------------------------------

    def _prune_in_flight(self, signer: bytes, entity: bytes, used: int) -> None:
        now = self.clock()
        for batch_hash, f in list(self._in_flight.items()):
            mine = (f.signer, f.entity) == (signer, entity)
            if mine and (f.nonce <= used or now - f.submitted > IN_FLIGHT_STALE_S):
                del self._in_flight[batch_hash]

    def _next_nonce(self, signer: bytes, entity: bytes, header: EntityHeader) -> int:
        used = header.small.nonce_of(signer)
        self._prune_in_flight(signer, entity, used)
        flying = [
            f.nonce for f in self._in_flight.values() if (f.signer, f.entity) == (signer, entity)
        ]
        return max([used, *flying]) + 1

    async def submit_txs(self, signer: bytes, entity: bytes, txs: Sequence[TxBody]) -> bytes:
        """Sign ``txs`` as one batch and submit it; returns the batch hash once the
        node's block holds it (finality is charted when its frame is certified).

        A batch refused because its nonce was taken meanwhile (the replica committed
        another batch of this signer between the read of its nonce and the submit:
        one this wallet no longer counted in flight, or another wallet's) was not
        applied: it is signed again with the next nonce, a few times at most."""
        for attempt in range(1, NONCE_ATTEMPTS + 1):
            try:
                return await self._submit_once(signer, entity, txs)
            except SubmitRefused as exc:
                if "already used" not in str(exc) or attempt == NONCE_ATTEMPTS:
                    raise
                log.info("%s; signing it again with the next nonce", exc)
        raise AssertionError("unreachable")

    async def _submit_once(
        self, signer: bytes, entity: bytes, txs: Sequence[TxBody], nonce: int | None = None
    ) -> bytes:
        self.touch()
        if self.vault.locked:
            raise LockedError("the wallet is locked: unlock it to sign")
        # Reading the nonce and registering the batch in flight is one step per
        # route, so batches submitted together take consecutive nonces.
        async with self._nonce_locks.setdefault((signer, entity), asyncio.Lock()):
            header = await self.session.read_header(signer, entity)
            if header is None:
                raise WalletError("this signer holds no replica of that entity on the node")
            if nonce is None:
                nonce = self._next_nonce(signer, entity, header)
            try:
                sk = self.vault.secret_key(signer)
            except Locked as exc:
                raise LockedError(str(exc)) from None
            with _user_errors():
                submit = await asyncio.to_thread(
                    compose.signed_batch, entity, sk, signer, nonce, txs
                )
            batch = submit.batch
            batch_hash = keccak(batch.raw)
            self._in_flight[batch_hash] = _InFlight(signer, entity, nonce, self.clock())
        try:
            await self.session.submit_batch(signer, entity, batch)
        except BaseException:
            self._in_flight.pop(batch_hash, None)
            raise
        log.info(
            "batch %s (nonce %d) of %s submitted to %s",
            batch_hash.hex()[:12],
            nonce,
            signer.hex()[:12],
            entity.hex()[:12],
        )
        return batch_hash

    def _state(self, signer: bytes, entity: bytes) -> EntityState | None:
        entry = self.model.entities.get((signer, entity))
        return None if entry is None else entry.state

    async def _with_channel(self, signer: bytes, entity: bytes, peer: bytes) -> EntityState:
        """The entity's current certified header with its channel with ``peer`` (none:
        proven absent) as its only channel, read in one reply: all that checking a
        payment's first hop or a channel action needs, at any size of entity."""
        read = await self.session.read_channel(signer, entity, peer)
        if read is None:
            raise WalletError("this node holds no replica of that entity for the signer")
        header, record = read
        channels = MerkleMap.from_items([] if record is None else [(peer, record)])
        return replace(header.small, channels=channels)

    async def channel_page(
        self, signer: bytes, entity: bytes, after: bytes = b"", limit: int = PAGE_SIZE
    ) -> ChannelPage:
        """Up to ``limit`` of the entity's channels after the counterparty ``after``
        (empty: from the first), as the wallet holds the entity: from its state when
        held whole; else read from the node at that state, every record proven (at the
        node's current state once it no longer keeps that one)."""
        state = self._state(signer, entity)
        if state is None:
            raise WalletError("this wallet does not hold that entity")
        if not is_partial(state):
            return local_page(state, after, limit)
        try:
            page = await self.session.read_channel_page(signer, entity, after, limit, state.hash)
        except NodeError as exc:
            if exc.code is not Err.NOT_FOUND:
                raise
            page = await self.session.read_channel_page(signer, entity, after, limit)
        records = tuple(r for _, r in page.records if isinstance(r, accounts.ChannelRecord))
        return ChannelPage(records, page.last)

    async def increment(self, signer: bytes, entity: bytes, n: int) -> None:
        with _user_errors():
            tx = compose.increment(n)
        await self.submit_txs(signer, entity, [tx])

    async def propose(
        self, signer: bytes, entity: bytes, action: EntityAction, expires_at: int
    ) -> None:
        state = self._state(signer, entity)
        if isinstance(action, accounts.CHANNEL_ACTIONS) and state is not None and is_partial(state):
            state = await self._with_channel(signer, entity, action.peer)
        with _user_errors():
            tx = compose.propose(action, expires_at, state)
        await self.submit_txs(signer, entity, [tx])

    async def vote(self, signer: bytes, entity: bytes, proposal_id: int) -> None:
        with _user_errors():
            tx = compose.vote(proposal_id, self._state(signer, entity), signer)
        await self.submit_txs(signer, entity, [tx])

    async def withdraw(self, signer: bytes, entity: bytes, nonce: int) -> None:
        """A withdrawal at ``nonce``: every pool drops ``signer``'s batch there, and the
        next frame takes the nonce; the node says when it is too late (the threshold
        approved the frame that holds the batch). Not retried at another nonce."""
        await self._submit_once(signer, entity, [compose.withdraw()], nonce=nonce)

    async def pay(
        self, signer: bytes, entity: bytes, route: tuple[bytes, ...], asset: int, amount: int
    ) -> None:
        """Pay along ``route`` (first hop .. payee); refused here, with the node's words,
        if the first channel lacks the capacity."""
        state = self._state(signer, entity)
        if route:
            state = await self._with_channel(signer, entity, route[0])
        with _user_errors():
            tx = compose.pay(route, asset, amount, state)
        await self.submit_txs(signer, entity, [tx])
        log.info(
            "payment of %d of asset %d from %s to %s submitted",
            amount,
            asset,
            entity.hex()[:12],
            route[-1].hex()[:12],
        )

    async def channel_card(self, entity: bytes) -> str:
        """The channel card of ``entity``: from the user's own entities, else from any
        replica the node hosts (server scope)."""
        for (_, eid), entry in self.model.entities.items():
            if eid == entity:
                return compose.ChannelCard.of(entry.state).encode()
        if self.session.scope != "server":
            raise WalletError("this node token cannot look up other entities: paste a card")
        state = await self.session.find_entity(entity)
        if state is None:
            raise WalletError("no replica of that entity on this node: paste its channel card")
        return compose.ChannelCard.of(state).encode()

    async def faucet(self, entity: bytes, asset: int, amount: int) -> None:
        """Simulation only: one of the user's signers that is a member of ``entity``
        signs ``faucet(asset, amount)``; the frame that holds it credits the reserve
        (a node outside simulation refuses the batch)."""
        signers = sorted(sid for sid, eid in self.model.entities if eid == entity)
        if not signers:
            raise WalletError("faucet: none of this wallet's signers is a member of that entity")
        await self.submit_txs(signers[0], entity, [accounts.Faucet(asset, amount)])
        log.info("faucet: %d of asset %d to %s", amount, asset, entity.hex()[:12])

    async def create_entity(
        self,
        signer: bytes,
        members: Sequence[NewMember],
        threshold: int,
        proposer_index: int,
    ) -> bytes:
        if not 0 <= proposer_index < len(members):
            raise WalletError("the proposer must be one of the members")
        try:
            config = Config(
                tuple(Member(m.pubkey, m.shares) for m in members),
                threshold,
                signer_id(members[proposer_index].pubkey),
            )
        except ConfigError as exc:
            raise WalletError(f"not a valid entity: {exc}") from None
        salt = keccak(os.urandom(32))
        genesis = Genesis(config, salt, tuple(m.pop for m in members))
        entity = ent.entity_id_for(config, salt)
        agent = self.agents.get(signer)
        if agent is not None and self.restore.is_restored(signer):
            # A new entity: nobody signed for it before the restore.
            try:
                await agent.set_floor(entity, 0)
            except Refused as exc:
                raise WalletError(f"the signer's agent took no floor: {exc}") from None
        await self.session.create_entity(signer, CreateEntity(genesis))
        await self.watch_entity(signer, entity)
        log.info("entity %s created by %s", entity.hex()[:12], signer.hex()[:12])
        return entity

    async def join_entity(self, signer: bytes, entity: bytes) -> None:
        """Wait until the node holds this signer's replica of ``entity``, then watch it."""
        deadline = self.clock() + JOIN_TIMEOUT_S
        while await self.session.read_header(signer, entity) is None:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise WalletError("the entity never reached this signer: is it a member?")
            self._block_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self._block_seen.wait()
        await self.watch_entity(signer, entity)
