"""The first-run wizard as a plain state machine (no Qt, no I/O, no clock).

Steps, in order (Electrum-wizard style)::

    KEY -> BACKUP -> CHECK -> PASSWORD -> NODE -> ENTITY -> DONE

- KEY: create a new key (a 24-word BIP-39 phrase) or import one. An imported
  phrase skips BACKUP and CHECK: the user already holds it. With it, a backup
  file of the data folder (``wallet/flows/backup.py``) and the password it was
  made under may be chosen: the app restores it once the key is stored.
- BACKUP: show the 24 words; CHECK: ask for 3 of them, chosen at random.
- PASSWORD: typed twice, at least :data:`MIN_PASSWORD` characters.
- NODE: the embedded node (default) or a remote ``ws://``/``wss://`` URL and token.
- ENTITY: create an entity (this key plus other signers' cards, shares,
  threshold, proposer), join one by id, or skip; and whether to make a first
  backup of the data folder once set up (:meth:`Onboarding.want_first_backup`).

Every step method validates its input and raises :class:`StepRefused` with the
reason when it refuses; a refusal changes nothing. :meth:`Onboarding.back` goes
to the previous step. At DONE, :meth:`Onboarding.plan` gives the :class:`Plan`
the app carries out through the ``Vault`` and the ``WalletService``.

A *signer card* is how another signer shares its public key and proof of
possession: ``xln-signer:<key hex>:<proof hex>`` as the wallet shows it, the JSON
that ``xln-node key show`` prints, or the two hex strings joined by ``:``
(``wallet.flows.compose.SignerCard`` reads them all).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from node.machines.governance import (
    MAX_SHARES,
    MAX_SIGNERS,
    signer_id,
)
from node.net.tls import token_transport_refusal
from wallet.flows.compose import SignerCard
from wallet.model import NewMember

MIN_PASSWORD = 8
WORDS = 24
CHECKED_WORDS = 3
ENTITY_ID_LEN = 32


class Step(StrEnum):
    KEY = "key"
    BACKUP = "backup"
    CHECK = "check"
    PASSWORD = "password"  # noqa: S105 - a step name
    NODE = "node"
    ENTITY = "entity"
    DONE = "done"


class StepRefused(ValueError):
    """The current step refuses its input; the message says why, fit for the user."""


class WrongWords(StepRefused):
    """Words of the check that do not match the backup: ``indexes`` are their places
    among the words asked for (0-based), so a form can mark those fields."""

    def __init__(self, message: str, indexes: tuple[int, ...]) -> None:
        super().__init__(message)
        self.indexes = indexes


@dataclass(frozen=True, slots=True)
class NodeChoice:
    mode: str = "embedded"  # or "remote"
    url: str = ""
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class CreateEntity:
    """A new entity: this wallet's key is member 0, then ``others`` in order."""

    own_shares: int
    others: tuple[NewMember, ...]
    threshold: int
    proposer_index: int  # into (this key, *others)


@dataclass(frozen=True, slots=True)
class JoinEntity:
    entity_id: bytes


