"""Property tests: under any sequence of submits, cancels and releases, the books balance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncpool
from asyncpool import JobState
from asyncpool._testing import internals
from tests._jobs import Gate, check_stats

KINDS = ("ok", "fail", "gate", "self_cancel", "sync")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(KINDS)),
        st.tuples(st.just("submit_nowait"), st.sampled_from(KINDS)),
        st.tuples(st.just("cancel"), st.integers(0, 40)),
        st.tuples(st.just("release"), st.integers(0, 40)),
        st.tuples(st.just("step"), st.integers(1, 3)),
    ),
    max_size=40,
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


async def _ok() -> str:
    await asyncio.sleep(0)
    return "ok"


async def _fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("planned")


async def _self_cancel() -> None:
    raise asyncio.CancelledError


def _sync() -> int:
    return 7


async def _scenario(
    ops: list[tuple[str, object]], workers: int, queue_size: int, cancel_at_close: bool
) -> None:
    reported: list[asyncpool.JobHandle[object]] = []
    handles: list[asyncpool.JobHandle[object]] = []
    gates: list[Gate] = []
    before = asyncio.all_tasks()
    d = asyncpool.Dispatcher(
        workers, queue_size=queue_size, on_error=lambda h, e: reported.append(h)
    )
    await d.start()
    for op, arg in ops:
        if op in ("submit", "submit_nowait"):
            target: object
            if arg == "gate":
                gate = Gate()
                gates.append(gate)
                target = gate
            else:
                target = {"ok": _ok, "fail": _fail, "self_cancel": _self_cancel, "sync": _sync}[
                    str(arg)
                ]
            if op == "submit_nowait":
                try:
                    handles.append(d.submit_nowait(target))
                except asyncpool.QueueFull:
                    # Full: every place is taken, promised, or waited for.
                    assert queue_size
                    seen = internals(d)
                    assert (
                        seen.backlog + seen.reserved_places >= queue_size or seen.waiting_submitters
                    )
            else:
                submitting = asyncio.create_task(d.submit(target))
                await asyncio.sleep(0)
                if not submitting.done():
                    # Waiting for room (perhaps for ever, if every worker is
                    # stuck on a gate): give up, which must leak no place.
                    submitting.cancel()
                try:
                    handles.append(await submitting)
                except asyncio.CancelledError:
                    assert queue_size
        elif op == "cancel" and handles:
            handles[int(str(arg)) % len(handles)].cancel()
        elif op == "release" and gates:
            gates[int(str(arg)) % len(gates)].release()
        elif op == "step":
            for _ in range(int(str(arg))):
                await asyncio.sleep(0)
        check_stats(d)
    if cancel_at_close:
        await d.close(cancel=True)
    else:
        for gate in gates:
            gate.release()
        await d.close()
    stats = check_stats(d)
    assert all(h.state.is_final for h in handles)
    assert stats.submitted == len(handles)
    assert (stats.queued, stats.busy) == (0, 0)
    counted = {state: sum(h.state is state for h in handles) for state in JobState}
    assert (stats.succeeded, stats.failed, stats.cancelled) == (
        counted[JobState.SUCCEEDED],
        counted[JobState.FAILED],
        counted[JobState.CANCELLED],
    )
    # Nobody awaited these handles, so every failure reached on_error, once.
    assert sorted(h.id for h in reported) == sorted(
        h.id for h in handles if h.state is JobState.FAILED
    )
    assert asyncio.all_tasks() - before == {asyncio.current_task()} - before


@pytest.mark.parametrize("loop", sorted(LOOPS))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=operations,
    workers=st.integers(1, 4),
    queue_size=st.integers(0, 4),
    cancel_at_close=st.booleans(),
)
def test_invariants_books_balance_under_churn(
    loop: str,
    ops: list[tuple[str, object]],
    workers: int,
    queue_size: int,
    cancel_at_close: bool,
) -> None:
    """Stats add up at every step; after close every job is final, counted once, nothing runs."""
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(_scenario(ops, workers, queue_size, cancel_at_close))
