"""How `python -m asyncpool demo-cluster` shows what happens, in lines of at most `WIDTH` columns.

Two kinds of output, through one `Display`:

* events: a line each ("started worker A pid 123", "SIGKILL worker B ...");
* progress: a `Status` (the phase, results so far by worker, jobs
  running), shown as a live `rich` line on a terminal (`_LiveDisplay`),
  and as a plain line once a second, or when the phase changes, on a pipe
  or a file (`_PlainDisplay`).

`make_display` picks one; `wrap` cuts the demo's longer texts (its events
and its summary) to `WIDTH`.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

__all__ = (
    "WIDTH",
    "Display",
    "Status",
    "make_display",
    "wrap",
)

WIDTH: Final = 80
"""The widest line the demo prints."""


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """What the progress line shows."""

    phase: str
    done: int
    total: int
    results_by_worker: Mapping[str, int]
    running: int
    killed: str | None
    elapsed: float

    def workers(self) -> str:
        parts = []
        for label, count in self.results_by_worker.items():
            parts.append(f"{label} {count:,}" + (" killed" if label == self.killed else ""))
        return " · ".join(parts) + f" · {self.running} running"


class Display(Protocol):
    """Where the demo tells what happens: events as lines, and a progress line."""

    def event(self, text: str) -> None:
        """Print a line (above the progress line, if there is one)."""

    def update(self, status: Status) -> None:
        """Show the progress."""

    def close(self) -> None:
        """Take the progress line away (the events stay)."""


class _PlainDisplay:
    """For a pipe or a file: events, and a progress line once a second, as plain lines."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._shown_at = -1.0
        self._phase = ""

    def event(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def update(self, status: Status) -> None:
        # Once a second, or when the phase changes ("lease 1.2 s" counts down:
        # its first word is its phase).
        phase = status.phase.split()[0]
        if phase == self._phase and status.elapsed - self._shown_at < 1.0:
            return
        self._phase, self._shown_at = phase, status.elapsed
        line = (
            f"{status.elapsed:6.2f} s  {status.phase:<13} {status.done:>4}/{status.total} "
            f"results · {status.workers()}"
        )
        self.event(line[:WIDTH])

    def close(self) -> None:
        """Nothing to take away."""


class _LiveDisplay:
    """For a terminal: a live `rich` progress line, with the events printed above it."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            Task,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Column
        from rich.text import Text

        class WorkersColumn(ProgressColumn):
            """Results by worker: on a narrow terminal, it is cut short, never wrapped."""

            def render(self, task: Task) -> Text:
                return Text(task.fields["workers"], no_wrap=True, overflow="ellipsis")

        def kept() -> Column:
            return Column(no_wrap=True)

        self._console = console
        # A rich table shrinks only the columns that may wrap: on a narrow
        # terminal the bar and the workers give up their room, the phase,
        # the count and the clock keep theirs.
        self._progress = Progress(
            SpinnerColumn(table_column=kept()),
            TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=12)),
            MofNCompleteColumn(table_column=kept()),
            BarColumn(bar_width=10, table_column=Column()),
            WorkersColumn(table_column=Column()),
            TimeElapsedColumn(table_column=kept()),
            console=console,
            expand=False,
        )
        self._task: TaskID | None = None

    def event(self, text: str) -> None:
        from rich.text import Text

        self._console.print(Text(text), soft_wrap=True)

    def update(self, status: Status) -> None:
        progress = self._progress
        if self._task is None:
            # Made on the first update, so that its clock starts with the jobs.
            self._task = progress.add_task(status.phase, total=status.total, workers="")
            progress.start()
        progress.update(
            self._task,
            description=status.phase,
            completed=status.done,
            total=status.total,
            workers=status.workers(),
        )

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()  # a second stop does nothing


def make_display(console: Console, out: IO[str]) -> Display:
    """A live line on a terminal (at most `WIDTH` columns), plain lines on `out` elsewhere."""
    if not console.is_terminal:
        return _PlainDisplay(out)
    if console.width > WIDTH:
        from rich.console import Console as RichConsole

        console = RichConsole(width=WIDTH)
    return _LiveDisplay(console)


def wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    """`text` in lines of at most `WIDTH` columns, each after `indent` (the first after `first`)."""
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )
