"""The wallet's observable state, with no Qt: what the window shows, kept up to date
by the service (``wallet/service.py``) and read by the views (``wallet/views``).

Listeners are plain callbacks (:class:`Signal`), called on the event loop's
thread; with qasync that is the Qt thread, so a view may repaint directly.
Everything here is data: the actions a user takes are :class:`WalletActions`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: the model loads before the node does
    from node.evidence import Evidence
    from node.machines.entity import EntityAction, EntityState
    from node.machines.refusal import Refusal
    from wallet.flows.channel_pages import ChannelPage

HISTORY_LIMIT = 5_000
CHART_POINTS = 600
LOG_LIMIT = 5_000


class Slots[F: Callable[..., None]]:
    """Callbacks of one kind; ``Signal`` and ``Signal1`` say how they are called."""

    def __init__(self) -> None:
        self._slots: list[F] = []

    def connect(self, slot: F) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: F) -> None:
        self._slots.remove(slot)

    def _call(self, *args: object) -> None:
        for slot in list(self._slots):
            try:
                slot(*args)
            except Exception:
                logging.getLogger(__name__).exception("a listener failed")


class Signal(Slots[Callable[[], None]]):
    """Callbacks with no argument. ``emit`` calls each; one that raises is logged and skipped."""

    def emit(self) -> None:
        self._call()


class Signal1[T](Slots[Callable[[T], None]]):
    """Callbacks with one argument."""

    def emit(self, value: T) -> None:
        self._call(value)


class Link(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class Connection:
    link: Link = Link.DISCONNECTED
    mode: str = "embedded"  # or "remote"
    url: str = ""
    height: int = 0  # the node's chain height
    tick_ms: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EntityEntry:
    """One entity as one of the user's signers sees it (its replica's agreed state)."""

    signer_id: bytes  # the user's signer that holds this replica
    state: EntityState  # config (members, shares, threshold, proposer), height, counter, proposals
    last_cert_signers: tuple[bytes, ...] = ()  # signer ids in the last certificate


@dataclass(frozen=True, slots=True)
class HistoryItem:
    kind: str  # "frame", "block" or "payment"
    height: int
    hash: bytes
    time_ms: int  # wall clock when the wallet saw it
    text: str  # one line: what it held
    entity_id: bytes | None = None
    signer_id: bytes | None = None
    cert_signers: tuple[bytes, ...] = ()  # frames: who signed, in member order
    cert_bitfield: bytes = b""
    cert_valid: bool | None = None  # frames: did the certificate verify here
    # payments: what became of it (payment, paid, received, forward, forwarded,
    # refunded, rejected, minted), the amount, asset and counterparty
    payment: str = ""
    amount: int | None = None
    asset: int | None = None
    counterparty: bytes | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    time_ms: int
    level: str  # "DEBUG" .. "ERROR"
    source: str  # logger name
    message: str


@dataclass
class WalletModel:
    connection: Connection = field(default_factory=Connection)
    entities: dict[tuple[bytes, bytes], EntityEntry] = field(default_factory=dict)
    history: deque[HistoryItem] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    tick_lateness_ms: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=CHART_POINTS)
    )  # (monotonic seconds, ms)
    finality_ms: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=CHART_POINTS)
    )  # (monotonic seconds, ms from submission to certified)
    logs: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    locked: bool = True
    accountant_on: bool = False
    # Per entity id: the node's equivocation evidence about its members, each record's
    # signatures checked (wallet.flows.evidence words it for the Entities view).
    evidence: dict[bytes, tuple[Evidence, ...]] = field(default_factory=dict)
    # Per entity id: the members' signed refusals the node has seen (who refused which
    # frame, and why), each checked against the entity's config.
    refusals: dict[bytes, tuple[Refusal, ...]] = field(default_factory=dict)

    connection_changed: Signal = field(default_factory=Signal)
    entities_changed: Signal = field(default_factory=Signal)
    history_added: Signal1[HistoryItem] = field(default_factory=Signal1)
    metrics_changed: Signal = field(default_factory=Signal)
    log_added: Signal1[LogLine] = field(default_factory=Signal1)
    lock_changed: Signal = field(default_factory=Signal)
    accountant_changed: Signal = field(default_factory=Signal)
    contacts: dict[bytes, str] = field(default_factory=dict)  # co-signers' names
    contacts_changed: Signal = field(default_factory=Signal)
    # After a restore from the phrase: what finding the signer's entities said.
    restore_note: str = ""
    restore_changed: Signal = field(default_factory=Signal)
    # The signers the embedded node hosts: an entity all of whose members are among
    # them lives only on this computer (wallet.flows.backup.only_here).
    hosted: frozenset[bytes] = frozenset()

    def set_hosted(self, signers: frozenset[bytes]) -> None:
        if signers != self.hosted:
            self.hosted = signers
            self.entities_changed.emit()

    def set_restore_note(self, text: str) -> None:
        self.restore_note = text
        self.restore_changed.emit()

    def set_connection(self, connection: Connection) -> None:
        self.connection = connection
        self.connection_changed.emit()

    def set_entity(self, entry: EntityEntry) -> None:
        self.entities[(entry.signer_id, entry.state.entity_id)] = entry
        self.entities_changed.emit()

    def set_evidence(self, entity: bytes, records: Sequence[Evidence]) -> None:
        """The entity's evidence as last read; the entities' listeners hear of a change."""
        new = tuple(records)
        if self.evidence.get(entity, ()) == new:
            return
        if new:
            self.evidence[entity] = new
        else:
            self.evidence.pop(entity, None)
        self.entities_changed.emit()

    def set_refusals(self, entity: bytes, refusals: Sequence[Refusal]) -> None:
        """The members' signed refusals about the entity as last read (each checked
        against its config); the entities' listeners hear of a change."""
        new = tuple(refusals)
        if self.refusals.get(entity, ()) == new:
            return
        if new:
            self.refusals[entity] = new
        else:
            self.refusals.pop(entity, None)
        self.entities_changed.emit()

    def add_history(self, item: HistoryItem) -> None:
        self.history.append(item)
        self.history_added.emit(item)

    def add_log(self, line: LogLine) -> None:
        self.logs.append(line)
        self.log_added.emit(line)

    def set_locked(self, locked: bool) -> None:
        self.locked = locked
        self.lock_changed.emit()

    def set_accountant_on(self, on: bool) -> None:
        self.accountant_on = on
        self.accountant_changed.emit()

    def set_contacts(self, contacts: dict[bytes, str]) -> None:
        self.contacts = dict(contacts)
        self.contacts_changed.emit()


