"""Submit's fast paths decide as classify() would.

`Dispatcher.submit` and `submit_nowait` skip the general classification for
the last plain coroutine function submitted, and for Jobs of a class whose
`process()` is an async method. These tests pin what must not change: a
remembered function or class is refused once the dispatcher stops
accepting, a non-callable is still refused, options still reach the job,
and a `process` that is no longer the remembered async method is run the
way it now asks to be (in a thread, or as the new function).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import types
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from asyncpool import Dispatcher, DispatcherClosed, JobHandle, JobTimeout, Retry
from asyncpool._testing import internals
from tests._jobs import Gate, check_stats

# The most job classes a dispatcher remembers: it forgets them all when it would
# remember more (a private limit of asyncpool, 64; internals().remembered_job_classes).
_MAX_JOB_CLASSES = 64


async def double(x: int) -> int:
    return 2 * x


async def scale(x: int, factor: int = 1) -> int:
    return x * factor


class Square:
    """A Job with an async process(); no __slots__, so an instance can override it."""

    def __init__(self, x: int) -> None:
        self.x = x

    async def process(self) -> int:
        return self.x * self.x


class Negate:
    """Another Job class, for jobs that alternate between classes."""

    def __init__(self, x: int) -> None:
        self.x = x

    async def process(self) -> int:
        return -self.x


def numbered_job_class(n: int) -> type[Any]:
    """A new Job class on each call (as code that makes classes on the fly does)."""

    class Numbered:
        async def process(self) -> int:
            return n

    return Numbered


async def submit_with(
    d: Dispatcher, nowait: bool, target: Any, /, *args: Any, **kwargs: Any
) -> JobHandle[Any]:
    if nowait:
        return d.submit_nowait(target, *args, **kwargs)
    return await d.submit(target, *args, **kwargs)


async def remember(d: Dispatcher) -> None:
    """Submit `double` and a `Square` and a `Gate` twice each, so the fast paths are on."""
    for _ in range(2):
        assert await (await d.submit(double, 4)) == 8
        assert await (await d.submit(Square(3))) == 9
        gate = Gate(value="gate")
        gate.release()
        assert await (await d.submit(gate)) == "gate"


async def refuses_remembered(d: Dispatcher, nowait: bool) -> None:
    """A remembered function, Job class and a coroutine object are all refused; none runs."""
    submitted = d.stats().submitted
    with pytest.raises(DispatcherClosed):
        await submit_with(d, nowait, double, 1)
    with pytest.raises(DispatcherClosed):
        await submit_with(d, nowait, Square(2))
    with pytest.raises(DispatcherClosed):
        await submit_with(d, nowait, Gate())
    coro = double(3)
    with pytest.raises(DispatcherClosed):
        await submit_with(d, nowait, coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # not left un-awaited
    assert d.stats().submitted == submitted


nowait_param = pytest.mark.parametrize("nowait", [False, True], ids=["submit", "submit_nowait"])


@nowait_param
async def test_remembered_function_and_job_class_are_refused_after_close(nowait: bool) -> None:
    """After close(), a remembered function or Job class raises DispatcherClosed."""
    d = Dispatcher(workers=2)
    await d.start()
    await remember(d)
    await d.close()
    await refuses_remembered(d, nowait)


@nowait_param
async def test_remembered_function_and_job_class_are_refused_while_closing(nowait: bool) -> None:
    """Once close() has begun, a remembered function or Job class raises DispatcherClosed."""
    d = Dispatcher(workers=2)
    await d.start()
    await remember(d)
    gate = Gate()
    running = await d.submit(gate)
    await gate.started.wait()
    closing = asyncio.create_task(d.close())
    # One turn of the loop, not a timed wait: the task's first step (close()
    # up to its first await, which stops accepting) runs before we resume.
    await asyncio.sleep(0)
    assert not d.running
    assert not d.closed
    await refuses_remembered(d, nowait)
    gate.release()
    await closing
    assert running.result() is None


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_remembered_function_and_job_class_are_refused_after_teardown(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """Torn down without close() (asyncio.run cancels every task), the fast paths are off."""

    async def start() -> Dispatcher:
        d = Dispatcher(workers=2)
        await d.start()
        await remember(d)
        return d

    loop = new_loop()
    try:
        d = loop.run_until_complete(start())
        # What asyncio.run does with the tasks left when its main coroutine returns.
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        assert d.closed
        for nowait in (False, True):
            loop.run_until_complete(refuses_remembered(d, nowait))
        check_stats(d)
    finally:
        loop.close()


@nowait_param
@pytest.mark.parametrize("bad", [None, 42, "text", object()], ids=["None", "int", "str", "object"])
async def test_non_callable_is_refused_whatever_was_remembered(nowait: bool, bad: object) -> None:
    """A non-callable raises TypeError, before and after a function was remembered."""
    d = Dispatcher(workers=2)
    await d.start()
    with pytest.raises(TypeError):
        await submit_with(d, nowait, bad)
    await remember(d)
    with pytest.raises(TypeError):
        await submit_with(d, nowait, bad)
    await d.close()
    with pytest.raises((TypeError, DispatcherClosed)):
        await submit_with(d, nowait, bad)
    assert d.stats().submitted == 6  # only remember()'s jobs


@nowait_param
async def test_remembered_function_still_gets_keyword_arguments_and_options(nowait: bool) -> None:
    """Keyword arguments and per-job options reach a function submitted before without them."""
    retry = Retry(attempts=2)
    async with Dispatcher(workers=2) as d:
        for _ in range(2):
            plain = await submit_with(d, nowait, scale, 3)
            assert plain.options == {}
            assert await plain == 3
        with_kwargs = await submit_with(d, nowait, scale, 3, factor=5)
        assert with_kwargs.options == {}
        with_options = await submit_with(
            d, nowait, scale, 3, timeout=30, priority=2, key="k", retry=retry
        )
        assert with_options.options == {"timeout": 30, "priority": 2, "key": "k", "retry": retry}
        with_both = await submit_with(d, nowait, scale, 3, factor=7, timeout=30)
        assert with_both.options == {"timeout": 30}
        again = await submit_with(d, nowait, scale, 3)
        assert again.options == {}
        assert await with_kwargs == 15
        assert await with_options == 3
        assert await with_both == 21
        assert await again == 3


@nowait_param
async def test_remembered_job_class_still_gets_options(nowait: bool) -> None:
    """Per-job options reach a Job of a remembered class; arguments with a Job are refused."""
    async with Dispatcher(workers=2) as d:
        for _ in range(2):
            plain = await submit_with(d, nowait, Square(2))
            assert plain.options == {}
            assert await plain == 4
        with_options = await submit_with(d, nowait, Square(3), timeout=30, priority=1, key="k")
        assert with_options.options == {"timeout": 30, "priority": 1, "key": "k"}
        assert await with_options == 9
        with pytest.raises(TypeError, match="extra arguments"):
            await submit_with(d, nowait, Square(3), 1)
        assert d.stats().submitted == 3


@nowait_param
@pytest.mark.parametrize(
    "defaults",
    [{"timeout": 30.0}, {"retry": Retry(attempts=2)}],
    ids=["timeout", "retry"],
)
async def test_dispatcher_defaults_apply_to_every_repeated_submit(
    nowait: bool, defaults: dict[str, Any]
) -> None:
    """With a default timeout or retry, the same function or Job class gets it every time."""
    async with Dispatcher(workers=2, **defaults) as d:
        handles: list[JobHandle[int]] = []
        for i in range(4):
            handles.append(await submit_with(d, nowait, double, i))
            handles.append(await submit_with(d, nowait, Square(i)))
            handles.append(await submit_with(d, nowait, Negate(i)))
            await asyncio.gather(*handles[-3:])
        assert [h.options for h in handles] == [defaults] * len(handles)
        assert [h.result() for h in handles] == [v for i in range(4) for v in (2 * i, i * i, -i)]


@nowait_param
async def test_instance_overriding_process_with_a_sync_function_runs_in_a_thread(
    nowait: bool,
) -> None:
    """A Job of a remembered class whose instance has a sync `process` runs it in a thread."""
    loop_thread = threading.current_thread()
    async with Dispatcher(workers=2) as d:
        for _ in range(2):
            assert await (await submit_with(d, nowait, Square(2))) == 4
        job = Square(3)

        def in_thread() -> tuple[threading.Thread, int]:
            return threading.current_thread(), 30

        vars(job)["process"] = in_thread
        thread, value = await (await submit_with(d, nowait, job))
        assert value == 30
        assert thread is not loop_thread
        # The class is still remembered for its other instances.
        assert await (await submit_with(d, nowait, Square(5))) == 25


@nowait_param
async def test_instance_overriding_process_with_another_async_function_runs_it(
    nowait: bool,
) -> None:
    """A Job of a remembered class whose instance has another async `process` runs that one."""

    async def other() -> str:
        return "other"

    async with Dispatcher(workers=2) as d:
        for _ in range(2):
            assert await (await submit_with(d, nowait, Square(2))) == 4
        job = Square(3)
        vars(job)["process"] = other
        assert await (await submit_with(d, nowait, job)) == "other"
        job = Square(3)
        vars(job)["process"] = Negate(4).process  # another class's method
        assert await (await submit_with(d, nowait, job)) == -4
        job = Square(3)
        vars(job)["process"] = Square(6).process  # the same method, bound to another Job
        assert await (await submit_with(d, nowait, job)) == 36


@nowait_param
async def test_alternating_job_classes_give_their_own_results(nowait: bool) -> None:
    """Jobs of two remembered classes, alternating, each run their own class's process()."""
    async with Dispatcher(workers=4) as d:
        handles = [
            await submit_with(d, nowait, Square(i) if i % 2 else Negate(i)) for i in range(200)
        ]
        results = await asyncio.gather(*handles)
    assert results == [i * i if i % 2 else -i for i in range(200)]


