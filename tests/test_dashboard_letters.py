"""The dead-letter pages and actions, and the pages of any `Source`.

`LetterSource` is a dashboard `Source` written the way an application may
write its own: it keeps dead letters in a list and records what is
requeued and deleted. Through it the pages are tested without a broker
(the broker sources are tested against the real servers elsewhere).
"""

from __future__ import annotations

import base64
import html
import re
import time

from asyncpool._codecs import Codec, JsonCodec, PickleCodec
from asyncpool._deadletters import DeadLetter
from asyncpool._envelope import Envelope
from asyncpool._joblog import JobRecord
from asyncpool.dashboard import LaneRow, Source, WorkerRow, create_app
from tests.test_dashboard import SCRIPT, TOKEN, csrf_of, serving, sign_in

FULL_TRACEBACK = "Traceback (most recent call last):\n" + "  line\n" * 6_000 + "OSError: gone\n"


def letter(
    job_id: str,
    seq: int,
    *,
    payload: bytes | None = None,
    codec: str | None = "json",
    message: str = "the disk is full",
    traceback: str = "Traceback (most recent call last):\nOSError: the disk is full\n",
) -> DeadLetter:
    """A dead letter of task app.resize whose payload is its envelope in JSON, by default."""
    if payload is None:
        envelope = Envelope(id=job_id, task="app.resize", args=[SCRIPT], kwargs={"size": 3})
        payload = envelope.encode(JsonCodec())
    return DeadLetter(
        id=job_id,
        task="app.resize",
        reason="failed",
        error={"type": "OSError", "message": message, "traceback": traceback},
        attempts=3,
        payload=payload,
        codec=codec,
        subject="app.jobs.normal",
        dead_at=time.time() - 60,
        seq=seq,
    )


class LetterSource:
    """A `Source` of dead letters and one job, in memory."""

    def __init__(self, *letters: DeadLetter, codec: Codec | None = None) -> None:
        self.letters = list(letters)
        self.requeued: list[DeadLetter] = []
        self.deleted: list[DeadLetter] = []
        self.cancelled: list[str] = []
        self._codec = codec or JsonCodec()
        self.job = JobRecord(
            id=SCRIPT,
            task=SCRIPT,
            state="failed",
            attempts=2,
            queued_at=time.time() - 5,
            started_at=time.time() - 4,
            finished_at=time.time() - 1,
            args="x" * 5_000,
            error={"type": "OSError", "message": SCRIPT, "traceback": FULL_TRACEBACK},
            worker="host:1",
            lane="app_normal",
        )

    @property
    def label(self) -> str:
        return "letters in memory"

    @property
    def keeps_dead_letters(self) -> bool:
        return True

    @property
    def codec(self) -> Codec | None:
        return self._codec

    async def lanes(self) -> list[LaneRow]:
        return [LaneRow("normal", 4, 1, 2, 0.5)]

    async def workers(self) -> list[WorkerRow]:
        now = time.time()
        return [WorkerRow("host:1", now - 90, now - 2, 4, 1, 3, 0, 10, 2, 0)]

    async def finished(self) -> int:
        return 12

    async def jobs(self, state: str | None = None, limit: int = 100) -> list[JobRecord]:
        return [self.job] if state in (None, "failed") else []

    async def find_job(self, job_id: str) -> JobRecord | None:
        return self.job if job_id == self.job.id else None

    async def cancel(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return False

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self.letters)

    async def requeue(self, letter: DeadLetter) -> None:
        self.letters.remove(letter)
        self.requeued.append(letter)

    async def delete_dead_letter(self, letter: DeadLetter) -> None:
        self.letters.remove(letter)
        self.deleted.append(letter)


def rows(page: str) -> list[str]:
    """The seq of each letter row, top to bottom."""
    return re.findall(r'data-testid="letter-row" data-letter-id="[^"]*" data-seq="([^"]+)"', page)


