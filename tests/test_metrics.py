"""asyncpool.metrics: `PrometheusMetrics`, read back from a fresh registry per test.

Real jobs run through a real dispatcher; the samples are read with
`registry.get_sample_value`. Durations are exact on the fast-forward clock.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asyncpool import Dispatcher, JobHandle, JobTimeout, QueueFull, Retry
from asyncpool._telemetry import BrokerEvent, Origin
from asyncpool.metrics import PrometheusMetrics
from tests._jobs import Flaky, Gate, check_stats, guarded

_STATS_COUNTERS = {
    "submitted": "asyncpool_jobs_submitted_total",
    "succeeded": "asyncpool_jobs_succeeded_total",
    "failed": "asyncpool_jobs_failed_total",
    "cancelled": "asyncpool_jobs_cancelled_total",
    "retried": "asyncpool_jobs_retried_total",
    "timed_out": "asyncpool_jobs_timed_out_total",
    "rejected": "asyncpool_jobs_rejected_total",
}
_STATS_GAUGES = {
    "queued": "asyncpool_jobs_queued",
    "busy": "asyncpool_jobs_busy",
    "idle": "asyncpool_workers_idle",
    "workers": "asyncpool_workers",
}


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own."""
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def stats_samples(registry: CollectorRegistry, dispatcher: str) -> dict[str, float | None]:
    """The stats-based samples of one dispatcher label, by `Stats` field."""
    return {
        field: sample(registry, name, dispatcher=dispatcher)
        for field, name in {**_STATS_COUNTERS, **_STATS_GAUGES}.items()
    }


def stats_of(d: Dispatcher) -> dict[str, float | None]:
    s = check_stats(d)
    return {field: float(getattr(s, field)) for field in {**_STATS_COUNTERS, **_STATS_GAUGES}}


async def succeed(x: int) -> int:
    return x


async def fail() -> None:
    raise ValueError("boom")


async def test_stats_metrics_equal_the_dispatchers_stats(registry: CollectorRegistry) -> None:
    """Every stats-based counter and gauge equals `stats()`, while running and after close."""
    metrics = PrometheusMetrics(registry=registry)
    busy, queued = Gate(), Gate()
    async with Dispatcher(
        workers=1, queue_size=1, name="jobs", instruments=[metrics], on_error=lambda h, e: None
    ) as d:
        assert await guarded(await d.submit(succeed, 1)) == 1
        await d.submit(fail)
        assert await guarded(await d.submit(Flaky(failures=1), retry=Retry(backoff=0))) == 2
        running = await d.submit(busy)
        await guarded(busy.started.wait())
        waiting = d.submit_nowait(queued)
        for _ in range(2):
            with pytest.raises(QueueFull):
                d.submit_nowait(succeed, 0)
        assert stats_samples(registry, "jobs") == stats_of(d)
        assert (
            sample(registry, "asyncpool_jobs_busy", dispatcher="jobs"),
            sample(registry, "asyncpool_jobs_queued", dispatcher="jobs"),
            sample(registry, "asyncpool_workers_idle", dispatcher="jobs"),
        ) == (1, 1, 0)
        running.cancel()
        queued.release()
        await guarded(waiting)
    final = stats_samples(registry, "jobs")
    assert final == stats_of(d)
    assert {k: final[k] for k in _STATS_COUNTERS} == {
        "submitted": 5,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 1,
        "retried": 1,
        "timed_out": 0,
        "rejected": 2,
    }


