"""The task registry: which code a worker may run for a name that arrives in a message.

A worker never imports what a message names. It runs only what the process
registered with `@broker.task`: async functions, sync functions (run in a
worker thread) and Job classes (objects with `process()`, such as
dataclasses), each under a stable name. An unknown name is a dead letter.

Each registered task may carry defaults for its jobs (`timeout`, `retry`,
`priority`, `key`, `max_deliver`); a job's own options at submit win.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, ParamSpec, TypeVar

from ._envelope import check_remote_key
from ._options import check_retry, check_timeout
from ._retry import Retry

__all__ = ("Task", "TaskRegistry", "UnknownTask", "job_arguments")

P = ParamSpec("P")
T = TypeVar("T")

KeyOption = str | int | Callable[..., Hashable] | None


class UnknownTask(LookupError):
    """A message names a task this process did not register (it becomes a dead letter)."""


class Task(Generic[P, T]):
    """A function registered with `@broker.task`: submit it with `broker.submit(task, ...)`.

    Calling the task calls the function itself, here, as if it were not
    registered: handy in tests.

    Attributes:
        name: The name messages carry.
        fn: The registered function.
        timeout, retry, priority, key, max_deliver: The task's defaults.
    """

    __slots__ = ("name", "fn", "timeout", "retry", "priority", "key", "max_deliver", "is_async")

    def __init__(
        self,
        fn: Callable[P, Awaitable[T]] | Callable[P, T],
        *,
        name: str,
        timeout: float | None = None,
        retry: Retry | None = None,
        priority: int = 0,
        key: KeyOption = None,
        max_deliver: int | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.timeout = timeout
        self.retry = retry
        self.priority = priority
        self.key = key
        self.max_deliver = max_deliver
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | int | None:
        """The task's default key for these arguments (its `key=` may be a function of them)."""
        key = self.key
        if callable(key):
            return check_remote_key(key(*args, **kwargs))
        return key

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"


@dataclasses.dataclass(frozen=True, slots=True)
class JobClass:
    """A Job class registered with `@broker.task`, and its defaults."""

    cls: type[Any]
    name: str
    timeout: float | None = None
    retry: Retry | None = None
    priority: int = 0
    key: KeyOption = None
    max_deliver: int | None = None


Registered = Task[Any, Any] | JobClass


def check_defaults(
    *,
    name: object,
    timeout: object,
    retry: object,
    priority: object,
    key: object,
    max_deliver: object,
) -> None:
    """Check `@broker.task(...)`'s arguments, naming the wrong one.

    Raises:
        TypeError, ValueError: an argument has a wrong type or value.
    """
    if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
        raise ValueError(
            f"task name must be a non-empty str of at most 200 characters, got {name!r}"
        )
    check_timeout(timeout)
    check_retry(retry)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if not callable(key):
        check_remote_key(key)
    if max_deliver is not None and (
        isinstance(max_deliver, bool) or not isinstance(max_deliver, int) or max_deliver < 1
    ):
        raise ValueError(f"max_deliver must be an int >= 1 or None, got {max_deliver!r}")


def job_arguments(job: object) -> dict[str, Any]:
    """The keyword arguments that rebuild a Job object on a worker: `cls(**them)`.

    Dataclasses give their init fields; other objects their `__dict__`,
    which must match their `__init__` parameters.

    Raises:
        TypeError: the object cannot be rebuilt from plain fields.
    """
    if dataclasses.is_dataclass(job) and not isinstance(job, type):
        return {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.init}
    fields = getattr(job, "__dict__", None)
    if fields is not None:
        params = inspect.signature(type(job)).parameters
        required = {
            name
            for name, p in params.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if required <= set(fields) <= set(params):
            return dict(fields)
    raise TypeError(
        f"a {type(job).__name__} job cannot travel to a worker: make it a dataclass, or "
        "give it an __init__ whose parameters are exactly its attributes"
    )


class TaskRegistry:
    """The names a worker may run, and what each runs."""

    __slots__ = ("_by_name", "_by_target")

    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}
        self._by_target: dict[object, Registered] = {}

    def add(self, entry: Registered) -> Registered:
        """Register `entry` under its name; return the registration that holds.

        Registering the same function or class again under the same name (a
        module imported twice) keeps the first registration.

        Raises:
            ValueError: another function or class already has that name.
        """
        target: object = entry.fn if isinstance(entry, Task) else entry.cls
        known = self._by_name.get(entry.name)
        if known is not None:
            known_target = known.fn if isinstance(known, Task) else known.cls
            if known_target is not target:
                raise ValueError(
                    f"task name {entry.name!r} is already registered for {known_target!r}; "
                    "give one of them another name with @broker.task(name=...)"
                )
            return known
        self._by_name[entry.name] = entry
        self._by_target[target] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        """Whether a task is registered as `name`."""
        return name in self._by_name

    def named(self, name: str) -> Registered:
        """The task registered as `name`.

        Raises:
            UnknownTask: nothing is registered under that name.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownTask(f"no task is registered under the name {name!r}") from None

    def of_class(self, cls: type[Any]) -> JobClass | None:
        """The registration of a Job class, if it has one."""
        entry = self._by_target.get(cls)
        return entry if isinstance(entry, JobClass) else None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
