"""The task registry (asyncpool._tasks): names, defaults, and rebuilding Job objects."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from asyncpool import Retry
from asyncpool._tasks import (
    JobClass,
    Task,
    TaskRegistry,
    UnknownTask,
    check_defaults,
    job_arguments,
)


async def add(x: int, y: int) -> int:
    return x + y


def mul(x: int, y: int) -> int:
    return x * y


# mypy cannot infer P and T of Task(fn) from the union in Task.__init__; spell them out.
AddTask = Task[[int, int], int]


@dataclasses.dataclass
class Resize:
    path: str
    width: int = 100
    cache: dict[str, int] = dataclasses.field(default_factory=dict, init=False)

    async def process(self) -> int:
        return self.width


class Plain:
    def __init__(self, path: str, width: int = 100) -> None:
        self.path = path
        self.width = width

    def process(self) -> int:
        return self.width


class Slotted:
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self) -> str:
        return self.path


class Cached:
    def __init__(self, path: str) -> None:
        self.path = path
        self._size: int | None = None

    def process(self) -> str:
        return self.path


class Forgetful:
    """Its __init__ takes a parameter it does not keep: its attributes cannot rebuild it."""

    def __init__(self, path: str, mode: str) -> None:
        self.path = path

    def process(self) -> str:
        return self.path


def test_task_records_name_defaults_and_kind() -> None:
    """A Task keeps its name, its defaults, and whether its function is async."""
    retry = Retry(attempts=2)
    task = AddTask(add, name="app.add", timeout=3, retry=retry, priority=2, key="k", max_deliver=4)
    assert (task.name, task.fn, task.timeout, task.retry) == ("app.add", add, 3, retry)
    assert (task.priority, task.key, task.max_deliver) == (2, "k", 4)
    assert task.is_async is True
    assert Task(mul, name="app.mul").is_async is False
    assert repr(task) == "<Task 'app.add'>"


async def test_task_call_runs_the_function_here() -> None:
    """Calling a Task calls its function in this process, as if it were not registered."""
    assert await AddTask(add, name="add")(2, 3) == 5
    assert Task(mul, name="mul")(2, 3) == 6


def test_task_key_for_a_fixed_key_or_a_function_of_the_arguments() -> None:
    """key_for gives the fixed key, or calls the key function with the job's arguments."""
    assert AddTask(add, name="a").key_for((1, 2), {}) is None
    assert AddTask(add, name="a", key="shared").key_for((1, 2), {}) == "shared"
    by_user = AddTask(add, name="a", key=lambda x, y: f"user-{x}")
    assert by_user.key_for((7,), {"y": 2}) == "user-7"


def test_task_key_for_refuses_a_key_function_returning_another_type() -> None:
    """A key function returning something other than a str or int is a TypeError."""
    task = AddTask(add, name="a", key=lambda x, y: (x, y))
    with pytest.raises(TypeError, match="key of a remote job must be a str or an int"):
        task.key_for((1, 2), {})


def test_registry_names_and_lookups() -> None:
    """A registry finds tasks by name and Job classes by class; names() is sorted."""
    registry = TaskRegistry()
    task = AddTask(add, name="z.add")
    job = JobClass(Resize, "a.resize")
    registry.add(task)
    registry.add(job)
    assert registry.named("z.add") is task
    assert registry.named("a.resize") is job
    assert registry.of_class(Resize) is job
    assert registry.of_class(Plain) is None
    assert registry.names() == ["a.resize", "z.add"]
    assert len(registry) == 2


def test_registry_of_class_ignores_functions() -> None:
    """of_class answers only for Job classes, not for a function registered as a task."""
    registry = TaskRegistry()
    registry.add(AddTask(add, name="add"))
    assert registry.of_class(add) is None  # type: ignore[arg-type]


def test_registry_refuses_a_name_taken_by_another_function() -> None:
    """Two different functions (or classes) under one name: ValueError naming both the name."""
    registry = TaskRegistry()
    registry.add(AddTask(add, name="same"))
    with pytest.raises(ValueError, match="task name 'same' is already registered for") as caught:
        registry.add(Task(mul, name="same"))
    assert "@broker.task(name=...)" in str(caught.value)
    with pytest.raises(ValueError, match="already registered"):
        registry.add(JobClass(Resize, "same"))
    assert registry.named("same").fn is add  # type: ignore[union-attr]


