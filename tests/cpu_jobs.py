"""Module-level functions for the process-pool tests: a spawned child must import them."""

from __future__ import annotations

import os
import time


def pid_and_square(x: int) -> tuple[int, int]:
    """Return the process id and x squared."""
    return os.getpid(), x * x


def burn(n: int) -> int:
    """CPU-bound work: a sum of squares."""
    return sum(i * i for i in range(n))


def crash() -> None:
    """Kill the worker process outright, as a segfault would."""
    os._exit(3)


def nap(seconds: float) -> float:
    """Block the process for a while (for cancellation tests)."""
    time.sleep(seconds)
    return seconds


class Square:
    """A picklable sync Job."""

    def __init__(self, x: int) -> None:
        self.x = x

    def process(self) -> int:
        return self.x * self.x
