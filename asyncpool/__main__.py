"""The command line: `python -m asyncpool demo`, `make demo` and the `asyncpool-demo` script.

This module owns the arguments, the choice of event loop, and the rule that
bad input is a one-line message on stderr and exit status 2, never a
traceback. The demo itself lives in `asyncpool/_demo.py`.

Exit status: 0 when the scan finished (unreadable files are reported, not
fatal), 1 if a job raised, 2 for bad input or a missing optional
dependency, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ("build_parser", "main")

EXIT_OK = 0
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_DEMO_SCRIPT = "asyncpool-demo"

_DEMO_DESCRIPTION = """\
Count the lines of every file under a directory and take their SHA-256
digests, through one asyncpool Dispatcher: small files go in batches
(BatchJob), large ones one per job (SingleJob). The summary gives the totals
and the digests of the last files read. The default directory is the
running interpreter's standard library, without its site-packages.
"""


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="the directory to walk (default: the standard library)",
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="how many jobs run at once (default: 8)"
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=1024,
        help="how many jobs may wait before the walk pauses; 0 is unbounded (default: 1024)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop (default: asyncio)",
    )
    parser.set_defaults(prog=parser.prog)


def build_parser(prog: str = "python -m asyncpool") -> argparse.ArgumentParser:
    """Make the parser of `python -m asyncpool`, with its `demo` command.

    Args:
        prog: The program name that usage and error messages show.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description="asyncpool: an asyncio worker pool and job dispatcher."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="hash and count the lines of a directory tree through one Dispatcher",
        description=_DEMO_DESCRIPTION,
    )
    _add_demo_arguments(demo)
    return parser


def _build_demo_script_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_DEMO_SCRIPT, description=_DEMO_DESCRIPTION)
    _add_demo_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: The arguments, without the program name; `sys.argv[1:]` if
            None. Run as the `asyncpool-demo` script (and given no `argv`),
            the arguments are the `demo` command's own.

    Returns:
        The exit status (see the module docstring).
    """
    # The console script points here too, and has no command word to type:
    # `asyncpool-demo --workers 4`. The name may carry ".exe" or "-script.py".
    if argv is None and os.path.basename(sys.argv[0]).startswith(_DEMO_SCRIPT):
        args = _build_demo_script_parser().parse_args()
    else:
        args = build_parser().parse_args(argv)
    return _run_demo(args)


def _run_demo(args: argparse.Namespace) -> int:
    prog: str = args.prog

    def fail(message: str) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    # The Dispatcher would refuse these too, but under the names of its own
    # parameters (`queue_size`); the person at the terminal typed the flags.
    if args.workers < 1:
        return fail(f"--workers must be >= 1, got {args.workers}")
    if args.queue_size < 0:
        return fail(f"--queue-size must be >= 0, got {args.queue_size}")
    try:
        from rich.console import Console
    except ImportError:
        return fail("the demo needs rich: pip install 'asyncpool-dispatch[demo]'")
    from ._demo import (
        DemoUsageError,
        default_exclude,
        default_root,
        print_summary,
        run_with_progress,
    )

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            return fail("--loop uvloop needs uvloop: pip install 'asyncpool-dispatch[uvloop]'")
        loop_factory = uvloop.new_event_loop

    path: Path | None = args.path
    root = default_root() if path is None else path
    exclude = default_exclude(root) if path is None else ()
    console = Console()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            report = runner.run(
                run_with_progress(
                    root,
                    console=console,
                    workers=args.workers,
                    queue_size=args.queue_size,
                    exclude=exclude,
                )
            )
    except DemoUsageError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(report, console)
    return EXIT_FAILED_JOBS if report.failed_jobs else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
