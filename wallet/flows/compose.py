"""The entity transactions a user composes, checked before anything is signed.

``increment(n)``, ``propose(action, expires_at)`` and ``vote(proposal_id)``
give the node's transaction bodies; one small form per governance action
(:class:`AddSignerForm`, ...) turns what the user typed into the node's
:class:`~node.machines.governance.Action`, checked against the entity's current
config, with an error per field. ``signed_batch`` signs bodies into the
``submit_batch`` input the node takes.

A **signer card** is a member's public key and proof of possession as one
copyable line, ``xln-signer:<pubkey hex>:<pop hex>``: what a member sends the
others to be put in a new entity or added to one.

Channels: ``pay(route, asset, amount, state)`` makes a payment and
:class:`OpenChannelForm`, :class:`ExtendCreditForm` and :class:`FundChannelForm`
the channel actions a proposal carries. What they check is the node's, never a
copy: this module only parses what was typed, then calls the node's own rules in
``node.machines.accounts`` (the bounds of each number, ``check_route``, and
against the entity's state ``check_pay`` and ``check_action_applies``, which the
node's transition calls too), so it refuses exactly what the node would, in the
node's words, each error under the field it is about. On a partial state (a large
entity's, its channels on the node) the channel checks are left to the service,
which runs them on the channel it reads, proven (:func:`channels_checkable`). A
**channel card** is what opening a channel with an entity needs, as JSON:
``{"entity": hex, "config_height": n, "config": <hex of the RLP config>}``.

Nothing here talks to the node or holds a key beyond the call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeGuard

from node.codec import HASH_LEN, UINT64_MAX, DecodeError, decode, encode_tree
from node.crypto import bls
from node.machines import accounts, governance
from node.machines.accounts import (
    ChannelAction,
    ExtendCredit,
    FundChannel,
    IntField,
    OpenChannel,
    Pay,
)
from node.machines.counter import MAX_INCREMENT
from node.machines.entity import (
    MAX_BATCH_TXS,
    MAX_PROPOSAL_TTL,
    EntityAction,
    EntityState,
    Increment,
    Propose,
    Vote,
    Withdraw,
    sign_batch,
)
from node.machines.governance import (
    MAX_SHARES,
    MAX_SIGNERS,
    POP_LEN,
    PUBKEY_LEN,
    Action,
    AddSigner,
    Config,
    ConfigError,
    RemoveSigner,
    SetProposer,
    SetShares,
    SetThreshold,
)
from node.machines.governance import signer_id as key_id
from node.machines.replica import SubmitBatch
from node.net.remote_map import is_partial
from node.txs import Tx, TxBody
from wallet.model import NewMember

DEFAULT_TTL = 100  # frames a new proposal stays open by default
CARD_PREFIX = "xln-signer:"


class ComposeError(ValueError):
    """Input that cannot make a transaction: ``errors`` maps each bad field to why."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# Parsing what was typed ------------------------------------------------------------


def parse_hex(text: str, size: int, what: str) -> bytes:
    """Hex (an optional ``0x``, spaces ignored) of exactly ``size`` bytes; ValueError else."""
    clean = "".join(text.split())
    if clean[:2].lower() == "0x":
        clean = clean[2:]
    if not clean:
        raise ValueError(f"enter the {what}")
    try:
        raw = bytes.fromhex(clean)
    except ValueError:
        raise ValueError(f"the {what} must be hexadecimal") from None
    if len(raw) != size:
        raise ValueError(f"the {what} must be {size} bytes ({2 * size} hex digits), not {len(raw)}")
    return raw


def parse_whole(value: int | str, what: str) -> int:
    """A whole number (of any size or sign), from an int or typed text; ValueError else."""
    if isinstance(value, bool):
        raise ValueError(f"the {what} must be a whole number")
    if isinstance(value, str):
        try:
            value = int(value.strip().replace("_", ""), 10)
        except ValueError:
            raise ValueError(f"the {what} must be a whole number") from None
    return value


def parse_int(value: int | str, what: str, low: int, high: int) -> int:
    """A whole number in ``low .. high``, from an int or typed text; ValueError else."""
    value = parse_whole(value, what)
    if not low <= value <= high:
        raise ValueError(f"the {what} must be {low} .. {high}, not {value}")
    return value


