"""Own environments for the benchmark peers that cannot share the project's.

A peer whose requirements conflict with the project's environment (`.venv`)
runs, producer and workers both, from `.venv-peers/<peer>`, made here on
demand with `python -m venv` and `pip install` of the pinned versions below
(the versions the benchmark was measured with). taskiq-redis 1.2 needs
redis-py 8, while arq, in `.venv`, pins redis-py below 6.

An environment is made again when its pins change (`.venv-peers/<peer>/.pins`
holds the pins it was made with). Making one needs the package index;
`ready()` tells, without it, whether one is there.

    python benchmarks/_peer_venvs.py [PEER ...]   # make them now (default: all)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".venv-peers"

PINS: dict[str, tuple[str, ...]] = {
    # taskiq's worker runs on uvloop where it is installed, as it does in .venv;
    # hiredis is redis-py's parser in .venv too; nats-py for the benchmark's probe.
    "taskiq-redis": (
        "taskiq-redis==1.2.4",
        "taskiq==0.13.0",
        "redis==8.1.0",
        "hiredis==3.5.0",
        "uvloop==0.23.0",
        "nats-py==2.16.0",
    ),
}


def path(peer: str) -> Path:
    return HOME / peer


def python(peer: str) -> Path:
    return path(peer) / "bin" / "python"


def _stamp(peer: str) -> Path:
    return path(peer) / ".pins"


def ready(peer: str) -> bool:
    """Whether `.venv-peers/<peer>` is there, made with the current pins."""
    stamp = _stamp(peer)
    return (
        python(peer).exists()
        and stamp.exists()
        and stamp.read_text(encoding="utf-8").split() == list(PINS[peer])
    )


def ensure(peer: str) -> Path:
    """The python of `.venv-peers/<peer>`, made first if missing or outdated (needs PyPI).

    Raises:
        RuntimeError: venv or pip failed; the message has their output.
    """
    if ready(peer):
        return python(peer)
    where = path(peer)
    print(f"making {where.relative_to(ROOT)}: {' '.join(PINS[peer])}", flush=True)
    if where.exists():
        shutil.rmtree(where)
    steps = [
        [sys.executable, "-m", "venv", str(where)],
        [
            *(str(python(peer)), "-m", "pip", "install", "--quiet"),
            *("--disable-pip-version-check", *PINS[peer]),
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(step[:4])} ... failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
    _stamp(peer).write_text("\n".join(PINS[peer]) + "\n", encoding="utf-8")
    return python(peer)


def versions(peer: str, names: list[str]) -> dict[str, str]:
    """The versions of `names` (distributions) and of Python in the peer's environment."""
    script = (
        "import importlib.metadata as m, json, platform, sys\n"
        "out = {'python': platform.python_version()}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[name] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(python(peer)), "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, str] = json.loads(done.stdout)
    return found


def main() -> None:
    for peer in sys.argv[1:] or list(PINS):
        if peer not in PINS:
            raise SystemExit(f"unknown peer {peer!r}; known: {', '.join(PINS)}")
        print(f"{peer}: {ensure(peer)}")


if __name__ == "__main__":
    main()
