"""The CPU-bound function of benchmarks/cpu.py, in a module a spawned child can import."""

from __future__ import annotations


def burn(n: int) -> int:
    """A sum of squares: pure Python, holds the GIL throughout."""
    return sum(i * i for i in range(n))
