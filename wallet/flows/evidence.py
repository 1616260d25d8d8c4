"""Equivocation evidence as the wallet shows it (no Qt).

The node keeps, beside its replicas, the pairs of pre-commits by which a member
signed two different frames at one height and round of an entity
(``node/evidence.py``); the wallet reads them with ``READ_ENTITY``'s evidence part,
and :class:`node.net.entity_client.EntityReader` keeps only records whose two
signatures verify under the key they name. This module says which member of the
entity's config each record is about and words it for the Entities view: a badge
per member that equivocated, and one line per record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.evidence import Evidence
from node.machines.governance import Config
from wallet.flows.effects import short


@dataclass(frozen=True, slots=True)
class Equivocation:
    """One record, for the view: ``member`` (its id) signed ``frames`` (two hashes)
    at ``height`` and ``round``; ``in_config``: it is a member of the config shown."""

    member: bytes
    height: int
    round: int
    frames: tuple[bytes, bytes]
    in_config: bool


def equivocations(config: Config, records: Sequence[Evidence]) -> list[Equivocation]:
    """The records as the view lists them, newest height first; a record whose key
    is no member's of ``config`` (a member removed since) is kept, marked so."""
    out = [
        Equivocation(
            e.member, e.height, e.round, (e.a.frame_hash, e.b.frame_hash), e.member in config.index
        )
        for e in records
    ]
    return sorted(out, key=lambda q: (-q.height, -q.round, q.member))


def badges(found: Sequence[Equivocation]) -> dict[bytes, int]:
    """Per member, how many equivocations the node holds evidence of."""
    counts: dict[bytes, int] = {}
    for q in found:
        counts[q.member] = counts.get(q.member, 0) + 1
    return counts


def lines(found: Sequence[Equivocation], name: Callable[[bytes], str], limit: int = 5) -> list[str]:
    """One line per record (at most ``limit``, then how many more), for the card."""
    out = [
        f"\u26a0 {name(q.member)}{'' if q.in_config else ' (no longer a member)'} signed two "
        f"frames at height {q.height}, round {q.round}: "
        f"{short(q.frames[0])} and {short(q.frames[1])}"
        for q in found[:limit]
    ]
    if len(found) > limit:
        out.append(f"\u2026 and {len(found) - limit} more")
    return out
