"""The dashboard's guard: who may change state, and the headers every response carries.

Reading the pages needs nothing (the server binds 127.0.0.1 unless told
otherwise); every action that changes state (cancel, requeue, delete) is a
POST that must pass three checks, any failure a 403 with one short line:

1. **The token, in a cookie.** The token is given at start-up, or made with
   `secrets.token_urlsafe` and printed with the URL. Opening any page with
   `?token=T` sets it as an HttpOnly, SameSite=Strict cookie (scoped to the
   dashboard's path, Secure over https) and redirects to the same page
   without it, so the token does not stay in the address bar, the history
   or a `Referer`. A POST is accepted only if its cookie equals the token
   (`hmac.compare_digest`). SameSite=Strict keeps the browser from sending
   the cookie with a request another site starts. Browsers keep cookies
   per host, not per port, so the cookie's name depends on the token
   (`cookie_name`): two dashboards on one host (one per broker, each on
   its port) keep a session each instead of overwriting one cookie. It
   also means any page served from another port of the same host receives
   the cookie: the token is only as private as the machine's local users.
2. **A CSRF field.** Each form carries `csrf`, an HMAC-SHA256 of the token,
   rendered into the page only for a visitor whose cookie is good. Another
   site can neither read it (the same-origin policy) nor compute it
   (without the token); the cookie alone is not enough.
3. **The Origin**, when the browser sends one: its host must be the
   request's `Host`. That refuses cross-site posts even from a browser that
   ignores SameSite.

GET requests never change state, so a link or an `<img>` elsewhere cannot
act. `SecurityHeaders` adds a Content-Security-Policy that allows scripts
and styles from the dashboard only (no inline script: the page script is a
static file), `nosniff`, `Referrer-Policy: same-origin` (no address leaves
for another site), and `frame-ancestors 'none'`, so no other page can frame
the buttons and trick a click.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import urllib.parse
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = (
    "CONTENT_SECURITY_POLICY",
    "COOKIE_PREFIX",
    "CSRF_FIELD",
    "Form",
    "Guard",
    "HostCheck",
    "LOOPBACK_HOSTS",
    "SecurityHeaders",
    "cookie_name",
    "host_name",
    "new_token",
    "read_form",
    "refused",
)

COOKIE_PREFIX: Final = "asyncpool_dashboard_"
"""How the name of the cookie that carries the token starts (see `cookie_name`)."""

CSRF_FIELD: Final = "csrf"
"""The form field that carries the CSRF value."""

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

FORM_LIMIT: Final = 64 * 1024
"""The largest form body read (a bulk action on a few thousand letters fits)."""

_CSRF_CONTEXT: Final = b"asyncpool dashboard csrf v1"
_TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9._~-]{8,}")

Form = dict[str, list[str]]
"""A posted form: each field's values, in order."""


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def cookie_name(token: str) -> str:
    """The name of the cookie that carries `token`: `COOKIE_PREFIX` and 12 hex digits of its hash.

    Browsers ignore the port for cookies: dashboards on one host with one
    name would overwrite each other's cookie. A hash names it without
    telling the token (a cookie's name is sent with its value anyway).
    """
    return COOKIE_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def refused(reason: str) -> PlainTextResponse:
    """The 403 of a refused action: one short line, nothing of the request echoed."""
    return PlainTextResponse(f"403 Forbidden: {reason}\n", status_code=403)


class Guard:
    """Checks the token and CSRF value of requests to one dashboard."""

    __slots__ = ("_token", "csrf", "cookie")

    def __init__(self, token: str) -> None:
        if not isinstance(token, str):
            raise TypeError(f"token must be a str or None, got {type(token).__name__}")
        # The token travels in a URL and a cookie: unreserved characters only.
        if not _TOKEN_PATTERN.fullmatch(token):
            raise ValueError(
                "token must be at least 8 characters from A-Z, a-z, 0-9 and '-._~' "
                "(leave it out to have one made)"
            )
        self._token = token.encode("ascii")
        self.csrf: str = hmac.new(self._token, _CSRF_CONTEXT, hashlib.sha256).hexdigest()
        self.cookie: str = cookie_name(token)
        """The name of the cookie that carries the token."""

    def __repr__(self) -> str:
        return "<Guard token=…>"  # never the token itself: reprs end up in logs

    def _is_token(self, value: str | None) -> bool:
        if value is None:
            return False
        return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), self._token)

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries the token in its cookie."""
        return self._is_token(request.cookies.get(self.cookie))

    def sign_in(self, request: Request) -> Response | None:
        """Answer a GET with `?token=`: set the cookie and redirect without it (None otherwise).

        A wrong token is refused (403) rather than silently ignored, so a
        mistyped URL says what is wrong.
        """
        given = request.query_params.get("token")
        if given is None:
            return None
        if not self._is_token(given):
            return refused("wrong token in the URL")
        query = urllib.parse.urlencode(
            [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        )
        target = request.url.path + (f"?{query}" if query else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            self.cookie,
            self._token.decode("ascii"),
            path=_cookie_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def check_request(self, request: Request) -> str | None:
        """Why a state-changing request is refused by its headers (cookie, Origin), or None."""
        if not self.signed_in(request):
            return "missing or wrong token (open the dashboard with the ?token= URL it printed)"
        origin = request.headers.get("origin")
        if origin is not None:
            host = request.headers.get("host", "")
            if not host or urllib.parse.urlsplit(origin).netloc.lower() != host.lower():
                return "cross-origin request"
        return None

    def check_form(self, form: Form) -> str | None:
        """Why a posted form is refused (its CSRF field), or None."""
        sent = form.get(CSRF_FIELD, [])
        if len(sent) != 1 or not hmac.compare_digest(sent[0].encode(), self.csrf.encode()):
            return "missing or wrong CSRF field"
        return None


def _cookie_path(request: Request) -> str:
    # The dashboard's own path, under whatever it is mounted at: the cookie
    # is not sent to the rest of an application that mounts it.
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{root}/"


async def read_form(request: Request) -> Form | Response:
    """The urlencoded body of a POST (at most `FORM_LIMIT` bytes), or the response refusing it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return PlainTextResponse("415: send a urlencoded form\n", status_code=415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            return PlainTextResponse("413: form too large\n", status_code=413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return PlainTextResponse("400: the form is not UTF-8\n", status_code=400)
    try:
        return urllib.parse.parse_qs(text, keep_blank_values=True, max_num_fields=10_000)
    except ValueError:  # more fields than that
        return PlainTextResponse("413: form too large\n", status_code=413)


class SecurityHeaders:
    """ASGI middleware: the CSP and its companions on every response of the dashboard."""

    __slots__ = ("_app",)

    HEADERS: Final = (
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        # Not "no-referrer": with it, Chromium sends `Origin: null` with a
        # form's POST, which the Origin check must refuse.
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS:
                    headers[name] = value
            await send(message)

        await self._app(scope, receive, send_with_headers)


LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
"""The names a dashboard bound to a loopback address answers to."""


def host_name(header: str) -> str:
    """The host of a `Host` header, without its port (and without an IPv6 address's brackets)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI middleware: answer only requests whose `Host` is one of `hosts` (else 400).

    A dashboard bound to 127.0.0.1 is still reachable from a web page
    through DNS rebinding (a name of the attacker's that resolves to
    127.0.0.1): the browser then sends that name as `Host`, which this
    refuses.
    """

    __slots__ = ("_app", "_hosts")

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self._app = app
        self._hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(header) not in self._hosts:
                response = PlainTextResponse("400: unknown host\n", status_code=400)
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
