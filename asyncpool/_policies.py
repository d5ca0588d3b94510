"""The scheduling policies off the common path: priorities, keys and the rate limit.

Each is plain synchronous bookkeeping with no event loop and no clock of
its own (the rate limit is told the time), so each can be tested alone. The
core consults them only when one is in use (see `Core._detour`): a pool
that uses none of them never calls into this module per job.

* `PriorityLanes`: jobs with a priority wait in a heap beside the core's
  FIFO deque of priority-0 jobs; `take` merges the two.
* `KeyTable`: jobs with the same `key` run one at a time, in the order they
  were submitted; later ones are parked outside the queue.
* `TokenBucket`: at most `rate` job starts per second, `burst` at once.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ("KeyTable", "PriorityLanes", "TokenBucket")


class _Numbered(Protocol):
    @property
    def id(self) -> int: ...


J = TypeVar("J", bound=_Numbered)


class PriorityLanes(Generic[J]):
    """Jobs with a priority other than 0, merged with the FIFO deque of priority-0 jobs.

    Entries are `(-priority, order, tie, job)`: `order` is the job's id, or
    for a retry the last id given out when it came back (the back of its
    priority). The deque holds fresh priority-0 jobs in id order, so a heap
    entry of priority 0 goes first if its order is smaller than the id at
    the head of the deque: jobs of one priority run oldest first, wherever
    they wait.
    """

    __slots__ = ("used", "entries", "_tie")

    def __init__(self) -> None:
        self.used = False
        """True once any job has waited here: from then on the heap must be consulted."""
        self.entries: list[tuple[int, int, int, J]] = []
        """The heap itself, for reading only: it is the same list for the lanes'
        whole life, so a caller may keep it to test cheaply whether a job waits."""
        self._tie = itertools.count()

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, job: J, priority: int, order: int) -> None:
        """Queue `job` at the place its priority and `order` give it."""
        self.used = True
        heapq.heappush(self.entries, (-priority, order, next(self._tie), job))

    def take(self, fifo: deque[J]) -> J | None:
        """Take the next job: the oldest of the highest priority, from here or `fifo`.

        Returns None when both are empty. The job may be a cancelled one
        left for the caller to skip.
        """
        heap = self.entries
        if heap and (
            heap[0][0] < 0  # a positive priority
            or not fifo
            or (heap[0][0] == 0 and heap[0][1] < fifo[0].id)  # older, same priority
        ):
            return heapq.heappop(heap)[3]
        if fifo:
            return fifo.popleft()
        return None

    def keep(self, alive: Callable[[J], bool]) -> None:
        """Drop the entries whose job is not `alive` (a compaction of dead entries)."""
        self.entries[:] = [entry for entry in self.entries if alive(entry[3])]
        heapq.heapify(self.entries)

    def drain(self) -> Iterator[J]:
        """Take every job out, best first."""
        heap = self.entries
        while heap:
            yield heapq.heappop(heap)[3]


K = TypeVar("K")


class KeyTable(Generic[K]):
    """Which key is held by a job, and the jobs of each key waiting their turn.

    A key is in the table while a job of it holds it; the key's later jobs
    are parked behind it, in submission order, outside the job queue.
    Deciding at submission keeps a key's jobs in the order they were
    submitted, whatever their priorities.
    """

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: dict[Hashable, deque[K]] = {}

    def __len__(self) -> int:
        """How many keys are held."""
        return len(self._parked)

    def claim(self, key: Hashable, job: K) -> bool:
        """Give `job` its key if the key is free (True); else park it behind the key's jobs."""
        parked = self._parked.get(key)
        if parked is None:
            self._parked[key] = deque()
            return True
        parked.append(job)
        return False

    def release(self, key: Hashable) -> K | None:
        """The key's holder is final: return the parked job that holds the key now, if any.

        With none parked, the key idles and is forgotten.
        """
        parked = self._parked.get(key)
        if parked is None:
            return None  # a shutdown cleared the table
        if not parked:
            del self._parked[key]  # nothing kept for an idle key
            return None
        return parked.popleft()

    def unpark(self, key: Hashable, job: K) -> None:
        """Take a parked job out of its key's line (it was cancelled)."""
        self._parked[key].remove(job)

    def drain(self) -> list[K]:
        """Forget every key; return the parked jobs, key by key in order."""
        parked = [job for waiting in self._parked.values() for job in waiting]
        self._parked.clear()
        return parked


class TokenBucket:
    """The rate limit: at most `rate` starts per second, up to `burst` at once after a lull."""

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: int, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def restart(self, now: float) -> None:
        """Begin counting at `now` (the dispatcher starts), with a full bucket."""
        self._tokens = float(self.burst)
        self._at = now

    def take(self, now: float) -> float:
        """Take a token if one is there: returns 0.0; else the seconds until the next one."""
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        # The tolerance absorbs float rounding: a timer set for the exact
        # moment of the next token must find it there.
        if tokens >= 1 - 1e-9:
            self._tokens = max(0.0, tokens - 1)
            return 0.0
        self._tokens = tokens
        return (1 - tokens) / self.rate

    def give_back(self) -> None:
        """A token taken was not used for a start."""
        self._tokens = min(float(self.burst), self._tokens + 1)
