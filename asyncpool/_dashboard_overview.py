"""The overview's content: lanes, workers, totals and throughput, as display strings.

One function (`overview`) makes what the overview page renders and what
`/api/overview` returns, so the first paint and every update after it show
the same cells. Values are formatted here, in Python; the page script only
puts each string into its cell with `textContent`.
"""

from __future__ import annotations

import time
from typing import Any, Final

from ._dashboard_format import ago, duration, rate, when
from ._dashboard_sources import LaneRow, Source, WorkerRow
from ._dashboard_throughput import Throughput

__all__ = ("LANE_COLUMNS", "TOTALS", "WORKER_COLUMNS", "overview")

LANE_COLUMNS: Final = (
    ("name", "Lane"),
    ("waiting", "Waiting"),
    ("running", "Running"),
    ("delayed", "Delayed"),
    ("rate", "Finished"),
)
"""The lanes table: each cell's field and its heading."""

WORKER_COLUMNS: Final = (
    ("name", "Worker"),
    ("since", "Alive since"),
    ("pool", "Busy / idle / workers"),
    ("queued", "Queued"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("heartbeat", "Last heartbeat"),
)
"""The workers table: each cell's field and its heading."""

TOTALS: Final = (
    ("waiting", "Waiting"),
    ("running", "Running"),
    ("delayed", "Delayed"),
    ("workers", "Workers"),
    ("busy", "Busy"),
    ("succeeded", "Succeeded (live workers)"),
    ("failed", "Failed (live workers)"),
    ("rate", "Finished per second"),
)
"""The totals: each one's field (its data-testid is `stat-<field>`) and its label.

Succeeded and failed add up what the workers alive now did since they
started (a broker keeps no count of its own), and the labels say so.
"""


def _lane_cells(lane: LaneRow) -> dict[str, str]:
    return {
        "name": lane.name,
        "waiting": str(lane.waiting),
        "running": str(lane.running),
        "delayed": str(lane.delayed),
        "rate": rate(lane.rate),
    }


def _worker_cells(worker: WorkerRow, now: float) -> dict[str, str]:
    return {
        "name": worker.name,
        "since": f"{when(worker.started_at)} ({duration(now - worker.started_at)})",
        "pool": f"{worker.busy} / {worker.idle} / {worker.workers}",
        "queued": str(worker.queued),
        "succeeded": str(worker.succeeded),
        "failed": str(worker.failed),
        "heartbeat": ago(worker.heartbeat_at, now),
    }


async def overview(source: Source, throughput: Throughput) -> dict[str, Any]:
    """Read `source` once and say what the overview shows.

    Each read also feeds `throughput`, so the chart moves while a page
    polls even when the app's lifespan (and its sampler) does not run.

    Returns:
        `lanes` and `workers` (lists of `{field: text}`), `totals`
        (`{field: text}`), `throughput` (finished jobs per second, one
        number a second, oldest first) and `at` (when it was read).
    """
    lanes = await source.lanes()
    workers = await source.workers()
    throughput.observe(await source.finished())
    now = time.time()
    totals = {
        "waiting": str(sum(lane.waiting for lane in lanes)),
        "running": str(sum(lane.running for lane in lanes)),
        "delayed": str(sum(lane.delayed for lane in lanes)),
        "workers": str(len(workers)),
        "busy": f"{sum(w.busy for w in workers)} of {sum(w.workers for w in workers)}",
        "succeeded": str(sum(w.succeeded for w in workers)),
        "failed": str(sum(w.failed for w in workers)),
        "rate": rate(throughput.rate()),
    }
    return {
        "lanes": [_lane_cells(lane) for lane in lanes],
        "workers": [_worker_cells(worker, now) for worker in workers],
        "totals": totals,
        "throughput": [round(sample, 3) for sample in throughput.samples()],
        "at": when(now),
    }
