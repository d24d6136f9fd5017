"""The Host allow-list: a request naming a host the dashboard does not serve gets 400.

A page on ``evil.example`` whose DNS answer switches to 127.0.0.1 (DNS rebinding) reaches a
local server with the browser's blessing, but its requests still say ``Host: evil.example``;
checking that header on every request is what keeps such a page out.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.web.config import normalise_host


def header_host(value: str) -> str | None:
    """The host a ``Host`` header names (an IPv6 address must be in brackets there), or
    ``None`` when it is malformed.

    >>> header_host("[::1]:7433"), header_host("::1")
    ('::1', None)
    """
    if value.count(":") > 1 and not value.startswith("["):
        return None
    return normalise_host(value)


class HostMiddleware:
    """Answer 400 unless every ``Host`` header is in ``allowed`` (``None``: any host)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed is None:
            await self.app(scope, receive, send)
            return
        hosts = [bytes(v).decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"]
        refused = [h for h in hosts if header_host(h) not in self.allowed]
        if not hosts or refused:
            shown = f"Host {refused[0][:100]!r}" if refused else "no Host header"
            message = (
                f"{shown} is not served here; if clients reach the dashboard by that name, add "
                "it to the allowed hosts (--allowed-host / CONVEYOR_WEB_ALLOWED_HOSTS)"
            )
            await PlainTextResponse(message, 400)(scope, receive, send)
            return
        await self.app(scope, receive, send)