async def test_a_custom_source_is_a_source_and_its_pages_render() -> None:
    """Any object with the Source methods is shown: its lanes, workers and totals."""
    source = LetterSource()
    assert isinstance(source, Source)
    async with serving(create_app(source, token=TOKEN, title="Letters")) as client:
        page = (await client.get("/")).text
        data = (await client.get("/api/overview")).json()
    assert "<title>Overview · Letters</title>" in page
    assert data["lanes"] == [
        {"name": "normal", "waiting": "4", "running": "1", "delayed": "2", "rate": "0.5/s"}
    ]
    assert data["workers"][0]["pool"] == "1 / 3 / 4"
    assert data["workers"][0]["heartbeat"] == "2.0 s ago"
    assert data["totals"]["delayed"] == "2"


async def test_dead_letters_are_listed_newest_first_with_their_errors() -> None:
    """Each letter is a letter-row (id, task, reason, attempts, dead at, message), newest first."""
    source = LetterSource(letter("a.1", 10), letter("b.2", 11, message=SCRIPT))
    async with serving(create_app(source, token=TOKEN)) as client:
        page = (await client.get("/dead-letters")).text
    assert rows(page) == ["11", "10"]
    assert "<script>window" not in page
    assert html.escape(SCRIPT) in page
    assert page.count('data-testid="requeue-button"') == 2
    assert page.count('data-testid="delete-button"') == 2
    assert 'data-testid="requeue-selected"' in page
    assert 'href="/dead-letters/a.1"' in page


async def test_dead_letter_page_shows_traceback_and_decoded_payload() -> None:
    """One letter: its error and traceback, and its envelope decoded (arguments escaped)."""
    source = LetterSource(letter("a.1", 10))
    async with serving(create_app(source, token=TOKEN)) as client:
        page = (await client.get("/dead-letters/a.1")).text
        missing = await client.get("/dead-letters/zzz")
    assert 'data-testid="traceback">Traceback (most recent call last):' in page
    assert 'data-testid="payload" data-form="job"' in page
    assert "&#39;task&#39;: &#39;app.resize&#39;" in page
    assert html.escape(SCRIPT) in page
    assert "<script>window" not in page
    assert missing.status_code == 404


async def test_dead_letter_payload_that_cannot_be_decoded_shows_as_base64() -> None:
    """Bytes that are not JSON, another codec's, or pickle: base64 and why, never unpickled."""
    garbage = b"\xff\xfe not json at all"
    pickled = PickleCodec(b"k" * 32).encode({"a": 1})
    source = LetterSource(
        letter("bad.1", 1, payload=garbage),
        letter("other.2", 2, payload=b"\x81\xa1a\x01", codec="msgpack"),
    )
    pickle_source = LetterSource(
        letter("p.3", 3, payload=pickled, codec="pickle-hmac"), codec=PickleCodec(b"k" * 32)
    )
    async with serving(create_app(source, token=TOKEN)) as client:
        bad = (await client.get("/dead-letters/bad.1")).text
        other = (await client.get("/dead-letters/other.2")).text
    async with serving(create_app(pickle_source, token=TOKEN)) as client:
        pickle_page = (await client.get("/dead-letters/p.3")).text
    assert base64.b64encode(garbage).decode() in bad
    assert 'data-form="base64"' in bad
    assert "does not decode" in bad
    assert "not the broker&#39;s &#39;json&#39;" in other
    assert base64.b64encode(pickled).decode()[:40] in pickle_page
    assert "pickle payloads are not decoded" in pickle_page


async def test_requeue_and_delete_one_letter_with_the_token() -> None:
    """A row's Requeue and Delete act on its letter only (by seq), then redirect with a notice."""
    first, second, third = letter("a.1", 10), letter("a.1", 11), letter("c.3", 12)
    source = LetterSource(first, second, third)
    async with serving(create_app(source, token=TOKEN)) as client:
        await sign_in(client)
        page = (await client.get("/dead-letters")).text
        csrf = csrf_of(page)
        requeued = await client.post(
            "/actions/dead-letters", data={"csrf": csrf, "requeue_one": "10"}
        )
        deleted = await client.post(
            "/actions/dead-letters", data={"csrf": csrf, "delete_one": "12"}
        )
        after = (await client.get(deleted.headers["location"])).text
    assert source.requeued == [first]
    assert source.deleted == [third]
    assert source.letters == [second]
    assert requeued.status_code == deleted.status_code == 303
    assert requeued.headers["location"] == "/dead-letters?notice=requeued&n=1&missing=0"
    assert 'data-testid="notice">Deleted 1 dead letter(s).<' in after
    assert rows(after) == ["11"]


