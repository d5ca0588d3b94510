"""Remote handles, current_job(), and errors as records (asyncpool._remote), without a broker."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from asyncpool import JobState
from asyncpool._envelope import Outcome
from asyncpool._errors import AsyncPoolError, RemoteJobError
from asyncpool._remote import (
    ErrorTypes,
    JobInfo,
    RemoteHandle,
    current_job,
    error_record,
    set_current_job,
)


class QuotaExceeded(Exception):
    """A job's own error, safe to rebuild from plain arguments."""

    def __init__(self, user: str, limit: int) -> None:
        super().__init__(user, limit)
        self.user = user
        self.limit = limit


class FakeSource:
    """What a handle asks of its broker, recorded: attach, cancel, rebuild errors."""

    def __init__(self, *, awaiters: int = 1) -> None:
        self.attached: list[str] = []
        self.cancelled: list[str] = []
        self.cancel_answer = True
        self.errors = ErrorTypes()
        self._awaiters = awaiters
        self.all_attached = asyncio.Event()

    async def _cancel_remote(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return self.cancel_answer

    async def _attach(self, job_id: str) -> None:
        self.attached.append(job_id)
        if len(self.attached) >= self._awaiters:
            self.all_attached.set()

    def _rebuild_error(self, job_id: str, outcome: Outcome) -> BaseException:
        return self.errors.rebuild(job_id, outcome)


def pending_handle(source: FakeSource) -> tuple[RemoteHandle[Any], asyncio.Future[Outcome]]:
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    return RemoteHandle("abc.1", source, future), future


def failure(exc: BaseException, attempts: int = 3, state: str = "failed") -> Outcome:
    return Outcome(state, error=error_record(exc), attempts=attempts)  # type: ignore[arg-type]


def raised(exc: BaseException) -> BaseException:
    """`exc`, after being raised and caught (so it has a traceback)."""
    try:
        raise exc
    except BaseException as caught:
        return caught


# -- RemoteHandle ------------------------------------------------------


async def test_remote_handle_before_its_end_is_queued_with_no_result() -> None:
    """Until its record arrives a handle is QUEUED, 0 attempts, not done, and has no result."""
    handle, _ = pending_handle(FakeSource())
    assert handle.id == "abc.1"
    assert handle.state is JobState.QUEUED
    assert handle.attempts == 0
    assert not handle.done()
    assert handle.outcome is None
    with pytest.raises(asyncio.InvalidStateError, match=r"remote job abc\.1 has not finished"):
        handle.result()
    assert repr(handle) == "<RemoteHandle abc.1 queued>"


async def test_remote_handle_after_success_gives_state_attempts_and_result() -> None:
    """A succeeded record makes the handle SUCCEEDED, with its attempts and its value."""
    handle, future = pending_handle(FakeSource())
    outcome = Outcome("succeeded", value=[1, 2], attempts=2)
    future.set_result(outcome)
    assert handle.state is JobState.SUCCEEDED
    assert handle.attempts == 2
    assert handle.done()
    assert handle.outcome is outcome
    assert handle.result() == [1, 2]
    assert repr(handle) == "<RemoteHandle abc.1 succeeded>"


async def test_remote_handle_await_attaches_then_gives_the_result() -> None:
    """Awaiting asks the source to attach, then returns the value once the record arrives."""
    source = FakeSource()
    handle, future = pending_handle(source)
    waiter = asyncio.create_task(_await(handle))
    await source.all_attached.wait()
    assert not waiter.done()
    future.set_result(Outcome("succeeded", value="done", attempts=1))
    assert await waiter == "done"
    assert source.attached == ["abc.1"]


async def _await(handle: RemoteHandle[Any]) -> Any:
    return await handle


async def test_remote_handle_can_be_awaited_twice() -> None:
    """A finished handle gives the same result to every await, and to result()."""
    handle, future = pending_handle(FakeSource())
    future.set_result(Outcome("succeeded", value={"n": 1}, attempts=1))
    assert await handle == {"n": 1}
    assert await handle == {"n": 1}
    assert handle.result() == {"n": 1}


async def test_remote_handle_failed_raises_remote_job_error_each_time() -> None:
    """A failed record makes the handle FAILED, and await/result() raise RemoteJobError."""
    handle, future = pending_handle(FakeSource())
    future.set_result(failure(raised(ValueError("bad input")), attempts=3))
    assert handle.state is JobState.FAILED
    assert handle.attempts == 3
    for _ in range(2):
        with pytest.raises(RemoteJobError, match=r"builtins\.ValueError: bad input") as caught:
            await handle
        assert caught.value.attempts == 3
    with pytest.raises(RemoteJobError):
        handle.result()


async def test_remote_handle_dead_job_is_failed_with_state_dead() -> None:
    """A dead record (refused job) shows as FAILED; its error says state 'dead'."""
    handle, future = pending_handle(FakeSource())
    error = {"type": "UnknownTask", "message": "no task 'x'", "traceback": ""}
    future.set_result(Outcome("dead", error=error, attempts=1))
    assert handle.state is JobState.FAILED
    with pytest.raises(RemoteJobError) as caught:
        handle.result()
    assert (caught.value.type_name, caught.value.state) == ("UnknownTask", "dead")


async def test_remote_handle_cancelled_record_raises_cancelled_error() -> None:
    """A cancelled record makes the handle CANCELLED, and awaiting it raises CancelledError."""
    handle, future = pending_handle(FakeSource())
    future.set_result(Outcome("cancelled"))
    assert handle.state is JobState.CANCELLED
    with pytest.raises(asyncio.CancelledError, match=r"remote job abc\.1 was cancelled"):
        handle.result()
    with pytest.raises(asyncio.CancelledError):
        await handle


async def test_remote_handle_cancel_asks_its_source_while_pending() -> None:
    """cancel() on an unfinished handle asks the broker, and returns its answer."""
    source = FakeSource()
    handle, _ = pending_handle(source)
    assert await handle.cancel() is True
    source.cancel_answer = False
    assert await handle.cancel() is False
    assert source.cancelled == ["abc.1", "abc.1"]


async def test_remote_handle_cancel_after_the_end_asks_nobody() -> None:
    """cancel() on a finished handle answers from its record: True only if it was cancelled."""
    for state, expected in (("succeeded", False), ("failed", False), ("cancelled", True)):
        source = FakeSource()
        handle, future = pending_handle(source)
        future.set_result(Outcome(state))  # type: ignore[arg-type]
        assert await handle.cancel() is expected
        assert source.cancelled == []


async def test_remote_handle_one_awaiter_cancelled_leaves_the_other_waiting() -> None:
    """Cancelling one awaiter does not cancel the shared wait: the other still gets the result."""
    source = FakeSource(awaiters=2)
    handle, future = pending_handle(source)
    first = asyncio.create_task(_await(handle))
    second = asyncio.create_task(_await(handle))
    await source.all_attached.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not future.cancelled()
    assert not second.done()
    future.set_result(Outcome("succeeded", value=42, attempts=1))
    assert await second == 42


async def test_remote_handle_wait_for_timeout_leaves_the_handle_usable() -> None:
    """A wait_for that gives up on a handle does not cancel the handle's record future."""
    source = FakeSource()
    handle, future = pending_handle(source)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_await(handle), timeout=0)
    assert not future.done()
    future.set_result(Outcome("succeeded", value=1, attempts=1))
    assert await handle == 1


