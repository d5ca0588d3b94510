"""`DeadLetter`: a job that will not run again unless someone requeues it."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ("DeadLetter",)


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter, as `broker.dead_letters()` lists it.

    Attributes:
        id: The job id (for a payload that did not decode: the engine's
            message id).
        task: The task name, when the payload decoded.
        reason: "failed" (its last attempt failed), "unknown task",
            "undecodable", or "deliveries exhausted".
        error: The error: `type`, `message`, `traceback`, `args`.
        attempts: The delivery count when it died.
        payload: The job message's bytes, as published.
        codec: The codec named beside the payload.
        subject: Where it was published (a requeue publishes it there again).
        dead_at: When it died (seconds since the epoch).
        seq: The engine's position of the dead letter (used to requeue it): a
            JetStream sequence number, or a Redis stream entry id.
    """

    id: str
    task: str | None
    reason: str
    error: dict[str, Any] | None
    attempts: int
    payload: bytes
    codec: str | None
    subject: str
    dead_at: float
    seq: int | str
