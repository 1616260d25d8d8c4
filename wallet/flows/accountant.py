"""The accountant: rules (TOML) that approve, reject or leave to the user a frame,
judged by its effects (``effects.py``), never by its transactions' names.

The format, the default rules and how a frame is judged are in
``docs/ACCOUNTANT.md``; ``resources/rules.example.toml`` is an example. In short:
``[[rule]]`` tables, each with a ``name``, the effect kinds it ``approve``s
and/or ``reject``s, and optional conditions (``entities``, ``max_counter``)
that limit the frames it speaks about. Any matching reject rule rejects; a frame
that does not apply is rejected; a frame whose every effect some approve rule
covers is approved; anything else is asked of the user.

Conditions are a small registry (:data:`CONDITIONS`): the channels' payment
rules (``payments.py``: known counterparties, limits per payment, per payee and
per period) register their keys there. A top-level ``[counterparties]`` table
names the known counterparties, which ``payees`` may refer to.

Deterministic: rules are tried in file order; no I/O except ``Rules.load``
reading the file. Period limits read a :class:`~wallet.flows.payments.SpendView`
(the spend ledger) given to :meth:`Rules.judge`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from node.codec import HASH_LEN
from wallet.flows import payments
from wallet.flows.effects import EFFECT_KINDS, Effect, FrameAnalysis, short
from wallet.flows.payments import NoSpend, SpendView

DEFAULT_RULES = """\
# The accountant's default rules: routine frames are approved; a frame that
# changes the entity's config or its channels (an executed proposal), or that
# pays anyone, is left to you.

# Channel traffic that spends nothing of ours: payments received, a hub's
# forwards (value in = value out), our payments agreed, refunded or not sent.
[[rule]]
name = "channel routine"
approve = ["paid", "received", "forward", "forwarded", "refunded", "rejected", "minted",
           "channel_note"]

[[rule]]
name = "routine"
approve = ["counter", "proposal", "vote", "expired", "voided"]
"""


class RulesError(ValueError):
    """A rules file that cannot be used; the message says where and why."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    ASK = "ask"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str  # the rule(s) that decided; "" when none did (ASK)
    reason: str


# Conditions ----------------------------------------------------------------------


class Condition(Protocol):
    """A limit on the frames a rule speaks about. ``spend`` is the spend ledger (the
    period limits read it). A condition may also have ``explain(analysis, spend)``:
    the figures it looked at, added to the decision's reason."""

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool: ...

    def describe(self) -> str: ...


type Known = Mapping[str, bytes]  # the rules file's [counterparties]: name -> entity id


@dataclass(frozen=True, slots=True)
class Entities:
    ids: frozenset[bytes]

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return analysis.entity_id in self.ids

    def describe(self) -> str:
        return "entities " + ", ".join(sorted(short(i) for i in self.ids))