# -- current_job -------------------------------------------------------


def test_current_job_outside_a_job_raises_lookup_error() -> None:
    """current_job() outside a job a broker delivered raises LookupError."""
    with pytest.raises(LookupError, match="only known inside a job a broker delivered"):
        current_job()


def test_current_job_inside_a_job_gives_its_info() -> None:
    """Inside the context a job runs in, current_job() is its JobInfo."""
    info = JobInfo(id="abc.1", task="app.add", attempt=2, max_deliver=5)

    def job() -> JobInfo:
        set_current_job(info)
        return current_job()

    assert contextvars.copy_context().run(job) is info
    with pytest.raises(LookupError):
        current_job()


async def test_current_job_does_not_leak_out_of_the_job_task() -> None:
    """A job's info set in its own task is not seen by the code that started it."""

    async def job() -> int:
        set_current_job(JobInfo("abc.2", "t", 1, 3))
        return current_job().attempt

    assert await asyncio.create_task(job()) == 1
    with pytest.raises(LookupError):
        current_job()


# -- error records -----------------------------------------------------


def test_error_record_holds_type_message_traceback_and_plain_args() -> None:
    """A record names the qualified type, str(exc), the traceback text, and the plain args."""
    record = error_record(raised(QuotaExceeded("user-7", 10)))
    assert record["type"] == "tests.test_remote.QuotaExceeded"
    assert record["message"] == "('user-7', 10)"
    assert record["args"] == ["user-7", 10]
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert "in raised" in record["traceback"]
    assert record["traceback"].rstrip().endswith("QuotaExceeded: ('user-7', 10)")


