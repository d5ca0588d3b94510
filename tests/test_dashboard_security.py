"""The dashboard's guard: the token cookie, the CSRF field, the Origin, the headers, the host.

Every state-changing request is a POST that needs all three of a cookie
equal to the token, a CSRF field equal to the page's, and (when sent) an
Origin of the same host; anything else is a 403 and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from asyncpool import Dispatcher
from asyncpool._dashboard_security import (
    CONTENT_SECURITY_POLICY,
    COOKIE_PREFIX,
    FORM_LIMIT,
    LOOPBACK_HOSTS,
    Guard,
    HostCheck,
    cookie_name,
    host_name,
)
from asyncpool._joblog import JobLog
from asyncpool.dashboard import create_app
from tests._jobs import Gate, guarded
from tests.test_dashboard import BASE, TOKEN, csrf_of, serving, sign_in


@pytest.fixture
async def held() -> AsyncIterator[tuple[Starlette, Gate, str]]:
    """A dashboard of a dispatcher running one held job: (app, its gate, its id).

    The job is released at teardown: a test that cancels it leaves nothing
    to release, one that must not cancel it proves so by its still running.
    """
    log = JobLog()
    async with Dispatcher(workers=1, instruments=[log]) as dispatcher:
        gate = Gate()
        handle = await dispatcher.submit(gate)
        await guarded(gate.started.wait())
        yield create_app(dispatcher, token=TOKEN), gate, str(handle.id)
        gate.release()
        await guarded(dispatcher.join())


async def csrf_for(client: httpx.AsyncClient, job_id: str) -> str:
    """Sign in and read the CSRF value from the job's page."""
    await sign_in(client)
    return csrf_of((await client.get(f"/jobs/{job_id}")).text)


async def test_post_without_the_token_cookie_is_403(held: tuple[Starlette, Gate, str]) -> None:
    """A POST with the right CSRF value but no cookie is refused and changes nothing."""
    app, gate, job_id = held
    async with serving(app) as client:
        csrf = await csrf_for(client, job_id)
        client.cookies.clear()
        response = await client.post("/actions/cancel", data={"csrf": csrf, "job": job_id})
    assert response.status_code == 403
    assert response.text.startswith("403 Forbidden: missing or wrong token")
    assert response.headers["content-type"].startswith("text/plain")
    assert not gate.saw_cancel


async def test_post_with_a_wrong_cookie_is_403(held: tuple[Starlette, Gate, str]) -> None:
    """A cookie that is not the token (same length or not) is refused."""
    app, gate, job_id = held
    async with serving(app) as client:
        csrf = await csrf_for(client, job_id)
        client.cookies.clear()
        for wrong in ("x" * len(TOKEN), TOKEN[:-1], TOKEN + "a", "é" * 8, ""):
            cookie = f"{cookie_name(TOKEN)}={wrong}".encode()
            response = await client.post(
                "/actions/cancel", data={"csrf": csrf, "job": job_id}, headers={b"Cookie": cookie}
            )
            assert response.status_code == 403, wrong
    assert not gate.saw_cancel


async def test_post_without_or_with_a_wrong_csrf_field_is_403(
    held: tuple[Starlette, Gate, str],
) -> None:
    """Signed in, but the form lacks the CSRF field, has a wrong one, or two: refused."""
    app, gate, job_id = held
    async with serving(app) as client:
        csrf = await csrf_for(client, job_id)
        for form in (
            {"job": job_id},
            {"csrf": "", "job": job_id},
            {"csrf": csrf[:-1] + "0" if csrf[-1] != "0" else csrf[:-1] + "1", "job": job_id},
            {"csrf": TOKEN, "job": job_id},
            {"csrf": [csrf, csrf], "job": job_id},
        ):
            response = await client.post("/actions/cancel", data=form)
            assert response.status_code == 403, form
            assert "CSRF" in response.text
    assert not gate.saw_cancel


async def test_post_from_another_origin_is_403(held: tuple[Starlette, Gate, str]) -> None:
    """An Origin whose host is not the request's Host is refused, even with cookie and CSRF."""
    app, gate, job_id = held
    async with serving(app) as client:
        csrf = await csrf_for(client, job_id)
        for origin in ("http://evil.example", "http://127.0.0.1:9999", "null"):
            response = await client.post(
                "/actions/cancel", data={"csrf": csrf, "job": job_id}, headers={"Origin": origin}
            )
            assert response.status_code == 403, origin
            assert "cross-origin" in response.text
        assert not gate.saw_cancel
        same = await client.post(
            "/actions/cancel", data={"csrf": csrf, "job": job_id}, headers={"Origin": BASE}
        )
    assert same.status_code == 303
    assert gate.saw_cancel


async def test_gets_never_act(held: tuple[Starlette, Gate, str]) -> None:
    """The actions answer GET with 405; a signed-in GET with the form's fields cancels nothing."""
    app, gate, job_id = held
    async with serving(app) as client:
        csrf = await csrf_for(client, job_id)
        for path in ("/actions/cancel", "/actions/dead-letters"):
            response = await client.get(path, params={"csrf": csrf, "job": job_id})
            assert response.status_code == 405
    assert not gate.saw_cancel


async def test_post_bodies_are_bounded_and_urlencoded(held: tuple[Starlette, Gate, str]) -> None:
    """A JSON body is 415, a body over the limit 413; neither acts."""
    app, gate, job_id = held
    async with serving(app) as client:
        csrf = await csrf_for(client, job_id)
        as_json = await client.post("/actions/cancel", json={"csrf": csrf, "job": job_id})
        too_big = await client.post(
            "/actions/cancel", data={"csrf": csrf, "job": job_id, "pad": "x" * FORM_LIMIT}
        )
    assert (as_json.status_code, too_big.status_code) == (415, 413)
    assert not gate.saw_cancel


