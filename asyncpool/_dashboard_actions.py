"""The dashboard's actions: cancel a job; requeue or delete dead letters (one, or those selected).

Each is a POST of a urlencoded form that the `Guard` must pass first
(token cookie, CSRF field, Origin; see `asyncpool._dashboard_security`),
and answers with a 303 redirect to a page that says what was done (post,
redirect, get: a reload never repeats the action).

Dead letters are named by their engine position (`DeadLetter.seq`), not by
job id: a job that died, was requeued and died again has two letters with
one id, and a button acts on the letter it was shown beside.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from ._dashboard_security import Form, read_form, refused
from ._dashboard_views import Dashboard, Links
from ._deadletters import DeadLetter

__all__ = ("cancel_job", "dead_letter_action")


async def _guarded_form(dashboard: Dashboard, request: Request) -> Form | Response:
    """The posted form, once the guard lets it through; else the response refusing it."""
    # The cookie and Origin are checked before the body is read: a refused
    # request costs nothing more.
    reason = dashboard.guard.check_request(request)
    if reason is not None:
        return refused(reason)
    form = await read_form(request)
    if isinstance(form, Response):
        return form
    reason = dashboard.guard.check_form(form)
    if reason is not None:
        return refused(reason)
    return form


def _one(form: Form, name: str) -> str | None:
    values = form.get(name, [])
    return values[0] if len(values) == 1 and values[0] else None


async def cancel_job(dashboard: Dashboard, request: Request) -> Response:
    """POST: cancel the job named by the form's `job` field."""
    form = await _guarded_form(dashboard, request)
    if isinstance(form, Response):
        return form
    job_id = _one(form, "job")
    if job_id is None:
        return PlainTextResponse("400: name one job to cancel\n", status_code=400)
    cancelled = await dashboard.source.cancel(job_id)
    notice = "cancelled" if cancelled else "not-cancelled"
    return RedirectResponse(f"{Links(request).job(job_id)}?notice={notice}", status_code=303)


async def dead_letter_action(dashboard: Dashboard, request: Request) -> Response:
    """POST: requeue or delete dead letters.

    The form names them by `seq`: one with a row's own button
    (`requeue_one=SEQ` or `delete_one=SEQ`), or several with the checked
    boxes (`letter=SEQ`, repeated) and `action=requeue` or `action=delete`.
    """
    form = await _guarded_form(dashboard, request)
    if isinstance(form, Response):
        return form
    links = Links(request)
    if not dashboard.source.keeps_dead_letters:
        return PlainTextResponse("400: a local pool keeps no dead letters\n", status_code=400)
    if (seq := _one(form, "requeue_one")) is not None:
        action, chosen = "requeue", [seq]
    elif (seq := _one(form, "delete_one")) is not None:
        action, chosen = "delete", [seq]
    else:
        action, chosen = _one(form, "action") or "", form.get("letter", [])
    if action not in ("requeue", "delete"):
        return PlainTextResponse("400: the action is requeue or delete\n", status_code=400)
    if not chosen:
        return RedirectResponse(links.to("/dead-letters", notice="none-selected"), status_code=303)
    by_seq: dict[str, DeadLetter] = {str(d.seq): d for d in await dashboard.source.dead_letters()}
    done = missing = 0
    for seq in dict.fromkeys(chosen):  # each once, in the order given
        letter = by_seq.get(seq)
        if letter is None:
            missing += 1
            continue
        try:
            if action == "requeue":
                await dashboard.source.requeue(letter)
            else:
                await dashboard.source.delete_dead_letter(letter)
        except LookupError:  # requeued or deleted by someone else meanwhile
            missing += 1
        else:
            done += 1
    notice = "requeued" if action == "requeue" else "deleted"
    target = links.to("/dead-letters", notice=notice, n=str(done), missing=str(missing))
    return RedirectResponse(target, status_code=303)