@dataclass(frozen=True, slots=True)
class MaxCounter:
    limit: int

    def holds(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return analysis.counter_delta <= self.limit

    def describe(self) -> str:
        return f"counter delta at most {self.limit}"


def _parse_entities(value: object, known: Known) -> Condition:
    items = _str_list(value, "entities")
    ids: set[bytes] = set()
    for text in items:
        hex_ = text[2:] if text.lower().startswith("0x") else text
        try:
            raw = bytes.fromhex(hex_)
        except ValueError:
            raise ValueError(f"entities: {text!r} is not hex") from None
        if len(raw) != HASH_LEN:
            raise ValueError(f"entities: {text!r} is {len(raw)} bytes, an entity id is 32")
        ids.add(raw)
    return Entities(frozenset(ids))


def _parse_max_counter(value: object, known: Known) -> Condition:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_counter must be a whole number >= 0, not {value!r}")
    return MaxCounter(value)


def _plain(parse: Callable[[object], Condition]) -> Callable[[object, Known], Condition]:
    return lambda value, _known: parse(value)


# The optional keys of a rule: key -> parser of its TOML value (given the known
# counterparties). Payment rules (channels, ``payments.py``) are registered here.
CONDITIONS: dict[str, Callable[[object, Known], Condition]] = {
    "entities": _parse_entities,
    "max_counter": _parse_max_counter,
    "payees": payments.parse_payees,
    "assets": _plain(payments.parse_assets),
    "max_payment": _plain(payments.parse_max_payment),
    **{key: _plain(parse) for key, parse in payments.PERIOD_KEYS.items()},
}


# Rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    approve: frozenset[str]
    reject: frozenset[str]
    conditions: tuple[Condition, ...] = ()
    line: int | None = None  # of its [[rule]] header

    def applies(self, analysis: FrameAnalysis, spend: SpendView) -> bool:
        return all(c.holds(analysis, spend) for c in self.conditions)

    def failing(self, analysis: FrameAnalysis, spend: SpendView) -> list[Condition]:
        return [c for c in self.conditions if not c.holds(analysis, spend)]


_RULE_KEYS = {"name", "approve", "reject"}


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    counterparties: tuple[tuple[str, bytes], ...] = ()  # the known ones, by name

    @classmethod
    def default(cls) -> Rules:
        return cls.parse(DEFAULT_RULES)

    @classmethod
    def load(cls, path: Path | str) -> Rules:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"cannot read rules file {path}: {exc}") from None
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> Rules:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            at = _TOML_LINE.search(str(exc))
            raise RulesError(f"not valid TOML: {exc}", int(at[1]) if at else None) from None
        unknown = sorted(set(doc) - {"rule", "counterparties"})
        if unknown:
            raise RulesError(
                f"unknown top-level key {unknown[0]!r}; rules are [[rule]] tables "
                "(and [counterparties] names the known ones)"
            )
        try:
            known = payments.parse_counterparties(doc.get("counterparties", {}))
        except ValueError as exc:
            raise RulesError(str(exc), _table_line(text, "counterparties")) from None
        tables = doc.get("rule", [])
        if not isinstance(tables, list):
            raise RulesError("'rule' must be an array of tables: write [[rule]]")
        lines = _rule_lines(text)
        rules: list[Rule] = []
        seen: set[str] = set()
        for i, table in enumerate(tables):
            line = lines[i] if i < len(lines) else None
            try:
                rule = _parse_rule(table, line, known)
            except ValueError as exc:
                raise RulesError(f"rule {i + 1}: {exc}", line) from None
            if rule.name in seen:
                raise RulesError(f"rule {i + 1}: a rule named {rule.name!r} already exists", line)
            seen.add(rule.name)
            rules.append(rule)
        return cls(tuple(rules), tuple(known.items()))

    def judge(self, analysis: FrameAnalysis, spend: SpendView | None = None) -> Decision:
        """The verdict on a frame; ``spend`` (the spend ledger) feeds the period limits."""
        ledger: SpendView = spend if spend is not None else NoSpend()
        if analysis.error is not None:
            return Decision(Verdict.REJECT, "invalid frame", analysis.error)
        for rule in self.rules:
            if not rule.reject or not rule.applies(analysis, ledger):
                continue
            hit = [e for e in analysis.effects if e.kind in rule.reject]
            if hit:
                return Decision(
                    Verdict.REJECT, rule.name, f"rule {rule.name!r} rejects: {_texts(hit)}"
                )
        if not analysis.effects:
            return Decision(Verdict.APPROVE, "empty frame", "the frame changes nothing")
        covered: dict[str, list[Effect]] = {}  # rule name -> effects, in rule order
        uncovered: list[Effect] = []
        for effect in analysis.effects:
            rule_ = self._approver(effect, analysis, ledger)
            if rule_ is None:
                uncovered.append(effect)
            else:
                covered.setdefault(rule_.name, []).append(effect)
        if uncovered:
            reason = f"no rule approves: {_texts(uncovered)}"
            why = self._why_not(uncovered, analysis, ledger)
            return Decision(Verdict.ASK, "", f"{reason}; {why}" if why else reason)
        by_name = {r.name: r for r in self.rules}
        names = [r.name for r in self.rules if r.name in covered]
        parts = []
        for n in names:
            part = f"{n}: {', '.join(_kinds(covered[n]))}"
            figures = _explain(by_name[n], analysis, ledger)
            parts.append(f"{part} ({figures})" if figures else part)
        return Decision(Verdict.APPROVE, ", ".join(names), "; ".join(parts))

    def _approver(self, effect: Effect, analysis: FrameAnalysis, spend: SpendView) -> Rule | None:
        for rule in self.rules:
            if effect.kind in rule.approve and rule.applies(analysis, spend):
                return rule
        return None

    def _why_not(self, effects: Sequence[Effect], analysis: FrameAnalysis, spend: SpendView) -> str:
        """The rules that would approve these kinds but whose conditions fail, and why."""
        kinds = {e.kind for e in effects}
        out = []
        for rule in self.rules:
            if rule.approve & kinds:
                failing = rule.failing(analysis, spend)
                if failing:
                    why = "; ".join(_describe_failure(c, analysis, spend) for c in failing)
                    out.append(f"rule {rule.name!r} does not hold: {why}")
        return "; ".join(out)