async def test_requeue_and_delete_the_selected_letters() -> None:
    """The checked boxes with action=requeue or delete; letters gone meanwhile are counted."""
    letters = [letter(f"j.{n}", n) for n in range(1, 6)]
    source = LetterSource(*letters)
    async with serving(create_app(source, token=TOKEN)) as client:
        await sign_in(client)
        csrf = csrf_of((await client.get("/dead-letters")).text)
        requeue = await client.post(
            "/actions/dead-letters",
            data={"csrf": csrf, "action": "requeue", "letter": ["1", "3", "99"]},
        )
        delete = await client.post(
            "/actions/dead-letters",
            data={"csrf": csrf, "action": "delete", "letter": ["2", "4"]},
        )
        nothing = await client.post(
            "/actions/dead-letters", data={"csrf": csrf, "action": "delete"}
        )
        notice = (await client.get(requeue.headers["location"])).text
    assert [d.seq for d in source.requeued] == [1, 3]
    assert [d.seq for d in source.deleted] == [2, 4]
    assert [d.seq for d in source.letters] == [5]
    assert "Requeued 2 dead letter(s). 1 were gone already" in notice
    assert nothing.headers["location"] == "/dead-letters?notice=none-selected"
    assert delete.status_code == 303


async def test_dead_letter_detail_page_acts_on_its_letter() -> None:
    """The detail page of a job id that died twice shows the latest letter, and acts on it."""
    old, latest = letter("a.1", 10), letter("a.1", 11, message="again")
    source = LetterSource(old, latest)
    async with serving(create_app(source, token=TOKEN)) as client:
        await sign_in(client)
        page = (await client.get("/dead-letters/a.1")).text
        assert 'data-testid="earlier-letters"' in page
        assert "again" in page
        await client.post(
            "/actions/dead-letters", data={"csrf": csrf_of(page), "requeue_one": "11"}
        )
    assert source.requeued == [latest]


async def test_actions_without_the_token_change_nothing() -> None:
    """Read-only visitors see disabled buttons and no CSRF value; their posts are 403."""
    source = LetterSource(letter("a.1", 10))
    async with serving(create_app(source, token=TOKEN)) as client:
        page = (await client.get("/dead-letters")).text
        refused = await client.post(
            "/actions/dead-letters", data={"csrf": "0" * 64, "requeue_one": "10"}
        )
    assert 'name="csrf"' not in page
    assert 'data-testid="read-only"' in page
    assert re.search(r'data-testid="requeue-button" disabled', page)
    assert refused.status_code == 403
    assert source.letters
    assert not source.requeued


async def test_job_page_clips_a_huge_traceback_and_escapes_ids_and_task_names() -> None:
    """A 42,000-character traceback shows its first 20,000; an id or task with markup is text."""
    source = LetterSource()
    async with serving(create_app(source, token=TOKEN)) as client:
        listing = (await client.get("/jobs")).text
        page = (await client.get("/jobs/%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E")).text
    traceback = re.search(r'data-testid="traceback">(.*?)</pre>', page, re.S)
    assert traceback is not None
    more = len(FULL_TRACEBACK) - 20_000
    assert traceback.group(1).endswith(f"… ({more} more characters)")
    assert len(html.unescape(traceback.group(1))) == 20_000 + len(f"… ({more} more characters)")
    args = re.search(r'data-testid="job-args">(.*?)</pre>', page, re.S)
    assert args is not None
    assert args.group(1).endswith("… (3000 more characters)")
    for text in (listing, page):
        assert "<script>window" not in text
        assert html.escape(SCRIPT) in text
    assert 'href="/jobs/%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E"' in listing
