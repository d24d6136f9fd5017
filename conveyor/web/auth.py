"""Authentication and CSRF enforcement for every route, denying by default.

Who may in: a request with ``Authorization: Bearer <token>`` (the configured token), a browser
session made by the login form (token or user and password; a signed cookie that ends when the
credentials change), or anyone when anonymous access was explicitly allowed. Only the login
page, static files and ``/healthz`` (and ``/metrics`` when made public) are open.

Every request that is not GET/HEAD/OPTIONS must also carry the session's CSRF token (header or
form field), unless it was authenticated by a Bearer token. Refusals: 401 for the API without
credentials, a redirect to the login page for pages, 403 for a missing or wrong CSRF token.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.web import csrf
from conveyor.web.config import WebSettings
from conveyor.web.extension import context_of

#: Paths open without logging in.
OPEN_PATHS = frozenset({"/login", "/healthz"})


def route_path(scope: Scope) -> str:
    """The path inside the dashboard (without the prefix it is mounted under)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, credential = bytes(value).decode("latin-1").partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else ""
    return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class SecurityMiddleware:
    """Runs inside Starlette's session middleware; sets ``request.state.user``."""

    def __init__(
        self, app: ASGIApp, settings: WebSettings, api_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.settings = settings
        #: Besides ``/api/``: prefixes answered like the API (JSON 401, no login redirect).
        self.api_prefixes = ("/api/", *api_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        user, by_bearer = self._identify(scope)
        if user is None and not self._open(path):
            await self._refuse(scope, path)(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        if scope["method"] in csrf.SAFE_METHODS or by_bearer:
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

    def _identify(self, scope: Scope) -> tuple[str | None, bool]:
        settings = self.settings
        bearer = _bearer(scope)
        if bearer is not None:  # a wrong token never falls back to the session
            ok = bool(settings.token) and _same(bearer, settings.token or "")
            return ("token" if ok else None), ok
        session = scope.get("session", {})
        user = session.get("user")
        if isinstance(user, str) and _same(str(session.get("cred", "")), settings.credential_id()):
            return user, False
        return ("anonymous" if settings.allow_anonymous else None), False

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


async def login_page(request: Request) -> Response:
    web = context_of(request)
    return web.render(
        request,
        "login.html",
        next=safe_next(request, request.query_params.get("next")),
        methods=web.settings.auth_methods,
        error=None,
    )


async def login(request: Request) -> Response:
    """Check the form's token or user and password; start a fresh session on success."""
    web = context_of(request)
    settings = web.settings
    async with request.form() as form:
        token, user, password = form.get("token"), form.get("user"), form.get("password")
        target = safe_next(request, form.get("next"))
    name: str | None = None
    if isinstance(token, str) and token and settings.token and _same(token, settings.token):
        name = "token"
    elif (
        settings.user is not None
        and isinstance(user, str)
        and isinstance(password, str)
        and _same(user, settings.user)
        and _same(password, settings.password or "")
    ):
        name = settings.user
    if name is None:
        return web.render(
            request,
            "login.html",
            status_code=401,
            next=target,
            methods=settings.auth_methods,
            error="Wrong token, user or password.",
        )
    request.session.clear()
    request.session.update({"user": name, "cred": settings.credential_id()})
    csrf.rotate(request.session)
    return RedirectResponse(target, 303)


async def logout(request: Request) -> Response:
    request.session.clear()
    csrf.rotate(request.session)
    return RedirectResponse(f"{request.scope.get('root_path', '')}/login", 303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


routes = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
]
