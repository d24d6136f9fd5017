"""The request body limit on every route (``max_body``), whoever the caller is.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a
body without one (chunked) is counted as it arrives and refused as soon as it passes the
limit, so a 60 MB upload costs the server at most the limit, never the upload.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _message(limit: int) -> str:
    return (
        f"request body larger than {limit} bytes; send less, or raise the dashboard's "
        "max_body setting (CONVEYOR_WEB_MAX_BODY)"
    )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit; answered with 413 (by
    Starlette's exception handling inside the app, or by :class:`BodyLimitMiddleware`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))


def too_large(limit: int) -> Response:
    """The 413 answer (the connection is closed after it: the rest of the body is unread)."""
    return PlainTextResponse(_message(limit), 413, headers={"Connection": "close"})


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, counting as they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key != b"content-length":
                continue
            if not value.isdigit():
                shown = bytes(value[:40]).decode("latin-1")
                answer = PlainTextResponse(f"Content-Length {shown!r} is not a number", 400)
                await answer(scope, receive, send)
                return
            if int(value) > self.limit:
                await too_large(self.limit)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:  # too late for a status: the server closes the connection
                raise
            await too_large(self.limit)(scope, receive, send)
