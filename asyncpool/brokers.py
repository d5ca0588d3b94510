"""What every asyncpool broker shares: remote handles, errors, codecs, dead letters.

The engines are their own submodules (`asyncpool.jetstream`); this one holds
the engine-neutral names a program uses with any of them:

* `RemoteHandle`: what `broker.submit` returns; await it for the result.
* `RemoteJobError`: a remote failure (type name, message, traceback text).
* `current_job()` / `JobInfo`: inside a running remote job, which job and
  which attempt it is.
* `Codec`, `JsonCodec`, `MsgpackCodec`, `PickleCodec`, `PayloadError`.
* `DeadLetter`, `LaneInfo` (what `broker.lanes()` counts), `Outcome`,
  `ServeReport`, `Task`, and `Broker` (the base class).

This submodule is never imported by `asyncpool` itself.
"""

from __future__ import annotations

from ._broker import Broker
from ._codecs import Codec, JsonCodec, MsgpackCodec, PayloadError, PickleCodec
from ._deadletters import DeadLetter
from ._envelope import Outcome
from ._errors import RemoteJobError
from ._lanes_info import LaneInfo
from ._remote import JobInfo, RemoteHandle, current_job
from ._serve import ServeReport
from ._status import WorkerStatus
from ._tasks import Task

__all__ = (
    "Broker",
    "Codec",
    "DeadLetter",
    "JobInfo",
    "JsonCodec",
    "LaneInfo",
    "MsgpackCodec",
    "Outcome",
    "PayloadError",
    "PickleCodec",
    "RemoteHandle",
    "RemoteJobError",
    "ServeReport",
    "Task",
    "WorkerStatus",
    "current_job",
)
