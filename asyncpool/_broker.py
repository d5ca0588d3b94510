"""`Broker`: the engine-neutral half of every broker (JetStream, later Redis).

It owns what does not depend on the engine: the task registry
(`@broker.task`), the codec, job ids, building envelopes at `submit`,
remote handles and the watch that resolves them, remote cancellation, the
exception classes safe to rebuild, and `serve` (the worker side, in
`asyncpool._serve`). An engine subclass supplies a `Transport`
(`asyncpool._transport`) and its connect and close.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, Self, TypeVar, overload

from ._codecs import Codec, JsonCodec, PayloadError, codec_named
from ._envelope import RECORD_CODEC, Envelope, Outcome, check_remote_key, retry_numbers
from ._joblog import JobRecord
from ._lanes_info import LaneInfo
from ._options import check_retry, check_timeout
from ._remote import ErrorTypes, RemoteHandle
from ._retry import Retry
from ._status import WorkerStatus
from ._tasks import (
    JobClass,
    KeyOption,
    Task,
    TaskRegistry,
    UnknownTask,
    check_defaults,
    job_arguments,
)
from ._telemetry import Instrument, capture_all, check_instruments
from ._transport import Transport

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._serve import ServeReport

__all__ = ("Broker",)

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
C = TypeVar("C", bound=type[Any])
E = TypeVar("E", bound=type[BaseException])

OPTION_NAMES = frozenset({"timeout", "retry", "priority", "key", "max_deliver", "result"})
"""Keyword arguments of `submit` that are options of the job, not its arguments."""


class _AsyncProcess(Protocol[T_co]):
    def process(self) -> Coroutine[Any, Any, T_co]: ...


class _SyncProcess(Protocol[T_co]):
    def process(self) -> T_co: ...


class TaskDecorator(Protocol):
    """What `@broker.task(...)` with arguments returns."""

    @overload
    def __call__(self, target: C, /) -> C: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, target: Callable[P, Awaitable[T]], /) -> Task[P, T]: ...
    @overload
    def __call__(self, target: Callable[P, T], /) -> Task[P, T]: ...


class Broker(abc.ABC):
    """What every broker shares; see `asyncpool.jetstream.JetStreamBroker`."""

    def __init__(
        self,
        *,
        codec: str | Codec = "json",
        retry: Retry | None = None,
        max_deliver: int = 5,
        instruments: Sequence[Instrument] = (),
    ) -> None:
        self._instruments = check_instruments(instruments)
        self._codec = codec_named(codec)
        self._default_retry = check_retry(retry)
        if isinstance(max_deliver, bool) or not isinstance(max_deliver, int) or max_deliver < 1:
            raise ValueError(f"max_deliver must be an int >= 1, got {max_deliver!r}")
        self._max_deliver = max_deliver
        self._registry = TaskRegistry()
        self._error_types = ErrorTypes()
        # Job ids are "<origin>.<n>": a submitter watches the records of its
        # own origin only, and ids never repeat across processes.
        self._origin = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        # Jobs submitted here whose record the origin-wide watch will bring:
        # awaiting them needs no read.
        self._watched: set[str] = set()
        self._entered = False

    # -- the engine's part ---------------------------------------------

    @property
    @abc.abstractmethod
    def transport(self) -> Transport:
        """The engine's transport (only while the broker is open)."""

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect; create or check the engine's streams, consumers and buckets."""

    @abc.abstractmethod
    async def _shut(self) -> None:
        """Close the connection (after what was sent is flushed)."""

    # -- lifetime ------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"{self!r} is already open")
        await self._open()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        for future in self._waiting.values():
            future.cancel("the broker was closed before the job's end was known")
        self._waiting.clear()
        self._watched.clear()
        await self._shut()

    def _check_open(self) -> None:
        if not self._entered:
            raise RuntimeError(f"{self!r} is not open: use `async with broker:` first")

    # -- registration --------------------------------------------------

    @property
    def codec(self) -> Codec:
        """The codec jobs and results are written with."""
        return self._codec

    @property
    def registry(self) -> TaskRegistry:
        """The tasks this process registered."""
        return self._registry

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """The instruments given to the constructor."""
        return self._instruments

    @property
    def max_deliver(self) -> int:
        """The default most deliveries of a job (a task may set its own)."""
        return self._max_deliver

    @property
    def default_retry(self) -> Retry | None:
        """The retry policy of tasks and jobs that set none."""
        return self._default_retry

    @overload
    def task(self, target: C, /) -> C: ...  # type: ignore[overload-overlap]
    @overload
    def task(self, target: Callable[P, Awaitable[T]], /) -> Task[P, T]: ...
    @overload
    def task(self, target: Callable[P, T], /) -> Task[P, T]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        priority: int = 0,
        key: KeyOption = None,
        max_deliver: int | None = None,
    ) -> TaskDecorator: ...
    def task(  # type: ignore[misc]
        self,
        target: Any = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        priority: int = 0,
        key: KeyOption = None,
        max_deliver: int | None = None,
    ) -> Any:
        """Register a function or a Job class, so that workers may run it by name.

        Bare (`@broker.task`) or with the task's defaults
        (`@broker.task(name="resize", timeout=30, retry=Retry(attempts=3))`).
        The name defaults to the function's or class's `module.qualname`;
        give a stable `name=` if the code may move. Every process that submits
        or serves the task must register it (import the module that does).

        An async function runs on a worker's event loop, a sync one in a
        worker thread. A Job class (with `process()`, a dataclass or a plain
        record) is rebuilt on the worker from its fields; the class itself
        is returned unchanged.

        `key` may be a str or int (all the task's jobs share it) or a function
        of the job's arguments that returns one (`key=lambda user, **_: user`).

        Raises:
            TypeError, ValueError: a wrong default; the message names it.
            ValueError: the name is already registered to something else.
        """
        check_defaults(
            name=name,
            timeout=timeout,
            retry=retry,
            priority=priority,
            key=key,
            max_deliver=max_deliver,
        )

        def register(target: Any) -> Any:
            if isinstance(target, Task):
                raise TypeError(f"{target!r} is already a registered task")
            if isinstance(target, type):
                if not callable(getattr(target, "process", None)):
                    raise TypeError(
                        f"@broker.task on a class needs a Job class (with a process() "
                        f"method); {target.__name__} has none"
                    )
                entry = JobClass(
                    target,
                    name or f"{target.__module__}.{target.__qualname__}",
                    timeout,
                    retry,
                    priority,
                    key,
                    max_deliver,
                )
                self._registry.add(entry)
                return target
            if not callable(target):
                raise TypeError(f"@broker.task takes a function or a Job class, got {target!r}")
            qualname = getattr(target, "__qualname__", None) or repr(target)
            registered: Task[Any, Any] = Task(
                target,
                name=name or f"{getattr(target, '__module__', '?')}.{qualname}",
                timeout=timeout,
                retry=retry,
                priority=priority,
                key=key,
                max_deliver=max_deliver,
            )
            return self._registry.add(registered)

        if target is not None:
            return register(target)
        return register

    def register_error(self, cls: E) -> E:
        """Let awaiters get `cls` itself back from a remote failure (usable as a decorator).

        The exception is rebuilt as `cls(*args)` from its arguments when they
        are plain values (str, int, float, bool, None); its `__cause__` is the
        `RemoteJobError` with the remote traceback. Register only classes
        whose constructor is safe to call with such arguments.

        Raises:
            TypeError: `cls` is not an `Exception` subclass.
        """
        self._error_types.add(cls)
        return cls

    # -- submitting ----------------------------------------------------

    @overload
    async def submit(
        self, target: Task[..., T], /, *args: Any, **kwargs: Any
    ) -> RemoteHandle[T]: ...
    @overload
    async def submit(
        self, target: _AsyncProcess[T], /, *args: Any, **kwargs: Any
    ) -> RemoteHandle[T]: ...
    @overload
    async def submit(
        self, target: _SyncProcess[T], /, *args: Any, **kwargs: Any
    ) -> RemoteHandle[T]: ...
    async def submit(self, target: Any, /, *args: Any, **kwargs: Any) -> RemoteHandle[Any]:
        """Send a job to the broker; when this returns, the job is stored durably.

        `target` is a registered task (then `*args, **kwargs` are its
        arguments) or an instance of a registered Job class. Keyword
        options, taken out of `kwargs` (a job argument with one of these
        names must be passed inside a Job object instead):

        * `timeout`, `retry`, `priority`, `key`: as for `Dispatcher.submit`
          (the task's defaults fill what is not given). `retry` must be a
          `Retry` without `on=` (that stays with the task); `key` a str or
          int. Across machines, jobs with a higher priority are fetched
          first by sign: three lanes, `priority > 0`, `== 0`, `< 0`; on each
          worker, the exact priority orders the jobs it holds.
        * `max_deliver`: the most deliveries (runs, retries and redeliveries
          after a worker died, all counted); the task's or broker's default.
        * `result=False`: fire-and-forget: no terminal record is stored on
          success (a failure still becomes a dead letter), and the handle
          never resolves; awaiting it raises `RuntimeError`.

        Raises:
            TypeError: `target` is not registered, or an argument does not
                encode with the broker's codec; the message says which.
            ValueError: a wrong option value; the message names it.
            RuntimeError: the broker is not open.
        """
        self._check_open()
        options = {name: kwargs.pop(name) for name in OPTION_NAMES & kwargs.keys()}
        if isinstance(target, Task):
            entry: Task[Any, Any] | JobClass = target
            try:
                known = self._registry.named(target.name)
            except UnknownTask:
                known = None
            if known is not target:
                raise TypeError(f"{target!r} is registered with another broker, not with {self!r}")
            key_default = target.key_for(args, kwargs)
        else:
            job_class = self._registry.of_class(type(target))
            if job_class is None:
                raise TypeError(
                    f"submit() takes a task registered with @broker.task or an instance "
                    f"of a registered Job class, got {target!r}"
                )
            if args or kwargs:
                raise TypeError("a Job object carries its own arguments; pass none beside it")
            entry = job_class
            kwargs = job_arguments(target)
            args = ()
            key_option = job_class.key
            key_default = (
                check_remote_key(key_option(**kwargs)) if callable(key_option) else key_option
            )
        envelope = self._envelope(entry, args, kwargs, options, key_default)
        try:
            data = envelope.encode(self._codec)
        except TypeError as exc:
            raise TypeError(f"the arguments of {entry.name!r} cannot be sent: {exc}") from exc
        future: asyncio.Future[Outcome] | None = None
        if envelope.result:
            future = asyncio.get_running_loop().create_future()
            self._waiting[envelope.id] = future
            self._watched.add(envelope.id)
        try:
            await self.transport.publish(envelope, data, self._codec.name)
        except BaseException:
            self._waiting.pop(envelope.id, None)
            self._watched.discard(envelope.id)
            raise
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(
                RuntimeError(f"remote job {envelope.id} was submitted with result=False")
            )
            future.exception()  # retrieved: nobody has to await a fire-and-forget handle
        return RemoteHandle(envelope.id, self, future)

    def _envelope(
        self,
        entry: Task[Any, Any] | JobClass,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        key_default: str | int | None,
    ) -> Envelope:
        timeout = check_timeout(options["timeout"]) if "timeout" in options else entry.timeout
        retry = check_retry(options["retry"]) if "retry" in options else None
        priority = options.get("priority", entry.priority)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, got {priority!r}")
        key = check_remote_key(options["key"]) if "key" in options else key_default
        max_deliver = options.get("max_deliver")
        if max_deliver is not None:
            check_defaults(
                name=None, timeout=None, retry=None, priority=0, key=None, max_deliver=max_deliver
            )
        result = options.get("result", True)
        if not isinstance(result, bool):
            raise TypeError(f"result must be a bool, got {result!r}")
        carrier = capture_all(self._instruments)
        return Envelope(
            id=f"{self._origin}.{next(self._counter)}",
            task=entry.name,
            args=list(args),
            kwargs=kwargs,
            timeout=timeout,
            retry=retry_numbers(retry) if retry is not None else None,
            priority=priority,
            key=key,
            max_deliver=max_deliver,
            result=result,
            trace=carrier,
        )

    # -- what the broker holds ------------------------------------------

    async def lanes(self) -> list[LaneInfo]:
        """How many jobs each lane holds now: waiting, running, delayed (see `LaneInfo`).

        One row per priority lane ("high", "normal", "low"), then one for
        every key lane together ("keys"). Counted on the server, so it
        covers every worker and producer of the broker's name.

        Raises:
            RuntimeError: the broker is not open.
        """
        self._check_open()
        return await self.transport.lane_counts()

    # -- waiting for outcomes ------------------------------------------

    def handle(self, job_id: str) -> RemoteHandle[Any]:
        """A handle on a job submitted anywhere (by this process or another), by its id.

        Raises:
            RuntimeError: the broker is not open.
        """
        self._check_open()
        future = self._waiting.get(job_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[job_id] = future
        return RemoteHandle(job_id, self, future)

    async def _attach(self, job_id: str) -> None:
        """Make sure the job's record reaches its waiting future (a watch, then one read)."""
        future = self._waiting.get(job_id)
        if future is None or future.done() or job_id in self._watched:
            return
        transport = self.transport
        await transport.watch_outcome(job_id, self._outcome_arrived)
        data = await transport.read_outcome(job_id)
        if data is not None:
            self._outcome_arrived(job_id, data)

    def _outcome_arrived(self, job_id: str, data: bytes) -> None:
        """A terminal record was written: resolve whoever waits for it."""
        future = self._waiting.pop(job_id, None)
        self._watched.discard(job_id)
        if future is None or future.done():
            return
        try:
            outcome = self._decode_outcome(data)
        except PayloadError as exc:
            future.set_exception(exc)
            return
        future.set_result(outcome)

    def _decode_outcome(self, data: bytes) -> Outcome:
        """A record in this broker's codec, or in JSON.

        Records that carry nothing of the job's (a cancellation, a refusal)
        are written in JSON, so that any submitter can read them.
        """
        try:
            return Outcome.decode(data, self._codec)
        except PayloadError:
            if isinstance(self._codec, JsonCodec):
                raise
            return Outcome.decode(data, RECORD_CODEC)

    def _rebuild_error(self, job_id: str, outcome: Outcome) -> BaseException:
        return self._error_types.rebuild(job_id, outcome)

    async def _cancel_remote(self, job_id: str) -> bool:
        record = Outcome("cancelled", worker=f"cancelled by {self._origin}")
        transport = self.transport
        if await transport.create_outcome(job_id, record.encode(RECORD_CODEC)):
            await transport.request_cancel(job_id)
            self._outcome_arrived(job_id, record.encode(RECORD_CODEC))
            return True
        data = await transport.read_outcome(job_id)
        if data is None:  # pragma: no cover - a record cannot vanish between two calls
            return False
        self._outcome_arrived(job_id, data)
        return self._decode_outcome(data).state == "cancelled"

    # -- the worker side -----------------------------------------------

    async def workers(self) -> list[WorkerStatus]:
        """The workers serving this broker now, as their last heartbeats tell (by name).

        A worker writes its status every second while it serves; a killed
        one drops off within `asyncpool._status.STATUS_TTL` (10 s), one that
        stops cleanly at once. A status that does not decode (a worker of
        another version) is left out.

        Raises:
            RuntimeError: the broker is not open.
        """
        self._check_open()
        return WorkerStatus.decode_all(await self.transport.statuses())

    async def find_job(self, job_id: str) -> JobRecord | None:
        """What is known of remote job `job_id`: from the workers' heartbeats, or its record.

        A job a live worker holds or finished recently comes with its
        arguments, times and worker; an older one that left a record (kept
        for the broker's result TTL) comes with its state, attempts, and its
        result or error; None when neither knows it.

        Raises:
            TypeError: `job_id` is not a str.
            RuntimeError: the broker is not open.
        """
        if not isinstance(job_id, str):
            raise TypeError(f"job_id must be a str, got {job_id!r}")
        self._check_open()
        found = WorkerStatus.latest_record(await self.workers(), job_id)
        if found is not None:
            return found
        data = await self.transport.read_outcome(job_id)
        return None if data is None else self._decode_outcome(data).as_record(job_id)

    async def serve(
        self, dispatcher: Dispatcher, *, stop: asyncio.Event | None = None
    ) -> ServeReport:
        """Run the broker's jobs on `dispatcher` until `stop` is set or the dispatcher closes.

        Takes only as many jobs as the dispatcher has free workers; extends
        each job's lease while it runs; acknowledges a job only after it
        ended and its record is written. A failure is retried through the
        broker (with the job's backoff, maybe on another machine) or, after
        its last attempt, becomes a dead letter.

        Setting `stop` (or cancelling `serve`) stops taking jobs and hands
        the unstarted ones back at once; `serve` returns (or re-raises the
        cancellation) when the jobs already running have ended, so close the
        dispatcher, with a timeout, to bound that (`python -m asyncpool
        worker` does: see `asyncpool._worker`).

        Returns:
            What it did (when the dispatcher closed); see `ServeReport`.

        Raises:
            RuntimeError: the broker is not open.
        """
        from ._serve import Server

        self._check_open()
        return await Server(self, dispatcher, stop).run()
