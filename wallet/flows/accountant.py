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
rules (limits, known counterparties) add their keys there, and their effect
kinds to ``effects.EFFECT_KINDS``, without changing how rules are judged.

Pure and deterministic: rules are tried in file order; no I/O except
``Rules.load`` reading the file.
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
from wallet.flows.effects import EFFECT_KINDS, Effect, FrameAnalysis

DEFAULT_RULES = """\
# The accountant's default rules: routine frames are approved; a frame that
# changes the entity's config (an executed proposal) is left to you.
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
    """A limit on the frames a rule speaks about."""

    def holds(self, analysis: FrameAnalysis) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Entities:
    ids: frozenset[bytes]

    def holds(self, analysis: FrameAnalysis) -> bool:
        return analysis.entity_id in self.ids

    def describe(self) -> str:
        return "entities " + ", ".join(sorted("0x" + i.hex()[:8] for i in self.ids))


@dataclass(frozen=True, slots=True)
class MaxCounter:
    limit: int

    def holds(self, analysis: FrameAnalysis) -> bool:
        return analysis.counter_delta <= self.limit

    def describe(self) -> str:
        return f"counter delta at most {self.limit}"


def _parse_entities(value: object) -> Condition:
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


def _parse_max_counter(value: object) -> Condition:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_counter must be a whole number >= 0, not {value!r}")
    return MaxCounter(value)


# The optional keys of a rule: key -> parser of its TOML value. Payment rules
# (channels) register theirs here.
CONDITIONS: dict[str, Callable[[object], Condition]] = {
    "entities": _parse_entities,
    "max_counter": _parse_max_counter,
}


# Rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    approve: frozenset[str]
    reject: frozenset[str]
    conditions: tuple[Condition, ...] = ()
    line: int | None = None  # of its [[rule]] header

    def applies(self, analysis: FrameAnalysis) -> bool:
        return all(c.holds(analysis) for c in self.conditions)


_RULE_KEYS = {"name", "approve", "reject"}


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]

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
        unknown = sorted(set(doc) - {"rule"})
        if unknown:
            raise RulesError(f"unknown top-level key {unknown[0]!r}; rules are [[rule]] tables")
        tables = doc.get("rule", [])
        if not isinstance(tables, list):
            raise RulesError("'rule' must be an array of tables: write [[rule]]")
        lines = _rule_lines(text)
        rules: list[Rule] = []
        seen: set[str] = set()
        for i, table in enumerate(tables):
            line = lines[i] if i < len(lines) else None
            try:
                rule = _parse_rule(table, line)
            except ValueError as exc:
                raise RulesError(f"rule {i + 1}: {exc}", line) from None
            if rule.name in seen:
                raise RulesError(f"rule {i + 1}: a rule named {rule.name!r} already exists", line)
            seen.add(rule.name)
            rules.append(rule)
        return cls(tuple(rules))

    def judge(self, analysis: FrameAnalysis) -> Decision:
        if analysis.error is not None:
            return Decision(Verdict.REJECT, "invalid frame", analysis.error)
        for rule in self.rules:
            if not rule.reject or not rule.applies(analysis):
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
            rule_ = self._approver(effect, analysis)
            if rule_ is None:
                uncovered.append(effect)
            else:
                covered.setdefault(rule_.name, []).append(effect)
        if uncovered:
            return Decision(Verdict.ASK, "", f"no rule approves: {_texts(uncovered)}")
        names = [r.name for r in self.rules if r.name in covered]
        reason = "; ".join(f"{n}: {', '.join(_kinds(covered[n]))}" for n in names)
        return Decision(Verdict.APPROVE, ", ".join(names), reason)

    def _approver(self, effect: Effect, analysis: FrameAnalysis) -> Rule | None:
        for rule in self.rules:
            if effect.kind in rule.approve and rule.applies(analysis):
                return rule
        return None


def _parse_rule(table: object, line: int | None) -> Rule:
    if not isinstance(table, Mapping):
        raise ValueError("must be a table")
    unknown = sorted(set(table) - _RULE_KEYS - set(CONDITIONS))
    if unknown:
        known = ", ".join(sorted(_RULE_KEYS | set(CONDITIONS)))
        raise ValueError(f"unknown key {unknown[0]!r} (known: {known})")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("needs a name (a non-empty string)")
    approve = _kinds_of(table.get("approve", []), "approve")
    reject = _kinds_of(table.get("reject", []), "reject")
    if not approve and not reject:
        raise ValueError(f"{name!r} approves and rejects nothing: give approve or reject")
    conditions = tuple(parse(table[key]) for key, parse in CONDITIONS.items() if key in table)
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


def _rule_lines(text: str) -> list[int]:
    """The line numbers of the [[rule]] headers, for error messages."""
    return [n for n, line in enumerate(text.splitlines(), 1) if _RULE_HEADER.match(line)]


def _texts(effects: Sequence[Effect]) -> str:
    return "; ".join(f"{e.kind} ({e.text})" for e in effects)


def _kinds(effects: Sequence[Effect]) -> list[str]:
    return list(dict.fromkeys(e.kind for e in effects))
