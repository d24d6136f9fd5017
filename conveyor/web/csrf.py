"""CSRF protection with a synchronizer token: one random token per session, sent back by every
state-changing request in the ``X-CSRF-Token`` header or the ``csrf_token`` form field.

Requests authenticated with a Bearer token carry no ambient credential a browser would attach
by itself, so they need no CSRF token; every other non-GET request does (login included).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import Message, Receive, Scope

FIELD = "csrf_token"
HEADER = "x-csrf-token"
SESSION_KEY = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token(session: MutableMapping[str, Any]) -> str:
    """The session's CSRF token, created on first use.

    >>> token({"csrf": "abc"})
    'abc'
    """
    value = session.get(SESSION_KEY)
    if not isinstance(value, str) or not value:
        value = session[SESSION_KEY] = secrets.token_urlsafe(32)
    return value


def rotate(session: MutableMapping[str, Any]) -> str:
    """A fresh token (at login and logout, so a token seen before cannot be replayed)."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)
    return str(session[SESSION_KEY])


def matches(session: MutableMapping[str, Any], supplied: str | None) -> bool:
    """Whether ``supplied`` is this session's token (constant-time comparison)."""
    expected = session.get(SESSION_KEY)
    if not isinstance(expected, str) or not expected or not supplied:
        return False
    return hmac.compare_digest(expected.encode(), supplied.encode())


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` when it is larger than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes) -> Receive:
    """A ``receive`` that hands ``body`` to the application again."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def token_from_form(scope: Scope, body: bytes) -> str | None:
    """The ``csrf_token`` field of a form body (urlencoded or multipart), if any."""
    content_type = _header(scope, b"content-type").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(FIELD)
        return values[0] if values else None
    if content_type == "multipart/form-data":
        request = Request(scope, replay(body))
        async with request.form() as form:
            value = form.get(FIELD)
        return value if isinstance(value, str) else None
    return None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""
