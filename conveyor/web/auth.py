"""Authentication and CSRF enforcement for every route, denying by default.

Who may in: a request with ``Authorization: Bearer <token>`` (the configured token), a browser
session made by the login form (token or user and password; the signed cookie holds a session
id that must still be live in Redis, see :mod:`conveyor.web.sessions`), or, when anonymous
access was explicitly allowed, a client connecting from this machine. Only the login page,
static files and ``/healthz`` (and ``/metrics`` when made public) are open.

Every request that is not GET/HEAD/OPTIONS must also carry the session's CSRF token (header or
form field), unless it was authenticated by a Bearer token. Refusals: 401 for the API without
credentials, a redirect to the login page for pages, 403 for a missing or wrong CSRF token,
429 with ``Retry-After`` for a client that failed to log in too often (wrong Bearer tokens
count as failed logins).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.web import csrf
from conveyor.web.config import is_loopback
from conveyor.web.extension import WebContext
from conveyor.web.sessions import Attempt

#: Paths open without logging in.
OPEN_PATHS = frozenset({"/login", "/healthz"})
#: The session cookie's field holding the session id.
SESSION_ID = "sid"
#: The prefix under which every route is served again for one store (web/app.py).
_IN_STORE = re.compile(r"^/stores/[a-z0-9][a-z0-9_-]{0,31}(?=/|$)")


def route_path(scope: Scope) -> str:
    """The path inside the dashboard (without the prefix it is mounted under, nor the
    ``/stores/<name>`` that serves the same routes for one store)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    inner = path[len(root) :] or "/" if root and path.startswith(root) else path
    return _IN_STORE.sub("", inner, count=1) or "/"


def client_address(scope: Scope) -> str:
    """The connecting client's address as the server saw it (``"unknown"`` without one).

    >>> client_address({"client": ("192.0.2.7", 50000)})
    '192.0.2.7'
    """
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, credential = bytes(value).decode("latin-1").partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else ""
    return None


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Identity:
    """Who a request is (``user`` ``None``: nobody), and a refusal to send instead, if any."""

    user: str | None
    by_bearer: bool = False
    refusal: Response | None = None


class SecurityMiddleware:
    """Runs inside Starlette's session middleware; sets ``request.state.user``."""

    def __init__(
        self, app: ASGIApp, context: WebContext, api_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.context = context
        self.settings = context.settings
        #: Besides ``/api/``: prefixes answered like the API (JSON 401, no login redirect).
        self.api_prefixes = ("/api/", *api_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        identity = await self._identify(scope, path)
        if identity.refusal is not None:
            await identity.refusal(scope, receive, send)
            return
        if identity.user is None and not self._open(path):
            await self._refuse(scope, path)(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = identity.user
        if scope["method"] in csrf.SAFE_METHODS or identity.by_bearer:
            await self.app(scope, receive, send)
            return
        supplied = _header_token(scope)
        if supplied is None:
            body = await csrf.read_body(receive, self.settings.max_body)
            if body is None:
                await PlainTextResponse("request body too large", 413)(scope, receive, send)
                return
            supplied = await csrf.token_from_form(scope, body)
            receive = csrf.replay(body)
        if not csrf.matches(scope.get("session", {}), supplied):
            response = _error(
                path, 403, "missing or invalid CSRF token; reload the page", self.api_prefixes
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _open(self, path: str) -> bool:
        if path in OPEN_PATHS or path.startswith("/static/"):
            return True
        return path == "/metrics" and self.settings.public_metrics

    async def _identify(self, scope: Scope, path: str) -> Identity:
        bearer = _bearer(scope)
        if bearer is not None:  # a wrong token never falls back to the session
            return await self._bearer_identity(scope, path, bearer)
        session = scope.get("session", {})
        session_id = session.get(SESSION_ID)
        if isinstance(session_id, str) and session_id:
            user = await run_in_threadpool(self.context.logins.user_of, session_id)
            if user is not None:
                return Identity(user)
            session.pop(SESSION_ID, None)  # ended or revoked: drop it from the cookie too
        if self.settings.allow_anonymous and is_loopback(client_address(scope)):
            return Identity("anonymous")
        return Identity(None)

    async def _bearer_identity(self, scope: Scope, path: str, bearer: str) -> Identity:
        # A guesser is locked out before the comparison, so a right guess looks like the rest.
        logins = self.context.logins
        attempt = Attempt(client_address(scope))
        wait = await run_in_threadpool(logins.retry_after, attempt)
        if wait is not None:
            return Identity(None, refusal=too_many(path, wait, self.api_prefixes))
        token = self.settings.token
        if token and same(bearer, token):
            return Identity("token", by_bearer=True)
        await anyio.sleep(await run_in_threadpool(logins.failed, attempt))
        return Identity(None)

    def _refuse(self, scope: Scope, path: str) -> Response:
        if path.startswith(self.api_prefixes) or path == "/metrics" or scope["method"] != "GET":
            return _error(
                path,
                401,
                "authentication required: log in or send a Bearer token",
                self.api_prefixes,
            )
        root = str(scope.get("root_path", ""))
        return RedirectResponse(f"{root}/login?next={quote(root + path)}", 303)


def too_many(path: str, wait: int, api_prefixes: tuple[str, ...] = ("/api/",)) -> Response:
    """429 with ``Retry-After``: this client or user failed to log in too often."""
    message = f"too many failed logins; try again in {wait} seconds"
    response = _error(path, 429, message, api_prefixes)
    response.headers["Retry-After"] = str(wait)
    return response


def _header_token(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == csrf.HEADER.encode():
            return bytes(value).decode("latin-1")
    return None


def _error(
    path: str, status: int, message: str, api_prefixes: tuple[str, ...] = ("/api/",)
) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if path.startswith(api_prefixes) or path == "/metrics":
        return JSONResponse({"error": message}, status, headers=headers)
    return PlainTextResponse(message, status, headers=headers)


def safe_next(request: Request, target: Any) -> str:
    """``target`` if it is a path on this site, else the dashboard's root (no open redirect)."""
    root = str(request.scope.get("root_path", ""))
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//"):
        return target if "\\" not in target else root + "/"
    return root + "/"
