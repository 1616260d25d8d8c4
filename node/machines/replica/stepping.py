"""One step of a replica in progress: the replica so far and the effects so far.

``consensus.step`` makes a :class:`Step` and hands it to each input's handler
(``consensus``, ``rounds``, ``proposing``); a handler reads and replaces
``s.r``, and appends effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.machines import entity as ent
from node.machines.entity import EntityState
from node.machines.frames import Frame
from node.machines.outcomes import Outcomes
from node.machines.replica.effects import Effect, Note
from node.machines.replica.execution import execute_frame
from node.machines.replica.state import Replica


@dataclass
class Step:
    """The replica so far (``r``), the server's flags and the effects so far."""

    r: Replica
    simulation: bool = False  # the server's: may frames apply faucet mints?
    outcomes: Outcomes | None = None  # the owner's cache of frame outcomes, if any
    effects: list[Effect] = field(default_factory=list)

    def note(self, index: int, message: str) -> None:
        self.effects.append(Note(index, message))

    def execute(
        self, entity: EntityState, frame: Frame, *, verify: bool
    ) -> tuple[EntityState, ent.FrameEvents]:
        """``execute_frame`` with this step's flag and cache."""
        return execute_frame(
            entity, frame, verify=verify, simulation=self.simulation, outcomes=self.outcomes
        )
