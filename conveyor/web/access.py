"""The dashboard's access log: one line per request with the method, the *route* (its
template, e.g. ``/api/queues/{name}/jobs``), the status and the duration.

What a caller put in the path (queue names, jids, ``/vars/...`` segments) and the query
string are never written, and neither is the client's address unless ``log_client_ip`` is
set: an access log is kept long and read widely, so it holds only what tells requests apart
by kind. (``conveyor web`` turns uvicorn's own access log off; serving the app yourself, pass
``access_log=False`` to uvicorn.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import logs
from conveyor.web.auth import client_address

#: Methods written as they are; anything else is written as ``OTHER``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Written instead of the path when no route matched (a 404: the path is the caller's text).
UNMATCHED = "[no route]"


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route ``scope`` goes to (``/api/queues/{name}/jobs``), through the
    mounts on the way; :data:`UNMATCHED` for none. Matched here rather than read from the
    router, so requests refused before routing (401, 413...) are named too.

    >>> scope = {"type": "http", "path": "/queues/mail", "root_path": "", "method": "GET"}
    >>> route_template([Route("/queues/{name}", page)], scope)          # doctest: +SKIP
    '/queues/{name}'
    """
    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.NONE:
            continue
        if isinstance(route, Mount):
            inner = route.routes
            found = route_template(inner, {**scope, **child}) if inner else "/{path}"
            template = UNMATCHED if found == UNMATCHED else route.path + found
        else:
            template = str(getattr(route, "path_format", UNMATCHED))
        if match == Match.FULL:
            return template
        partial = partial or template
    return partial or UNMATCHED


class AccessLogMiddleware:
    """Log each HTTP request once it is answered (errors included) on ``conveyor.web.access``."""

    def __init__(
        self, app: ASGIApp, routes: Sequence[BaseRoute], log_client_ip: bool = False
    ) -> None:
        self.app = app
        self.routes = routes
        self.log_client_ip = log_client_ip
        self.log = logs.get_logger("conveyor.web.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_template(self.routes, dict(scope))
        status = 500  # what the server answers if the app raises before a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = str(scope.get("method", ""))
            method = method if method in METHODS else "OTHER"
            fields: dict[str, Any] = {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
            if self.log_client_ip:
                fields["client"] = client_address(scope)
            self.log.info(f"{method} {route} {status}", **fields)