# Signer cards ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignerCard:
    pubkey: bytes
    pop: bytes

    @property
    def signer_id(self) -> bytes:
        return key_id(self.pubkey)

    def encode(self) -> str:
        return f"{CARD_PREFIX}{self.pubkey.hex()}:{self.pop.hex()}"

    def member(self, shares: int) -> NewMember:
        return NewMember(self.pubkey, self.pop, shares)

    @classmethod
    def decode(cls, text: str) -> SignerCard:
        """A card from its text; ValueError unless the key is valid and the proof proves it.

        Three spellings are read: the wallet's own ``xln-signer:<key hex>:<proof hex>``
        (what it shows and copies), the JSON that ``xln-node key show`` prints, and a
        bare ``<key hex>:<proof hex>``.
        """
        text = text.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("a signer card in JSON must be valid JSON") from None
            if not isinstance(data, dict):
                raise ValueError("a signer card in JSON is an object")
            key_hex, proof_hex = (
                str(data.get("pubkey", "")),
                str(data.get("proof_of_possession", "")),
            )
        else:
            body = text.removeprefix(CARD_PREFIX)
            parts = body.split(":")
            if len(parts) != 2:
                raise ValueError("a signer card is xln-signer:<public key hex>:<proof hex>")
            key_hex, proof_hex = parts
        pubkey = parse_hex(key_hex, PUBKEY_LEN, "public key")
        pop = parse_hex(proof_hex, POP_LEN, "proof of possession")
        check_key(pubkey, pop)
        return cls(pubkey, pop)


def check_key(pubkey: bytes, pop: bytes) -> None:
    """ValueError unless ``pubkey`` is a valid BLS key and ``pop`` proves possession of it."""
    if not bls.key_validate(pubkey):
        raise ValueError("the public key is not a valid BLS public key")
    if not bls.pop_verify(pubkey, pop):
        raise ValueError("the proof of possession does not match the public key")


# Governance forms ------------------------------------------------------------------


class _Form:
    """One governance action's editor: fields as typed, checked against a config."""

    RESULT_FIELD: ClassVar[str]  # the field blamed when the new config would be invalid

    def _build(self, config: Config, errors: dict[str, str]) -> Action | None:
        raise NotImplementedError

    def errors(self, config: Config) -> dict[str, str]:
        """Field -> what is wrong; empty when the form makes a valid action."""
        errors: dict[str, str] = {}
        self._build(config, errors)
        return errors

    def to_action(self, config: Config) -> Action:
        """The node's action; ComposeError with an error per field if it cannot be made."""
        errors: dict[str, str] = {}
        action = self._build(config, errors)
        if errors or action is None:
            raise ComposeError(errors or {"": "incomplete"})
        return action

    def _result(self, action: Action, config: Config, errors: dict[str, str]) -> Action | None:
        """Whether the config would still be valid after the action (the threshold rule)."""
        try:
            action.apply(config)
        except ConfigError as exc:
            errors[self.RESULT_FIELD] = str(exc)
            return None
        return action


def _field[T](errors: dict[str, str], name: str, parse: Callable[[], T]) -> T | None:
    """``parse()``, or None with its error recorded against the field ``name``."""
    try:
        return parse()
    except ValueError as exc:
        errors[name] = str(exc)
        return None


def _member_id(text: str, config: Config) -> bytes:
    sid = parse_hex(text, HASH_LEN, "signer id")
    if sid not in config.index:
        raise ValueError("not a signer of this entity")
    return sid


@dataclass(frozen=True)
class AddSignerForm(_Form):
    pubkey_hex: str
    pop_hex: str
    shares: int | str = 1
    threshold: int | str = ""  # empty: unchanged
    RESULT_FIELD: ClassVar[str] = "shares"

    @classmethod
    def from_card(
        cls, card: str, shares: int | str = 1, threshold: int | str = ""
    ) -> AddSignerForm:
        """A form filled from a signer card (checked when the form is)."""
        body = card.strip().removeprefix(CARD_PREFIX)
        pubkey, _, pop = body.partition(":")
        return cls(pubkey, pop, shares, threshold)

    def _build(self, config: Config, errors: dict[str, str]) -> Action | None:
        if len(config.members) >= MAX_SIGNERS:
            errors["pubkey_hex"] = f"the entity already has the most signers, {MAX_SIGNERS}"
            return None
        pubkey = _field(
            errors, "pubkey_hex", lambda: parse_hex(self.pubkey_hex, PUBKEY_LEN, "public key")
        )
        pop = _field(
            errors, "pop_hex", lambda: parse_hex(self.pop_hex, POP_LEN, "proof of possession")
        )
        shares = _field(errors, "shares", lambda: parse_int(self.shares, "shares", 1, MAX_SHARES))
        threshold: int | None = None
        if str(self.threshold).strip():
            threshold = _field(
                errors,
                "threshold",
                lambda: parse_int(self.threshold, "threshold", 1, MAX_SIGNERS * MAX_SHARES),
            )
        if pubkey is not None:
            if not bls.key_validate(pubkey):
                errors["pubkey_hex"] = "not a valid BLS public key"
            elif key_id(pubkey) in config.index:
                errors["pubkey_hex"] = "already a signer of this entity"
            elif pop is not None and not bls.pop_verify(pubkey, pop):
                errors["pop_hex"] = "the proof of possession does not match the public key"
        if errors or pubkey is None or pop is None or shares is None:
            return None
        action = AddSigner(pubkey, pop, shares, threshold)
        try:
            action.apply(config)
        except ConfigError as exc:
            # The threshold rule: say what would pass, where the person can change it.
            total = config.total_shares + shares
            errors["threshold"] = f"{exc}; with this signer, {total} shares in all: " + (
                f"set a threshold above {total // 2} (at most {total})"
            )
            return None
        return action