@nowait_param
async def test_class_whose_process_changes_after_it_was_remembered_runs_the_new_one(
    nowait: bool,
) -> None:
    """A remembered class given a sync process() runs it in a thread; a new async one runs."""
    loop_thread = threading.current_thread()

    class Changing:
        async def process(self) -> object:
            return "async"

    def sync_process(self: Changing) -> object:
        return threading.current_thread()

    async def other_process(self: Changing) -> object:
        return "other"

    async with Dispatcher(workers=2) as d:
        for _ in range(2):
            assert await (await submit_with(d, nowait, Changing())) == "async"
        Changing.process = sync_process  # type: ignore[method-assign, assignment]
        for _ in range(2):
            thread = await (await submit_with(d, nowait, Changing()))
            assert isinstance(thread, threading.Thread)
            assert thread is not loop_thread
        Changing.process = other_process  # type: ignore[method-assign]
        for _ in range(2):
            assert await (await submit_with(d, nowait, Changing())) == "other"


@nowait_param
async def test_job_classes_made_on_the_fly_all_run_and_the_table_stays_bounded(
    nowait: bool,
) -> None:
    """A hundred Job classes each run their own process(); at most 64 are remembered."""
    classes = [numbered_job_class(n) for n in range(100)]
    async with Dispatcher(workers=4) as d:
        handles: list[JobHandle[int]] = []
        for cls in [*classes, *classes]:
            handles.append(await submit_with(d, nowait, cls()))
            assert internals(d).remembered_job_classes <= _MAX_JOB_CLASSES
        results = await asyncio.gather(*handles)
    assert results == [*range(100), *range(100)]


