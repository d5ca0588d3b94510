"""The benchmark harness runs, and refuses a run that lost or repeated a job.

The numbers themselves are measured by `make bench`, `make bench-peers` and
`make bench-instructions`, never in a test; these tests only keep the
harness working (tiny N, one run) and prove that its self-check can fail.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import pytest

from benchmarks import _peer_impls as impls
from benchmarks import instructions, peers, throughput

# Peers come with the `bench` extra; asyncpool and the floor are always here.
ALWAYS = [
    "floor",
    "asyncpool (default)",
    "asyncpool (queue_size=0)",
    "TaskGroup + Semaphore",
]
MODULES = {
    "aiojobs": "aiojobs",
    "asyncio-pool": "asyncio_pool",
    "aiometer": "aiometer",
    "anyio + CapacityLimiter": "anyio",
}


def available(name: str) -> bool:
    module = MODULES.get(name)
    return module is None or importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("workload", ["W1", "W2", "W3", "W4"])
@pytest.mark.parametrize("impl", [*ALWAYS, *MODULES])
def test_every_implementation_runs_every_workload(workload: str, loop: str, impl: str) -> None:
    """Every installed implementation completes every workload on both loops at a rate > 0."""
    if not available(impl):
        pytest.skip(f"{impl} is in the bench extra, not installed")
    n = 50 if workload == "W3" else 300
    result = peers.child(workload, loop, 4, impl, n)
    assert result["rate"] > 0


@pytest.mark.parametrize("impl", list(impls.LATENCY))
def test_latency_runs_and_gives_ordered_percentiles(impl: str) -> None:
    """The latency workload gives percentiles with 0 < p50 <= p99."""
    if not available(impl):
        pytest.skip(f"{impl} is in the bench extra, not installed")
    result = peers.child("W5", "asyncio", 4, impl, 20)
    assert 0 < result["p50"] <= result["p99"]


async def lossy(work: impls.Workload, items: Sequence[Any], k: int) -> impls.Result:
    """An implementation that drops the last job: the harness must refuse its rate."""
    count, total = await impls.floor(work, items[:-1], k)
    return count, total


async def repeating(work: impls.Workload, items: Sequence[Any], k: int) -> impls.Result:
    """One that runs the first job twice and drops the last: same count, wrong sum."""
    count, total = await impls.floor(work, [items[0], *items[:-1]], k)
    return count, total


@pytest.mark.parametrize("broken", [lossy, repeating])
def test_a_run_that_loses_or_repeats_a_job_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, broken: impls.Impl
) -> None:
    """The harness exits with an error when a run lost or repeated a job."""
    monkeypatch.setitem(impls.IMPLS, "broken", broken)
    with pytest.raises(SystemExit, match="jobs were lost or repeated"):
        peers.child("W1", "asyncio", 4, "broken", 300)


def test_throughput_measures_every_implementation() -> None:
    """The throughput script measures a rate > 0 for every implementation."""
    for name, impl in throughput.IMPLEMENTATIONS.items():
        assert throughput.measure("asyncio", impl, 300, 4) > 0, name


@pytest.mark.parametrize("workload", ["W1", "W4"])
@pytest.mark.parametrize("impl", ["floor", "asyncpool"])
def test_instructions_child_runs_without_valgrind(workload: str, impl: str) -> None:
    """The instruction-count child runs its workload without valgrind, losing no job."""
    instructions.child(impl, workload, "asyncio", 4, 1024, 300)  # raises if a job was lost
