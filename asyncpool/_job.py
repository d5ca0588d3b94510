"""What a job is: the `Job` protocol, the `JobState` enum, and how `submit`'s input becomes a call.

`classify` is the only place that decides how a submitted thing runs (on the
event loop or in a worker thread), so that every bad input is rejected by
`submit` itself, before anything is queued.
"""

from __future__ import annotations

import abc
import enum
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from types import FunctionType, MethodType
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ("AsyncJob", "Job", "JobState", "SyncJob")

T_co = TypeVar("T_co", covariant=True)

_CO_COROUTINE = inspect.CO_COROUTINE
_CO_GENERATOR = inspect.CO_GENERATOR
_CO_ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR


class JobState(enum.Enum):
    """Where a job is in its life. Every job ends in exactly one final state."""

    QUEUED = "queued"
    """Accepted, waiting for a worker."""
    RUNNING = "running"
    """A worker is running it."""
    SUCCEEDED = "succeeded"
    """It returned a result (final)."""
    FAILED = "failed"
    """It raised an exception (final)."""
    CANCELLED = "cancelled"
    """It was cancelled, before or while running (final)."""

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED, FAILED and CANCELLED."""
        return self in _FINAL_STATES


_FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@runtime_checkable
class Job(Protocol[T_co]):
    """Anything with a `process()` method: the seed's `Job` interface.

    `process` may be `async def` (it runs on the event loop, in a worker) or a
    plain function (it runs in a worker thread, since it may block). Many job
    types can go through one dispatcher; nothing has to inherit from anything.

    Example:
        ```python
        class Resize:
            def __init__(self, path: str) -> None:
                self.path = path

            async def process(self) -> int:
                ...
        ```
    """

    def process(self) -> Awaitable[T_co] | T_co:
        """Do the job's work and return its result."""
        ...


class AsyncJob(abc.ABC, Job[T_co]):
    """An abstract base for jobs whose `process` is a coroutine, for those who like inheritance."""

    @abc.abstractmethod
    async def process(self) -> T_co:
        """Do the job's work on the event loop and return its result."""


class SyncJob(abc.ABC, Job[T_co]):
    """An abstract base for blocking jobs; `process` runs in a worker thread."""

    @abc.abstractmethod
    def process(self) -> T_co:
        """Do the job's (blocking) work in a worker thread and return its result."""


# How a call runs. Kept as small ints: the worker branches on them once per job.
ON_LOOP = 0
"""`fn(*args, **kwargs)` returns an awaitable that the worker awaits."""
IN_THREAD = 1
"""`fn(*args, **kwargs)` is blocking and runs in a worker thread."""
CORO_OBJECT = 2
"""`fn` is a coroutine object; the worker awaits it once."""
IN_PROCESS = 3
"""`fn(*args, **kwargs)` is blocking and runs in a worker process (`sync_in="process"`)."""
JOB_ON_LOOP = 4
"""`fn` is a Job whose `process()` is an async method: the worker awaits
`fn.process()`. Keeping the Job rather than its bound method saves an object
per job that the garbage collector would have to walk."""
OPTIONED = 5
"""Added to one of `ON_LOOP`, `IN_THREAD`, `CORO_OBJECT` and `IN_PROCESS` when the
job has per-job options (`JobHandle._opts`): a single comparison
(`how >= OPTIONED`) keeps plain jobs on the fast path."""


def _is_async_callable(fn: object) -> bool:
    # The common case (a plain `async def` function) is decided without inspect.
    if type(fn) is FunctionType:
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    if inspect.iscoroutinefunction(fn):
        return True
    # Instances with `async def __call__`.
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we want the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


# What a job that is a generator function is told to do instead (`classify`).
_ONE_RESULT = {
    "generator": "a job returns one result; return a list instead, or use dispatcher.map() "
    "to run one job per item",
    "async generator": "a job returns one result; to stream results, iterate it inside an "
    "async def job, or use dispatcher.map()",
}


