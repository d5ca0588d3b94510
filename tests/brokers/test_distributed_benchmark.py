"""The distributed benchmark's harness runs end to end on the real servers (tiny N).

The numbers are measured by `make bench-distributed`, never in a test; this
only keeps `benchmarks/distributed.py` working for both engines: its worker
processes start, every job is counted, the streams and Redis keys of the run
are deleted, and the saved results render.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _peer_venvs

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "distributed.py"
REDIS_DB = 13
SMALL = ("--procs", "1", "--no-recovery", "--jobs", "200", "--samples", "10", "--repeat", "1")
ROWS = {"1/add/results", "1/add/fire-and-forget", "1/latency"}


def _run(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _measured(
    args: tuple[str, ...], saved: Path, timeout: float = 100
) -> tuple[dict[str, Any], str]:
    """Run the benchmark with `args`; its saved results and its output."""
    done = _run(*args, *SMALL, "--json", str(saved), timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads(saved.read_text(encoding="utf-8"))
    assert results["jobs"] == 200
    return results, done.stdout


def _renders(saved: Path, *expected: str) -> None:
    rendered = _run("--render-only", str(saved), timeout=60)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    for text in expected:
        assert text in rendered.stdout


@pytest.fixture
def machine_redis() -> None:
    """The machine's Redis at 127.0.0.1:6379: fails in CI without it, else skips."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        answer = repr(exc).encode()
    if not answer.startswith(b"+PONG"):
        why = f"no Redis answers at 127.0.0.1:6379 ({answer[:80]!r})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def _keys_of_run(stdout: str) -> list[str]:
    """The keys left in the benchmark's Redis database that name the run (`bench_<pid>`)."""
    match = re.search(r"tag (bench_[0-9]+)", stdout)
    assert match is not None, stdout[-2000:]
    tag = match.group(1)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, redis\n"
            f"client = redis.Redis(host='127.0.0.1', port=6379, db={REDIS_DB})\n"
            "print('\\n'.join(k.decode() for k in client.scan_iter(match=sys.argv[1])))\n",
            f"*{tag}*",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [k for k in done.stdout.split() if re.search(rf"{tag}(?![0-9])", k)]


@pytest.mark.timeout(120)
def test_distributed_benchmark_runs_asyncpool_and_the_raw_floor(
    nats_url: str, tmp_path: Path
) -> None:
    """JetStream: one round of asyncpool and the raw floor gives numbers for every row promised."""
    saved = tmp_path / "results.json"
    results, stdout = _measured(
        ("--engine", "jetstream", "--only", "asyncpool,raw", "--nats", nats_url), saved
    )
    assert list(results["engines"]) == ["jetstream"]
    section = results["engines"]["jetstream"]
    for system in ("asyncpool", "raw"):
        rows = section["rows"][system]
        assert set(rows) == ROWS
        assert all(rows[row] for row in rows), rows
    assert "ap/raw" in stdout
    _renders(saved, "ap/raw", "JetStream")


@pytest.mark.timeout(150)
def test_distributed_benchmark_redis_engine_runs_every_system_of_the_project_env(
    nats_url: str, machine_redis: None, tmp_path: Path
) -> None:
    """Redis: asyncpool, arq, SAQ and the raw floor, one round; every key of the run is deleted."""
    saved = tmp_path / "results.json"
    results, stdout = _measured(
        ("--engine", "redis", "--only", "asyncpool,arq,saq,raw", "--nats", nats_url),
        saved,
        timeout=130,
    )
    section = results["engines"]["redis"]
    ran = [s for s in ("asyncpool", "arq", "saq", "raw") if s not in section["skipped"]]
    assert set(ran) >= {"arq", "saq", "raw"}, section["skipped"]
    for system in ran:
        rows = section["rows"][system]
        assert set(rows) == ROWS, system
        assert all(rows[row] for row in rows), rows
        assert section["environments"][system]["environment"] == ".venv"
    assert "ap/fastest" in stdout
    assert _keys_of_run(stdout) == []
    _renders(saved, "ap/saq", "Redis")


@pytest.mark.timeout(150)
def test_distributed_benchmark_runs_taskiq_redis_from_its_own_environment(
    nats_url: str, machine_redis: None, tmp_path: Path
) -> None:
    """taskiq-redis runs, producer and workers, from .venv-peers/taskiq-redis, and says so."""
    if not _peer_venvs.ready("taskiq-redis"):
        pytest.skip(
            "needs .venv-peers/taskiq-redis (taskiq-redis with redis-py 8, pinned in "
            "benchmarks/_peer_venvs.py), which `make bench-distributed` makes with pip from "
            "PyPI; this test does not reach the network to make it"
        )
    saved = tmp_path / "results.json"
    results, stdout = _measured(
        ("--engine", "redis", "--only", "taskiq-redis", "--nats", nats_url), saved, timeout=130
    )
    section = results["engines"]["redis"]
    assert set(section["rows"]["taskiq-redis"]) == ROWS
    where = section["environments"]["taskiq-redis"]
    assert where["environment"] == ".venv-peers/taskiq-redis"
    assert where["redis"].startswith("8.")
    assert "ran from .venv-peers/taskiq-redis" in stdout
    assert _keys_of_run(stdout) == []
