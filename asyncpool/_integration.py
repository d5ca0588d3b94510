"""What the framework integrations share: the grace-period check and the shutdown log lines.

`asyncpool.fastapi` and `asyncpool.aiohttp` both close their dispatcher with
`close(timeout=grace)` when the application stops. This private module owns
the two pieces of that which must not differ between them:

* `check_grace`: the rule for a `grace` argument, and its error messages;
* `log_shutdown`: the lines that report a `ShutdownReport` on the
  `"asyncpool"` logger.

It imports no web framework, so either integration can use it without the
other's extra installed; `asyncpool/__init__.py` does not export it.
"""

from __future__ import annotations

import logging
import math

from ._dispatcher import Dispatcher
from ._retry import as_float, shown
from ._stats import ShutdownReport

__all__ = ("check_grace", "log_shutdown")

logger = logging.getLogger("asyncpool")


def check_grace(grace: object) -> float | None:
    """Check a shutdown grace period and return it as a float.

    Args:
        grace: Seconds that jobs get to finish before the rest are cancelled:
            a finite number >= 0, or None to wait for every job.

    Returns:
        `grace` as a float, or None.

    Raises:
        TypeError: `grace` is not a number (a bool is not one) nor None.
        ValueError: `grace` is negative, infinite (an int too large for a
            float included) or NaN.
    """
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds or None, got {grace!r}")
    # An int too large for a float is as infinite as inf: refused too.
    seconds = as_float(grace)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            "grace must be a finite number of seconds >= 0 (or None to wait for every job), "
            f"got {shown(grace)}"
        )
    return seconds


def log_shutdown(dispatcher: Dispatcher, report: ShutdownReport, grace: float | None) -> None:
    """Log what `dispatcher.close(timeout=grace)` reported, on the `"asyncpool"` logger.

    When every job finished, one INFO line. Otherwise one WARNING summary,
    then one WARNING line per unfinished job, queued (never started) jobs
    first, then interrupted ones:

    ```text
    Dispatcher 'api' shut down with 3 jobs unfinished (grace period 5 s): 2 never started,
        1 interrupted; of 40 submitted, 37 succeeded, 0 failed, 3 cancelled
    Dispatcher 'api': unfinished job id=39 (never started): <JobHandle id=39 CANCELLED send>
    ```

    (The summary is one line; it is wrapped here.)

    Args:
        dispatcher: The closed dispatcher, for its name and counters.
        report: What its `close()` returned (or `shutdown_report`).
        grace: The grace period it was closed with; None means unlimited.
    """
    label = dispatcher._label()
    stats = dispatcher.stats()
    if not report:
        logger.info(
            "%s shut down; every job finished: of %d submitted, %d succeeded, %d failed, "
            "%d cancelled",
            label,
            stats.submitted,
            stats.succeeded,
            stats.failed,
            stats.cancelled,
        )
        return
    logger.warning(
        "%s shut down with %d jobs unfinished (grace period %s): %d never started, "
        "%d interrupted; of %d submitted, %d succeeded, %d failed, %d cancelled",
        label,
        len(report),
        "unlimited" if grace is None else f"{grace:g} s",
        len(report.never_started),
        len(report.interrupted),
        stats.submitted,
        stats.succeeded,
        stats.failed,
        stats.cancelled,
    )
    for why, handles in (
        ("never started", report.never_started),
        ("interrupted", report.interrupted),
    ):
        for handle in handles:
            logger.warning("%s: unfinished job id=%d (%s): %r", label, handle.id, why, handle)
