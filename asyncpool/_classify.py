"""How a submitted thing runs: `classify` decided once per thing, and remembered.

`submit`'s front door. `classify` (asyncpool._job) decides in general how a
submitted thing runs, and refuses what cannot run; `Classifier` adds the
per-job options and the dispatcher's defaults, and two caches that skip the
general decision for what is submitted over and over.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import FunctionType
from typing import TYPE_CHECKING, Any

from ._errors import DispatcherClosed
from ._executors import check_picklable
from ._job import CORO_OBJECT, IN_PROCESS, IN_THREAD, JOB_ON_LOOP, ON_LOOP, classify
from ._options import RESERVED_OPTIONS, JobOptions, pop_options
from ._retry import Retry

if TYPE_CHECKING:
    from ._telemetry import Instrument

__all__ = ("Classifier", "close_if_coroutine")

_CO_COROUTINE = inspect.CO_COROUTINE
_MAX_JOB_CLASSES = 64  # Job classes whose process() submit remembers
_NO_FN = object()  # what `Classifier.plain_fn` holds when the fast path is off


class Classifier:
    """`submit`'s front door: how a submitted thing runs, decided once and remembered.

    `classify` (asyncpool._job) decides in general; two caches skip it for
    what is submitted over and over: the last plain coroutine function
    (`plain_fn`, one identity test in `Dispatcher.submit`) and Job classes
    whose `process()` is an async method. Both caches are dropped by
    `stop_accepting`, so the next submit takes the full path, which refuses.
    """

    __slots__ = (
        "plain_fn",
        "accepting",
        "_job_classes",
        "_default_timeout",
        "_default_retry",
        "_has_defaults",
        "_instruments",
        "_in_processes",
        "_closed_error",
    )

    def __init__(
        self,
        *,
        default_timeout: float | None,
        default_retry: Retry | None,
        in_processes: bool,
        closed_error: Callable[[], DispatcherClosed],
        instruments: tuple[Instrument, ...] = (),
    ) -> None:
        self.plain_fn: object = _NO_FN
        """The last plain coroutine function submitted without options while accepting."""
        self.accepting = False
        self._job_classes: dict[type, FunctionType] = {}
        self._default_timeout = default_timeout
        self._default_retry = default_retry
        self._instruments = instruments
        # Options on every job when a default is set, or an instrument: the
        # fast paths are off.
        self._has_defaults = (
            default_timeout is not None or default_retry is not None or bool(instruments)
        )
        self._in_processes = in_processes
        self._closed_error = closed_error

    @property
    def remembered_classes(self) -> int:
        """How many Job classes are remembered (for `asyncpool._testing`)."""
        return len(self._job_classes)

    def start_accepting(self) -> None:
        self.accepting = True

    def stop_accepting(self) -> None:
        """No submit may be accepted from now on: the fast paths stop matching."""
        self.accepting = False
        self.plain_fn = _NO_FN
        self._job_classes = {}

    def prepare(
        self, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, Any, JobOptions | None]:
        """Decide how `target` runs: `(run mode, what the worker calls, options or None)`.

        Raises:
            TypeError, ValueError: `target` or an option is not acceptable.
            DispatcherClosed: the dispatcher does not accept jobs.
        """
        known = self._job_classes.get(type(target))
        if known is not None and not args and not kwargs:
            # A Job of a class seen before: if its process() is still the
            # class's async method, it runs on the loop like last time.
            process = getattr(target, "process", None)  # an instance may lack it
            if getattr(process, "__func__", None) is known:
                return JOB_ON_LOOP, target, None  # the Job, not `process`: no bound method kept
        if (
            type(target) is FunctionType
            and target.__code__.co_flags & _CO_COROUTINE
            and not kwargs
            and self.accepting
            and not self._has_defaults
        ):
            # The common case, decided without classify(); remembered, so
            # that the next submit of the same function skips even this.
            self.plain_fn = target
            return ON_LOOP, target, None
        try:
            opts = None
            if self._has_defaults or not RESERVED_OPTIONS.isdisjoint(kwargs):
                retry_given = kwargs.get("retry") is not None
                opts = pop_options(
                    kwargs, self._default_timeout, self._default_retry, self._instruments
                )
            mode, fn = classify(target, args, kwargs)
            if mode == IN_THREAD and self._in_processes:
                mode = IN_PROCESS
                check_picklable(fn, args, kwargs)
            if opts is not None and mode == CORO_OBJECT and opts.retry is not None:
                if retry_given:
                    raise TypeError(
                        "submit() got a coroutine object with retry=: a coroutine "
                        "object runs once; submit the coroutine function and its "
                        "arguments to retry it"
                    )
                opts.retry = None  # the dispatcher's default cannot apply
            if not self.accepting:
                raise self._closed_error()
        except BaseException:
            close_if_coroutine(target)
            raise
        if mode == ON_LOOP and opts is None and fn is not target and not self._has_defaults:
            self._remember_job_class(target, fn)
        return mode, fn, opts

    def _remember_job_class(self, job: object, process: Any) -> None:
        """A Job whose `process` is an async method: later Jobs of its class skip classify()."""
        func = getattr(process, "__func__", None)
        if (
            getattr(process, "__self__", None) is job
            and type(func) is FunctionType
            and func.__code__.co_flags & _CO_COROUTINE
        ):
            if len(self._job_classes) >= _MAX_JOB_CLASSES:
                self._job_classes.clear()  # classes made on the fly: keep the table small
            self._job_classes[type(job)] = func


def close_if_coroutine(target: object) -> None:
    """Close a fresh coroutine object that will never run.

    That spares the user a "coroutine ... was never awaited" warning on top
    of the error. Only a fresh one: a started coroutine belongs to whoever
    is running it.
    """
    if inspect.iscoroutine(target) and inspect.getcoroutinestate(target) == inspect.CORO_CREATED:
        target.close()
