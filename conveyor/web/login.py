"""The login form, logout and ``/healthz``.

A login is counted against the client's (and the named user's) failed-login window before
its credentials are checked (a success clears the count): past ``login_max_failures`` it is
refused with 429 and ``Retry-After`` whatever was typed. A wrong
token or password is answered after a growing delay; a right one starts a server-side session
(:mod:`conveyor.web.sessions`) with a fresh CSRF token. Logout revokes the session in Redis.
"""

from __future__ import annotations

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from conveyor.web import csrf
from conveyor.web.auth import SESSION_ID, client_address, safe_next, same
from conveyor.web.config import WebSettings
from conveyor.web.extension import context_of
from conveyor.web.sessions import Attempt


async def login_page(request: Request) -> Response:
    web = context_of(request)
    return web.render(
        request,
        "login.html",
        next=safe_next(request, request.query_params.get("next")),
        methods=web.settings.auth_methods,
        error=None,
    )


def _attempt(request: Request, settings: WebSettings, token: object, user: object) -> Attempt:
    """The client, and the configured user when the form names it for a password login."""
    named = (
        not token
        and isinstance(user, str)
        and settings.user is not None
        and same(user, settings.user)
    )
    return Attempt(client_address(request.scope), settings.user if named else None)


def _check(settings: WebSettings, token: object, user: object, password: object) -> str | None:
    """Who the form's credentials log in as, or ``None``."""
    if isinstance(token, str) and token and settings.token and same(token, settings.token):
        return "token"
    if (
        settings.user is not None
        and isinstance(user, str)
        and isinstance(password, str)
        and same(user, settings.user)
        and same(password, settings.password or "")
    ):
        return settings.user
    return None


async def login(request: Request) -> Response:
    """Check the form's token or user and password; start a fresh session on success."""
    web = context_of(request)
    settings = web.settings
    async with request.form() as form:
        token, user, password = form.get("token"), form.get("user"), form.get("password")
        target = safe_next(request, form.get("next"))
    attempt = _attempt(request, settings, token, user)
    claim = await run_in_threadpool(web.logins.claim, attempt)
    wait = claim.retry_after
    name = None if wait is not None else _check(settings, token, user, password)
    if name is None:
        status, error = 429, f"Too many failed logins: try again in {wait} seconds."
        if wait is None:
            await anyio.sleep(claim.delay)
            status, error = 401, "Wrong token, user or password."
        response = web.render(
            request,
            "login.html",
            status_code=status,
            next=target,
            methods=settings.auth_methods,
            error=error,
        )
        if wait is not None:
            response.headers["Retry-After"] = str(wait)
        return response
    await run_in_threadpool(web.logins.succeeded, attempt)
    session_id = await run_in_threadpool(web.logins.start, name)
    previous = request.session.get(SESSION_ID)
    if isinstance(previous, str) and previous:
        await run_in_threadpool(web.logins.end, previous)
    request.session.clear()
    request.session[SESSION_ID] = session_id
    csrf.rotate(request.session)
    return RedirectResponse(target, 303)


async def logout(request: Request) -> Response:
    """Revoke the session in Redis (a copy of the cookie is worthless from now on)."""
    session_id = request.session.get(SESSION_ID)
    if isinstance(session_id, str) and session_id:
        await run_in_threadpool(context_of(request).logins.end, session_id)
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