def _generator_function(fn: object) -> tuple[str, FunctionType] | None:
    """`("generator" or "async generator", the function)` if calling `fn` makes a generator.

    Calling a generator function runs none of its body: it returns a
    generator, which a worker can neither await nor take as a result. Sees
    through bound methods and `functools.partial`, and looks at the
    `__call__` of an instance. Read from the code flags, not with `inspect`
    (whose checks made `classify` several times slower): `classify` runs for
    every blocking job submitted.
    """
    func = fn
    while True:
        if type(func) is MethodType:
            func = func.__func__
        elif isinstance(func, functools.partial):
            func = func.func
        else:
            break
    if type(func) is not FunctionType:
        # An instance whose class defines `__call__` (for anything else,
        # a builtin or a class, this finds a slot wrapper: not a function).
        func = getattr(type(func), "__call__", None)  # noqa: B004 - the method, not callable()
        if type(func) is not FunctionType:
            return None
    flags = func.__code__.co_flags
    if flags & _CO_ASYNC_GENERATOR:
        return "async generator", func
    if flags & _CO_GENERATOR:
        return "generator", func
    return None


def name_of(fn: object) -> str:
    """A function's qualified name, for messages."""
    return getattr(fn, "__qualname__", None) or repr(fn)


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def classify(
    target: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[int, Callable[..., Any] | Coroutine[Any, Any, Any]]:
    """Decide how a submitted thing runs, or reject it.

    Returns:
        A `(how, fn)` pair: `how` is `ON_LOOP`, `IN_THREAD` or `CORO_OBJECT`;
        `fn` is what the worker calls with `args` and `kwargs` (or awaits, for
        a coroutine object).

    Raises:
        TypeError: `target` is not a job, a callable or a coroutine object, or
            arguments were given with a job object or a coroutine object, or
            it (or a Job's `process`) is a generator or async generator
            function, which returns a generator instead of running.
    """
    if inspect.iscoroutine(target):
        state = inspect.getcoroutinestate(target)
        if state != inspect.CORO_CREATED:
            raise TypeError(
                f"submit() got a coroutine object that has already "
                f"{'finished or been closed' if state == inspect.CORO_CLOSED else 'started'}; "
                "a coroutine object runs once: submit a fresh one, or the coroutine function"
            )
        if args or kwargs:
            raise TypeError(
                "submit() got a coroutine object and extra arguments; pass either "
                "a coroutine object alone, or a coroutine function with its arguments"
            )
        return CORO_OBJECT, target
    process = getattr(target, "process", None)
    # A function or method is called, even if it carries an attribute named
    # `process`: it is not a Job object.
    if process is not None and not isinstance(target, (type, FunctionType, MethodType)):
        if not callable(process):
            raise TypeError(
                f"submit() got {_describe(target)} whose 'process' attribute is not callable"
            )
        if args or kwargs:
            raise TypeError(
                f"submit() got a Job ({type(target).__name__}) and extra arguments; "
                "a Job carries its own data: set it on the object instead"
            )
        if _is_async_callable(process):
            return ON_LOOP, process
        generator = _generator_function(process)
        if generator is not None:
            kind = generator[0]
            raise TypeError(
                f"submit() got a Job ({type(target).__name__}) whose process() is "
                f"{'an' if kind[0] == 'a' else 'a'} {kind} function: {_ONE_RESULT[kind]}"
            )
        return IN_THREAD, process
    if isinstance(target, type) and hasattr(target, "process"):
        raise TypeError(
            f"submit() got the class {target.__name__}, not an instance: "
            f"submit({target.__name__}(...)) instead"
        )
    if isinstance(target, Awaitable):
        raise TypeError(
            f"submit() got {_describe(target)}, an awaitable that is not a coroutine "
            "object; it is already scheduled elsewhere: await it directly"
        )
    if callable(target):
        if _is_async_callable(target):
            return ON_LOOP, target
        # A generator function is callable, but a call to it runs none of
        # its body: a plain one would fail in the worker as an "awaitable",
        # an async one would "succeed" with an unstarted generator. (Checked
        # here, after the coroutine test: a coroutine function is never one.)
        generator = _generator_function(target)
        if generator is not None:
            kind, function = generator
            raise TypeError(
                f"submit() got the {kind} function {name_of(function)}: {_ONE_RESULT[kind]}"
            )
        return IN_THREAD, target
    raise TypeError(
        f"submit() takes a Job (an object with a process() method), a coroutine "
        f"function or a callable with its arguments, or a coroutine object; "
        f"got {_describe(target)}"
    )
