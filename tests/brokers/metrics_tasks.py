"""The tasks of the worker-metrics test: a broker with `PrometheusMetrics` among its instruments.

The worker process runs `python -m asyncpool worker tests.brokers.metrics_tasks:broker
--metrics-port P`; the broker is built at import from the environment
(tests/brokers/_servers.py names the variables), on JetStream.
"""

from __future__ import annotations

import os

from asyncpool import Retry
from asyncpool.jetstream import JetStreamBroker
from asyncpool.metrics import PrometheusMetrics

from ._servers import ENV_NAME, ENV_URL


async def add(x: int, y: int) -> int:
    return x + y


async def fail() -> None:
    raise ValueError("no")


class MetricsApp:
    """The broker, with its two tasks registered (the test's producer makes one too)."""

    def __init__(self, url: str, name: str, metrics: PrometheusMetrics | None) -> None:
        self.broker = JetStreamBroker(
            url, name=name, ack_wait=30, instruments=[metrics] if metrics is not None else []
        )
        self.add = self.broker.task(name="add")(add)
        self.fail = self.broker.task(name="fail", retry=Retry(attempts=1))(fail)


broker = MetricsApp(
    os.environ.get(ENV_URL, "nats://127.0.0.1:4222"),
    os.environ.get(ENV_NAME, "asyncpool_metrics"),
    PrometheusMetrics(),
).broker