@dataclass(frozen=True)
class RemoveSignerForm(_Form):
    signer_id_hex: str
    RESULT_FIELD: ClassVar[str] = "signer_id_hex"

    def _build(self, config: Config, errors: dict[str, str]) -> Action | None:
        sid = _field(errors, "signer_id_hex", lambda: _member_id(self.signer_id_hex, config))
        if sid is None:
            return None
        if sid == config.proposer:
            errors["signer_id_hex"] = "the proposer cannot be removed; change the proposer first"
            return None
        return self._result(RemoveSigner(sid), config, errors)


@dataclass(frozen=True)
class SetSharesForm(_Form):
    signer_id_hex: str
    shares: int | str
    RESULT_FIELD: ClassVar[str] = "shares"

    def _build(self, config: Config, errors: dict[str, str]) -> Action | None:
        sid = _field(errors, "signer_id_hex", lambda: _member_id(self.signer_id_hex, config))
        shares = _field(errors, "shares", lambda: parse_int(self.shares, "shares", 1, MAX_SHARES))
        if sid is None or shares is None:
            return None
        return self._result(SetShares(sid, shares), config, errors)


@dataclass(frozen=True)
class SetThresholdForm(_Form):
    threshold: int | str
    RESULT_FIELD: ClassVar[str] = "threshold"

    def _build(self, config: Config, errors: dict[str, str]) -> Action | None:
        total = config.total_shares
        t = _field(
            errors, "threshold", lambda: parse_int(self.threshold, "threshold", 0, UINT64_MAX)
        )
        if t is None:
            return None
        if not total < 2 * t <= 2 * total:
            errors["threshold"] = (
                f"the threshold must be more than half of all {total} shares and at most "
                f"all of them: {total // 2 + 1} .. {total}"
            )
            return None
        return self._result(SetThreshold(t), config, errors)


@dataclass(frozen=True)
class SetProposerForm(_Form):
    signer_id_hex: str
    RESULT_FIELD: ClassVar[str] = "signer_id_hex"

    def _build(self, config: Config, errors: dict[str, str]) -> Action | None:
        sid = _field(errors, "signer_id_hex", lambda: _member_id(self.signer_id_hex, config))
        if sid is None:
            return None
        return self._result(SetProposer(sid), config, errors)


type GovernanceForm = (
    AddSignerForm | RemoveSignerForm | SetSharesForm | SetThresholdForm | (SetProposerForm)
)


# Transactions ----------------------------------------------------------------------


def withdraw() -> Withdraw:
    """The transaction of a withdrawal: alone in a batch at a nonce, it takes that nonce
    (``node.machines.entity.Withdraw``)."""
    return Withdraw()


def increment(n: int | str) -> Increment:
    try:
        return Increment(parse_int(n, "increment", 1, MAX_INCREMENT))
    except ValueError as exc:
        raise ComposeError({"n": str(exc)}) from None


def default_expiry(state: EntityState) -> int:
    """The expiry height a new proposal gets unless the user picks one."""
    return state.height + DEFAULT_TTL


def propose(
    action: EntityAction, expires_at: int | str, state: EntityState | None = None
) -> Propose:
    """A proposal; a channel action as the node reads it; with ``state``, also checked
    against the entity as it stands (the action applies, the expiry is not before the
    next frame nor too far)."""
    errors: dict[str, str] = {}
    low = 1 if state is None else state.height + 1
    # Valid if the next frame holds it; a later frame only widens the window.
    high = UINT64_MAX if state is None else low + MAX_PROPOSAL_TTL
    at = _field(errors, "expires_at", lambda: parse_int(expires_at, "expiry height", low, high))
    try:
        if isinstance(action, accounts.CHANNEL_ACTIONS):
            accounts.check_action_fields(action)  # as the node reads it
            if channels_checkable(state):
                accounts.check_action_applies(state, action)  # would it execute now?
        else:
            governance.check_action(action)  # a new signer's key and proof of possession
            if state is not None:
                action.apply(state.config)
    except ValueError as exc:  # the node's ConfigError or DecodeError
        errors["action"] = str(exc)
    if errors or at is None:
        raise ComposeError(errors)
    return Propose(action, at)


