"""The envelope: one remote job as it travels through a broker, engine-neutral.

It holds what a worker on another machine needs to run the job and to
report on it: the job id, the registered task name, the arguments, the
per-job options (time limit, retry numbers, priority, key), when it was
submitted, and whether anyone wants its result. The delivery attempt is not
in it: the broker counts deliveries (JetStream's delivery count), so a
redelivered message, byte for byte the same, still knows its attempt.

`Outcome` is the other record: the one terminal record of a job (succeeded,
failed, cancelled, dead), written once, by whoever ends the job.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from typing import Any, Final, Literal

from ._codecs import Codec, JsonCodec, PayloadError
from ._joblog import JobRecord, clipped_repr
from ._options import check_timeout
from ._retry import Retry

__all__ = ("Envelope", "Outcome", "RetryNumbers", "partition_of")

FORMAT: Final = 1
"""The envelope layout version written on the wire (`v`)."""

RetryNumbers = dict[str, float]
"""A `Retry` without its `on=` (which is code, and stays with the task)."""


def retry_numbers(retry: Retry) -> RetryNumbers:
    """The numbers of a retry policy, for the wire.

    Raises:
        ValueError: the policy has an `on=` of its own: code cannot travel
            in an envelope (give the task that policy instead).
    """
    if retry.on is not Exception:
        raise ValueError(
            "retry= on a remote job cannot carry on=... (a predicate or exception "
            "types are code, which does not travel in a message); give the task "
            "that policy with @broker.task(retry=Retry(..., on=...)) instead"
        )
    return {
        "attempts": retry.attempts,
        "backoff": retry.backoff,
        "backoff_max": retry.backoff_max,
        "multiplier": retry.multiplier,
        "jitter": retry.jitter,
    }


def check_remote_key(key: object) -> str | int | None:
    """A key that means the same on every machine: a str or an int.

    Raises:
        TypeError: any other type (its hash would differ between processes).
    """
    if key is None or (isinstance(key, (str, int)) and not isinstance(key, bool)):
        return key
    raise TypeError(
        f"key of a remote job must be a str or an int (it must mean the same on "
        f"every machine), got {type(key).__name__} {key!r}"
    )


def partition_of(key: str | int, partitions: int) -> int:
    """The key partition of `key`: stable across processes and machines."""
    return zlib.crc32(f"{type(key).__name__}:{key}".encode()) % partitions


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One remote job, as written to the broker."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float | None = None
    retry: RetryNumbers | None = None
    priority: int = 0
    key: str | int | None = None
    max_deliver: int | None = None
    enqueued_at: float = dataclasses.field(default_factory=time.time)
    result: bool = True
    trace: dict[str, str] | None = None
    """What the submitter's instruments captured (a W3C trace context), or None."""

    def encode(self, codec: Codec) -> bytes:
        """The envelope's bytes under `codec` (`trace` only when there is one)."""
        fields = {
            "v": FORMAT,
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "timeout": self.timeout,
            "retry": self.retry,
            "priority": self.priority,
            "key": self.key,
            "max_deliver": self.max_deliver,
            "at": self.enqueued_at,
            "result": self.result,
        }
        if self.trace:
            fields["trace"] = self.trace
        return codec.encode(fields)

    @classmethod
    def decode(cls, data: bytes, codec: Codec) -> Envelope:
        """Read an envelope, checking every field's type.

        Raises:
            PayloadError: the bytes do not decode, or hold the wrong shape.
        """
        raw = codec.decode(data)
        if not isinstance(raw, dict):
            raise PayloadError(f"an envelope is a mapping, got {type(raw).__name__}")
        if type(raw.get("v")) is not int or raw.get("v") != FORMAT:
            raise PayloadError(f"unknown envelope format {raw.get('v')!r} (this reads {FORMAT})")
        try:
            env = cls(
                id=_typed(raw, "id", str),
                task=_typed(raw, "task", str),
                args=list(_typed(raw, "args", (list, tuple))),
                kwargs=_typed(raw, "kwargs", dict),
                timeout=raw.get("timeout"),
                retry=raw.get("retry"),
                priority=_typed(raw, "priority", int),
                key=raw.get("key"),
                max_deliver=raw.get("max_deliver"),
                enqueued_at=_finite(_typed(raw, "at", (int, float)), "at"),
                result=bool(_typed(raw, "result", bool)),
                trace=_carrier(raw.get("trace")),
            )
            if env.timeout is not None:
                check_timeout(env.timeout)
            if env.retry is not None:
                env.retry_policy()
            check_remote_key(env.key)
            md = env.max_deliver
            if md is not None and (isinstance(md, bool) or not isinstance(md, int) or md < 1):
                raise ValueError(f"max_deliver must be an int >= 1, got {md!r}")
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"malformed envelope: {exc}") from exc
        if not all(isinstance(k, str) for k in env.kwargs):
            raise PayloadError("malformed envelope: keyword argument names must be strings")
        return env

    def retry_policy(self, base: Retry | None = None) -> Retry | None:
        """The job's retry policy: its own numbers, with the task's `on=`."""
        if self.retry is None:
            return base
        numbers = dict(self.retry)
        if set(numbers) - {"attempts", "backoff", "backoff_max", "multiplier", "jitter"}:
            raise ValueError(f"unknown retry fields {sorted(numbers)}")
        attempts = numbers.pop("attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise ValueError(f"retry attempts must be an int, got {attempts!r}")
        on = base.on if base is not None else Exception
        return Retry(attempts=attempts, on=on, **numbers)


def _carrier(value: object) -> dict[str, str] | None:
    """A trace carrier as sent, or None when there is none or it is not one.

    A malformed carrier costs the job its parent span, not its run.
    """
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return value
    return None


def _finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise PayloadError(f"malformed envelope: {name} must be finite")
    return number


def _typed(raw: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = raw.get(name)
    if isinstance(value, bool) and kind is not bool:
        raise PayloadError(f"malformed envelope: {name} must not be a bool")
    if not isinstance(value, kind):
        raise PayloadError(f"malformed envelope: {name} has type {type(value).__name__}")
    return value


OutcomeState = Literal["succeeded", "failed", "cancelled", "dead"]


RECORD_CODEC: Final = JsonCodec()
"""The codec of records that carry nothing of the job's (a cancellation, a refusal).

Any submitter reads them, whatever its own codec (or a pickle secret the
worker does not share).
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The one terminal record of a remote job.

    Attributes:
        state: "succeeded", "failed" (its last attempt failed; it is also a
            dead letter), "cancelled", or "dead" (refused or out of
            deliveries without a failure of its own: an unknown task, an
            undecodable payload, every delivery lost to dead workers).
        value: The job's return value (succeeded).
        error: The failure (`type`, `message`, `traceback`, `args`), if any.
        attempts: How many times the job started.
        finished_at: When it ended (seconds since the epoch).
        worker: Which worker process wrote it ("host:pid"), or who cancelled it.
    """

    state: OutcomeState
    value: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    finished_at: float = dataclasses.field(default_factory=time.time)
    worker: str = ""

    def as_record(self, job_id: str) -> JobRecord:
        """Its facts as the dashboard shows a job: no task, arguments or times but its end."""
        error = None
        if self.error is not None:
            error = {k: str(self.error.get(k, "")) for k in ("type", "message", "traceback")}
        return JobRecord(
            id=job_id,
            task="",
            state="failed" if self.state == "dead" else self.state,
            attempts=self.attempts,
            queued_at=None,
            started_at=None,
            finished_at=self.finished_at,
            args="",
            result=clipped_repr(self.value) if self.state == "succeeded" else None,
            error=error,
            worker=self.worker or None,
        )

    def encode(self, codec: Codec) -> bytes:
        """The record's bytes under `codec`."""
        return codec.encode(
            {
                "state": self.state,
                "value": self.value,
                "error": self.error,
                "attempts": self.attempts,
                "at": self.finished_at,
                "worker": self.worker,
            }
        )

    @classmethod
    def decode(cls, data: bytes, codec: Codec) -> Outcome:
        """Read a record.

        Raises:
            PayloadError: the bytes do not decode, or hold the wrong shape.
        """
        raw = codec.decode(data)
        if not isinstance(raw, dict) or raw.get("state") not in (
            "succeeded",
            "failed",
            "cancelled",
            "dead",
        ):
            raise PayloadError("not an outcome record")
        error = raw.get("error")
        attempts = raw.get("attempts", 0)
        at = raw.get("at", 0.0)
        if (
            (error is not None and not isinstance(error, dict))
            or isinstance(attempts, bool)
            or not isinstance(attempts, int)
            or isinstance(at, bool)
            or not isinstance(at, (int, float))
        ):
            raise PayloadError("malformed outcome record")
        return cls(
            state=raw["state"],
            value=raw.get("value"),
            error=error,
            attempts=attempts,
            finished_at=float(at),
            worker=str(raw.get("worker") or ""),
        )
