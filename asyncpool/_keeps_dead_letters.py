"""`KeepsDeadLetters`: the dead-letter methods of a broker whose engine keeps dead letters.

Both engines keep them, through their transports; a `Broker` subclass of
another engine may not, and the command line and the dashboard look the
methods up before they offer them. So they are a mixin of the engines,
not methods of `Broker` itself.
"""

from __future__ import annotations

import abc
from typing import Protocol

from ._deadletters import DeadLetter

__all__ = ("DeadLetterStore", "KeepsDeadLetters")


class DeadLetterStore(Protocol):
    """What an engine's transport does with dead letters."""

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def requeue(self, letter: DeadLetter) -> None: ...

    async def delete_dead_letter(self, letter: DeadLetter) -> None: ...


class KeepsDeadLetters(abc.ABC):
    """List, requeue and delete dead letters (mixed into a `Broker` subclass, after it)."""

    @abc.abstractmethod
    def _check_open(self) -> None:
        """Raise RuntimeError unless the broker is open (`Broker` has it)."""

    @property
    @abc.abstractmethod
    def _dead_letter_store(self) -> DeadLetterStore:
        """Where the dead letters are kept: the engine's transport."""

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        self._check_open()
        return await self._dead_letter_store.dead_letters()

    async def requeue(self, letter: DeadLetter | str) -> None:
        """Send a dead letter's job back where it was published; its old record is removed.

        A job id names the latest dead letter with that id.

        Raises:
            LookupError: no dead letter has that id, or `letter` is gone
                (deleted or requeued already).
        """
        await self._dead_letter_store.requeue(await self._named(letter))

    async def delete_dead_letter(self, letter: DeadLetter | str) -> None:
        """Remove a dead letter for good: its job is not run again (its terminal record stays).

        A job id names the latest dead letter with that id, as for `requeue`.

        Raises:
            LookupError: no dead letter has that id, or `letter` is gone
                (deleted or requeued already).
        """
        await self._dead_letter_store.delete_dead_letter(await self._named(letter))

    async def _named(self, letter: DeadLetter | str) -> DeadLetter:
        """`letter`, or the latest dead letter with that job id (the broker must be open)."""
        self._check_open()
        if isinstance(letter, str):
            return await self._latest_dead_letter(letter)
        return letter

    async def _latest_dead_letter(self, job_id: str) -> DeadLetter:
        matches = [d for d in await self.dead_letters() if d.id == job_id]
        if not matches:
            raise LookupError(f"no dead letter has the id {job_id!r}")
        return matches[-1]
