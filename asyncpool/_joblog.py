"""`JobLog`: the instrument that remembers recent jobs, and `JobRecord`, one job as it shows them.

The dashboard's jobs page reads it: for a local dispatcher directly, and
through each broker worker's heartbeat (`asyncpool._status`) for remote
jobs. It keeps the last `keep` jobs (1,000 by default), and every job not
finished yet among them, each by its handle: state, attempts and times are
read from the handle when a record is made, so a job costs one dict entry,
and the text of its result or error when a try ends. Holding the handle
holds what the handle holds (the job's arguments, its result or exception
and that exception's traceback) until the job is forgotten: 1,000 jobs'
worth at most, beside the unfinished ones.

It never adds a done callback to a handle: a failure nobody waits for must
still reach `on_error` (a callback would count as someone waiting), and it
never reads a handle's exception (that would mark it as looked at).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import reprlib
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ._job import JobState
from ._telemetry import Instrument, JobRun

if TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = ("PREVIEW", "TRACEBACK", "JobLog", "JobRecord", "clipped_repr", "error_text", "preview")

PREVIEW = 2_000
"""The most characters of a job's arguments or result a record keeps."""

TRACEBACK = 20_000
"""The most characters of a traceback a record keeps."""

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "retrying")

_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxstring = 400
_repr.maxother = 400
_repr.maxlong = 80
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_repr, _name, 30)


def _cut(text: str, most: int) -> str:
    if len(text) <= most:
        return text
    return f"{text[:most]}… ({len(text) - most} more characters)"


def clipped_repr(value: object) -> str:
    """A value's repr (bounded by reprlib), cut to `PREVIEW` characters."""
    return _cut(_repr.repr(value), PREVIEW)