def _explain(rule: Rule, analysis: FrameAnalysis, spend: SpendView) -> str:
    out = []
    for c in rule.conditions:
        explain = getattr(c, "explain", None)
        if explain is not None and analysis.payments_out:
            out.append(str(explain(analysis, spend)))
    return "; ".join(out)


def _describe_failure(c: Condition, analysis: FrameAnalysis, spend: SpendView) -> str:
    explain = getattr(c, "explain", None)
    text = c.describe()
    return f"{text}: {explain(analysis, spend)}" if explain is not None else text


def _parse_rule(table: object, line: int | None, known: Known) -> Rule:
    if not isinstance(table, Mapping):
        raise ValueError("must be a table")
    unknown = sorted(set(table) - _RULE_KEYS - set(CONDITIONS))
    if unknown:
        keys = ", ".join(sorted(_RULE_KEYS | set(CONDITIONS)))
        raise ValueError(f"unknown key {unknown[0]!r} (known: {keys})")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("needs a name (a non-empty string)")
    approve = _kinds_of(table.get("approve", []), "approve")
    reject = _kinds_of(table.get("reject", []), "reject")
    if not approve and not reject:
        raise ValueError(f"{name!r} approves and rejects nothing: give approve or reject")
    conditions = tuple(
        parse(table[key], known) for key, parse in CONDITIONS.items() if key in table
    )
    return Rule(name.strip(), approve, reject, conditions, line)


def _kinds_of(value: object, key: str) -> frozenset[str]:
    kinds = _str_list(value, key)
    for kind in kinds:
        if kind not in EFFECT_KINDS:
            raise ValueError(
                f"{key}: unknown effect kind {kind!r} (known: {', '.join(sorted(EFFECT_KINDS))})"
            )
    return frozenset(kinds)


def _str_list(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings, not {value!r}")
    return list(value)


_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_TOML_LINE = re.compile(r"at line (\d+)")


def _table_line(text: str, name: str) -> int | None:
    header = re.compile(rf"^\s*\[\s*{name}\s*\]")
    return next((n for n, line in enumerate(text.splitlines(), 1) if header.match(line)), None)


def _rule_lines(text: str) -> list[int]:
    """The line numbers of the [[rule]] headers, for error messages."""
    return [n for n, line in enumerate(text.splitlines(), 1) if _RULE_HEADER.match(line)]


def _texts(effects: Sequence[Effect]) -> str:
    return "; ".join(f"{e.kind} ({e.text})" for e in effects)


def _kinds(effects: Sequence[Effect]) -> list[str]:
    return list(dict.fromkeys(e.kind for e in effects))
