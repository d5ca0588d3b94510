"""The tasks of the dashboard's browser tests: imported by the workers, the dashboard and the tests.

The worker processes run `python -m asyncpool worker tests.brokers.dashboard_tasks:broker`
and the dashboard process `python -m asyncpool dashboard tests.brokers.dashboard_tasks:broker`;
both commands take a broker *instance*, so `broker` is built at import
time from the environment, as chaos_tasks.py's is (tests/brokers/_servers.py
names the variables):

* ASYNCPOOL_TEST_ENGINE: "jetstream" (the default) or "redis";
* ASYNCPOOL_TEST_NATS_URL / ASYNCPOOL_TEST_REDIS_URL: its server;
* ASYNCPOOL_TEST_BROKER_NAME: the broker name, fresh per test.

The test process builds its own `DashboardApp` (same engine, server and
name), which registers the same tasks under the same names.

No task retries: a failure is final at once and becomes a dead letter
("failed"), which is what the dead-letter pages show. The names look like
an application's, because the screenshots in the docs show them.
"""

from __future__ import annotations

import asyncio
import os

from ._engines import build_broker
from ._servers import ENV_ENGINE, ENV_NAME, ENV_REDIS_URL, ENV_URL

MARKUP = "<script>window.pwned=1</script>"
"""Markup that would set `window.pwned` if a page let it through as HTML."""

MARKUP_TASK = f'mail.<img src=x onerror="window.pwned=1">{MARKUP}'
"""A task name that carries markup: the jobs list shows task names, not arguments."""


async def resize(path: str, width: int, seconds: float = 0.0) -> str:
    """Take `seconds` (a stand-in for real work), then say what was made."""
    await asyncio.sleep(seconds)
    return f"{path} at {width}px"


def charge(order: int, flag: str) -> str:
    """Fail until the file `flag` exists (the test creates it: the payment service is back)."""
    # A sync task, so it runs in a worker thread: the stat does not block the loop.
    if not os.path.exists(flag):
        raise ConnectionError(f"payment service unreachable while charging order {order}")
    return f"order {order} charged"


async def send(to: str, subject: str) -> str:
    """Say what it was given (the tests put markup in the arguments)."""
    return f"sent {subject!r} to {to}"


async def reject(text: str) -> str:
    """Fail with `text` as the message (the tests put markup in it)."""
    raise ValueError(text)


async def report(month: str) -> str:
    """Registered by the test process only: the workers refuse it as an unknown task."""
    return f"report for {month}"


class DashboardApp:
    """A broker of `engine` ("jetstream" or "redis") on `url` named `name`, with the tasks.

    `client=True` also registers `reports.monthly`, which no worker knows.
    """

    def __init__(
        self, url: str, name: str, *, engine: str = "jetstream", client: bool = False
    ) -> None:
        # A long lease: no test here waits for a redelivery.
        self.broker = build_broker(engine, url, name, ack_wait=30)
        self.resize = self.broker.task(name="thumbnails.resize")(resize)
        self.charge = self.broker.task(name="billing.charge")(charge)
        self.send = self.broker.task(name="mail.send")(send)
        self.reject = self.broker.task(name=MARKUP_TASK)(reject)
        self.report = self.broker.task(name="reports.monthly")(report) if client else None


def _from_environment() -> DashboardApp:
    engine = os.environ.get(ENV_ENGINE, "jetstream")
    if engine == "redis":
        url = os.environ.get(ENV_REDIS_URL, "redis://127.0.0.1:6379/0")
    else:
        url = os.environ.get(ENV_URL, "nats://127.0.0.1:4222")
    return DashboardApp(url, os.environ.get(ENV_NAME, "asyncpool_dashboard"), engine=engine)


app = _from_environment()
broker = app.broker
