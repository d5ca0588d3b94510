"""The dead letters of a Redis broker: a stream, `{name}:dead`.

* `{name}:dead`: a stream of dead letters, one entry (a JSON `letter`
  field) per dead job;
* `{name}:deadseen:<job id>:<entry id>`: a written death, kept the
  transport's dedup window, so one job entry has one dead letter.

The atomic steps are Lua scripts (`DEAD_LETTER`, `REQUEUE` in
`_redis_scripts`). The transport (`_redis_transport`) makes one
`RedisDeadLetters` and hands it its `dead_letter`, `dead_letters`,
`requeue` and `delete_dead_letter`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection
from typing import Any

import redis.asyncio

from . import _redis_scripts as scripts
from ._deadletters import DeadLetter
from ._redis_calls import Pipeliner, Script, connection_errors

__all__ = ("RedisDeadLetters", "letter_from")


class RedisDeadLetters:
    """The dead letters of one broker, under its key prefix `{name}`."""

    __slots__ = (
        "_redis",
        "_where",
        "_prefix",
        "key",
        "_dedup_window",
        "_normal_lane",
        "_keyed_lanes",
        "_busy_key",
        "_bell_channel",
        "_record_key",
        "_dead_letter",
        "_requeue",
    )

    def __init__(
        self,
        client: redis.asyncio.Redis,
        pipeliner: Pipeliner,
        prefix: str,
        where: str,
        *,
        dedup_window: int,
        normal_lane: str,
        keyed_lanes: Collection[str],
        busy_key: str,
        bell_channel: str,
        record_key: Callable[[str], str],
    ) -> None:
        self._redis = client
        self._where = where
        self._prefix = prefix
        # The stream of dead letters.
        self.key = f"{prefix}:dead"
        self._dedup_window = dedup_window
        # Where a letter goes back to when its subject is not one of the broker's lanes.
        self._normal_lane = normal_lane
        self._keyed_lanes = keyed_lanes
        self._busy_key = busy_key
        self._bell_channel = bell_channel
        self._record_key = record_key
        self._dead_letter = Script(pipeliner, scripts.DEAD_LETTER)
        self._requeue = Script(pipeliner, scripts.REQUEUE)

    async def dead_letter(self, delivery: Any, letter: dict[str, Any]) -> None:
        letter = dict(letter, subject=delivery.stream)
        await self._dead_letter(
            [
                self.key,
                f"{self._prefix}:deadseen:{letter['id']}:{delivery.entry_id}",
            ],
            # One dead letter per job entry, however often its death is
            # written (a worker may die between this and its ack).
            [json.dumps(letter), self._dedup_window],
        )

    async def dead_letters(self) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        start = "-"
        while True:
            with connection_errors(self._where):
                entries = await self._redis.xrange(self.key, min=start, count=500)
            for entry_id, entry in entries:
                raw = json.loads(entry.get(b"letter") or b"{}")
                letters.append(letter_from(raw, entry_id.decode()))
            if len(entries) < 500:
                return letters
            start = "(" + entries[-1][0].decode()

    async def requeue(self, letter: DeadLetter) -> None:
        """Send the dead letter's job back to its lane, and remove the letter (one step).

        Raises:
            LookupError: the letter is gone (deleted or requeued already).
        """
        lane = letter.subject
        if not lane.startswith(f"{self._prefix}:"):
            lane = self._normal_lane
        requeued = await self._requeue(
            [lane, self.key, self._record_key(letter.id), self._busy_key],
            [
                str(letter.seq),
                letter.payload,
                letter.codec or "",
                letter.id,
                self._bell_channel,
                int(lane in self._keyed_lanes),
            ],
        )
        if not requeued:
            raise LookupError(f"no dead letter of {letter.id!r} at entry {letter.seq}")

    async def delete(self, letter: DeadLetter) -> None:
        """Remove a dead letter from its stream.

        Raises:
            LookupError: it is not there (deleted or requeued already).
        """
        with connection_errors(self._where):
            removed = await self._redis.xdel(self.key, str(letter.seq))
        if not removed:
            raise LookupError(f"no dead letter of {letter.id!r} at entry {letter.seq}")


def letter_from(raw: dict[str, Any], entry_id: str) -> DeadLetter:
    """A dead letter as the stream keeps it (`entry_id`: where, to requeue or delete it)."""
    return DeadLetter(
        id=str(raw.get("id")),
        task=raw.get("task"),
        reason=str(raw.get("reason")),
        error=raw.get("error"),
        attempts=int(raw.get("attempts") or 0),
        payload=base64.b64decode(raw.get("payload") or ""),
        codec=raw.get("codec"),
        subject=str(raw.get("subject") or ""),
        dead_at=float(raw.get("at") or 0.0),
        seq=entry_id,
    )