def preview(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """A job's arguments as a call would show them, cut to `PREVIEW` characters."""
    parts = [_repr.repr(a) for a in args]
    parts += [f"{k}={_repr.repr(v)}" for k, v in kwargs.items()]
    return _cut(", ".join(parts), PREVIEW)


def error_text(exc: BaseException) -> dict[str, str]:
    """An error as a record keeps it: type, message and traceback (cut).

    The type is named as a remote job's record names it (`module.Name`); the
    traceback starts at the job's own code: the plumbing above it
    (asyncpool's worker and instruments, and for a job in a thread anyio's
    and asyncio's frames) says nothing about the failure.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    kind = type(exc)
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": _cut(str(exc), PREVIEW),
        "traceback": _cut("".join(lines), TRACEBACK),
    }


_PLUMBING = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,  # asyncpool
    *(os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep for m in (anyio, asyncio)),
    os.path.dirname(os.path.abspath(concurrent.futures.__file__ or "")) + os.sep,
    os.path.abspath(threading.__file__ or ""),
)


def _ours(filename: str) -> bool:
    """Whether a frame of `filename` is plumbing between the worker and the job."""
    return os.path.abspath(filename).startswith(_PLUMBING)


@dataclasses.dataclass(frozen=True, slots=True)
class JobRecord:
    """One job, as the dashboard shows it.

    Attributes:
        id: The job's id (a local handle's id as a string, or a remote job's id).
        task: What runs: a function's name, or a remote task's.
        state: "queued", "running", "succeeded", "failed", "cancelled", or
            "retrying" (a remote job that failed a try and was handed back
            to run again after its backoff).
        attempts: How many times it has started.
        queued_at: When it was queued (seconds since the epoch), if known.
        started_at: When its latest try started, or None.
        finished_at: When it reached its state, for a final one, or None.
        args: Its arguments, as a call would show them (cut to 2,000 characters).
        result: Its result's repr (cut), once it succeeded.
        error: Its error (`type`, `message`, `traceback`), once a try failed.
        worker: The worker process that ran it ("host:pid"), for a remote job.
        lane: The broker lane it came from, for a remote job.
    """

    id: str
    task: str
    state: str
    attempts: int
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    args: str
    result: str | None = None
    error: dict[str, str] | None = None
    worker: str | None = None
    lane: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data (for JSON and for a worker's heartbeat)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """A record read back from `to_dict()`'s data; unknown keys are ignored.

        Raises:
            TypeError, KeyError: the data is not a record's.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class _Entry:
    """What the log keeps of one job."""

    __slots__ = ("job", "result", "error", "state_override", "args")

    def __init__(self, job: JobRun) -> None:
        self.job = job
        self.result: str | None = None
        """The text of the result of its last try, once it succeeded."""
        self.error: dict[str, str] | None = None
        self.state_override: str | None = None
        self.args: str | None = None
        """The text of its arguments, made the first time a record needs it."""


class JobLog(Instrument):
    """An instrument that remembers the last `keep` jobs of the dispatchers it is given to.

    Give it to a dispatcher (`Dispatcher(instruments=[JobLog()])`) and hand
    the dispatcher to `asyncpool.dashboard.create_app`; a broker worker keeps
    one of its own for its heartbeat.

    Args:
        keep: How many jobs to remember (the oldest are forgotten first).
        worker: What to name the worker in its records (None for a local pool).

    Raises:
        ValueError: `keep` is not an int >= 1.
    """

    def __init__(self, keep: int = 1_000, *, worker: str | None = None) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self._keep = keep
        self._worker = worker
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __repr__(self) -> str:
        return f"<JobLog jobs={len(self._entries)} keep={self._keep}>"

    # -- the instrument's hooks ----------------------------------------

    def job_queued(self, job: JobRun) -> None:
        entries = self._entries
        entries[job.job_id] = _Entry(job)
        entries.move_to_end(job.job_id)
        # Forget the oldest finished jobs past `keep`. An unfinished one met
        # on the way is kept (moved to the new end): a job running or
        # waiting for long must stay visible. A few looks per job at most:
        # a long queue of unfinished jobs makes the log longer, not slower.
        looks = 8
        while len(entries) > self._keep and looks:
            looks -= 1
            oldest_id, oldest = next(iter(entries.items()))
            if oldest.job.handle.done():
                del entries[oldest_id]
            else:
                entries.move_to_end(oldest_id)

    async def run(self, job: JobRun, call: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(job.job_id)
        if entry is None or entry.job.handle is not job.handle:
            self.job_queued(job)
            entry = self._entries[job.job_id]
        entry.job = job  # the latest try's attempt number
        entry.error = None
        try:
            result = await call()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            entry.error = error_text(exc)
            raise
        entry.result = clipped_repr(result)
        return result

    # -- reading -------------------------------------------------------

    def records(self, state: str | None = None, limit: int = 100) -> list[JobRecord]:
        """The newest `limit` jobs (in `state`, if given), newest first.

        Raises:
            ValueError: `state` is not one of the record states.
        """
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)} or None, got {state!r}")
        found: list[JobRecord] = []
        for entry in reversed(self._entries.values()):
            if len(found) >= limit:
                break
            record = self._record(entry)
            if state is None or record.state == state:
                found.append(record)
        return found

    def find(self, job_id: str) -> JobRecord | None:
        """The record of job `job_id`, if it is still remembered."""
        entry = self._entries.get(job_id)
        return None if entry is None else self._record(entry)

    def finished_times(self, since: float) -> list[float]:
        """When the remembered jobs that finished at or after `since` finished (epoch seconds).

        Cheap enough to call every second: it reads the handles' clocks,
        and makes no record.
        """
        found = []
        for entry in self._entries.values():
            handle = entry.job.handle
            finished = handle.finished_at
            if finished is not None:
                at = time.time() - (handle.get_loop().time() - finished)
                if at >= since:
                    found.append(at)
        return found

    def handle(self, job_id: str) -> JobHandle[Any] | None:
        """The handle of job `job_id`, if it is still remembered."""
        entry = self._entries.get(job_id)
        return None if entry is None else entry.job.handle

    def cancel(self, job_id: str) -> bool:
        """Cancel job `job_id` if it is remembered and not finished; True if it was."""
        entry = self._entries.get(job_id)
        if entry is None:
            return False
        return entry.job.handle.cancel("cancelled from the dashboard")

    def mark(self, job_id: str, state: str) -> None:
        """Say what became of a job beyond its handle (a remote job handed back: "retrying")."""
        entry = self._entries.get(job_id)
        if entry is not None:
            entry.state_override = state

    def _record(self, entry: _Entry) -> JobRecord:
        job = entry.job
        handle = job.handle
        loop_now = handle.get_loop().time()
        wall_now = time.time()

        def wall(t: float | None) -> float | None:
            return None if t is None else wall_now - (loop_now - t)

        state = entry.state_override or handle.state.value
        result = entry.result if handle.state is JobState.SUCCEEDED else None
        if entry.args is None:
            entry.args = preview(job.args, job.kwargs)
        return JobRecord(
            id=job.job_id,
            task=job.task,
            state=state,
            attempts=job.attempt,
            queued_at=wall(handle.queued_at),
            started_at=wall(handle.started_at),
            finished_at=wall(handle.finished_at),
            args=entry.args,
            result=result,
            error=entry.error,
            worker=self._worker,
            lane=job.lane,
        )
