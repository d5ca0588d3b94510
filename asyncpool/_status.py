"""`WorkerStatus`: one broker worker's heartbeat, as the dashboard reads it.

Every worker serving a broker writes its status every `STATUS_PERIOD`
seconds (`asyncpool._serve`), and the broker keeps it for `STATUS_TTL`
seconds after the last write: a worker that is killed drops off the
dashboard within that time; one that stops cleanly drops off at once. The
status travels as JSON whatever the broker's codec: it is written by
asyncpool for asyncpool, holds only text and numbers, and must be readable
by a dashboard that does not share the workers' pickle secret.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from ._joblog import JobRecord

__all__ = ("STATUS_PERIOD", "STATUS_TTL", "WorkerStatus")

STATUS_PERIOD = 1.0
"""How often a worker writes its status, in seconds."""

STATUS_TTL = 10.0
"""How long a status outlives its last write, in seconds."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker, as its last heartbeat told it.

    Attributes:
        worker: The worker's name ("host:pid").
        at: When it wrote this status (seconds since the epoch).
        started_at: When it started serving.
        dispatcher: Its dispatcher's name ("" when unnamed).
        stats: Its dispatcher's counters: `workers`, `idle`, `busy`,
            `queued`, `submitted`, `succeeded`, `failed`, `cancelled`,
            `retried`, `timed_out`.
        serve: What its `serve()` did so far: `taken`, `succeeded`,
            `retried`, `failed`, `refused`, `skipped`, `cancelled`.
        running: The jobs it holds now (running, or waiting for one of its
            workers).
        recent: The jobs it finished most recently, newest first.
    """

    worker: str
    at: float
    started_at: float
    dispatcher: str
    stats: dict[str, int]
    serve: dict[str, int]
    running: list[JobRecord]
    recent: list[JobRecord]

    def encode(self) -> bytes:
        """The status as JSON bytes."""
        data = dataclasses.asdict(self)
        # Not ensure_ascii: a non-ASCII character would take 6 to 12 bytes.
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()

    @classmethod
    def decode_all(cls, datas: list[bytes]) -> list[WorkerStatus]:
        """The statuses that decode, by worker name (one of another version is left out)."""
        found = []
        for data in datas:
            try:
                found.append(cls.decode(data))
            except ValueError:
                continue
        return sorted(found, key=lambda status: status.worker)

    @staticmethod
    def latest_record(statuses: list[WorkerStatus], job_id: str) -> JobRecord | None:
        """The latest record of job `job_id` among the workers' jobs (a redelivered job may
        be in two), or None."""
        best: JobRecord | None = None
        for status in statuses:
            for record in (*status.running, *status.recent):
                if record.id == job_id and (best is None or _moment(record) > _moment(best)):
                    best = record
        return best

    @classmethod
    def decode(cls, data: bytes) -> WorkerStatus:
        """Read a status written by `encode`.

        Raises:
            ValueError: the bytes are not a worker status.
        """
        try:
            raw: Mapping[str, Any] = json.loads(data)
            return cls(
                worker=str(raw["worker"]),
                at=float(raw["at"]),
                started_at=float(raw["started_at"]),
                dispatcher=str(raw["dispatcher"]),
                stats={str(k): int(v) for k, v in raw["stats"].items()},
                serve={str(k): int(v) for k, v in raw["serve"].items()},
                running=[JobRecord.from_dict(r) for r in raw["running"]],
                recent=[JobRecord.from_dict(r) for r in raw["recent"]],
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a worker status: {exc}") from exc


def _moment(record: JobRecord) -> float:
    """The latest moment of its job that `record` tells."""
    return record.finished_at or record.started_at or 0.0