class Holder:
    """A Job only when its instance was given a `process` (an instance attribute)."""

    def __init__(self, job: bool) -> None:
        if job:
            self.process = self.run

    async def run(self) -> str:
        return "ran"


async def test_instance_of_a_remembered_class_without_process_is_a_type_error() -> None:
    """An object without `process` is refused with TypeError, even if its class was remembered."""
    async with Dispatcher(workers=1) as d:
        assert await (await d.submit(Holder(True))) == "ran"
        with pytest.raises(TypeError):
            await d.submit(Holder(False))


async def own_result() -> str:
    return "function"


async def process_result() -> str:
    return "process"


async def test_coroutine_function_with_a_process_attribute_is_called() -> None:
    """Whether a dispatcher has a default timeout does not change what a target runs."""
    vars(own_result)["process"] = process_result
    try:
        async with Dispatcher(workers=1) as plain, Dispatcher(workers=1, timeout=30) as timed:
            # A function is called, not taken for a Job because of its attribute.
            assert await (await plain.submit(own_result)) == "function"
            assert await (await timed.submit(own_result)) == "function"
    finally:
        del vars(own_result)["process"]


# ------------------------------------------------------------ the hot path's other shortcuts


async def test_lean_queue_is_an_asyncio_queue_that_skips_cancelled_getters() -> None:
    """LeanQueue (inboxes, idle-worker queue): put_nowait wakes the oldest live get()."""
    from asyncpool._core import LeanQueue  # private: no public behaviour shows it alone

    queue: LeanQueue[str] = LeanQueue()
    assert isinstance(queue, asyncio.Queue)
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # both wait in get()
    first.cancel()
    queue.put_nowait("item")  # the cancelled getter is skipped: the second one gets it
    assert await second == "item"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.empty()
    assert queue.qsize() == 0
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert [queue.get_nowait(), await queue.get()] == ["a", "b"]


