"""The dashboard's application factory: :func:`create_app` (no module-level state)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api import Api
from conveyor.core.app import App
from conveyor.settings import Settings
from conveyor.web import api as api_routes
from conveyor.web import auth, login, metrics, pages
from conveyor.web import automation as automation_web
from conveyor.web import import_pages as imports_web
from conveyor.web import workflows as workflows_web
from conveyor.web.access import AccessLogMiddleware
from conveyor.web.body_limit import BodyLimitMiddleware, BodyTooLarge, too_large
from conveyor.web.config import WebSettings
from conveyor.web.extension import (
    STORE_SCOPE_KEY,
    STORES_PATH,
    WebContext,
    WebExtension,
    build_templates,
    resolve_extensions,
)
from conveyor.web.hosts import HostMiddleware

SESSION_COOKIE = "conveyor_session"
#: Sent with every response: no framing, no inline or third-party scripts, no sniffing.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class HeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS`, and ``Cache-Control: no-store`` outside ``/static``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = auth.route_path(scope).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _InStore:
    """Serves ``routes`` for one store: the request's scope names it (``context_of`` then
    gives the store's data API), and the mount's path becomes the pages' ``base``."""

    def __init__(self, name: str, routes: list[BaseRoute]) -> None:
        self.name = name
        self.router = Router(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router({**scope, STORE_SCOPE_KEY: self.name}, receive, send)


def store_mounts(names: Iterable[str], routes: list[BaseRoute]) -> list[BaseRoute]:
    """Every route again under ``/stores/<name>`` for each store, when there are several.

    >>> store_mounts(["default"], routes)
    []
    """
    names = list(names)
    if len(names) < 2:
        return []
    return [Mount(f"{STORES_PATH}/{name}", app=_InStore(name, list(routes))) for name in names]


def create_app(
    target: Settings | App | Api | None = None,
    web_settings: WebSettings | None = None,
    *,
    extensions: Iterable[WebExtension | str] = (),
) -> Starlette:
    """The dashboard, JSON API and ``/metrics`` as one ASGI app.

    ``target`` is what to show: an :class:`~conveyor.core.app.App` (its Redis, key prefix and
    declared jobs), :class:`~conveyor.settings.Settings` (a fresh app over them, closed at
    shutdown) or a data API. ``web_settings`` defaults to :meth:`WebSettings.load` (the
    settings' ``extra["web"]`` and ``CONVEYOR_WEB_*``).

    >>> app = create_app(Settings.load(), WebSettings(token=os.environ["TOKEN"]))  # doctest: +SKIP
    >>> uvicorn.run(app, port=7433)                                            # doctest: +SKIP
    """
    if isinstance(target, Api):
        data_api = target
    elif isinstance(target, App):
        data_api = Api(target)
    else:
        data_api = Api.from_settings(target or Settings.load())
    settings = web_settings or WebSettings.load(data_api.settings)
    found = resolve_extensions(data_api.app, extensions)
    # Automation's HTTP API joins when the app has automation configured (an installed
    # engine or CONVEYOR_AUTOMATION_SETTINGS), unless given explicitly already.
    discovered = automation_web.discover(data_api.app)
    if discovered is not None and all(e.name != discovered.name for e in found):
        found.append(discovered)
    # The Workflows page joins under the same condition; the Imports page always.
    for page_ext in (workflows_web.discover(data_api.app), imports_web.imports_extension()):
        if page_ext is not None and all(e.name != page_ext.name for e in found):
            found.append(page_ext)
    context = WebContext(data_api, settings, build_templates(found), found)

    routes: list[BaseRoute] = [
        Mount("/static", StaticFiles(packages=[("conveyor.web", "static")]), name="static"),
        *login.routes,
        Mount("/api", routes=api_routes.routes([r for e in found for r in e.api])),
    ]
    if settings.metrics:
        routes.insert(1, Route("/metrics", metrics.endpoint, methods=["GET"]))
    routes += pages.routes([r for e in found for r in e.pages])
    routes += store_mounts(data_api.store_names(), routes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Sessions made under a previous password or token end now, not at their expiry.
        await run_in_threadpool(context.logins.revoke_stale)
        yield {}
        data_api.close()

    async def body_too_large(request: Request, exc: Exception) -> Response:
        return too_large(settings.max_body)

    app = Starlette(
        routes=routes,
        # Outermost first: every answer is logged and carries the security headers; the Host
        # and body checks come before anything reads the request.
        middleware=[
            Middleware(AccessLogMiddleware, routes=routes, log_client_ip=settings.log_client_ip),
            Middleware(HeadersMiddleware),
            Middleware(HostMiddleware, allowed=settings.host_allow_list),
            Middleware(BodyLimitMiddleware, limit=settings.max_body),
            Middleware(
                SessionMiddleware,
                secret_key=settings.secret_key,
                session_cookie=SESSION_COOKIE,
                max_age=settings.session_max_age,
                same_site="lax",
                https_only=settings.secure_cookies,
            ),
            Middleware(
                auth.SecurityMiddleware,
                context=context,
                api_prefixes=tuple(p for e in found for p in e.api_prefixes),
            ),
        ],
        exception_handlers={BodyTooLarge: body_too_large},
        lifespan=lifespan,
    )
    app.state.conveyor_web = context
    return app