async def test_run_and_queue_wait_histograms_by_outcome(
    registry: CollectorRegistry, fast_clock: None
) -> None:
    """Each try is observed once: its queue wait, and its run time under its outcome."""
    metrics = PrometheusMetrics(registry=registry)
    never = asyncio.Event()
    cancelled = Gate()

    async def slow_success() -> str:
        await asyncio.sleep(2)
        return "done"

    async def slow_failure() -> None:
        await asyncio.sleep(1)
        raise ValueError("late")

    async with Dispatcher(workers=1, name="h", instruments=[metrics]) as d:
        # One worker: each job waits for those before it (0, 2, 3 and 6 s).
        handles: list[JobHandle[Any]] = [
            await d.submit(slow_success),
            await d.submit(slow_failure),
            await d.submit(never.wait, timeout=3),
            await d.submit(cancelled),
        ]
        await guarded(cancelled.started.wait())
        await asyncio.sleep(4)
        handles[3].cancel()
        outcomes = await asyncio.gather(*handles, return_exceptions=True)
    assert outcomes[0] == "done"
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], JobTimeout)
    assert isinstance(outcomes[3], asyncio.CancelledError)
    tasks = {
        "succeeded": "test_run_and_queue_wait_histograms_by_outcome.<locals>.slow_success",
        "failed": "test_run_and_queue_wait_histograms_by_outcome.<locals>.slow_failure",
        "timed_out": "Event.wait",
        "cancelled": "Gate.process",
    }
    run_times = {"succeeded": 2, "failed": 1, "timed_out": 3, "cancelled": 4}
    queue_waits = {"succeeded": 0, "failed": 2, "timed_out": 3, "cancelled": 6}
    for outcome, task in tasks.items():
        labels = {"dispatcher": "h", "task": task, "lane": ""}
        assert sample(registry, "asyncpool_job_run_seconds_count", **labels, outcome=outcome) == 1
        run_sum = sample(registry, "asyncpool_job_run_seconds_sum", **labels, outcome=outcome)
        assert run_sum == pytest.approx(run_times[outcome], abs=1e-3)
        assert sample(registry, "asyncpool_job_queue_wait_seconds_count", **labels) == 1
        wait_sum = sample(registry, "asyncpool_job_queue_wait_seconds_sum", **labels)
        assert wait_sum == pytest.approx(queue_waits[outcome], abs=1e-3)
    s = check_stats(d)
    assert (s.succeeded, s.failed, s.cancelled, s.timed_out) == (1, 2, 1, 1)


async def test_each_try_of_a_retried_job_is_observed(registry: CollectorRegistry) -> None:
    """A job that fails once then succeeds: two queue waits, one failed and one succeeded run."""
    metrics = PrometheusMetrics(registry=registry)
    async with Dispatcher(workers=2, name="r", instruments=[metrics]) as d:
        assert await guarded(await d.submit(Flaky(failures=1), retry=Retry(backoff=0))) == 2
    labels = {"dispatcher": "r", "task": "Flaky", "lane": ""}
    assert sample(registry, "asyncpool_job_queue_wait_seconds_count", **labels) == 2
    for outcome in ("failed", "succeeded"):
        assert sample(registry, "asyncpool_job_run_seconds_count", **labels, outcome=outcome) == 1
    assert sample(registry, "asyncpool_jobs_retried_total", dispatcher="r") == 1


async def test_instruments_on_one_registry_share_its_metrics(registry: CollectorRegistry) -> None:
    """Two instruments on a registry raise nothing, are equal, and add up in the same series."""
    first, second = PrometheusMetrics(registry=registry), PrometheusMetrics(registry=registry)
    assert first == second
    assert len({first, second}) == 1
    async with (
        Dispatcher(workers=1, name="same", instruments=[first]) as a,
        Dispatcher(workers=2, name="same", instruments=[second]) as b,
    ):
        await guarded(asyncio.gather(await a.submit(succeed, 1), await b.submit(succeed, 2)))
    labels = {"dispatcher": "same", "task": "succeed", "lane": ""}
    assert sample(registry, "asyncpool_job_run_seconds_count", **labels, outcome="succeeded") == 2
    assert sample(registry, "asyncpool_jobs_succeeded_total", dispatcher="same") == 2
    assert sample(registry, "asyncpool_workers", dispatcher="same") == 3


async def test_a_remote_job_is_labelled_by_its_task_and_lane_and_counted_once(
    registry: CollectorRegistry,
) -> None:
    """An intake job is labelled by its origin; an equal broker instrument adds no count."""
    own, brokers = PrometheusMetrics(registry=registry), PrometheusMetrics(registry=registry)
    origin = Origin(job_id="j-1", task="resize", lane="high", attempt=1, args=(), kwargs={})
    ended = asyncio.Event()

    class Observer:
        def job_started(self, handle: object) -> None:
            pass

        def job_ended(self, handle: object) -> None:
            ended.set()

    async with Dispatcher(workers=1, name="w", instruments=[own]) as d, d.intake() as intake:
        await intake.capacity()
        intake.put(
            succeed, 1, observer=Observer(), origin=origin, carrier=None, instruments=(brokers,)
        )
        await guarded(ended.wait())
    labels = {"dispatcher": "w", "task": "resize", "lane": "high"}
    assert sample(registry, "asyncpool_job_run_seconds_count", **labels, outcome="succeeded") == 1
    assert sample(registry, "asyncpool_job_queue_wait_seconds_count", **labels) == 1


