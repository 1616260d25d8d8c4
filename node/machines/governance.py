"""An entity's config (signers, shares, threshold, proposer) and the actions that change it.

The config is the ordered list of members ``(pubkey, shares)``, the threshold
and the proposer. Member order is the slot order of quorum certificates; a new
member is appended, a removed one leaves the others' order unchanged.

Rule (checked on every config, before and after any action): every member has
1 .. 2**32-1 shares, and ``total / 2 < threshold <= total``. A config or an
action that would break it is refused.

Actions are the entity's private methods. They run only from an executed
proposal (see ``node/machines/entity.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import ClassVar

from node.codec import (
    HASH_LEN,
    DecodeError,
    RlpItem,
    RlpTree,
    as_bytes,
    as_int,
    as_list,
    int_bytes,
    keccak,
)
from node.crypto import bls

PUBKEY_LEN = 48
POP_LEN = 96
MAX_SIGNERS = 1024
MAX_SHARES = 2**32 - 1


class ConfigError(ValueError):
    """A config, or an action on one, that breaks the entity's rules."""


def signer_id(pubkey: bytes) -> bytes:
    """A signer's id: keccak-256 of its 48-byte BLS public key."""
    return keccak(pubkey)


@dataclass(frozen=True, slots=True)
class Member:
    pubkey: bytes
    shares: int

    @property
    def id(self) -> bytes:
        return signer_id(self.pubkey)


@dataclass(frozen=True)
class Config:
    members: tuple[Member, ...]
    threshold: int
    proposer: bytes  # a member's signer id

    def __post_init__(self) -> None:
        check_config(self)

    @cached_property
    def ids(self) -> tuple[bytes, ...]:
        return tuple(m.id for m in self.members)

    @cached_property
    def index(self) -> dict[bytes, int]:
        return {sid: i for i, sid in enumerate(self.ids)}

    @property
    def total_shares(self) -> int:
        return sum(m.shares for m in self.members)

    def shares_of(self, ids: Sequence[bytes]) -> int:
        index = self.index
        return sum(self.members[index[i]].shares for i in ids if i in index)

    def proposer_at(self, round_: int) -> bytes:
        """The proposer of a round: the configured proposer at round 0, then the
        next members in order."""
        start = self.index[self.proposer]
        return self.ids[(start + round_) % len(self.members)]

    def to_tree(self) -> RlpTree:
        return [
            [[m.pubkey, int_bytes(m.shares)] for m in self.members],
            int_bytes(self.threshold),
            self.proposer,
        ]

    @classmethod
    def from_item(cls, item: RlpItem) -> Config:
        fields = as_list(item, "config", size=3)
        members = tuple(
            Member(
                as_bytes(f[0], "member pubkey", size=PUBKEY_LEN),
                as_int(f[1], "member shares", max_value=MAX_SHARES),
            )
            for f in (
                as_list(m, "member", size=2)
                for m in as_list(fields[0], "members", max_len=MAX_SIGNERS)
            )
        )
        try:
            return cls(
                members,
                as_int(fields[1], "threshold"),
                as_bytes(fields[2], "proposer", size=HASH_LEN),
            )
        except ConfigError as exc:
            raise DecodeError(f"config: {exc}") from None


def check_config(config: Config) -> None:
    if not config.members:
        raise ConfigError("an entity needs at least one signer")
    if len(config.members) > MAX_SIGNERS:
        raise ConfigError(f"{len(config.members)} signers exceed the cap of {MAX_SIGNERS}")
    if len(set(config.ids)) != len(config.members):
        raise ConfigError("a signer appears twice")
    for m in config.members:
        if not 1 <= m.shares <= MAX_SHARES:
            raise ConfigError(f"shares must be 1 .. {MAX_SHARES}, got {m.shares}")
    total = config.total_shares
    if not total < 2 * config.threshold or config.threshold > total:
        raise ConfigError(
            f"threshold {config.threshold} must exceed half of all {total} shares "
            "and not exceed them"
        )
    if config.proposer not in config.index:
        raise ConfigError("the proposer must be a signer")


def check_new_key(pubkey: bytes, pop: bytes) -> None:
    """A key may join only if it is a valid public key with a proof of possession."""
    if not bls.key_validate(pubkey):
        raise ConfigError("invalid BLS public key")
    if not _pop_valid(pubkey, pop):
        raise ConfigError("invalid proof of possession")


@lru_cache(maxsize=4096)
def _pop_valid(pubkey: bytes, pop: bytes) -> bool:
    # Cached: replicas and replays check the same few proofs again and again.
    return bls.pop_verify(pubkey, pop)


# Actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddSigner:
    """A new member; with ``threshold``, the new threshold too, checked as one change
    (so a 1-of-1 entity grows to 2-of-2 in one proposal: adding a member alone would
    leave threshold 1 of 2 shares, which the threshold rule refuses)."""

    KIND: ClassVar[int] = 1
    pubkey: bytes
    pop: bytes
    shares: int
    threshold: int | None = None  # None: unchanged (and not encoded)

    def apply(self, c: Config) -> Config:
        if signer_id(self.pubkey) in c.index:
            raise ConfigError("already a signer")
        members = (*c.members, Member(self.pubkey, self.shares))
        if self.threshold is None:
            return _remake(c, members=members)
        return _remake(c, members=members, threshold=self.threshold)

    def fields(self) -> list[RlpItem]:
        out: list[RlpItem] = [self.pubkey, self.pop, int_bytes(self.shares)]
        if self.threshold is not None:
            out.append(int_bytes(self.threshold))
        return out


@dataclass(frozen=True, slots=True)
class RemoveSigner:
    KIND: ClassVar[int] = 2
    signer: bytes

    def apply(self, c: Config) -> Config:
        _member(c, self.signer)
        if self.signer == c.proposer:
            raise ConfigError("the proposer cannot be removed; change the proposer first")
        return _remake(c, members=tuple(m for m in c.members if m.id != self.signer))

    def fields(self) -> list[RlpItem]:
        return [self.signer]


@dataclass(frozen=True, slots=True)
class SetShares:
    KIND: ClassVar[int] = 3
    signer: bytes
    shares: int

    def apply(self, c: Config) -> Config:
        _member(c, self.signer)
        members = tuple(
            Member(m.pubkey, self.shares) if m.id == self.signer else m for m in c.members
        )
        return _remake(c, members=members)

    def fields(self) -> list[RlpItem]:
        return [self.signer, int_bytes(self.shares)]


@dataclass(frozen=True, slots=True)
class SetThreshold:
    KIND: ClassVar[int] = 4
    threshold: int

    def apply(self, c: Config) -> Config:
        return _remake(c, threshold=self.threshold)

    def fields(self) -> list[RlpItem]:
        return [int_bytes(self.threshold)]


@dataclass(frozen=True, slots=True)
class SetProposer:
    KIND: ClassVar[int] = 5
    signer: bytes

    def apply(self, c: Config) -> Config:
        _member(c, self.signer)
        return _remake(c, proposer=self.signer)

    def fields(self) -> list[RlpItem]:
        return [self.signer]


type Action = AddSigner | RemoveSigner | SetShares | SetThreshold | SetProposer

ACTION_NAMES: dict[type[Action], str] = {
    AddSigner: "add_signer",
    RemoveSigner: "remove_signer",
    SetShares: "set_shares",
    SetThreshold: "set_threshold",
    SetProposer: "set_proposer",
}


def action_tree(action: Action) -> RlpItem:
    return [int_bytes(action.KIND), *action.fields()]


def action_from_item(item: RlpItem) -> Action:
    fields = as_list(item, "action", max_len=5)
    if not fields:
        raise DecodeError("action: empty list")
    kind = as_int(fields[0], "action kind", max_value=255)
    args = fields[1:]

    def want(n: int) -> None:
        if len(args) != n:
            raise DecodeError(f"action {kind}: expected {n} fields, got {len(args)}")

    def sid(i: int) -> bytes:
        return as_bytes(args[i], "signer id", size=HASH_LEN)

    def shares(i: int) -> int:
        return as_int(args[i], "shares", min_value=1, max_value=MAX_SHARES)

    def threshold(i: int) -> int:
        # Up to the largest possible total, not less: any valid threshold can be set.
        return as_int(args[i], "threshold", min_value=1, max_value=MAX_SIGNERS * MAX_SHARES)

    match kind:
        case AddSigner.KIND:
            if len(args) not in (3, 4):
                raise DecodeError(f"action {kind}: expected 3 or 4 fields, got {len(args)}")
            return AddSigner(
                as_bytes(args[0], "pubkey", size=PUBKEY_LEN),
                as_bytes(args[1], "proof of possession", size=POP_LEN),
                shares(2),
                threshold(3) if len(args) == 4 else None,
            )
        case RemoveSigner.KIND:
            want(1)
            return RemoveSigner(sid(0))
        case SetShares.KIND:
            want(2)
            return SetShares(sid(0), shares(1))
        case SetThreshold.KIND:
            want(1)
            return SetThreshold(threshold(0))
        case SetProposer.KIND:
            want(1)
            return SetProposer(sid(0))
    raise DecodeError(f"unknown action kind {kind}")


def check_action(action: Action) -> None:
    """Stateless checks, done once when the action is proposed (PoP is costly)."""
    if isinstance(action, AddSigner):
        check_new_key(action.pubkey, action.pop)


def _member(c: Config, sid: bytes) -> Member:
    i = c.index.get(sid)
    if i is None:
        raise ConfigError("not a signer of this entity")
    return c.members[i]


def _remake(c: Config, **changes: object) -> Config:
    return replace(c, **changes)  # type: ignore[arg-type]  # Config re-checks itself