def vote(
    proposal_id: int | str, state: EntityState | None = None, signer: bytes | None = None
) -> Vote:
    """A vote; with ``state``, the proposal must be open (and not voted on by ``signer``)."""
    try:
        pid = parse_int(proposal_id, "proposal id", 1, UINT64_MAX)
    except ValueError as exc:
        raise ComposeError({"proposal_id": str(exc)}) from None
    if state is not None:
        proposal = next((p for p in state.proposals if p.id == pid), None)
        if proposal is None:
            raise ComposeError({"proposal_id": f"no open proposal {pid}"})
        if signer is not None and signer in proposal.votes:
            raise ComposeError({"proposal_id": f"already voted on proposal {pid}"})
    return Vote(pid)


# Channels ---------------------------------------------------------------------------


def parse_number(value: int | str, field: IntField) -> int:
    """A number of ``pay`` or a channel action, from an int or typed text: ValueError
    unless it is a whole number within the node's bounds for ``field`` (its words)."""
    return field.check(parse_whole(value, field.name))


def parse_asset(value: int | str) -> int:
    return parse_number(value, accounts.ASSET)


def parse_route(text: str) -> tuple[bytes, ...]:
    """Entity ids separated by commas, spaces or arrows: the first hop first, the payee
    last (one id: a direct payment); ValueError unless the node takes the route."""
    parts = [p for p in text.replace("->", ",").replace(",", " ").split() if p]
    if not parts:
        raise ValueError("enter the payee (or the route: hub, ..., payee)")
    return accounts.check_route([parse_hex(p, HASH_LEN, "entity id") for p in parts])


def channels_checkable(state: EntityState | None) -> TypeGuard[EntityState]:
    """Whether the channel checks run on ``state``: not on a partial state (its channels
    are read from the node by walks off the loop; ``wallet.flows.channel_pages``), whose
    actions the service checks against the channel it reads, proven, before signing."""
    return state is not None and not is_partial(state)


def _refused(exc: accounts.Refused, fields: Mapping[str, str]) -> ComposeError:
    """The node's refusal as a form error, under the form's name for its field."""
    return ComposeError({fields.get(exc.field, exc.field): str(exc)})


def pay(
    route: Sequence[bytes] | str,
    asset: int | str,
    amount: int | str,
    state: EntityState | None = None,
) -> Pay:
    """A payment the node takes; with ``state``, one that its ``pay`` would queue on
    the entity as it stands (``accounts.check_pay``: the first hop a channel of ours
    with the capacity and room; the node's "insufficient capacity" text)."""
    errors: dict[str, str] = {}
    hops = _field(
        errors,
        "route",
        lambda: parse_route(route) if isinstance(route, str) else accounts.check_route(route),
    )
    a = _field(errors, "asset", lambda: parse_asset(asset))
    n = _field(errors, "amount", lambda: parse_number(amount, accounts.PAY_AMOUNT))
    if errors or hops is None or a is None or n is None:
        raise ComposeError(errors)
    body = Pay(hops, a, n)
    if channels_checkable(state):
        try:
            accounts.check_pay(state, body)
        except accounts.Refused as exc:
            raise _refused(exc, {}) from None
    return body


