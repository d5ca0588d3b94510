"""`python -m asyncpool worker --metrics-port`: a real worker process serves its Prometheus metrics.

The broker of tests/brokers/metrics_tasks.py has `PrometheusMetrics` among
its instruments; the worker binds them to its own dispatcher, so its
`/metrics` shows the dispatcher's counters and gauges, the per-job
histograms and the broker counters, labelled `dispatcher="worker"`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from asyncpool.brokers import RemoteJobError

from ._servers import ENV_NAME, ENV_URL, free_port, tail
from .metrics_tasks import MetricsApp

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels}` in a text exposition (labels in any order)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return None


def _start(command: list[str], env: dict[str, str], errors: Path) -> subprocess.Popen[bytes]:
    with errors.open("wb") as err:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=err, stderr=err)


async def test_worker_serves_its_metrics(nats_url: str, broker_name: str, tmp_path: Path) -> None:
    """A worker's /metrics counts its jobs, deliveries and workers once they are done."""
    port = free_port()
    env = {**os.environ, ENV_URL: nats_url, ENV_NAME: broker_name, "PYTHONPATH": str(ROOT)}
    errors = tmp_path / "worker.err"
    command = [sys.executable, "-m", "asyncpool", "worker", "tests.brokers.metrics_tasks:broker"]
    command += ["--workers", "4", "--metrics-port", str(port)]
    worker = _start(command, env, errors)
    try:
        app = MetricsApp(nats_url, broker_name, None)
        async with app.broker as broker, httpx.AsyncClient() as http:
            handles = [await broker.submit(app.add, i, 1) for i in range(5)]
            assert [await h for h in handles] == [1, 2, 3, 4, 5]
            with pytest.raises(RemoteJobError):
                await (await broker.submit(app.fail))
            url = f"http://127.0.0.1:{port}/metrics"
            worker_labels = {"dispatcher": "worker"}
            add = {"dispatcher": "worker", "task": "add", "lane": "normal"}
            # Acks and the last counts land just after the submitter has its
            # result: read until they are all there.
            while True:
                text = (await http.get(url)).text
                if (
                    sample(text, "asyncpool_broker_acked_total", **add) == 5
                    and sample(
                        text, "asyncpool_broker_dead_lettered_total", **{**add, "task": "fail"}
                    )
                    == 1
                ):
                    break
                await asyncio.sleep(0.1)
            assert sample(text, "asyncpool_workers", **worker_labels) == 4
            assert sample(text, "asyncpool_jobs_succeeded_total", **worker_labels) == 5
            assert sample(text, "asyncpool_jobs_failed_total", **worker_labels) == 1
            assert sample(text, "asyncpool_broker_fetched_total", **add) == 5
            runs = {**add, "outcome": "succeeded"}
            assert sample(text, "asyncpool_job_run_seconds_count", **runs) == 5
            assert sample(text, "process_cpu_seconds_total") is not None
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise
    assert code == 0, tail(errors)
