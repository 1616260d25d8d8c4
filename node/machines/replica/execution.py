"""Executing a frame on an entity state, through the caller's cache of outcomes.

The one way a frame is run: by a replica's step (building, checking, committing),
by a member's proposal check, and by a replica reloading its frame in flight. The
cache is ``node.machines.outcomes``; without one every frame is executed.
"""

from __future__ import annotations

from node.machines import entity as ent
from node.machines.entity import EntityState
from node.machines.frames import Frame
from node.machines.outcomes import Key, Outcome, Outcomes


def execute_frame(
    entity: EntityState,
    frame: Frame,
    *,
    verify: bool,
    simulation: bool,
    outcomes: Outcomes | None = None,
) -> tuple[EntityState, ent.FrameEvents]:
    """``ent.execute`` of a frame's batches and inputs, remembered in ``outcomes`` (if
    given). The same frame is executed by the proposer when it builds it and when it
    commits, and by a member when it checks the proposal and when the commit arrives.
    An outcome whose signatures were checked serves every caller; one executed with
    ``verify=False`` serves only callers that also skip the checks."""
    if outcomes is None:
        return _run(entity, frame, verify=verify, simulation=simulation)
    checked = Key(entity.hash, frame.hash, simulation, True)
    found = outcomes.get(checked)
    if found is None and not verify:
        found = outcomes.get(checked._replace(verified=False))
    if found is not None:
        return found
    outcome = _run(entity, frame, verify=verify, simulation=simulation)
    outcomes.put(checked._replace(verified=verify), outcome)
    return outcome


def _run(entity: EntityState, frame: Frame, *, verify: bool, simulation: bool) -> Outcome:
    return ent.execute(
        entity, frame.batches, verify=verify, inputs=frame.inputs, allow_mint=simulation
    )
