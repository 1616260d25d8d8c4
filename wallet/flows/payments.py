"""The accountant's payment rules: known counterparties, limits per payment, per
counterparty and per period, and the spend ledger the period limits read.

A rule speaks about a frame's outgoing payments (effect kind ``payment``) only
when every payment of the frame passes its payment conditions; a frame with a
payment no rule covers is asked of a human. The conditions (TOML keys of a
``[[rule]]``, registered in ``accountant.CONDITIONS``):

- ``payees``: the payees the rule allows: entity ids, names from the rules
  file's ``[counterparties]`` table, or ``"known"`` for all of that table;
- ``assets``: the assets the rule allows;
- ``max_payment``: the most one payment may move;
- ``max_per_payee_per_hour`` / ``max_per_payee_per_day``: the most paid to one
  payee in one asset over the last hour / 24 hours, this frame included;
- ``max_total_per_hour`` / ``max_total_per_day``: the same over all payees.

The :class:`SpendLedger` remembers every payment the wallet signed (the frame
approved, by the user or the accountant): wall-clock time, entity, payee,
asset, amount. It is a JSON file in the wallet's data folder (``spend.json``,
written atomically, mode 0600), pruned to the longest period (a day). A frame
signed again at a later round, or by a second key of the same wallet, is
counted once (by frame hash and payment id). A signed frame that the entity
then never commits still counts: the ledger errs on the side of spending less.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from node.codec import HASH_LEN
from wallet.flows.effects import Effect, FrameAnalysis, short

log = logging.getLogger("wallet.accountant")

HOUR_S = 3600.0
DAY_S = 86400.0
LEDGER_FILE = "spend.json"
KNOWN = "known"  # ``payees = "known"``: every entry of [counterparties]


class SpendView(Protocol):
    """What period limits read: how much was paid, since when."""

    def spent(self, entity: bytes, payee: bytes | None, asset: int, window_s: float) -> int:
        """Paid by ``entity`` in ``asset`` over the last ``window_s`` seconds (to
        ``payee``; to anyone if None)."""
        ...


class NoSpend:
    """A ledger that remembers nothing (rules judged without one)."""

    def spent(self, entity: bytes, payee: bytes | None, asset: int, window_s: float) -> int:
        return 0


# The ledger ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spend:
    time: float  # wall clock, seconds
    entity: str  # hex
    payee: str  # hex
    asset: int
    amount: int
    key: str  # frame hash + payment id, hex: counted once


class LedgerError(Exception):
    """The spend ledger file cannot be read (then the wallet starts a new one, logged)."""


class SpendLedger:
    """Payments the wallet signed, per entity, payee and asset; persisted as JSON."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.spends: list[Spend] = []
        if path is not None and path.exists():
            try:
                self.spends = _load(path)
            except LedgerError as exc:
                log.error("%s; starting a new spend ledger", exc)
        self._keys = {s.key for s in self.spends}

    def spent(self, entity: bytes, payee: bytes | None, asset: int, window_s: float) -> int:
        since = self.clock() - window_s
        e, p = entity.hex(), payee.hex() if payee is not None else None
        return sum(
            s.amount
            for s in self.spends
            if s.time > since and s.entity == e and s.asset == asset and p in (None, s.payee)
        )

    def record(self, analysis: FrameAnalysis) -> list[Spend]:
        """Count the frame's outgoing payments (once per frame and payment); saves."""
        now = self.clock()
        new: list[Spend] = []
        for effect in analysis.payments_out:
            if effect.counterparty is None or effect.amount is None or effect.asset is None:
                continue
            key = (analysis.frame_hash + effect.payment_id).hex()
            if key in self._keys:
                continue
            self._keys.add(key)
            spend = Spend(
                now,
                analysis.entity_id.hex(),
                effect.counterparty.hex(),
                effect.asset,
                effect.amount,
                key,
            )
            new.append(spend)
            self.spends.append(spend)
        if new:
            self._prune(now)
            self.save()
            for s in new:
                log.info(
                    "spend ledger: %d of asset %d from %s to %s",
                    s.amount,
                    s.asset,
                    s.entity[:12],
                    s.payee[:12],
                )
        return new

    def _prune(self, now: float) -> None:
        kept = [s for s in self.spends if s.time > now - DAY_S]
        if len(kept) != len(self.spends):
            self.spends = kept
            self._keys = {s.key for s in kept}

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"version": 1, "spends": [asdict(s) for s in self.spends]}, indent=1)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _load(path: Path) -> list[Spend]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        spends = doc["spends"]
        if doc.get("version") != 1 or not isinstance(spends, list):
            raise ValueError("unknown format")
        out = []
        for s in spends:
            spend = Spend(
                float(s["time"]),
                str(s["entity"]),
                str(s["payee"]),
                int(s["asset"]),
                int(s["amount"]),
                str(s["key"]),
            )
            out.append(spend)
        return out
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise LedgerError(f"cannot read the spend ledger {path}: {exc!r}") from None


# Conditions ---------------------------------------------------------------------------


def _payments(analysis: FrameAnalysis) -> list[Effect]:
    return analysis.payments_out