@dataclass(frozen=True, slots=True)
class ChannelCard:
    """What opening a channel with ``entity`` needs: its signer set as of its height
    ``config_height``."""

    entity: bytes
    config_height: int
    config: Config

    def encode(self) -> str:
        return json.dumps(
            {
                "entity": self.entity.hex(),
                "config_height": self.config_height,
                "config": encode_tree(self.config.to_tree()).hex(),
            }
        )

    @classmethod
    def of(cls, state: EntityState) -> ChannelCard:
        return cls(state.entity_id, state.config_height, state.config)

    @classmethod
    def decode(cls, text: str) -> ChannelCard:
        """ValueError unless ``text`` is a channel card with a valid config."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError('a channel card is JSON: {"entity": …, "config": …}') from None
        if not isinstance(data, dict):
            raise ValueError("a channel card is a JSON object")
        entity = parse_hex(str(data.get("entity", "")), HASH_LEN, "card's entity id")
        height = data.get("config_height")
        if isinstance(height, bool) or not isinstance(height, int):
            raise ValueError("the card's config_height must be a whole number")
        accounts.PEER_CONFIG_HEIGHT.check(height)
        try:
            config = Config.from_item(decode(bytes.fromhex(str(data.get("config", "")))))
        except (ValueError, DecodeError, ConfigError) as exc:
            raise ValueError(f"the card's config is not valid: {exc}") from None
        return cls(entity, height, config)


@dataclass(frozen=True)
class OpenChannelForm:
    """Open a channel with the entity of ``card`` (a channel card, or one fetched from
    the node), moving ``collateral`` of ``asset`` from the reserve into it."""

    card: ChannelCard | str
    asset: int | str = 1
    collateral: int | str = 0

    def to_action(self, state: EntityState) -> OpenChannel:
        errors: dict[str, str] = {}
        card = _field(
            errors,
            "card",
            lambda: ChannelCard.decode(self.card) if isinstance(self.card, str) else self.card,
        )
        if card is not None:
            _field(errors, "card", lambda: accounts.PEER_CONFIG_HEIGHT.check(card.config_height))
        a = _field(errors, "asset", lambda: parse_asset(self.asset))
        n = _field(errors, "collateral", lambda: parse_number(self.collateral, accounts.COLLATERAL))
        if errors or card is None or a is None or n is None:
            raise ComposeError(errors)
        action = OpenChannel(card.entity, card.config, card.config_height, a, n)
        _check(action, state, {"peer": "card"})  # the counterparty is the card's entity
        return action


def _peer_asset_amount(
    peer_hex: str, asset: int | str, name: str, amount: int | str, field: IntField
) -> tuple[bytes, int, int]:
    """A channel action's counterparty, asset and amount (the form's field ``name``,
    the node's ``field``), every error reported at once."""
    errors: dict[str, str] = {}
    peer = _field(errors, "peer", lambda: parse_hex(peer_hex, HASH_LEN, "counterparty"))
    a = _field(errors, "asset", lambda: parse_asset(asset))
    n = _field(errors, name, lambda: parse_number(amount, field))
    if errors or peer is None or a is None or n is None:
        raise ComposeError(errors)
    return peer, a, n


@dataclass(frozen=True)
class ExtendCreditForm:
    peer_hex: str
    asset: int | str
    limit: int | str

    def to_action(self, state: EntityState) -> ExtendCredit:
        peer, a, n = _peer_asset_amount(
            self.peer_hex, self.asset, "limit", self.limit, accounts.CREDIT_LIMIT
        )
        action = ExtendCredit(peer, a, n)
        _check(action, state)
        return action


@dataclass(frozen=True)
class FundChannelForm:
    peer_hex: str
    asset: int | str
    amount: int | str

    def to_action(self, state: EntityState) -> FundChannel:
        peer, a, n = _peer_asset_amount(
            self.peer_hex, self.asset, "amount", self.amount, accounts.FUND_AMOUNT
        )
        action = FundChannel(peer, a, n)
        _check(action, state)
        return action


type ChannelForm = OpenChannelForm | ExtendCreditForm | FundChannelForm


def _check(
    action: ChannelAction, state: EntityState, fields: Mapping[str, str] | None = None
) -> None:
    """The node's ``check_action_applies``; its refusal under the form's field
    (``fields`` maps the action's field names to the form's where they differ)."""
    if not channels_checkable(state):
        return
    try:
        accounts.check_action_applies(state, action)
    except accounts.Refused as exc:
        raise _refused(exc, fields or {}) from None


def signed_batch(
    entity_id: bytes, sk: int, signer_id: bytes, nonce: int, tx_bodies: Sequence[TxBody]
) -> SubmitBatch:
    """The bodies signed as one batch, ready to submit to ``[signer, entity]``."""
    if not tx_bodies:
        raise ComposeError({"txs": "a batch needs at least one transaction"})
    if len(tx_bodies) > MAX_BATCH_TXS:
        raise ComposeError({"txs": f"a batch holds at most {MAX_BATCH_TXS} transactions"})
    if nonce < 1:
        raise ComposeError({"nonce": "nonces start at 1"})
    if len(entity_id) != HASH_LEN:
        raise ComposeError({"entity_id": "an entity id is 32 bytes"})
    if key_id(bls.sk_to_pk(sk)) != signer_id:
        raise ComposeError({"signer_id": "the key does not belong to this signer"})
    txs = [Tx.of(b) for b in tx_bodies]
    return SubmitBatch(sign_batch(entity_id, sk, signer_id, nonce, txs))
