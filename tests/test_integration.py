"""asyncpool._integration: the grace check and shutdown log lines both framework integrations use.

These tests need no web framework: they drive a real `Dispatcher` and call
`log_shutdown` with what its `close()` returned, as the integrations do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys

import pytest

from asyncpool import Dispatcher, ShutdownReport
from asyncpool._integration import check_grace, log_shutdown
from tests._jobs import Gate

NOT_A_NUMBER = "grace must be a number of seconds or None, got "
OUT_OF_RANGE = "grace must be a finite number of seconds >= 0 (or None to wait for every job), got "


def asyncpool_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The (level, message) pairs logged on the "asyncpool" logger."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "asyncpool"]


async def close_with_unfinished_jobs(name: str | None) -> tuple[Dispatcher, ShutdownReport]:
    """A dispatcher closed with grace 0: job 1 succeeded, 2 was running, 3 and 4 were queued."""
    dispatcher = Dispatcher(1, name=name)
    await dispatcher.start()
    done = await dispatcher.submit(asyncio.sleep, 0, "done")
    assert await done == "done"
    running = Gate()
    await dispatcher.submit(running)
    await dispatcher.submit(Gate())
    await dispatcher.submit(Gate())
    await running.started.wait()
    report = await dispatcher.close(timeout=0)
    return dispatcher, report


# ------------------------------------------------------------- check_grace


@pytest.mark.parametrize(
    ("grace", "expected"),
    [(None, None), (0, 0.0), (5, 5.0), (0.25, 0.25), (1e9, 1e9)],
    ids=["none", "zero", "int", "float", "large"],
)
def test_check_grace_accepts_none_and_finite_non_negative_numbers(
    grace: object, expected: float | None
) -> None:
    """None stays None; a finite number >= 0 comes back as a float."""
    result = check_grace(grace)
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize(
    ("grace", "error", "message"),
    [
        ("5", TypeError, NOT_A_NUMBER + "'5'"),
        (True, TypeError, NOT_A_NUMBER + "True"),
        (False, TypeError, NOT_A_NUMBER + "False"),
        ([1], TypeError, NOT_A_NUMBER + "[1]"),
        (-1, ValueError, OUT_OF_RANGE + "-1"),
        (-0.5, ValueError, OUT_OF_RANGE + "-0.5"),
        (math.nan, ValueError, OUT_OF_RANGE + "nan"),
        (math.inf, ValueError, OUT_OF_RANGE + "inf"),
        (-math.inf, ValueError, OUT_OF_RANGE + "-inf"),
    ],
    ids=["str", "true", "false", "list", "negative-int", "negative-float", "nan", "inf", "-inf"],
)
def test_check_grace_rejects_with_the_exact_message(
    grace: object, error: type[Exception], message: str
) -> None:
    """A bool or non-number is a TypeError; NaN, negative or infinite is a ValueError."""
    with pytest.raises(error) as caught:
        check_grace(grace)
    assert str(caught.value) == message


# ------------------------------------------------------------ log_shutdown


async def test_log_shutdown_when_every_job_finished_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An empty report logs one INFO line with the counts, and nothing else."""
    caplog.set_level(logging.INFO, logger="asyncpool")
    dispatcher = Dispatcher(2)
    await dispatcher.start()
    await dispatcher.submit(asyncio.sleep, 0)
    await dispatcher.submit(asyncio.sleep, 0)
    report = await dispatcher.close(timeout=5)
    assert not report
    log_shutdown(dispatcher, report, 5)
    assert asyncpool_lines(caplog) == [
        (
            logging.INFO,
            "Dispatcher shut down; every job finished: of 2 submitted, 2 succeeded, 0 failed, "
            "0 cancelled",
        )
    ]


async def test_log_shutdown_lists_a_summary_then_each_unfinished_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A WARNING summary, then one WARNING per job: queued ones first, then interrupted ones."""
    caplog.set_level(logging.INFO, logger="asyncpool")
    dispatcher, report = await close_with_unfinished_jobs("shared")
    interrupted, first, second = (*report.interrupted, *report.never_started)
    log_shutdown(dispatcher, report, 0)
    assert asyncpool_lines(caplog) == [
        (
            logging.WARNING,
            "Dispatcher 'shared' shut down with 3 jobs unfinished (grace period 0 s): "
            "2 never started, 1 interrupted; of 4 submitted, 1 succeeded, 0 failed, 3 cancelled",
        ),
        (logging.WARNING, f"Dispatcher 'shared': unfinished job id=3 (never started): {first!r}"),
        (logging.WARNING, f"Dispatcher 'shared': unfinished job id=4 (never started): {second!r}"),
        (
            logging.WARNING,
            f"Dispatcher 'shared': unfinished job id=2 (interrupted): {interrupted!r}",
        ),
    ]


@pytest.mark.parametrize(
    ("grace", "written"),
    [(0.2, "0.2 s"), (10.0, "10 s"), (None, "unlimited")],
    ids=["fraction", "whole", "none"],
)
async def test_log_shutdown_writes_the_grace_period(
    caplog: pytest.LogCaptureFixture, grace: float | None, written: str
) -> None:
    """The summary writes the grace period in seconds with %g, or "unlimited" for None."""
    caplog.set_level(logging.WARNING, logger="asyncpool")
    dispatcher, report = await close_with_unfinished_jobs(None)
    log_shutdown(dispatcher, report, grace)
    summary = asyncpool_lines(caplog)[0][1]
    assert summary.startswith(
        f"Dispatcher shut down with 3 jobs unfinished (grace period {written}): "
    )


def test_integration_module_imports_no_framework_and_is_not_exported() -> None:
    """`import asyncpool` leaves _integration out; importing it loads no web framework."""
    code = (
        "import sys, asyncpool\n"
        "assert 'asyncpool._integration' not in sys.modules\n"
        "assert not {'check_grace', 'log_shutdown'} & set(asyncpool.__all__)\n"
        "import asyncpool._integration\n"
        "loaded = {'fastapi', 'starlette', 'aiohttp'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