async def test_a_remote_jobs_queue_wait_counts_from_its_submit(
    registry: CollectorRegistry,
) -> None:
    """A broker's job waited since its submit (its origin's time), not since its local queueing."""
    metrics = PrometheusMetrics(registry=registry)
    submitted = time.time() - 30  # half a minute in the broker
    origin = Origin("j-2", "resize", "low", 1, (), {}, submitted_at=submitted)
    ended = asyncio.Event()

    class Observer:
        def job_started(self, handle: object) -> None:
            pass

        def job_ended(self, handle: object) -> None:
            ended.set()

    async with Dispatcher(workers=1, name="w") as d, d.intake() as intake:
        await intake.capacity()
        intake.put(succeed, 1, observer=Observer(), origin=origin, instruments=(metrics,))
        await guarded(ended.wait())
    labels = {"dispatcher": "w", "task": "resize", "lane": "low"}
    waited = sample(registry, "asyncpool_job_queue_wait_seconds_sum", **labels)
    assert waited is not None
    assert 30 <= waited < 60


def test_broker_events_are_counted_by_dispatcher_task_and_lane(
    registry: CollectorRegistry,
) -> None:
    """Each broker event kind has its counter; a missing task or lane is labelled ""."""
    metrics = PrometheusMetrics(registry=registry)
    events = [
        BrokerEvent("fetched", "w", "resize", "high"),
        BrokerEvent("fetched", "w", "resize", "high"),
        BrokerEvent("redelivered", "w", "resize", "high"),
        BrokerEvent("lease_extended", "w", "resize", "high"),
        BrokerEvent("acked", "w", "resize", "high"),
        BrokerEvent("dead_lettered", "w", None, None),
    ]
    for event in events:
        metrics.broker_event(event)
    labels = {"dispatcher": "w", "task": "resize", "lane": "high"}
    assert sample(registry, "asyncpool_broker_fetched_total", **labels) == 2
    assert sample(registry, "asyncpool_broker_redelivered_total", **labels) == 1
    assert sample(registry, "asyncpool_broker_lease_extensions_total", **labels) == 1
    assert sample(registry, "asyncpool_broker_acked_total", **labels) == 1
    assert sample(registry, "asyncpool_broker_dead_lettered_total", **labels) is None
    unknown = {"dispatcher": "w", "task": "", "lane": ""}
    assert sample(registry, "asyncpool_broker_dead_lettered_total", **unknown) == 1


def test_unnamed_dispatchers_share_the_empty_label(registry: CollectorRegistry) -> None:
    """Dispatchers without a name are all `dispatcher=""`: their gauges add up."""
    metrics = PrometheusMetrics(registry=registry)
    dispatchers = [Dispatcher(workers=2, instruments=[metrics]) for _ in range(2)]
    assert sample(registry, "asyncpool_workers", dispatcher="") == 4
    assert sample(registry, "asyncpool_jobs_submitted_total", dispatcher="") == 0
    del dispatchers


def test_a_dropped_dispatcher_disappears_from_the_metrics(registry: CollectorRegistry) -> None:
    """The collector holds dispatchers weakly: once one is collected, its series are gone."""
    metrics = PrometheusMetrics(registry=registry)
    d = Dispatcher(workers=3, name="gone", instruments=[metrics])
    assert sample(registry, "asyncpool_workers", dispatcher="gone") == 3
    del d
    gc.collect()
    assert sample(registry, "asyncpool_workers", dispatcher="gone") is None
    assert sample(registry, "asyncpool_jobs_submitted_total", dispatcher="gone") is None


