"""The worker side of a broker: take jobs into a running dispatcher, and settle each one.

`Server.run` is `broker.serve(dispatcher)`. It feeds the dispatcher through
its `Intake` (the job-source seam), so it never holds more jobs than the
dispatcher has free workers. Each delivery it takes is a `Held`, the job's
`JobObserver`; what happens to a held job is decided in one synchronous
place, `Server.ended` (the httpcore discipline: decide, then do the I/O
outside):

* succeeded: record "succeeded" (unless `result=False`), then ack;
* failed, and the policy retries it: nak after the backoff (any worker
  may take it);
* failed its last attempt: dead letter, record "failed", ack;
* cancelled by a remote `cancel()`: ack (the canceller wrote the record);
* never started, serve stopping: nak at once (handed back);
* cut short by a closing dispatcher: nak at once (handed back; it ran, so
  its next delivery counts one more attempt).

Before a delivery is put in, it is checked: an undecodable payload, an
unknown task or a job out of deliveries is a dead letter at once; a
redelivered job that already has a terminal record (its worker died after
writing it) is acked without running again.

While it holds a job, a lease keeper extends its lease every third of the
ack wait: a long job on a live worker is never redelivered.

While it serves, it writes the worker's status (a heartbeat: its
dispatcher's counters, the jobs it holds and its recent jobs, from a
`JobLog` of its own) every second; the dashboard reads them through
`broker.workers()`. The broker's instruments are told about every job it
runs (with the job's id, lane and the submitter's trace context) and about
what it does with each delivery (`BrokerEvent`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codecs import Codec, PayloadError, codec_named
from ._envelope import RECORD_CODEC, Envelope, Outcome
from ._errors import DispatcherClosed
from ._handle import JobHandle
from ._heartbeat import RECENT, Heartbeat
from ._joblog import JobLog
from ._remote import JobInfo, error_record, set_current_job
from ._tasks import JobClass, Task, UnknownTask
from ._telemetry import BrokerEvent, BrokerEventKind, Origin, tell_broker_event
from ._transport import Delivery

if TYPE_CHECKING:
    from ._broker import Broker
    from ._dispatcher import Dispatcher
    from ._intake import Intake

__all__ = ("ServeReport", "Server")

logger = logging.getLogger("asyncpool")

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"

_servers = itertools.count(1)


@dataclasses.dataclass(slots=True)
class ServeReport:
    """What one `broker.serve()` did (printed by `python -m asyncpool worker` as it stops).

    Attributes:
        taken: Deliveries taken from the broker.
        succeeded: Jobs that succeeded here.
        retried: Failures handed back to run again after their backoff.
        failed: Jobs whose last attempt failed here (now dead letters).
        refused: Deliveries made dead letters without running (undecodable,
            unknown task, out of deliveries).
        skipped: Redeliveries of jobs that had already ended (acked, not run).
        cancelled: Jobs cancelled remotely while held here.
        handed_back_unstarted: Ids of jobs handed back before they started.
        handed_back_running: Ids of jobs cut short by the dispatcher's close
            and handed back.
    """

    taken: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    refused: int = 0
    skipped: int = 0
    cancelled: int = 0
    handed_back_unstarted: list[str] = dataclasses.field(default_factory=list)
    handed_back_running: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """One line, for a log or a terminal."""
        return (
            f"taken {self.taken}, succeeded {self.succeeded}, retried {self.retried}, "
            f"failed {self.failed}, refused {self.refused}, skipped {self.skipped}, "
            f"cancelled {self.cancelled}, handed back {len(self.handed_back_unstarted)} "
            f"unstarted and {len(self.handed_back_running)} running"
        )


async def _run_async(info: JobInfo, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    set_current_job(info)
    return await fn(*args, **kwargs)


def _run_sync(info: JobInfo, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    set_current_job(info)
    return fn(*args, **kwargs)


class Held:
    """One delivery this worker holds, and the `JobObserver` of its local job."""

    __slots__ = ("codec", "delivery", "envelope", "entry", "handle", "max_deliver", "_server")

    def __init__(
        self,
        server: Server,
        delivery: Delivery,
        envelope: Envelope,
        entry: Task[Any, Any] | JobClass,
        max_deliver: int,
        codec: Codec,
    ) -> None:
        self._server = server
        self.codec = codec
        """The codec the job came in: its record goes out in it too."""
        self.delivery = delivery
        self.envelope = envelope
        self.entry = entry
        self.max_deliver = max_deliver
        self.handle: JobHandle[Any] | None = None

    def job_started(self, handle: JobHandle[Any]) -> None:
        """Leases are kept for every held job, started or not: nothing to do."""

    def job_ended(self, handle: JobHandle[Any]) -> None:
        self._server.ended(self, handle)


class Server:
    """One `broker.serve(dispatcher)`: takes, runs and settles remote jobs."""

    def __init__(
        self, broker: Broker, dispatcher: Dispatcher, stop: asyncio.Event | None = None
    ) -> None:
        self._broker = broker
        self._stop = stop
        self._transport = broker.transport
        self._dispatcher = dispatcher
        self._held: set[Held] = set()
        self._by_id: dict[str, Held] = {}
        self._cancelled: set[str] = set()
        self._settling = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._settles: asyncio.TaskGroup | None = None
        self._closing = asyncio.Event()
        self.report = ServeReport()
        n = next(_servers)
        # Two serve() calls in one process are two workers on the dashboard.
        self._worker = WORKER_NAME if n == 1 else f"{WORKER_NAME}#{n}"
        self._log = JobLog(keep=RECENT * 4, worker=self._worker)
        self._instruments = (*broker.instruments, self._log)
        for instrument in broker.instruments:
            # The worker's dispatcher is the one its metrics read.
            if instrument not in dispatcher.instruments:
                instrument.bind(dispatcher)
        self._heartbeat = Heartbeat(
            self._transport, self._worker, dispatcher, self._log, self._served, self._by_id.keys
        )

    async def run(self) -> ServeReport:
        transport = self._transport
        async with asyncio.TaskGroup() as settles:
            self._settles = settles
            async with asyncio.TaskGroup() as helpers:
                keeper = helpers.create_task(self._keep_leases())
                heartbeat = helpers.create_task(self._heartbeat.run(self._closing))
                caught_up = asyncio.Event()
                watcher = helpers.create_task(
                    transport.watch_cancels(self._cancel_requested, caught_up.set)
                )
                # A job cancelled while queued is skipped, not run: know
                # every cancellation made so far before taking any job.
                ready = helpers.create_task(caught_up.wait())
                waits: set[asyncio.Task[Any]] = {ready, watcher}
                if self._stop is not None:
                    waits.add(helpers.create_task(self._stop.wait()))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for wait in waits - {watcher}:
                    wait.cancel()
                try:
                    if self._stop is not None and self._stop.is_set():
                        return self.report
                    async with self._dispatcher.intake() as intake:
                        if self._stop is None:
                            await self._take(intake)
                        else:
                            take = helpers.create_task(self._take(intake))
                            stop = helpers.create_task(self._stop.wait())
                            await asyncio.wait((take, stop), return_when=asyncio.FIRST_COMPLETED)
                            take.cancel()
                            stop.cancel()
                finally:
                    # The intake's exit cancelled the unstarted jobs; their
                    # observers hand them back. Running jobs end on their own,
                    # or when the dispatcher closes.
                    await self._transport.hand_back_strays()
                    await self._quiet.wait()
                    # Besides the cancellations: a client library's wait can
                    # lose one (Python 3.11), and a loop that lost it must
                    # still end, or serve() would never return.
                    self._closing.set()
                    keeper.cancel()
                    watcher.cancel()
                    heartbeat.cancel()
                    await self._heartbeat.stop()
        return self.report

    # -- taking --------------------------------------------------------

    async def _take(self, intake: Intake) -> None:
        transport = self._transport
        recheck = transport.recheck_interval
        stop = self._stop
        # Stopping cancels this task, and it also looks at `stop` after each
        # wait: a cancellation that arrives as a wait ends can be lost in a
        # client library's `wait_for` (Python 3.11).
        while stop is None or not stop.is_set():
            try:
                free = await intake.capacity()
            except DispatcherClosed:
                return
            deliveries = await transport.fetch(free)
            if stop is not None and stop.is_set():
                for delivery in deliveries:
                    await delivery.nak(0)
                return
            if not deliveries:
                await transport.wait_for_work(recheck)
                continue
            for delivery in deliveries:
                self.report.taken += 1
                await self._accept(delivery, intake)

    async def _accept(self, delivery: Delivery, intake: Intake) -> None:
        broker = self._broker
        try:
            codec = broker.codec
            if delivery.codec_name is not None and delivery.codec_name != codec.name:
                codec = codec_named(delivery.codec_name)
            envelope = Envelope.decode(delivery.data, codec)
        except (PayloadError, TypeError, ValueError, ImportError) as exc:
            self._fetched(delivery, None)
            await self._refuse(delivery, None, "undecodable", exc)
            return
        self._fetched(delivery, envelope.task)
        try:
            entry = broker.registry.named(envelope.task)
        except UnknownTask as exc:
            await self._refuse(delivery, envelope, "unknown task", exc)
            return
        max_deliver = envelope.max_deliver or entry.max_deliver or broker.max_deliver
        if envelope.id in self._cancelled:
            self.report.skipped += 1
            await delivery.ack()
            self._event("acked", delivery, envelope.task)
            return
        if delivery.attempt > 1 and await self._transport.read_outcome(envelope.id) is not None:
            # Its worker died after writing the record, before the ack.
            self.report.skipped += 1
            await delivery.ack()
            self._event("acked", delivery, envelope.task)
            return
        if delivery.attempt > max_deliver:
            await self._refuse(
                delivery,
                envelope,
                "deliveries exhausted",
                _DeliveriesExhausted(
                    f"delivered {delivery.attempt} times, at most {max_deliver} allowed "
                    "(its earlier deliveries went to workers that died, lost their lease, "
                    "or handed it back as they stopped)"
                ),
            )
            return
        info = JobInfo(envelope.id, envelope.task, delivery.attempt, max_deliver)
        try:
            target = self._target(info, envelope, entry)
        except Exception as exc:  # a Job class that does not rebuild from these fields
            await self._refuse(delivery, envelope, "undecodable", exc)
            return
        held = Held(self, delivery, envelope, entry, max_deliver, codec)
        options: dict[str, Any] = {"retry": None, "priority": envelope.priority}
        timeout = envelope.timeout if envelope.timeout is not None else entry.timeout
        if timeout is not None:
            options["timeout"] = timeout
        self._hold(held)
        origin = Origin(
            envelope.id,
            envelope.task,
            delivery.lane,
            delivery.attempt,
            envelope.args,
            envelope.kwargs,
            envelope.enqueued_at,
        )
        held.handle = intake.put(
            target,
            observer=held,
            origin=origin,
            carrier=envelope.trace,
            instruments=self._instruments,
            **options,
        )

    def _target(self, info: JobInfo, envelope: Envelope, entry: Task[Any, Any] | JobClass) -> Any:
        if isinstance(entry, Task):
            runner = _run_async if entry.is_async else _run_sync
            target: functools.partial[Any] = functools.partial(
                runner, info, entry.fn, envelope.args, envelope.kwargs
            )
        else:
            job = entry.cls(*envelope.args, **envelope.kwargs)
            process = job.process
            runner = _run_async if asyncio.iscoroutinefunction(process) else _run_sync
            target = functools.partial(runner, info, process, (), {})
        # What the dispatcher's messages (a timeout, a log line) call the job.
        setattr(target, "__qualname__", envelope.task)  # noqa: B010 - a partial's own attribute
        return target

    def _hold(self, held: Held) -> None:
        self._held.add(held)
        self._by_id[held.envelope.id] = held
        self._quiet.clear()

    def _release(self, held: Held) -> None:
        self._held.discard(held)
        if self._by_id.get(held.envelope.id) is held:
            del self._by_id[held.envelope.id]
        if not self._held and not self._settling:
            self._quiet.set()

    # -- settling ------------------------------------------------------

    def ended(self, held: Held, handle: JobHandle[Any]) -> None:
        """Decide what the broker is told about a job that ended here; then tell it."""
        envelope = held.envelope
        report = self.report
        delay: float | None = None
        record: bytes | None = None
        letter: dict[str, Any] | None = None
        attempt = held.delivery.attempt
        if handle.cancelled():
            if envelope.id in self._cancelled:
                report.cancelled += 1
            else:
                delay = 0.0
                if handle.attempts == 0:
                    report.handed_back_unstarted.append(envelope.id)
                else:
                    report.handed_back_running.append(envelope.id)
        else:
            exc = handle.exception()
            if exc is None and envelope.result:
                outcome = Outcome(
                    "succeeded", handle.result(), attempts=attempt, worker=WORKER_NAME
                )
                try:
                    record = outcome.encode(held.codec)
                except TypeError as unsendable:
                    # Ran, but its result cannot travel: a failure, as the
                    # submitter sees it and as the report counts it.
                    report.failed += 1
                    error = error_record(
                        TypeError(f"the job's result cannot be sent: {unsendable}")
                    )
                    failed = Outcome("failed", error=error, attempts=attempt, worker=WORKER_NAME)
                    record = failed.encode(held.codec)
                else:
                    report.succeeded += 1
            elif exc is None:
                report.succeeded += 1
            else:
                base = held.entry.retry or self._broker.default_retry
                policy = envelope.retry_policy(base)
                if (
                    policy is not None
                    and attempt < min(policy.attempts, held.max_deliver)
                    and policy.retries(exc)
                ):
                    report.retried += 1
                    delay = policy.delay(attempt)
                    self._log.mark(envelope.id, "retrying")
                else:
                    report.failed += 1
                    error = error_record(exc)
                    outcome = Outcome("failed", error=error, attempts=attempt, worker=WORKER_NAME)
                    record = outcome.encode(held.codec)
                    letter = self._letter(held.delivery, envelope, "failed", error)
        self._settle_later(self._settle(held, delay, record, letter))

    def _settle_later(self, settle: Any) -> None:
        assert self._settles is not None
        self._settling += 1
        self._settles.create_task(settle)

    async def _settle(
        self,
        held: Held,
        delay: float | None,
        record: bytes | None,
        letter: dict[str, Any] | None,
    ) -> None:
        transport = self._transport
        delivery = held.delivery
        try:
            if delay is not None:
                await delivery.nak(delay)
                return
            if letter is not None:
                await transport.dead_letter(delivery, letter)
                self._event("dead_lettered", delivery, held.envelope.task)
            # The record is not written when one exists: a remote cancel won
            # the race; it stands.
            await transport.finish(delivery, held.envelope.id, record)
            self._event("acked", delivery, held.envelope.task)
        except Exception:
            # The broker redelivers what was not acked once its lease runs
            # out: at-least-once holds; the job may run again.
            logger.exception("asyncpool: could not settle remote job %s", held.envelope.id)
        finally:
            self._settling -= 1
            self._release(held)

    async def _refuse(
        self,
        delivery: Delivery,
        envelope: Envelope | None,
        reason: str,
        exc: BaseException,
    ) -> None:
        """A delivery that cannot run: a dead letter, its record, an ack."""
        self.report.refused += 1
        error = error_record(exc)
        logger.warning(
            "asyncpool: remote job %s is a dead letter (%s): %s",
            envelope.id if envelope is not None else delivery.message_id,
            reason,
            exc,
        )
        # Where the submitter's handle waits: the envelope's id, or for a
        # payload that cannot be read, the id the publisher named beside it.
        job_id = envelope.id if envelope is not None else delivery.job_id
        wants_record = envelope.result if envelope is not None else job_id is not None
        try:
            await self._transport.dead_letter(
                delivery, self._letter(delivery, envelope, reason, error)
            )
            if wants_record and job_id is not None:
                outcome = Outcome("dead", error=error, attempts=delivery.attempt - 1)
                try:
                    await self._transport.create_outcome(job_id, outcome.encode(RECORD_CODEC))
                except Exception:
                    # A garbage id from a garbage publisher: the dead letter
                    # has it all; the message must still be acked.
                    if envelope is not None:
                        raise
                    logger.warning("asyncpool: no record for %r (not a job id)", job_id)
            self._event("dead_lettered", delivery, envelope.task if envelope else None)
            await delivery.ack()
            self._event("acked", delivery, envelope.task if envelope else None)
        except Exception:
            logger.exception("asyncpool: could not store a dead letter")

    def _letter(
        self, delivery: Delivery, envelope: Envelope | None, reason: str, error: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": envelope.id if envelope is not None else delivery.message_id,
            "task": envelope.task if envelope is not None else None,
            "reason": reason,
            "error": error,
            "attempts": delivery.attempt,
            "payload": base64.b64encode(delivery.data).decode(),
            "codec": delivery.codec_name,
            "at": time.time(),
        }

    # -- leases and cancellations --------------------------------------

    async def _keep_leases(self) -> None:
        period = self._transport.lease_period
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._closing.wait()
            for held in list(self._held):
                try:
                    await held.delivery.extend()
                    self._event("lease_extended", held.delivery, held.envelope.task)
                except Exception:
                    logger.exception(
                        "asyncpool: could not extend the lease of %s", held.envelope.id
                    )

    # -- what is seen from outside ------------------------------------

    def _fetched(self, delivery: Delivery, task: str | None) -> None:
        self._event("fetched", delivery, task)
        if delivery.attempt > 1:
            self._event("redelivered", delivery, task)

    def _event(self, kind: BrokerEventKind, delivery: Delivery, task: str | None) -> None:
        """Tell the broker's instruments what was done with `delivery`."""
        if not self._instruments:
            return
        if task is not None and task not in self._broker.registry:
            # Named by whoever published it: as a metric label, an
            # unregistered name would let any producer add series at will.
            task = None
        event = BrokerEvent(kind, self._dispatcher.name or "", task, delivery.lane)
        tell_broker_event(self._instruments, event)

    def _served(self) -> dict[str, int]:
        report = self.report
        return {
            "taken": report.taken,
            "succeeded": report.succeeded,
            "retried": report.retried,
            "failed": report.failed,
            "refused": report.refused,
            "skipped": report.skipped,
            "cancelled": report.cancelled,
        }

    def _cancel_requested(self, job_id: str) -> None:
        self._cancelled.add(job_id)
        held = self._by_id.get(job_id)
        if held is not None and held.handle is not None:
            held.handle.cancel("cancelled remotely")


class _DeliveriesExhausted(Exception):
    """A job delivered more often than its `max_deliver`."""


_DeliveriesExhausted.__qualname__ = "DeliveriesExhausted"
_DeliveriesExhausted.__module__ = "asyncpool"
