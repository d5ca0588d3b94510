"""How the dashboard shows values: clipped text, times, ages, durations, dead-letter payloads.

Everything here returns plain strings (or a `Clipped` of one); escaping is
the templates' business (Jinja2 autoescape) and the page script's
(`textContent`). Clipping is this module's: a page never carries more of a
job's arguments, result or traceback than the limits below, however large
the value the broker or the job log holds.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import math
import pprint
from typing import Any, Final

from ._codecs import Codec, PayloadError
from ._deadletters import DeadLetter
from ._envelope import Envelope

__all__ = (
    "PAYLOAD_LIMIT",
    "TEXT_LIMIT",
    "TRACEBACK_LIMIT",
    "Clipped",
    "DecodedPayload",
    "ago",
    "clip",
    "decode_payload",
    "duration",
    "rate",
    "when",
)

TEXT_LIMIT: Final = 2_000
"""Characters shown of a job's arguments, its result, an error message."""

TRACEBACK_LIMIT: Final = 20_000
"""Characters shown of a traceback."""

PAYLOAD_LIMIT: Final = 2_000
"""Characters shown of a dead letter's payload (decoded, or base64)."""

# Decoding a payload means parsing the bytes; past this size a page shows
# the start of its base64 instead of parsing megabytes per request.
_DECODE_LIMIT: Final = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Clipped:
    """A text cut to its limit.

    Attributes:
        text: What is shown.
        more: How many characters were cut off (0 when nothing was).
    """

    text: str
    more: int

    def __str__(self) -> str:
        if not self.more:
            return self.text
        return f"{self.text}… ({self.more} more characters)"


def clip(value: object, limit: int = TEXT_LIMIT) -> Clipped:
    """`value` as text (a str as is, anything else as its `str`), at most `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return Clipped(text, 0)
    return Clipped(text[:limit], len(text) - limit)


def when(timestamp: float | None) -> str:
    """An epoch time as `2024-05-01 12:00:03` in UTC, or an em dash when unknown."""
    if timestamp is None or not math.isfinite(timestamp):
        return "—"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A duration for people: `850 ms`, `4.2 s`, `3 min 05 s`, `2 h 10 min`; an em dash if None."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def between(start: float | None, end: float | None) -> str:
    """The duration from `start` to `end`, or an em dash when either is unknown."""
    if start is None or end is None:
        return "—"
    return duration(end - start)


def ago(timestamp: float | None, now: float) -> str:
    """How long before `now` the time was: `3.0 s ago`; an em dash when unknown."""
    if timestamp is None:
        return "—"
    return f"{duration(now - timestamp)} ago"


def rate(per_second: float) -> str:
    """A rate of jobs: `12.5/s`, `0/s`."""
    if per_second >= 100:
        return f"{per_second:.0f}/s"
    text = f"{per_second:.1f}".removesuffix(".0")
    return f"{text}/s"


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedPayload:
    """A dead letter's payload as a page shows it.

    Attributes:
        form: "job" (an envelope: task, args, kwargs), "value" (decoded, but
            not an envelope), or "base64" (not decoded: the raw bytes).
        text: What is shown, clipped.
        note: Why it was not decoded, when it was not.
    """

    form: str
    text: Clipped
    note: str = ""


def decode_payload(letter: DeadLetter, codec: Codec | None) -> DecodedPayload:
    """Decode `letter.payload` with `codec` when that is safe and it fits, else show base64.

    Only the broker's own codec is used, and only when the letter names it.
    A pickle payload is never decoded here: unpickling builds objects (and
    may run their code), which a page that only looks must not do, even for
    a signed payload.
    """
    raw = letter.payload
    reason = ""
    if codec is None:
        reason = "no codec to decode it with"
    elif letter.codec != codec.name:
        reason = f"written with codec {letter.codec!r}, not the broker's {codec.name!r}"
    elif codec.name.startswith("pickle"):
        reason = "pickle payloads are not decoded by the dashboard"
    elif len(raw) > _DECODE_LIMIT:
        reason = f"{len(raw):,} bytes: too large to decode here"
    else:
        try:
            envelope = Envelope.decode(raw, codec)
        except PayloadError:
            pass
        else:
            shown = {"task": envelope.task, "args": envelope.args, "kwargs": envelope.kwargs}
            return DecodedPayload("job", clip(_pretty(shown), PAYLOAD_LIMIT))
        try:
            value = codec.decode(raw)
        except PayloadError as exc:
            reason = f"does not decode: {exc}"
        else:
            return DecodedPayload("value", clip(_pretty(value), PAYLOAD_LIMIT))
    # Encode no more than is shown: a page never carries the whole of a big payload.
    head = raw[: PAYLOAD_LIMIT // 4 * 3 + 3]
    text = base64.b64encode(head).decode("ascii")[:PAYLOAD_LIMIT]
    more = 4 * math.ceil(len(raw) / 3) - len(text)
    return DecodedPayload("base64", Clipped(text, max(0, more)), reason)


def _pretty(value: Any) -> str:
    return pprint.pformat(value, width=100, sort_dicts=False)
