"""Helpers for the dashboard tests: a token-authenticated client, a logged-in browser-like
client, and uvicorn serving an app in a thread on a free port."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from conveyor.web import NavItem, WebExtension
from support import free_port

TOKEN = "t0k3n-Qm7fX2pL9vR4wZ8s"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: TestClient's base URL: a Host the dashboard serves by default (it refuses ``testserver``).
LOCAL = "http://localhost"


def csrf_of(html: str) -> str:
    """The CSRF token a rendered page carries."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def login(client: TestClient, token: str = TOKEN) -> str:
    """Log ``client`` in through the form; returns the session's CSRF token."""
    page = client.get("/login")
    answer = client.post(
        "/login",
        data={"token": token, "csrf_token": csrf_of(page.text), "next": "/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)


@contextmanager
def served(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL; stops it after."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop within 10s"


#: A web extension with one POST action, page and API (``support.web:EXTENSION`` by name).
async def _poke(request: Request) -> Response:
    request.app.state.poked = True
    return JSONResponse({"ok": True})


EXTENSION = WebExtension(
    name="probe",
    nav=(NavItem("Probe", "/probe"),),
    pages=(Route("/probe/poke", _poke, methods=["POST"]),),
    api=(Route("/probe/poke", _poke, methods=["POST"]),),
)