@dataclass(frozen=True, slots=True)
class BackupChoice:
    """A backup file to restore with the phrase, and the wallet password it was made
    under (which may differ from the new one)."""

    path: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the app does when the wizard is done. Holds secrets: never log it."""

    mnemonic: str = field(repr=False)
    imported: bool
    label: str
    password: str = field(repr=False)
    node: NodeChoice
    entity: CreateEntity | JoinEntity | None
    backup: BackupChoice | None = None
    first_backup: bool = False  # back up the folder once the wallet is set up


def parse_card(text: str) -> NewMember:
    """A signer card (``SignerCard.decode`` reads its spellings) as a member with 1
    share; refuses a bad key or proof of possession."""
    if not text.strip():
        raise StepRefused("a signer card is empty")
    try:
        card = SignerCard.decode(text)
    except ValueError as exc:
        raise StepRefused(f"not a signer card: {exc}") from None
    return card.member(1)


def parse_entity_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(_strip0x(text.strip()))
    except ValueError:
        raise StepRefused("an entity id is 64 hex digits") from None
    if len(raw) != ENTITY_ID_LEN:
        raise StepRefused("an entity id is 64 hex digits")
    return raw


def threshold_hint(total_shares: int, threshold: int) -> tuple[bool, str]:
    """(valid, what to show) for a new entity's threshold: the shares that must sign
    each frame, more than half of all shares and at most all of them."""
    low = total_shares // 2 + 1
    what = (
        f"Each frame needs signatures holding {threshold} of the {total_shares} shares. "
        f"The threshold must be more than half of all shares: {low} to {total_shares} here."
    )
    if not low <= threshold <= total_shares:
        return False, what
    if total_shares == threshold == 1:
        what += (
            " Alone, you sign every frame. To add co-signers later, propose Add a signer "
            "with a new threshold (2 for a 2-of-2)."
        )
    elif threshold == total_shares:
        what += " Every signer must sign: one that is away or refuses stops the entity."
    else:
        what += f" Signers holding {total_shares - threshold + 1} shares can stop a frame."
    return True, what


def _strip0x(text: str) -> str:
    return text[2:] if text[:2].lower() == "0x" else text


class Onboarding:
    """The wizard's state. ``generate`` makes a new 24-word phrase; ``validate``
    tells whether a phrase is a valid BIP-39 mnemonic; ``rng`` picks the words to
    check (inject ``secrets.SystemRandom()`` in the app, a seeded one in tests)."""

    def __init__(
        self,
        generate: Callable[[], str],
        validate: Callable[[str], bool],
        rng: random.Random,
        *,
        min_password: int = MIN_PASSWORD,
    ) -> None:
        self._generate = generate
        self._validate = validate
        self._rng = rng
        self.min_password = min_password
        self.step = Step.KEY
        self._trail: list[Step] = []
        self.mnemonic = ""
        self._created = ""  # the phrase create_key made, kept if the user comes back
        self.imported = False
        self.label = ""
        self.check_positions: tuple[int, ...] = ()  # 0-based word indexes
        self._password = ""
        self.node = NodeChoice()
        self.entity: CreateEntity | JoinEntity | None = None
        self.backup: BackupChoice | None = None
        self.first_backup = False

    def __repr__(self) -> str:  # never show the phrase or the password
        return f"Onboarding(step={self.step.value})"

    @property
    def words(self) -> list[str]:
        return self.mnemonic.split()

    # steps -------------------------------------------------------------------

    def create_key(self, label: str = "my signer") -> None:
        """A new key: its phrase is made once per wizard, so Back from the backup page
        then Next shows the words the user may have written down already, not new ones."""
        self._expect(Step.KEY)
        label = self._label(label)
        if not self._created:
            phrase = self._generate()
            if len(phrase.split()) != WORDS or not self._validate(phrase):
                raise StepRefused("the phrase generator gave an invalid phrase")  # a bug
            self._created = phrase
        self.mnemonic, self.imported, self.label = self._created, False, label
        self.backup = None
        self._go(Step.BACKUP)

    def import_key(
        self,
        words: str,
        label: str = "my signer",
        backup_path: str = "",
        backup_password: str = "",
    ) -> None:
        """A restore from the phrase; with ``backup_path``, from a backup of the data
        folder too (opened with ``backup_password`` when the wizard is done)."""
        self._expect(Step.KEY)
        label = self._label(label)
        backup_path = backup_path.strip()
        if backup_path and not backup_password:
            raise StepRefused("enter the wallet password the backup was made under")
        if backup_password and not backup_path:
            raise StepRefused("choose the backup file, or leave its password empty")
        phrase = " ".join(words.lower().split())
        count = len(phrase.split())
        if count not in (12, 15, 18, 21, 24):
            raise StepRefused(f"a recovery phrase has 12 to 24 words, got {count}")
        if not self._validate(phrase):
            raise StepRefused("the phrase is not valid: a word is misspelled or the checksum fails")
        self.mnemonic, self.imported, self.label = phrase, True, label
        self.backup = BackupChoice(backup_path, backup_password) if backup_path else None
        self._go(Step.PASSWORD)

    def backup_done(self) -> None:
        """The user has written the words down: pick the ones to check."""
        self._expect(Step.BACKUP)
        self.check_positions = tuple(
            sorted(self._rng.sample(range(len(self.words)), CHECKED_WORDS))
        )
        self._go(Step.CHECK)

    def check_words(self, answers: Sequence[str]) -> None:
        self._expect(Step.CHECK)
        if len(answers) != len(self.check_positions):
            raise StepRefused(f"enter the {len(self.check_positions)} words asked for")
        wrong = [
            i
            for i, (pos, answer) in enumerate(zip(self.check_positions, answers, strict=True))
            if answer.strip().lower() != self.words[pos]
        ]
        if wrong:
            which = ", ".join(f"#{self.check_positions[i] + 1}" for i in wrong)
            raise WrongWords(
                f"word {which} does not match the backup; check what you wrote", tuple(wrong)
            )
        self._go(Step.PASSWORD)

    def set_password(self, password: str, again: str) -> None:
        self._expect(Step.PASSWORD)
        if len(password) < self.min_password:
            raise StepRefused(f"the password needs at least {self.min_password} characters")
        if password != again:
            raise StepRefused("the two passwords differ")
        self._password = password
        self._go(Step.NODE)

    def use_embedded_node(self) -> None:
        self._expect(Step.NODE)
        self.node = NodeChoice()
        self._go(Step.ENTITY)

    def use_remote_node(self, url: str, token: str) -> None:
        url, token = self.check_remote_node(url, token)
        self.node = NodeChoice(mode="remote", url=url, token=token)
        self._go(Step.ENTITY)

    def check_remote_node(self, url: str, token: str) -> tuple[str, str]:
        """The URL and token as they will be used (trimmed), or StepRefused: what the
        window tests a connection with before it moves on."""
        self._expect(Step.NODE)
        url, token = url.strip(), token.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise StepRefused("a node URL looks like ws://host:port or wss://host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise StepRefused("the node URL has a bad port") from None
        if not token:
            raise StepRefused("a remote node needs its API token")
        if token_transport_refusal(url) is not None:
            raise StepRefused(
                "a node on another machine is reached over wss:// (TLS): over ws:// its "
                "token would cross the network in clear"
            )
        return url, token

    def create_entity(
        self,
        own_shares: int,
        others: Sequence[tuple[str, int]],
        threshold: int,
        proposer_index: int = 0,
    ) -> None:
        """``others`` is (signer card, shares) for each other member, in order."""
        self._expect(Step.ENTITY)
        members = [parse_card(card) for card, _ in others]
        shares = [own_shares, *(s for _, s in others)]
        if len(shares) > MAX_SIGNERS:
            raise StepRefused(f"an entity has at most {MAX_SIGNERS} signers")
        for n in shares:
            if not 1 <= n <= MAX_SHARES:
                raise StepRefused(f"shares must be 1 .. {MAX_SHARES}, got {n}")
        ids = [signer_id(m.pubkey) for m in members]
        if len(set(ids)) != len(ids):
            raise StepRefused("a signer card appears twice")
        total = sum(shares)
        if not (total < 2 * threshold and threshold <= total):
            raise StepRefused(
                f"the threshold must exceed half of all {total} shares and not exceed them "
                f"({total // 2 + 1} .. {total})"
            )
        if not 0 <= proposer_index < len(shares):
            raise StepRefused("the proposer must be one of the members")
        self.entity = CreateEntity(
            own_shares=own_shares,
            others=tuple(
                NewMember(pubkey=m.pubkey, pop=m.pop, shares=s)
                for m, s in zip(members, shares[1:], strict=True)
            ),
            threshold=threshold,
            proposer_index=proposer_index,
        )
        self._go(Step.DONE)

    def join_entity(self, entity_id: str) -> None:
        self._expect(Step.ENTITY)
        self.entity = JoinEntity(parse_entity_id(entity_id))
        self._go(Step.DONE)

    def skip_entity(self) -> None:
        self._expect(Step.ENTITY)
        self.entity = None
        self._go(Step.DONE)

    def want_first_backup(self, on: bool) -> None:
        """Make a first backup of the data folder once set up (the last page offers it;
        any step may change it)."""
        self.first_backup = on

    def back(self) -> None:
        """The previous step (what was entered there is kept until replaced)."""
        if not self._trail:
            raise StepRefused("this is the first step")
        self.step = self._trail.pop()

    def plan(self) -> Plan:
        self._expect(Step.DONE)
        return Plan(
            mnemonic=self.mnemonic,
            imported=self.imported,
            label=self.label,
            password=self._password,
            node=self.node,
            entity=self.entity,
            backup=self.backup,
            first_backup=self.first_backup,
        )

    # helpers -----------------------------------------------------------------

    def _expect(self, step: Step) -> None:
        if self.step is not step:
            raise StepRefused(f"this is the {self.step.value} step, not {step.value}")

    def _go(self, step: Step) -> None:
        self._trail.append(self.step)
        self.step = step

    @staticmethod
    def _label(label: str) -> str:
        label = label.strip()
        if not label or len(label) > 64:
            raise StepRefused("a key label has 1 to 64 characters")
        return label
