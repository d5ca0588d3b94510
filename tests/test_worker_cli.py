"""`python -m asyncpool worker|dead-letters` (asyncpool.__main__, asyncpool._worker), no server.

Bad input is one line on stderr and exit status 2, never a traceback; an
expected failure (no server, a server lost, a setup the server refuses) is
one line and exit status 1; a bug keeps its traceback. The brokers named on
the command line are module attributes of this file, or (for the worker
processes that look for a server nobody runs) of a module written to the
test's directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from asyncpool.__main__ import main
from asyncpool._deadletters import DeadLetter
from asyncpool._worker import WorkerUsageError, load_broker
from tests.test_broker import MemoryBroker


class LettersBroker(MemoryBroker):
    """A broker that keeps dead letters in a list, and records what is requeued and deleted."""

    def __init__(self, *letters: DeadLetter) -> None:
        super().__init__()
        self.letters = list(letters) or [_letter("abc.1", "app.add"), _letter("abc.2", "app.mul")]
        self.requeued: list[DeadLetter] = []
        self.deleted: list[DeadLetter] = []

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self.letters)

    async def requeue(self, letter: DeadLetter | str) -> None:
        assert isinstance(letter, DeadLetter), "the command line requeues the letter it chose"
        self.requeued.append(letter)

    async def delete_dead_letter(self, letter: DeadLetter | str) -> None:
        assert isinstance(letter, DeadLetter), "the command line deletes the letter it chose"
        self.deleted.append(letter)

    @property
    def requeued_ids(self) -> list[str]:
        return [letter.id for letter in self.requeued]


class RequeueOnlyBroker(MemoryBroker):
    """A broker that lists and requeues dead letters, and cannot delete them."""

    async def dead_letters(self) -> list[DeadLetter]:
        return [_letter("abc.1", "app.add")]

    async def requeue(self, letter: DeadLetter | str) -> None:
        raise AssertionError("not asked to requeue")


class GoneSinceListedBroker(LettersBroker):
    """A broker whose letter abc.1 is requeued or deleted elsewhere once it is listed."""

    async def requeue(self, letter: DeadLetter | str) -> None:
        if isinstance(letter, DeadLetter) and letter.id == "abc.1":
            raise LookupError("no dead letter of 'abc.1' at sequence 7")
        await super().requeue(letter)

    async def delete_dead_letter(self, letter: DeadLetter | str) -> None:
        if isinstance(letter, DeadLetter) and letter.id == "abc.1":
            raise LookupError("no dead letter of 'abc.1' at sequence 7")
        await super().delete_dead_letter(letter)


class UnreachableBroker(MemoryBroker):
    """A broker whose server cannot be reached."""

    async def _open(self) -> None:
        raise ConnectionError("no servers available for connection")


class UnreachableLettersBroker(LettersBroker):
    """A broker that keeps dead letters, on a server that cannot be reached."""

    async def _open(self) -> None:
        raise ConnectionError("no servers available for connection")


class SetUpOtherwiseBroker(LettersBroker):
    """A broker that finds its stream's name taken on the server (as JetStreamBroker reports it)."""

    async def _open(self) -> None:
        raise RuntimeError("a JetStream stream named 'asyncpool_jobs' exists with another setup")


class LostWhileRequeueingBroker(LettersBroker):
    """A broker whose server goes away after the first requeue."""

    async def requeue(self, letter: DeadLetter | str) -> None:
        if self.requeued:
            raise ConnectionError("nats: connection lost")
        await super().requeue(letter)


class BuggyBroker(LettersBroker):
    """A broker with a bug: listing raises what no server failure does."""

    async def dead_letters(self) -> list[DeadLetter]:
        raise KeyError("a bug")


def _letter(job_id: str, task: str, seq: int = 7) -> DeadLetter:
    return DeadLetter(
        id=job_id,
        task=task,
        reason="failed",
        error={"type": "builtins.ValueError", "message": "bad input"},
        attempts=3,
        payload=b"{}",
        codec="json",
        subject="asyncpool.jobs.0",
        dead_at=1700000000.0,
        seq=seq,
    )