@dataclass(frozen=True, slots=True)
class NewMember:
    pubkey: bytes
    pop: bytes  # proof of possession
    shares: int


class WalletLocked(Exception):
    """An action needs the keys and the wallet is locked (the message is for the user);
    a view offers Unlock beside it."""


class WalletActions(Protocol):
    """What the user can do; the service implements it, the views call it.

    Every method that talks to the node or the keys is a coroutine: the views
    schedule it on the loop and show its progress and outcome, never block on it.
    Errors come back as exceptions with a message fit for the user.
    """

    async def increment(self, signer: bytes, entity: bytes, n: int) -> None: ...

    async def propose(
        self, signer: bytes, entity: bytes, action: EntityAction, expires_at: int
    ) -> None: ...

    async def pay(
        self, signer: bytes, entity: bytes, route: tuple[bytes, ...], asset: int, amount: int
    ) -> None:
        """Sign and submit a payment (checked against the channel's capacity first)."""
        ...

    async def channel_page(
        self, signer: bytes, entity: bytes, after: bytes, limit: int
    ) -> ChannelPage:
        """Up to ``limit`` of the entity's channels after the counterparty ``after``
        (empty: from the first), proven (``wallet.flows.channel_pages``)."""
        ...

    async def channel_card(self, entity: bytes) -> str:
        """The channel card (JSON) of an entity hosted on the node, for open_channel."""
        ...

    async def faucet(self, entity: bytes, asset: int, amount: int) -> None:
        """Simulation only: credit the entity's reserve (the node refuses otherwise)."""
        ...

    async def vote(self, signer: bytes, entity: bytes, proposal_id: int) -> None: ...

    async def withdraw(self, signer: bytes, entity: bytes, nonce: int) -> None:
        """Withdraw ``signer``'s batch at ``nonce`` from the entity's pools (a batch of
        ``withdraw`` alone at that nonce): for a batch co-signers refused."""
        ...

    async def create_entity(
        self,
        signer: bytes,
        members: Sequence[NewMember],
        threshold: int,
        proposer_index: int,
    ) -> bytes: ...

    async def join_entity(self, signer: bytes, entity: bytes) -> None:
        """Wait for (and watch) a replica of an entity that lists this signer."""
        ...

    async def unlock(self, password: str) -> None: ...

    def lock(self) -> None: ...

    def approve(self, request_id: int) -> None: ...

    def reject(self, request_id: int) -> None: ...

    def set_accountant(self, on: bool) -> None: ...

    async def name_signer(self, signer: bytes, name: str) -> None:
        """Give a co-signer a name on this wallet's screens (empty: forget it)."""
        ...
