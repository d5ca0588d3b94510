"""`JetStreamBroker`: asyncpool's jobs across processes and machines, on NATS JetStream.

```python
from asyncpool import Dispatcher
from asyncpool.jetstream import JetStreamBroker

broker = JetStreamBroker("nats://127.0.0.1:4222")

@broker.task
async def resize(path: str) -> int: ...

# a producer (a web app):
async with broker:
    handle = await broker.submit(resize, "a.png")
    print(await handle)

# a worker (or: python -m asyncpool worker app:broker --workers 16):
async with broker, Dispatcher(workers=16) as dispatcher:
    await broker.serve(dispatcher)
```

Needs the `jetstream` extra (nats-py) and a NATS server 2.9 or newer with
JetStream on. What the broker keeps on the server, all named from `name`:

* the work-queue stream `<name>_jobs`, subjects `<name>.jobs.<lane>`:
  three priority lanes (`high`, `normal`, `low`, by the sign of the job's
  priority) and `key_partitions` key lanes (`key.0`, `key.1`, ...); a
  durable pull consumer per lane. A key lane lets one job out at a time
  (`max_ack_pending=1`), so jobs of one key never overlap and run in
  submission order, on any number of machines;
* the KV bucket `<name>_results` (terminal records, kept `result_ttl`
  seconds) and `<name>_cancels` (cancellation requests, as long);
* the stream `<name>_dead`: dead letters;
* the KV bucket `<name>_statuses` (made on first use): the workers'
  statuses, for `transport.put_status()` / `statuses()`.

The server owns the lease (`ack_wait`), its extension (`in_progress`),
delayed redelivery (`nak(delay)`) and delivery counts; a publish carries
`Nats-Msg-Id` (the job id), so a retried publish never enqueues twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "asyncpool.jetstream needs nats-py: pip install 'asyncpool-dispatch[jetstream]'"
    ) from exc

from ._broker import Broker
from ._codecs import Codec
from ._jetstream_transport import JetStreamTransport
from ._keeps_dead_letters import DeadLetterStore, KeepsDeadLetters
from ._telemetry import Instrument

__all__ = ("JetStreamBroker",)

_CLOSE_ABANDONED = 1.0
"""How long closing a connection that never opened may take, when opening was cancelled (s)."""

_log = logging.getLogger("asyncpool")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _seconds(name: str, value: object) -> float:
    """A finite number of seconds >= 1 (NATS keeps durations in whole nanoseconds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (1 <= value < 10**9):
        raise ValueError(f"{name} must be from 1 to 10**9 seconds, got {value!r}")
    return float(value)


class JetStreamBroker(Broker, KeepsDeadLetters):
    """Submit jobs to NATS JetStream, and serve them on any number of worker processes.

    Args:
        servers: The NATS server URL(s).
        name: Names the streams, consumers and buckets (letters, digits,
            `_` and `-`, at most 32). Brokers with the same name share jobs.
        ack_wait: The lease, in seconds: a job held by a worker that stops
            answering (it died, or its machine did) is delivered again this
            long after its last sign of life. A live worker extends the
            lease every `ack_wait / 3` while the job runs, so a job may run
            far longer than this.
        result_ttl: How long terminal records and cancellations are kept, in
            seconds.
        key_partitions: How many key lanes there are (jobs of different keys
            in one lane wait for each other).
        codec: "json" (default), "msgpack", or a `Codec` such as
            `asyncpool.brokers.PickleCodec(secret=...)`.
        retry: The retry policy of tasks that set none (default: none).
        max_deliver: The default most deliveries of a job.
        connect_options: Passed to `nats.connect` (credentials, TLS, ...).
        instruments: `Instrument`s (`asyncpool.metrics.PrometheusMetrics`,
            `asyncpool.tracing.OpenTelemetryTracing`, ...): told about every
            job `serve()` runs and what it does with each delivery; a
            tracing instrument's trace context travels with each job
            `submit()` sends.

    Raises:
        TypeError, ValueError: a wrong argument; the message names it.
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "asyncpool",
        ack_wait: float = 30.0,
        result_ttl: float = 86_400.0,
        key_partitions: int = 8,
        codec: str | Codec = "json",
        retry: Any = None,
        max_deliver: int = 5,
        connect_options: dict[str, Any] | None = None,
        instruments: Sequence[Instrument] = (),
    ) -> None:
        super().__init__(codec=codec, retry=retry, max_deliver=max_deliver, instruments=instruments)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"name must be 1 to 32 letters, digits, '_' or '-' (it names streams), got {name!r}"
            )
        ack = _seconds("ack_wait", ack_wait)
        ttl = _seconds("result_ttl", result_ttl)
        if (
            isinstance(key_partitions, bool)
            or not isinstance(key_partitions, int)
            or not 1 <= key_partitions <= 256
        ):
            raise ValueError(f"key_partitions must be an int from 1 to 256, got {key_partitions!r}")
        if isinstance(servers, str):
            servers = [servers]
        self.servers = list(servers)
        self.name = name
        self.ack_wait = ack
        self.result_ttl = ttl
        self.key_partitions = key_partitions
        self.stream = f"{name}_jobs"
        self.dead_stream = f"{name}_dead"
        self._connect_options = dict(connect_options or {})
        self._nc: Client | None = None
        self._transport: JetStreamTransport | None = None

    @property
    def transport(self) -> JetStreamTransport:
        if self._transport is None:
            raise RuntimeError(f"{self!r} is not open: use `async with broker:` first")
        return self._transport

    async def _open(self) -> None:
        """Connect (within `connect_timeout`), then create or check the streams.

        A first connection that no server accepts within `connect_timeout`
        seconds (5 unless `connect_options` say otherwise) raises
        `ConnectionError`: with reconnecting on (the default), nats-py itself
        would try for ever. Once open, a lost connection is retried for
        ever, and each loss and each return is one WARNING line on the
        `asyncpool` logger (nats-py's default is a traceback per failed
        attempt). `connect_options` win over these defaults, the callbacks
        included.

        Raises:
            ConnectionError: no server answered within `connect_timeout`.
        """
        nc = Client()
        # The last error of a connection attempt: what the ConnectionError says.
        attempt_errors: list[Exception] = []

        async def error_cb(exc: Exception) -> None:
            if not nc.is_connected or isinstance(
                exc, OSError | nats.errors.StaleConnectionError | nats.errors.NoServersError
            ):
                # A failed attempt while the server is away (one every
                # reconnect_time_wait): the disconnect line says it all.
                attempt_errors[:] = [exc]
                _log.debug("asyncpool: NATS connection attempt failed: %r", exc)
            elif isinstance(exc, nats.errors.Error):
                _log.warning("asyncpool: broker %r: NATS error: %s", self.name, exc)
            else:  # raised by a subscription's callback: a bug, keep its traceback
                _log.error("asyncpool: broker %r: a NATS callback failed", self.name, exc_info=exc)

        async def disconnected_cb() -> None:
            # Only while open: _shut forgets the connection before closing it.
            if self._nc is nc:
                _log.warning(
                    "asyncpool: broker %r lost its connection to NATS (%s); %s",
                    self.name,
                    ", ".join(self.servers),
                    "reconnecting" if nc.is_reconnecting else "not reconnecting",
                )

        async def reconnected_cb() -> None:
            if self._nc is nc:
                _log.warning(
                    "asyncpool: broker %r reconnected to NATS (%s)",
                    self.name,
                    nc.connected_url.geturl() if nc.connected_url else ", ".join(self.servers),
                )

        options: dict[str, Any] = {
            "connect_timeout": 5,
            "max_reconnect_attempts": -1,
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
            **self._connect_options,
        }
        limit = options["connect_timeout"]
        try:
            async with asyncio.timeout(limit):
                await nc.connect(servers=self.servers, **options)
        except (OSError, nats.errors.Error) as exc:  # a TimeoutError is an OSError
            with contextlib.suppress(Exception):
                await nc.close()
            reason = attempt_errors[-1] if attempt_errors else exc
            raise ConnectionError(
                f"cannot connect to NATS at {', '.join(self.servers)} "
                f"(tried for {limit} s): {str(reason) or type(reason).__name__}"
            ) from exc
        except BaseException:
            # Cancelled, or refused its arguments: a client that may never
            # have started cannot always close cleanly, nor always promptly
            # (cancelled between two attempts, nats-py's close() can wait
            # for its reconnecting task): what matters is the error, at once.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_ABANDONED):
                    await nc.close()
            raise
        try:
            transport = JetStreamTransport(self, nc, nc.jetstream())
            await transport.open()
        except BaseException:
            await nc.close()
            raise
        self._nc = nc
        self._transport = transport

    async def _shut(self) -> None:
        """Close the connection, after what was sent is flushed.

        Raises:
            ConnectionError: the server was unreachable (the client was
                reconnecting, or had given up): what was sent since the
                connection was lost never reached it.
        """
        transport, nc = self._transport, self._nc
        self._transport = self._nc = None
        if transport is not None:
            await transport.close()
        if nc is None:
            return
        if nc.is_connected:
            await nc.drain()
            return
        # drain() would refuse (ConnectionReconnectingError); close() stops
        # the reconnecting. It may fail writing what was buffered: that is
        # lost either way, and the error below says so.
        with contextlib.suppress(Exception):
            await nc.close()
        raise ConnectionError(
            f"broker {self.name!r} closed while its NATS server ({', '.join(self.servers)}) "
            "was unreachable: what it sent since the connection was lost (acks, results, "
            "jobs handed back) never reached the server"
        )

    def subject_for(self, *, priority: int = 0, key: str | int | None = None) -> str:
        """The subject jobs of this priority and key are published on."""
        return self.transport.subject_for(priority, key)

    @property
    def _dead_letter_store(self) -> DeadLetterStore:
        return self.transport

    async def destroy(self) -> None:
        """Delete all this broker keeps on the server (jobs, records, dead letters, statuses).

        Its watches stop first (they would look for the deleted streams every
        second); after this the broker is good only for closing. Workers still
        serving the name elsewhere are not told: stop them first.
        """
        self._check_open()
        assert self._nc is not None
        await self.transport.close()
        jsm = self._nc.jetstream()
        for stream in (self.stream, self.dead_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await jsm.delete_stream(stream)
        for bucket in (f"{self.name}_results", f"{self.name}_cancels", f"{self.name}_statuses"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await jsm.delete_key_value(bucket)

    def __repr__(self) -> str:
        state = "open" if self._transport is not None else "closed"
        return f"<JetStreamBroker {self.name!r} {state} servers={self.servers}>"