PLAIN = MemoryBroker()
UNREACHABLE = UnreachableBroker()
UNREACHABLE_LETTERS = UnreachableLettersBroker()
SET_UP_OTHERWISE = SetUpOtherwiseBroker()
LOST_WHILE_REQUEUEING = LostWhileRequeueingBroker()
BUGGY = BuggyBroker()
REQUEUE_ONLY = RequeueOnlyBroker()
GONE_SINCE_LISTED = GoneSinceListedBroker()
NOT_A_BROKER = {"a": 1}

WORKER = "python -m asyncpool worker"
DEAD = "python -m asyncpool dead-letters"


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_broker puts the current directory on sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def one_error_line(err: str, prog: str) -> str:
    """The single line of a usage error, checked to be one line from `prog`, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    assert "Traceback" not in err
    return lines[0]


def last_error_line(err: str, prog: str) -> str:
    """The error line that ends a worker's output (after its progress lines), with no traceback."""
    lines = err.strip().splitlines()
    assert lines, "no output"
    assert lines[-1].startswith(f"{prog}: error: "), err
    assert sum(line.startswith(f"{prog}: error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    return lines[-1]


# -- worker -------------------------------------------------------------


def test_worker_cli_unimportable_module_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A module that does not import: exit 2, one line naming it."""
    assert main(["worker", "no_such_module_for_asyncpool:broker"]) == 2
    captured = capsys.readouterr()
    line = one_error_line(captured.err, WORKER)
    assert "cannot import 'no_such_module_for_asyncpool'" in line
    assert captured.out == ""


def test_worker_cli_attribute_that_is_not_a_broker_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """MODULE:ATTR naming something that is no broker: exit 2, 'not an asyncpool broker'."""
    assert main(["worker", "json:dumps"]) == 2
    line = one_error_line(capsys.readouterr().err, WORKER)
    assert line.endswith("json:dumps is a function, not an asyncpool broker")
    assert main(["worker", "tests.test_worker_cli:NOT_A_BROKER"]) == 2
    assert "is a dict, not an asyncpool broker" in capsys.readouterr().err


def test_worker_cli_missing_attribute_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A module without the named attribute: exit 2, naming module and attribute."""
    assert main(["worker", "json:no_broker_here"]) == 2
    line = one_error_line(capsys.readouterr().err, WORKER)
    assert line.endswith("module 'json' has no attribute 'no_broker_here'")


@pytest.mark.parametrize("spec", ["json", ":broker", "json:", ""], ids=repr)
def test_worker_cli_spec_without_module_and_attribute_exits_2(
    spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An argument that is not MODULE:BROKER: exit 2 with the expected form."""
    assert main(["worker", spec]) == 2
    line = one_error_line(capsys.readouterr().err, WORKER)
    assert f"expected MODULE:BROKER (like app.tasks:broker), got {spec!r}" in line


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_worker_cli_workers_below_one_exits_2(
    workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workers below 1: exit 2 before anything is imported."""
    assert main(["worker", "no_such_module_for_asyncpool:broker", "--workers", workers]) == 2
    line = one_error_line(capsys.readouterr().err, WORKER)
    assert line.endswith(f"--workers must be >= 1, got {workers}")
    assert "no_such_module_for_asyncpool" not in sys.modules


@pytest.mark.parametrize("grace", ["-1", "nan"])
def test_worker_cli_negative_or_nan_grace_exits_2(
    grace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--grace below 0 (or NaN): exit 2."""
    assert main(["worker", "tests.test_worker_cli:PLAIN", "--grace", grace]) == 2
    assert "--grace must be >= 0" in one_error_line(capsys.readouterr().err, WORKER)


def test_worker_cli_non_numeric_workers_is_an_argparse_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--workers that is not an int: argparse's usage error, exit 2."""
    with pytest.raises(SystemExit) as exited:
        main(["worker", "json:dumps", "--workers", "many"])
    assert exited.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_worker_cli_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A broker that cannot connect: exit 1 with one line naming the error, no traceback."""
    assert main(["worker", "tests.test_worker_cli:UNREACHABLE", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncpool worker: opening <")
    line = last_error_line(err, WORKER)
    assert "cannot open <" in line
    assert line.endswith("ConnectionError: no servers available for connection")


def test_load_broker_returns_the_module_attribute() -> None:
    """load_broker('module:attr') gives the broker object itself."""
    assert load_broker("tests.test_worker_cli:PLAIN") is PLAIN
    with pytest.raises(WorkerUsageError, match="not an asyncpool broker"):
        load_broker("tests.test_worker_cli:NOT_A_BROKER")


# -- dead-letters -------------------------------------------------------

LETTERS = LettersBroker()


@pytest.fixture
def letters() -> LettersBroker:
    LETTERS.requeued.clear()
    LETTERS.deleted.clear()
    return LETTERS


def test_dead_letters_cli_requeue_without_ids_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dead-letters X requeue` with neither ids nor --all: exit 2, one line."""
    assert main(["dead-letters", "x", "requeue"]) == 2
    line = one_error_line(capsys.readouterr().err, DEAD)
    assert line.endswith("requeue needs job ids or --all")


def test_dead_letters_cli_bad_broker_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unimportable module, or a broker keeping no dead letters: exit 2, one line."""
    assert main(["dead-letters", "no_such_module_for_asyncpool:broker"]) == 2
    assert "cannot import" in one_error_line(capsys.readouterr().err, DEAD)
    assert main(["dead-letters", "tests.test_worker_cli:PLAIN", "list"]) == 2
    assert "keeps no dead letters" in one_error_line(capsys.readouterr().err, DEAD)


def test_dead_letters_cli_lists_each_letter(
    letters: LettersBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dead-letters X` lists id, task, reason, attempts and error of each letter, then a count."""
    assert main(["dead-letters", "tests.test_worker_cli:LETTERS"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "abc.1\tapp.add\tfailed\tattempts=3\tbuiltins.ValueError: bad input",
        "abc.2\tapp.mul\tfailed\tattempts=3\tbuiltins.ValueError: bad input",
        "2 dead letter(s)",
    ]
    assert letters.requeued == []


def test_dead_letters_cli_requeues_by_id_and_all(
    letters: LettersBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """`requeue ID` requeues that letter; `requeue --all` every letter; both exit 0."""
    assert main(["dead-letters", "tests.test_worker_cli:LETTERS", "requeue", "abc.2"]) == 0
    assert letters.requeued_ids == ["abc.2"]
    assert capsys.readouterr().out == "requeued 1 job(s)\n"
    assert main(["dead-letters", "tests.test_worker_cli:LETTERS", "requeue", "--all"]) == 0
    assert letters.requeued_ids == ["abc.2", "abc.1", "abc.2"]
    assert capsys.readouterr().out == "requeued 2 job(s)\n"


def test_dead_letters_cli_unknown_id_exits_1(
    letters: LettersBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requeueing an id that is no dead letter requeues the others, names it, and exits 1."""
    argv = ["dead-letters", "tests.test_worker_cli:LETTERS", "requeue", "abc.1", "zzz.9"]
    assert main(argv) == 1
    assert letters.requeued_ids == ["abc.1"]
    assert capsys.readouterr().out == "requeued 1 job(s)\nno dead letter with id: zzz.9\n"


TWICE_DEAD = LettersBroker(
    _letter("abc.1", "app.add", seq=7),
    _letter("abc.2", "app.mul", seq=8),
    _letter("abc.1", "app.add", seq=9),
)


def test_dead_letters_cli_requeue_id_takes_only_its_latest_letter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An id with two dead letters requeues only the latest, as broker.requeue(id) does."""
    TWICE_DEAD.requeued.clear()
    argv = ["dead-letters", "tests.test_worker_cli:TWICE_DEAD", "requeue", "abc.1", "abc.1"]
    assert main(argv) == 0
    assert [(d.id, d.seq) for d in TWICE_DEAD.requeued] == [("abc.1", 9)]
    assert capsys.readouterr().out == "requeued 1 job(s)\n"


def test_dead_letters_cli_requeue_all_takes_the_latest_letter_of_each_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--all` sends each job back once: an older letter of the same id stays."""
    TWICE_DEAD.requeued.clear()
    argv = ["dead-letters", "tests.test_worker_cli:TWICE_DEAD", "requeue", "--all"]
    assert main(argv) == 0
    assert sorted((d.id, d.seq) for d in TWICE_DEAD.requeued) == [("abc.1", 9), ("abc.2", 8)]
    assert capsys.readouterr().out == "requeued 2 job(s)\n"


def test_dead_letters_cli_delete_without_ids_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letters X delete` with neither ids nor --all: exit 2, one line."""
    assert main(["dead-letters", "x", "delete"]) == 2
    line = one_error_line(capsys.readouterr().err, DEAD)
    assert line.endswith("delete needs job ids or --all")


def test_dead_letters_cli_delete_id_takes_every_letter_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`delete ID` deletes every dead letter of that job (not only the latest); none is requeued."""
    TWICE_DEAD.requeued.clear()
    TWICE_DEAD.deleted.clear()
    argv = ["dead-letters", "tests.test_worker_cli:TWICE_DEAD", "delete", "abc.1", "abc.1"]
    assert main(argv) == 0
    assert [(d.id, d.seq) for d in TWICE_DEAD.deleted] == [("abc.1", 7), ("abc.1", 9)]
    assert TWICE_DEAD.requeued == []
    assert capsys.readouterr().out == "deleted 2 dead letter(s)\n"


def test_dead_letters_cli_delete_all_takes_every_letter(
    letters: LettersBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """`delete --all` deletes every dead letter and exits 0."""
    assert main(["dead-letters", "tests.test_worker_cli:LETTERS", "delete", "--all"]) == 0
    assert [d.id for d in letters.deleted] == ["abc.1", "abc.2"]
    assert capsys.readouterr().out == "deleted 2 dead letter(s)\n"


def test_dead_letters_cli_delete_unknown_id_exits_1(
    letters: LettersBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleting an id that is no dead letter deletes the others, names it, and exits 1."""
    argv = ["dead-letters", "tests.test_worker_cli:LETTERS", "delete", "zzz.9", "abc.2"]
    assert main(argv) == 1
    assert [d.id for d in letters.deleted] == ["abc.2"]
    assert capsys.readouterr().out == "deleted 1 dead letter(s)\nno dead letter with id: zzz.9\n"


def test_dead_letters_cli_delete_on_a_broker_that_cannot_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A broker that lists and requeues dead letters but cannot delete them: exit 2, one line."""
    assert main(["dead-letters", "tests.test_worker_cli:REQUEUE_ONLY", "delete", "abc.1"]) == 2
    assert "cannot delete dead letters" in one_error_line(capsys.readouterr().err, DEAD)


@pytest.mark.parametrize(
    ("action", "done"), [("requeue", "requeued 1 job(s)"), ("delete", "deleted 1 dead letter(s)")]
)
def test_dead_letters_cli_skips_a_letter_gone_since_it_was_listed(
    action: str, done: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A letter requeued or deleted elsewhere meanwhile is skipped, not a traceback; exit 0."""
    GONE_SINCE_LISTED.requeued.clear()
    GONE_SINCE_LISTED.deleted.clear()
    argv = ["dead-letters", "tests.test_worker_cli:GONE_SINCE_LISTED", action, "--all"]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"{done}\n"
    handled = GONE_SINCE_LISTED.requeued + GONE_SINCE_LISTED.deleted
    assert [d.id for d in handled] == ["abc.2"]


def test_dead_letters_cli_help_says_an_id_requeues_its_latest_letter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The help of `dead-letters` says which letter an id requeues."""
    with pytest.raises(SystemExit):
        main(["dead-letters", "--help"])
    assert "the latest dead letter" in " ".join(capsys.readouterr().out.split())


def test_dead_letters_cli_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that cannot be reached: one line naming the error, exit 1, no traceback."""
    assert main(["dead-letters", "tests.test_worker_cli:UNREACHABLE_LETTERS"]) == 1
    line = one_error_line(capsys.readouterr().err, DEAD)
    assert "cannot open <" in line
    assert line.endswith("ConnectionError: no servers available for connection")


def test_dead_letters_cli_setup_refused_by_the_server_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stream name taken with another setup (opening fails): one line, exit 1."""
    assert main(["dead-letters", "tests.test_worker_cli:SET_UP_OTHERWISE"]) == 1
    line = one_error_line(capsys.readouterr().err, DEAD)
    assert line.endswith(
        "RuntimeError: a JetStream stream named 'asyncpool_jobs' exists with another setup"
    )


def test_dead_letters_cli_server_lost_while_requeueing_says_how_far_it_got(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server lost mid-requeue: what was requeued is printed, then one error line; exit 1."""
    LOST_WHILE_REQUEUEING.requeued.clear()
    argv = ["dead-letters", "tests.test_worker_cli:LOST_WHILE_REQUEUEING", "requeue", "--all"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "requeued 1 job(s)\n"
    line = one_error_line(captured.err, DEAD)
    assert line.endswith("ConnectionError: nats: connection lost")
    assert LOST_WHILE_REQUEUEING.requeued_ids == ["abc.1"]


def test_dead_letters_cli_bug_keeps_its_traceback() -> None:
    """An exception no server failure raises is a bug: it propagates (Python prints it)."""
    with pytest.raises(KeyError, match="a bug"):
        main(["dead-letters", "tests.test_worker_cli:BUGGY"])


# -- worker processes with no server to talk to --------------------------------

ROOT = Path(__file__).resolve().parents[1]

NOBODY_APP = """\
import os

from asyncpool.jetstream import JetStreamBroker

broker = JetStreamBroker(
    os.environ["NOBODY_URL"],
    name="nobody",
    connect_options={"connect_timeout": int(os.environ["NOBODY_CONNECT_TIMEOUT"])},
)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _start_nobody_worker(
    tmp_path: Path, connect_timeout: int
) -> tuple[asyncio.subprocess.Process, str]:
    """`python -m asyncpool worker` of a broker whose address nobody listens on."""
    pytest.importorskip("nats", reason="the worker of a JetStreamBroker needs nats-py")
    url = f"nats://127.0.0.1:{_free_port()}"
    (tmp_path / "nobody_app.py").write_text(NOBODY_APP)
    env = dict(os.environ, NOBODY_URL=url, NOBODY_CONNECT_TIMEOUT=str(connect_timeout))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncpool",
        "worker",
        "nobody_app:broker",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return process, url


async def _finish(process: asyncio.subprocess.Process, timeout: float) -> tuple[int | None, str]:
    """The exit status (None if it outlived `timeout`: then it is killed) and all of stderr."""
    assert process.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            err = await process.stderr.read()
            status: int | None = await process.wait()
    except TimeoutError:
        status = None
        process.kill()
        err = await process.stderr.read()
        await process.wait()
    return status, err.decode()


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_worker_cli_without_a_server_exits_1_after_the_connect_timeout(
    tmp_path: Path,
) -> None:
    """Nobody at the address: exit 1 once the connect timeout has passed, with one error line."""
    process, url = await _start_nobody_worker(tmp_path, connect_timeout=1)
    status, err = await _finish(process, timeout=15)
    assert status == 1, f"exit status {status}:\n{err}"
    line = last_error_line(err, WORKER)
    assert f"cannot connect to NATS at {url} (tried for 1 s): " in line
    assert "encountered error" not in err  # nats-py's traceback per attempt


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_worker_cli_sigterm_while_connecting_exits_1_at_once(tmp_path: Path) -> None:
    """SIGTERM while the first connection is tried: exit 1 at once, not after connect_timeout."""
    process, _ = await _start_nobody_worker(tmp_path, connect_timeout=60)
    assert process.stderr is not None
    async with asyncio.timeout(15):
        first = await process.stderr.readline()
    assert first.startswith(b"asyncpool worker: opening <"), first
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status, err = await _finish(process, timeout=10)
    assert status == 1, (
        f"exit status {status} {time.monotonic() - sent:.1f} s after SIGTERM:\n{err}"
    )
    line = last_error_line(err, WORKER)
    assert "stopped while opening <" in line
    assert line.endswith("its server had not answered; no job was taken")
