"""`LaneInfo`: how many jobs a broker's lane holds, and in which state (`broker.lanes()`)."""

from __future__ import annotations

import dataclasses

__all__ = ("LaneInfo",)


@dataclasses.dataclass(frozen=True, slots=True)
class LaneInfo:
    """One lane of a broker, as `broker.lanes()` counts it.

    The counts are a snapshot: jobs move between them (and out) while it is
    read, so they add up to what the lane held at about that moment.

    Attributes:
        name: The lane: "high", "normal", "low" (the priority lanes, by the
            sign of the job's priority), or "keys" (every key lane summed).
        waiting: Jobs stored and not delivered to any worker yet.
        running: Jobs delivered to a worker and not acknowledged yet (in
            flight: running, or held by a worker that died, until its lease
            runs out).
        delayed: Jobs waiting out a retry's backoff before they are delivered
            again, where the engine can tell them apart (Redis); on
            JetStream they count as running (the server keeps them as
            delivered until then) and this is 0.
    """

    name: str
    waiting: int
    running: int
    delayed: int = 0