@dataclass(frozen=True, slots=True)
class Payees:
    ids: frozenset[bytes]
    names: Mapping[bytes, str]

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return all(e.counterparty in self.ids for e in _payments(analysis))

    def describe(self) -> str:
        return "payees " + ", ".join(sorted(self.names.get(i, short(i)) for i in self.ids))


@dataclass(frozen=True, slots=True)
class Assets:
    assets: frozenset[int]

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return all(e.asset in self.assets for e in _payments(analysis))

    def describe(self) -> str:
        return "assets " + ", ".join(str(a) for a in sorted(self.assets))


@dataclass(frozen=True, slots=True)
class MaxPayment:
    limit: int

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return all((e.amount or 0) <= self.limit for e in _payments(analysis))

    def describe(self) -> str:
        return f"each payment at most {self.limit}"


@dataclass(frozen=True, slots=True)
class PeriodLimit:
    """At most ``limit`` per asset over ``window_s``, per payee or over all of them,
    counting what the ledger holds and this frame's payments."""

    limit: int
    window_s: float
    per_payee: bool

    @property
    def period(self) -> str:
        return "hour" if self.window_s == HOUR_S else "day"

    def totals(
        self, analysis: FrameAnalysis, spend: SpendView
    ) -> dict[tuple[bytes | None, int], tuple[int, int]]:
        """(payee or None, asset) -> (spent before, this frame)."""
        out: dict[tuple[bytes | None, int], tuple[int, int]] = {}
        for e in _payments(analysis):
            if e.asset is None:
                continue
            key = (e.counterparty if self.per_payee else None, e.asset)
            before, now = out.get(key, (-1, 0))
            if before < 0:
                before = spend.spent(analysis.entity_id, key[0], e.asset, self.window_s)
            out[key] = (before, now + (e.amount or 0))
        return out

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return all(b + n <= self.limit for b, n in self.totals(analysis, spend).values())

    def describe(self) -> str:
        who = "per payee" if self.per_payee else "in all"
        return f"at most {self.limit} {who} per {self.period}"

    def explain(self, analysis: FrameAnalysis, spend: SpendView) -> str:
        parts = []
        for (payee, asset), (before, now) in self.totals(analysis, spend).items():
            to = f"to {short(payee)} " if payee is not None else ""
            parts.append(
                f"{to}asset {asset}: {before} + {now} of {self.limit} in the last {self.period}"
            )
        return "; ".join(parts)


# Parsing --------------------------------------------------------------------------------


def parse_entity_id(text: str, what: str) -> bytes:
    hex_ = text[2:] if text.lower().startswith("0x") else text
    try:
        raw = bytes.fromhex(hex_)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not hex") from None
    if len(raw) != HASH_LEN:
        raise ValueError(f"{what}: {text!r} is {len(raw)} bytes, an entity id is 32")
    return raw


def parse_counterparties(value: object) -> dict[str, bytes]:
    """The rules file's ``[counterparties]`` table: name -> entity id."""
    if not isinstance(value, Mapping):
        raise ValueError('[counterparties] must be a table of name = "0x<entity id>"')
    out: dict[str, bytes] = {}
    for name, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"counterparty {name!r} must be an entity id string")
        if name == KNOWN:
            raise ValueError(f"{KNOWN!r} is reserved: it means every known counterparty")
        out[name] = parse_entity_id(text, f"counterparty {name!r}")
    return out


def parse_payees(value: object, known: Mapping[str, bytes]) -> Payees:
    names = {v: k for k, v in known.items()}
    if value == KNOWN:
        if not known:
            raise ValueError('payees = "known" needs a [counterparties] table')
        return Payees(frozenset(known.values()), names)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'payees must be "known" or a list of ids and names, not {value!r}')
    ids: set[bytes] = set()
    for text in value:
        if text == KNOWN:
            ids |= set(known.values())
        elif text in known:
            ids.add(known[text])
        else:
            ids.add(parse_entity_id(text, "payees"))
    return Payees(frozenset(ids), names)


def _whole(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a whole number >= 0, not {value!r}")
    return value


def parse_assets(value: object) -> Assets:
    if not isinstance(value, list) or not value:
        raise ValueError(f"assets must be a non-empty list of asset ids, not {value!r}")
    return Assets(frozenset(_whole(v, "assets") for v in value))


def parse_max_payment(value: object) -> MaxPayment:
    return MaxPayment(_whole(value, "max_payment"))


def period_parser(key: str, window_s: float, per_payee: bool) -> Callable[[object], PeriodLimit]:
    def parse(value: object) -> PeriodLimit:
        return PeriodLimit(_whole(value, key), window_s, per_payee)

    return parse


PERIOD_KEYS: dict[str, Callable[[object], PeriodLimit]] = {
    "max_per_payee_per_hour": period_parser("max_per_payee_per_hour", HOUR_S, True),
    "max_per_payee_per_day": period_parser("max_per_payee_per_day", DAY_S, True),
    "max_total_per_hour": period_parser("max_total_per_hour", HOUR_S, False),
    "max_total_per_day": period_parser("max_total_per_day", DAY_S, False),
}