async def test_signing_in_sets_a_strict_httponly_cookie_and_drops_the_token_from_the_url(
    held: tuple[Starlette, Gate, str],
) -> None:
    """?token=T answers 303 to the same URL without it, setting HttpOnly SameSite=Strict."""
    app, _, job_id = held
    async with serving(app) as client:
        response = await client.get(f"/jobs/{job_id}?token={TOKEN}&notice=cancelled")
        wrong = await client.get(f"/?token=not-{TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{job_id}?notice=cancelled"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(TOKEN)}={TOKEN};")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/;" in cookie or cookie.endswith("Path=/")
    assert "Secure" not in cookie  # plain http; over https the cookie is Secure
    assert wrong.status_code == 403
    assert "wrong token" in wrong.text


async def test_every_response_carries_the_security_headers(
    held: tuple[Starlette, Gate, str],
) -> None:
    """Pages, JSON, assets, 404s, 403s: a CSP without inline script, nosniff, a referrer policy."""
    app, _, job_id = held
    async with serving(app) as client:
        responses = [
            await client.get("/"),
            await client.get("/api/overview"),
            await client.get(f"/jobs/{job_id}"),
            await client.get("/jobs/nope"),
            await client.get("/static/dashboard.css"),
            await client.get("/static/dashboard.js"),
            await client.post("/actions/cancel", data={"job": job_id}),
        ]
    for response in responses:
        policy = response.headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY
        assert "default-src 'self'; script-src 'self'; style-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    assert responses[0].headers["cache-control"] == "no-store"
    assert responses[1].headers["cache-control"] == "no-store"


async def test_pages_have_no_inline_script_or_style(held: tuple[Starlette, Gate, str]) -> None:
    """Nothing on a page needs 'unsafe-inline': no <script> body, no style= or on*= attribute."""
    app, _, job_id = held
    async with serving(app) as client:
        await sign_in(client)
        pages = [(await client.get(path)).text for path in ("/", "/jobs", f"/jobs/{job_id}")]
    for page in pages:
        assert "<style" not in page
        assert " style=" not in page
        assert " onclick=" not in page
        assert " onsubmit=" not in page
        assert page.count("<script") == page.count("></script>") == 1


def test_guard_accepts_only_url_safe_tokens_of_8_characters_or_more() -> None:
    """A token travels in a URL and a cookie: too short or with other characters is refused."""
    Guard("abcdefgh")
    Guard("A-b_c.d~1234")
    for bad in ("", "short", "with space", "semi;colon1", 'quote"quote', "ünïcödé-token"):
        with pytest.raises(ValueError, match="at least 8 characters"):
            Guard(bad)
    with pytest.raises(TypeError):
        Guard(b"bytes-token")  # type: ignore[arg-type]
    assert "abcdefgh" not in repr(Guard("abcdefgh"))
    assert Guard("abcdefgh").csrf != Guard("abcdefgi").csrf


def test_cookie_name_depends_on_the_token_and_does_not_tell_it() -> None:
    """Each token has its own cookie name: the prefix and 12 hex digits of its hash."""
    name = cookie_name(TOKEN)
    assert re.fullmatch(re.escape(COOKIE_PREFIX) + "[0-9a-f]{12}", name)
    assert cookie_name(TOKEN) == name == Guard(TOKEN).cookie
    assert cookie_name(TOKEN + "x") != name
    assert TOKEN not in name


async def test_two_dashboards_on_one_host_keep_a_session_each() -> None:
    """One browser signed in to two dashboards on two ports of 127.0.0.1 stays signed in to both.

    A cookie jar ignores the port (as browsers do): with one cookie name for
    every dashboard, signing in to the second would sign out of the first.
    """
    other_token = "other-token-9876543210"
    async with (
        Dispatcher(workers=1, name="one", instruments=[JobLog()]) as one,
        Dispatcher(workers=1, name="two", instruments=[JobLog()]) as two,
    ):
        apps = {
            b"127.0.0.1:8001": create_app(one, token=TOKEN),
            b"127.0.0.1:8002": create_app(two, token=other_token),
        }

        async def by_port(scope: Scope, receive: Receive, send: Send) -> None:
            host = dict(scope.get("headers", [])).get(b"host", b"")
            await apps[host](scope, receive, send)

        transport = httpx.ASGITransport(app=by_port)
        async with httpx.AsyncClient(transport=transport) as browser:
            first = await browser.get(f"http://127.0.0.1:8001/?token={TOKEN}")
            second = await browser.get(f"http://127.0.0.1:8002/?token={other_token}")
            assert (first.status_code, second.status_code) == (303, 303)
            assert len(browser.cookies.jar) == 2
            pages = [(await browser.get(f"http://127.0.0.1:{port}/")).text for port in (8001, 8002)]
    for page in pages:
        assert 'data-testid="signed-in"' in page


def test_host_name_takes_the_port_and_brackets_off() -> None:
    """`Host` headers as browsers send them, with and without a port, IPv4, IPv6, names."""
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("LOCALHOST") == "localhost"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("evil.example:80") == "evil.example"
    assert host_name("") == ""


async def test_host_check_refuses_names_that_are_not_loopback(
    held: tuple[Starlette, Gate, str],
) -> None:
    """Bound to loopback, a request for another host name (DNS rebinding) is a 400."""
    app, _, _ = held
    guarded_app = HostCheck(app, LOOPBACK_HOSTS)
    async with serving(app, guarded_app) as client:
        for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
            assert (await client.get("/", headers={"Host": host})).status_code == 200, host
        for host in ("evil.example", "127.0.0.1.evil.example:8000", ""):
            assert (await client.get("/", headers={"Host": host})).status_code == 400, host
