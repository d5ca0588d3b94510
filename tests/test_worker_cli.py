"""`python -m asyncpool worker|dead-letters` (asyncpool.__main__, asyncpool._worker), no server.

Bad input is one line on stderr and exit status 2, never a traceback. The
brokers named on the command line are module attributes of this file.
"""

from __future__ import annotations

import sys

import pytest

from asyncpool.__main__ import main
from asyncpool._deadletters import DeadLetter
from asyncpool._worker import WorkerUsageError, load_broker
from tests.test_broker import MemoryBroker


class LettersBroker(MemoryBroker):
    """A broker that keeps dead letters in a list, and records what is requeued."""

    def __init__(self) -> None:
        super().__init__()
        self.letters = [_letter("abc.1", "app.add"), _letter("abc.2", "app.mul")]
        self.requeued: list[str] = []

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self.letters)

    async def requeue(self, letter: DeadLetter | str) -> None:
        self.requeued.append(letter if isinstance(letter, str) else letter.id)


class UnreachableBroker(MemoryBroker):
    """A broker whose server cannot be reached."""

    async def _open(self) -> None:
        raise ConnectionError("no servers available for connection")


def _letter(job_id: str, task: str) -> DeadLetter:
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
        seq=7,
    )


PLAIN = MemoryBroker()
UNREACHABLE = UnreachableBroker()
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
    line = one_error_line(capsys.readouterr().err, WORKER)
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
    assert letters.requeued == ["abc.2"]
    assert capsys.readouterr().out == "requeued 1 job(s)\n"
    assert main(["dead-letters", "tests.test_worker_cli:LETTERS", "requeue", "--all"]) == 0
    assert letters.requeued == ["abc.2", "abc.1", "abc.2"]
    assert capsys.readouterr().out == "requeued 2 job(s)\n"


def test_dead_letters_cli_unknown_id_exits_1(
    letters: LettersBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requeueing an id that is no dead letter requeues the others, names it, and exits 1."""
    argv = ["dead-letters", "tests.test_worker_cli:LETTERS", "requeue", "abc.1", "zzz.9"]
    assert main(argv) == 1
    assert letters.requeued == ["abc.1"]
    assert capsys.readouterr().out == "requeued 1 job(s)\nno dead letter with id: zzz.9\n"