async def slow_failure(seconds: float) -> None:
    await asyncio.sleep(seconds)
    raise ValueError("slow failure")


async def slow_success(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow"


@pytest.mark.usefixtures("fast_clock")
@pytest.mark.parametrize("first", [slow_failure, slow_success])
async def test_a_job_taken_right_after_another_starts_when_that_one_ended(
    first: Callable[[float], Any],
) -> None:
    """started_at of a job a busy worker takes at once is the end of its previous job.

    The worker reuses the clock reading of the previous job's end; after a
    failure it must read the clock again, not reuse the previous start.
    """
    loop = asyncio.get_running_loop()
    async with Dispatcher(workers=1) as d:
        before = await d.submit(first, 100.0)
        after = await d.submit(double, 1)
        await asyncio.wait([before])
        assert await after == 2
        assert before.finished_at is not None
        assert after.started_at is not None
        assert after.started_at >= before.finished_at >= loop.time() - 1
        assert after.queued_at <= after.started_at <= after.finished_at  # type: ignore[operator]
        if before.exception() is None:
            assert before.result() == "slow"


@nowait_param
async def test_a_remembered_job_class_keeps_the_job_not_a_bound_method(nowait: bool) -> None:
    """A Job of a known class is kept as itself: no bound method per job for the collector.

    What the handle shows is unchanged: `fn` is the Job's bound `process`,
    `args` is empty, the repr names the method, and `fn` submits it again.
    """
    async with Dispatcher(workers=2) as d:
        await remember(d)
        job = Square(7)
        gate = Gate()  # keeps both workers busy, so the handle is inspected before the job runs
        other = Gate()
        held = [await submit_with(d, nowait, g) for g in (gate, other)]
        await gate.started.wait()
        await other.started.wait()
        handle = await submit_with(d, nowait, job)
        referents = gc.get_referents(handle)
        assert job in referents
        assert not [r for r in referents if isinstance(r, types.MethodType)]
        assert handle.fn == job.process
        assert handle.args == ()
        assert handle.kwargs == {}
        assert "Square.process" in repr(handle)
        gate.release()
        other.release()
        assert await asyncio.wait_for(handle, 10) == 49
        await asyncio.gather(*held)
        again = await submit_with(d, nowait, handle.fn, *handle.args, **handle.kwargs)
        assert await asyncio.wait_for(again, 10) == 49
        check_stats(d)


async def test_a_remembered_job_class_with_a_timeout_still_times_out() -> None:
    """Options send a Job of a known class down the general path, where its timeout holds."""

    class Slow:
        async def process(self) -> None:
            await asyncio.sleep(3600)

    async with Dispatcher(workers=1) as d:
        for _ in range(2):
            d.submit_nowait(Slow()).cancel()
        handle = d.submit_nowait(Slow(), timeout=0.01)
        with pytest.raises(JobTimeout, match=r"Slow\.process"):
            await asyncio.wait_for(handle, 10)


async def test_repr_of_a_kept_job_looks_nothing_up_on_it() -> None:
    """A handle that keeps a Job names it by class: its repr works even if `process` now raises."""

    class Flaky:
        broken = False

        async def work(self) -> int:
            return 1

        @property
        def process(self) -> Callable[[], Any]:
            if self.broken:
                raise RuntimeError("process is broken")
            return self.work

    async with Dispatcher(workers=1) as d:
        for _ in range(2):
            assert await (await d.submit(Flaky())) == 1  # the class is remembered
        gate = Gate()
        held = d.submit_nowait(gate)
        await gate.started.wait()
        job = Flaky()
        handle = d.submit_nowait(job)  # waits in the queue behind the gate
        job.broken = True
        assert "Flaky.process" in repr(handle)
        gate.release()
        await held
        with pytest.raises(RuntimeError, match="process is broken"):
            await asyncio.wait_for(handle, 10)  # looked up when it starts: the job fails
        check_stats(d)
