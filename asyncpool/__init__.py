"""asyncpool: an asyncio-native worker pool and job dispatcher.

Coroutine workers pull jobs from their own inboxes, registered in an
idle-worker queue; one routing rule, applied by `submit`, by freed workers
and by a dispatcher loop, hands jobs from a bounded queue to them; an
`asyncio.TaskGroup` owns every task. See `Dispatcher`.
"""

from ._dispatcher import Dispatcher
from ._errors import AsyncPoolError, DispatcherClosed, JobTimeout, QueueFull
from ._handle import JobHandle
from ._job import AsyncJob, Job, JobState, SyncJob
from ._joblog import JobLog, JobRecord
from ._map import as_completed
from ._retry import Retry
from ._stats import Latency, ShutdownReport, Stats
from ._telemetry import BrokerEvent, Instrument, JobRun

__all__ = (
    "AsyncJob",
    "AsyncPoolError",
    "BrokerEvent",
    "Dispatcher",
    "DispatcherClosed",
    "Instrument",
    "Job",
    "JobHandle",
    "JobLog",
    "JobRecord",
    "JobRun",
    "JobState",
    "JobTimeout",
    "Latency",
    "QueueFull",
    "Retry",
    "ShutdownReport",
    "Stats",
    "SyncJob",
    "as_completed",
)

__version__ = "0.1.0"
