"""`PrometheusMetrics`: a dispatcher's jobs, workers and broker deliveries as Prometheus metrics.

```python
from prometheus_client import make_asgi_app

from asyncpool import Dispatcher
from asyncpool.metrics import PrometheusMetrics

metrics = PrometheusMetrics()  # on prometheus_client's default registry
dispatcher = Dispatcher(workers=16, name="thumbnails", instruments=[metrics])
app.mount("/metrics", make_asgi_app())  # or prometheus_client.generate_latest()
```

Two kinds of metric, labelled by the dispatcher's `name`:

* the counters and gauges of `Dispatcher.stats()`, read when the registry
  is scraped by one collector per registry: they cost nothing per job, and
  a dispatcher that has been dropped (garbage collected) disappears from
  them, its counters included;
* per job (`Instrument.run`, around each try): the time it waited in the
  queue and the time it ran, as histograms labelled by task and lane too;
  and what a broker worker did with its deliveries, as counters.

An unnamed dispatcher is labelled `dispatcher=""`, and dispatchers with the
same name share one series (their counters and gauges add up): name each
dispatcher (`Dispatcher(name=...)`) to tell them apart.

`asyncpool` itself never imports this module; prometheus_client comes with
the `metrics` extra (`pip install 'asyncpool-dispatch[metrics]'`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
except ModuleNotFoundError as exc:
    # The bare error ("No module named 'prometheus_client'") does not say
    # that an extra of asyncpool brings it.
    raise ModuleNotFoundError(
        f"asyncpool.metrics needs prometheus_client ({exc}): "
        "pip install 'asyncpool-dispatch[metrics]'",
        name=exc.name,
    ) from exc

from ._errors import JobTimeout
from ._telemetry import BrokerEvent, Instrument, JobRun

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._stats import Stats

__all__ = ("PrometheusMetrics",)

# The counters of `Stats`, by field: (metric name without `_total`, help).
_STATS_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("submitted", "asyncpool_jobs_submitted", "Jobs accepted by the dispatcher."),
    ("succeeded", "asyncpool_jobs_succeeded", "Jobs that returned a result."),
    ("failed", "asyncpool_jobs_failed", "Jobs that raised an exception (after their retries)."),
    ("cancelled", "asyncpool_jobs_cancelled", "Jobs cancelled before or while running."),
    ("retried", "asyncpool_jobs_retried", "Failed tries that a Retry policy sent back."),
    ("timed_out", "asyncpool_jobs_timed_out", "Tries stopped by their timeout."),
    ("rejected", "asyncpool_jobs_rejected", "submit_nowait calls refused with QueueFull."),
)
# The gauges of `Stats`, by field.
_STATS_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("queued", "asyncpool_jobs_queued", "Jobs accepted and not started yet."),
    ("busy", "asyncpool_jobs_busy", "Jobs running now."),
    ("idle", "asyncpool_workers_idle", "Workers not running a job."),
    ("workers", "asyncpool_workers", "The size of the pool."),
)
# The counter of each kind of broker event.
_BROKER_COUNTERS: dict[str, tuple[str, str]] = {
    "fetched": ("asyncpool_broker_fetched", "Deliveries a broker worker fetched."),
    "acked": ("asyncpool_broker_acked", "Deliveries a broker worker acknowledged."),
    "redelivered": (
        "asyncpool_broker_redelivered",
        "Deliveries fetched again after an earlier delivery.",
    ),
    "dead_lettered": ("asyncpool_broker_dead_lettered", "Deliveries sent to the dead letters."),
    "lease_extended": (
        "asyncpool_broker_lease_extensions",
        "Lease extensions of deliveries whose jobs were still running.",
    ),
}
_JOB_LABELS = ("dispatcher", "task", "lane")


class _StatsCollector:
    """Reads `stats()` of the dispatchers bound to a registry's instruments, at scrape time.

    The dispatchers are held weakly: the collector must not keep a
    dispatcher (and the jobs it remembers) alive. A scrape may come from
    another thread (`prometheus_client.start_http_server`), hence the lock
    around the set.
    """

    def __init__(self) -> None:
        self._dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, dispatcher: Dispatcher) -> None:
        with self._lock:
            self._dispatchers.add(dispatcher)

    def __len__(self) -> int:
        with self._lock:
            return len(self._dispatchers)

    def describe(self) -> Iterable[Metric]:
        # The names, so that the registry refuses another collector of them.
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            dispatchers = list(self._dispatchers)
        by_name: dict[str, list[Stats]] = {}
        for dispatcher in dispatchers:
            by_name.setdefault(dispatcher.name or "", []).append(dispatcher.stats())
        return self._families(by_name)

    @staticmethod
    def _families(by_name: dict[str, list[Stats]]) -> list[Metric]:
        families: list[Metric] = []
        for field, name, doc in _STATS_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=("dispatcher",))
            for label, stats in by_name.items():
                counter.add_metric((label,), sum(getattr(s, field) for s in stats))
            families.append(counter)
        for field, name, doc in _STATS_GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=("dispatcher",))
            for label, stats in by_name.items():
                gauge.add_metric((label,), sum(getattr(s, field) for s in stats))
            families.append(gauge)
        return families


class _RegistryMetrics:
    """The metric objects of one registry, shared by every `PrometheusMetrics` on it.

    prometheus_client refuses a second metric of the same name in a
    registry ("Duplicated timeseries"); sharing them also lets instruments
    made in different places add up. The labelled children are cached by
    label values: `labels()` takes a lock and builds a key per call, a
    dict lookup is what a job can afford.
    """

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.stats = _StatsCollector()
        registry.register(self.stats)
        self.queue_wait = Histogram(
            "asyncpool_job_queue_wait_seconds",
            "Time from being submitted to the start of a try (a retry includes the earlier tries).",
            _JOB_LABELS,
            registry=registry,
            buckets=buckets,
        )
        self.run_time = Histogram(
            "asyncpool_job_run_seconds",
            "Time a try ran, by outcome: succeeded, failed, timed_out or cancelled.",
            (*_JOB_LABELS, "outcome"),
            registry=registry,
            buckets=buckets,
        )
        self.broker = {
            kind: Counter(name, doc, _JOB_LABELS, registry=registry)
            for kind, (name, doc) in _BROKER_COUNTERS.items()
        }
        self.waits: dict[tuple[str, str, str], Any] = {}
        self.runs: dict[tuple[str, str, str, str], Any] = {}
        self.events: dict[tuple[str, str, str, str], Any] = {}


# One `_RegistryMetrics` per registry, dropped with the registry.
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _RegistryMetrics] = (
    weakref.WeakKeyDictionary()
)
_by_registry_lock = threading.Lock()


def _check_buckets(buckets: object) -> tuple[float, ...]:
    """The histogram buckets, as prometheus_client keeps them (ending with +Inf).

    Raises:
        TypeError: `buckets` is not a sequence of numbers.
        ValueError: `buckets` is empty or not increasing.
    """
    if buckets is None:
        return tuple(Histogram.DEFAULT_BUCKETS)
    if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Sequence):
        raise TypeError(f"buckets must be a sequence of numbers of seconds, got {buckets!r}")
    bounds: list[float] = []
    for bound in buckets:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise TypeError(f"buckets must hold numbers of seconds, got {bound!r}")
        bounds.append(float(bound))
    if not bounds or any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"buckets must be increasing numbers of seconds, got {buckets!r}")
    if bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)


def _metrics_for(registry: CollectorRegistry, buckets: object) -> _RegistryMetrics:
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {registry!r}")
    wanted = _check_buckets(buckets)
    with _by_registry_lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = _RegistryMetrics(registry, wanted)
    if buckets is not None and wanted != metrics.buckets:
        raise ValueError(
            f"buckets={buckets!r} differ from those of the PrometheusMetrics already on "
            f"this registry ({metrics.buckets!r}): the histograms are shared"
        )
    return metrics


def _clock() -> Callable[[], float]:
    """The clock a try is timed with: the loop's, as its timestamps are.

    A loop of asyncio's own (or a subclass, such as a fast-forward test
    clock) keeps exact time; uvloop's `time()` counts whole milliseconds,
    too coarse for short jobs, so other loops get `time.monotonic`.
    """
    loop = asyncio.get_running_loop()
    return loop.time if isinstance(loop, asyncio.BaseEventLoop) else time.monotonic


class PrometheusMetrics(Instrument):
    """An instrument that exposes a dispatcher's jobs as Prometheus metrics.

    Give it to a dispatcher (`Dispatcher(instruments=[metrics])`) or to a
    broker (`JetStreamBroker(..., instruments=[metrics])`, for the jobs its
    `serve()` runs). One instrument may serve many dispatchers; instruments
    on the same registry share its metrics.

    From `Dispatcher.stats()`, at scrape time, labelled `dispatcher`:

    * counters `asyncpool_jobs_submitted_total`, `asyncpool_jobs_succeeded_total`,
      `asyncpool_jobs_failed_total`, `asyncpool_jobs_cancelled_total`,
      `asyncpool_jobs_retried_total`, `asyncpool_jobs_timed_out_total`,
      `asyncpool_jobs_rejected_total`;
    * gauges `asyncpool_jobs_queued`, `asyncpool_jobs_busy`,
      `asyncpool_workers_idle`, `asyncpool_workers`.

    Per try of a job, labelled `dispatcher`, `task` (the function's
    qualified name, or the remote task's name) and `lane` (the broker
    lane, "" for a local job):

    * histogram `asyncpool_job_queue_wait_seconds`: from being submitted to
      the start of the try (for a retry, the earlier tries and backoffs
      included), on the loop's clock; for a broker's job, from its
      `submit` on the submitter's machine (the time it waited in the
      broker included; the clocks of both machines are compared);
    * histogram `asyncpool_job_run_seconds`, labelled `outcome` too:
      `succeeded`, `failed`, `timed_out` (`asyncpool.JobTimeout`) or
      `cancelled`.

    Per broker delivery, labelled `dispatcher`, `task` and `lane` ("" when
    unknown): counters `asyncpool_broker_fetched_total`,
    `asyncpool_broker_acked_total`, `asyncpool_broker_redelivered_total`,
    `asyncpool_broker_dead_lettered_total`,
    `asyncpool_broker_lease_extensions_total`.

    Unnamed dispatchers are labelled `dispatcher=""` and share one series
    with each other, as same-named dispatchers do: give each its `name`.

    Instruments on the same registry are equal (they share its metrics), so
    a broker worker whose broker and dispatcher each have one counts its
    jobs once.

    Args:
        registry: Where the metrics are registered: prometheus_client's
            default registry (what `make_asgi_app()` and `generate_latest()`
            expose), or your own.
        buckets: The upper bounds, in seconds, of both histograms' buckets
            (prometheus_client's defaults, 5 ms to 10 s, when None). The
            first instrument on a registry sets them.

    Raises:
        TypeError: `registry` is not a `CollectorRegistry`, or `buckets` is
            not a sequence of numbers.
        ValueError: `buckets` is not increasing, or differs from the
            buckets of an instrument already on the same registry.
    """

    def __init__(
        self, *, registry: CollectorRegistry = REGISTRY, buckets: Sequence[float] | None = None
    ) -> None:
        self._metrics = _metrics_for(registry, buckets)

    def bind(self, dispatcher: Dispatcher) -> None:
        """Expose `dispatcher.stats()` at every scrape, while the dispatcher exists."""
        self._metrics.stats.add(dispatcher)

    async def run(self, job: JobRun, call: Callable[[], Awaitable[Any]]) -> Any:
        """Observe the try's queue wait, then time it and observe its run time by outcome."""
        metrics = self._metrics
        key = (job.dispatcher, job.task, job.lane or "")
        handle = job.handle
        started = handle.started_at
        if started is not None:
            wait = metrics.waits.get(key)
            if wait is None:
                wait = metrics.waits[key] = metrics.queue_wait.labels(*key)
            if job.submitted_at is not None:
                # A broker's job waited in the broker before this worker's
                # queue: from its submit (the submitter's clock; a clock
                # behind the worker's would make it negative: 0 then).
                wait.observe(max(0.0, time.time() - job.submitted_at))
            else:
                wait.observe(started - handle.queued_at)
        clock = _clock()
        start = clock()
        outcome = "failed"
        try:
            result = await call()
            outcome = "succeeded"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except JobTimeout:
            outcome = "timed_out"
            raise
        finally:
            run_key = (*key, outcome)
            run = metrics.runs.get(run_key)
            if run is None:
                run = metrics.runs[run_key] = metrics.run_time.labels(*run_key)
            run.observe(clock() - start)

    def broker_event(self, event: BrokerEvent) -> None:
        """Count what a broker worker did with a delivery."""
        metrics = self._metrics
        key = (event.kind, event.dispatcher, event.task or "", event.lane or "")
        counter = metrics.events.get(key)
        if counter is None:
            counter = metrics.events[key] = metrics.broker[event.kind].labels(*key[1:])
        counter.inc()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PrometheusMetrics):
            return self._metrics is other._metrics
        return NotImplemented

    def __hash__(self) -> int:
        return id(self._metrics)

    def __repr__(self) -> str:
        return f"<PrometheusMetrics dispatchers={len(self._metrics.stats)}>"