def test_error_record_of_an_exception_never_raised_has_just_its_line() -> None:
    """An exception without a traceback still records its type line."""
    record = error_record(ValueError("bad"))
    assert record["type"] == "builtins.ValueError"
    assert record["traceback"] == "ValueError: bad\n"
    assert record["args"] == ["bad"]


@pytest.mark.parametrize(
    "exc",
    [ValueError(object()), ValueError("ok", [1]), KeyError(("a", "b"))],
    ids=["object", "list", "tuple"],
)
def test_error_record_leaves_args_out_unless_all_are_plain(exc: Exception) -> None:
    """args is None when any argument is not a str, int, float, bool or None."""
    assert error_record(exc)["args"] is None


def test_error_record_leaves_args_out_when_asked() -> None:
    """codec_safe_args=False leaves even plain args out."""
    assert error_record(ValueError("bad"), codec_safe_args=False)["args"] is None
    assert error_record(ValueError())["args"] == []


def test_error_types_rebuild_unregistered_gives_remote_job_error() -> None:
    """An unregistered type comes back as RemoteJobError with every fact of the failure."""
    outcome = failure(raised(QuotaExceeded("user-7", 10)), attempts=4)
    error = ErrorTypes().rebuild("abc.9", outcome)
    assert isinstance(error, RemoteJobError)
    assert isinstance(error, AsyncPoolError)
    assert error.job_id == "abc.9"
    assert error.type_name == "tests.test_remote.QuotaExceeded"
    assert error.message == "('user-7', 10)"
    assert error.attempts == 4
    assert error.state == "failed"
    assert "QuotaExceeded" in error.traceback
    assert str(error) == (
        "tests.test_remote.QuotaExceeded: ('user-7', 10) (remote job abc.9, 4 attempt(s))"
    )


def test_error_types_rebuild_registered_class_with_remote_cause() -> None:
    """A registered type is rebuilt as cls(*args); its __cause__ is the RemoteJobError."""
    types = ErrorTypes()
    types.add(QuotaExceeded)
    error = types.rebuild("abc.9", failure(raised(QuotaExceeded("user-7", 10)), attempts=2))
    assert type(error) is QuotaExceeded
    assert (error.user, error.limit) == ("user-7", 10)
    cause = error.__cause__
    assert isinstance(cause, RemoteJobError)
    assert (cause.job_id, cause.attempts) == ("abc.9", 2)
    notes = getattr(cause, "__notes__", [])
    assert len(notes) == 1
    assert notes[0].startswith("Remote traceback (job abc.9):\nTraceback (most recent call last)")


def test_error_types_rebuild_falls_back_when_args_do_not_rebuild() -> None:
    """A registered type without plain args, or whose constructor refuses them: RemoteJobError."""
    types = ErrorTypes()
    types.add(QuotaExceeded)
    no_args = failure(QuotaExceeded("user-7", object()))  # type: ignore[arg-type]
    assert isinstance(types.rebuild("j", no_args), RemoteJobError)
    wrong_args = Outcome(
        "failed",
        error={"type": "tests.test_remote.QuotaExceeded", "message": "", "args": ["only one"]},
    )
    assert isinstance(types.rebuild("j", wrong_args), RemoteJobError)


def test_error_types_rebuild_without_error_record() -> None:
    """A failed record with no error still rebuilds a RemoteJobError, with no traceback note."""
    error = ErrorTypes().rebuild("j", Outcome("failed", attempts=1))
    assert isinstance(error, RemoteJobError)
    assert (error.type_name, error.message, error.traceback) == ("Error", "", "")
    assert not hasattr(error, "__notes__")


@pytest.mark.parametrize(
    "cls", [int, KeyboardInterrupt, ValueError("an instance"), "ValueError"], ids=repr
)
def test_error_types_add_refuses_what_is_no_exception_class(cls: Any) -> None:
    """Only Exception subclasses can be registered (not BaseException-only ones, nor instances)."""
    with pytest.raises(TypeError, match="register_error\\(\\) takes an Exception subclass"):
        ErrorTypes().add(cls)