def test_registry_takes_the_same_function_again() -> None:
    """Registering the same function (or class) under its name again is fine (a re-import)."""
    registry = TaskRegistry()
    first = AddTask(add, name="add")
    assert registry.add(first) is first
    again = AddTask(add, name="add")
    assert registry.add(again) is first
    registry.add(JobClass(Resize, "resize"))
    registry.add(JobClass(Resize, "resize"))
    assert registry.named("add") is first
    assert len(registry) == 2


def test_registry_unknown_name_raises_unknown_task() -> None:
    """An unregistered name raises UnknownTask (a LookupError) naming it."""
    registry = TaskRegistry()
    with pytest.raises(UnknownTask, match="no task is registered under the name 'nope'"):
        registry.named("nope")
    assert issubclass(UnknownTask, LookupError)


def test_check_defaults_accepts_good_defaults() -> None:
    """Good task defaults, a key function included, pass the check."""
    check_defaults(name="app.add", timeout=1.5, retry=Retry(), priority=-1, key="k", max_deliver=3)
    check_defaults(name=None, timeout=None, retry=None, priority=0, key=len, max_deliver=None)
    check_defaults(name="n", timeout=None, retry=None, priority=0, key=7, max_deliver=1)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ({"name": ""}, ValueError, "task name must be a non-empty str"),
        ({"name": "x" * 201}, ValueError, "task name must be a non-empty str"),
        ({"name": 7}, ValueError, "task name must be a non-empty str"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"retry": 3}, TypeError, "retry must be an asyncpool.Retry"),
        ({"priority": True}, TypeError, "priority must be an int"),
        ({"priority": 1.0}, TypeError, "priority must be an int"),
        ({"key": 1.5}, TypeError, "key of a remote job must be a str or an int"),
        ({"key": True}, TypeError, "key of a remote job must be a str or an int"),
        ({"max_deliver": 0}, ValueError, "max_deliver must be an int >= 1"),
        ({"max_deliver": True}, ValueError, "max_deliver must be an int >= 1"),
        ({"max_deliver": 2.0}, ValueError, "max_deliver must be an int >= 1"),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_check_defaults_refuses_bad_defaults(
    bad: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each wrong task default raises, naming the argument."""
    defaults: dict[str, Any] = {
        "name": None,
        "timeout": None,
        "retry": None,
        "priority": 0,
        "key": None,
        "max_deliver": None,
    }
    defaults.update(bad)
    with pytest.raises(error, match=message):
        check_defaults(**defaults)


def test_job_arguments_of_a_dataclass_are_its_init_fields() -> None:
    """A dataclass travels as its init fields (a field with init=False stays behind)."""
    job = Resize("a.png", width=30)
    job.cache["x"] = 1
    assert job_arguments(job) == {"path": "a.png", "width": 30}
    assert Resize(**job_arguments(job)) == Resize("a.png", 30)


def test_job_arguments_of_a_plain_class_are_its_attributes() -> None:
    """A plain object whose attributes are its __init__ parameters travels as them."""
    job = Plain("b.png", width=5)
    arguments = job_arguments(job)
    assert arguments == {"path": "b.png", "width": 5}
    assert vars(Plain(**arguments)) == vars(job)


@pytest.mark.parametrize(
    "job",
    [Slotted("a"), Cached("a"), object(), 5],
    ids=["slots", "private-attribute", "object", "int"],
)
def test_job_arguments_refuses_objects_that_cannot_be_rebuilt(job: object) -> None:
    """An object without __dict__, or with an attribute __init__ does not take, is a TypeError."""
    with pytest.raises(TypeError, match="job cannot travel to a worker: make it a dataclass"):
        job_arguments(job)


def test_job_arguments_refuses_an_object_missing_an_init_parameter() -> None:
    """An object whose attributes lack a required __init__ parameter cannot be rebuilt: TypeError.

    (Its attributes are a subset of the parameters, but `cls(**them)` fails on the worker.)
    """
    with pytest.raises(TypeError, match="job cannot travel to a worker"):
        job_arguments(Forgetful("a.png", "r"))