async def test_the_text_exposition_names_every_metric(registry: CollectorRegistry) -> None:
    """generate_latest (what a /metrics endpoint serves) shows every asyncpool metric."""
    metrics = PrometheusMetrics(registry=registry)
    async with Dispatcher(workers=1, name="x", instruments=[metrics]) as d:
        await guarded(await d.submit(succeed, 1))
    metrics.broker_event(BrokerEvent("fetched", "x", "t", None))
    text = generate_latest(registry).decode()
    for name in [*_STATS_COUNTERS.values(), *_STATS_GAUGES.values()]:
        assert f'\n{name}{{dispatcher="x"}} ' in text, name
    for name in (
        "asyncpool_job_queue_wait_seconds_bucket",
        "asyncpool_job_run_seconds_bucket",
        "asyncpool_broker_fetched_total",
        "# TYPE asyncpool_broker_acked_total counter",
        "# TYPE asyncpool_broker_redelivered_total counter",
        "# TYPE asyncpool_broker_dead_lettered_total counter",
        "# TYPE asyncpool_broker_lease_extensions_total counter",
    ):
        assert name in text, name


def test_the_default_registry_is_prometheus_clients() -> None:
    """Without `registry=`, the metrics are on prometheus_client's REGISTRY (for /metrics)."""
    metrics = PrometheusMetrics()
    assert metrics == PrometheusMetrics(registry=prometheus_client.REGISTRY)
    d = Dispatcher(workers=2, name="test-default-registry", instruments=[metrics])
    text = generate_latest().decode()
    assert 'asyncpool_workers{dispatcher="test-default-registry"} 2.0' in text
    del d


async def test_buckets_are_the_histograms_bounds(registry: CollectorRegistry) -> None:
    """`buckets` sets both histograms' bounds; another instrument may repeat or omit them."""
    metrics = PrometheusMetrics(registry=registry, buckets=[0.5, 1])
    assert PrometheusMetrics(registry=registry, buckets=(0.5, 1.0, float("inf"))) == metrics
    assert PrometheusMetrics(registry=registry) == metrics
    async with Dispatcher(workers=1, name="b", instruments=[metrics]) as d:
        await guarded(await d.submit(succeed, 1))
    labels = {"dispatcher": "b", "task": "succeed", "lane": ""}
    bounds = ("0.5", "1.0", "+Inf")
    for le in bounds:
        assert sample(registry, "asyncpool_job_queue_wait_seconds_bucket", **labels, le=le) == 1
        run = sample(
            registry, "asyncpool_job_run_seconds_bucket", **labels, le=le, outcome="succeeded"
        )
        assert run == 1
    assert (
        sample(
            registry, "asyncpool_job_run_seconds_bucket", **labels, le="0.005", outcome="succeeded"
        )
        is None
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"buckets": "1,2"}, TypeError, "buckets must be a sequence of numbers"),
        ({"buckets": [1, "2"]}, TypeError, "buckets must hold numbers"),
        ({"buckets": []}, ValueError, "buckets must be increasing"),
        ({"buckets": [2, 1]}, ValueError, "buckets must be increasing"),
        ({"registry": "default"}, TypeError, "registry must be a prometheus_client"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A bad registry or buckets fails at construction, naming the argument."""
    with pytest.raises(error, match=message):
        PrometheusMetrics(**{"registry": CollectorRegistry(), **kwargs})


def test_other_buckets_on_a_used_registry_are_refused(registry: CollectorRegistry) -> None:
    """The histograms of a registry are shared: other buckets for them are an error."""
    PrometheusMetrics(registry=registry, buckets=[1, 2])
    with pytest.raises(ValueError, match=r"buckets=\[1, 3\] differ from those"):
        PrometheusMetrics(registry=registry, buckets=[1, 3])


async def test_bound_without_being_an_instrument_gives_stats_at_no_per_job_cost(
    registry: CollectorRegistry,
) -> None:
    """`bind(dispatcher)` alone exposes its stats(), while its jobs keep the fast path."""

    async def double(x: int) -> int:
        return 2 * x

    metrics = PrometheusMetrics(registry=registry)
    async with Dispatcher(workers=2, name="bare") as dispatcher:
        metrics.bind(dispatcher)
        handles = [await dispatcher.submit(double, i) for i in range(3)]
        assert [await h for h in handles] == [0, 2, 4]
        assert all(h.options == {} for h in handles)  # no options: the fast path
        assert sample(registry, "asyncpool_jobs_succeeded_total", dispatcher="bare") == 3
        assert sample(registry, "asyncpool_workers", dispatcher="bare") == 2
    assert (
        sample(
            registry,
            "asyncpool_job_run_seconds_count",
            dispatcher="bare",
            task="test_bound_without_being_an_instrument_gives_stats_at_no_per_job_cost.<locals>.double",
            lane="",
            outcome="succeeded",
        )
        is None
    )
