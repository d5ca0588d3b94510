"""Run in a subprocess by test_core.py: a job raises KeyboardInterrupt or SystemExit.

A fatal exception escaping an event loop leaves the interpreter in a state
that later tests should not inherit, so this runs in a process of its own.
It prints one JSON line: what escaped the loop and the handles' final states.

    python tests/fatal_job.py KeyboardInterrupt|SystemExit asyncio|uvloop thread|coroutine
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpool


def main() -> None:
    fatal: type[BaseException] = {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}[
        sys.argv[1]
    ]
    handles: list[asyncpool.JobHandle[object]] = []

    async def in_coroutine() -> None:
        raise fatal

    def in_thread() -> None:
        time.sleep(0)
        raise fatal

    job: Callable[[], object] = in_thread if sys.argv[3] == "thread" else in_coroutine

    async def run() -> None:
        async with asyncpool.Dispatcher(workers=2) as dispatcher:
            handles.append(await dispatcher.submit(asyncio.sleep, 3600))
            handles.append(await dispatcher.submit(job))
            await asyncio.Event().wait()

    if sys.argv[2] == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    escaped = "nothing"
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run())
    except (KeyboardInterrupt, SystemExit) as exc:
        escaped = type(exc).__name__
    print(json.dumps({"escaped": escaped, "states": [h.state.name for h in handles]}))


if __name__ == "__main__":
    main()
