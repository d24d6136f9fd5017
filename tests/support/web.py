"""Helpers for the dashboard tests: a token-authenticated client, a logged-in browser-like
client, and uvicorn serving an app in a thread on a free port."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from conveyor.web import NavItem, WebExtension
from support import StartProcess, free_port

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


def start_web(
    processes: StartProcess, redis_url: str, *args: str, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``conveyor web`` as a real process (token :data:`TOKEN` unless ``env`` says
    otherwise); returns it and its base URL once ``/healthz`` answers."""
    port = free_port()
    env = {"CONVEYOR_WEB_TOKEN": TOKEN, "CONVEYOR_LOG_FORMAT": "json", **env}
    cli = ["-m", "conveyor.cli", "--redis-url", redis_url, "web", "--port", str(port), *args]
    proc = processes(*cli, **env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                if answer.read() == b"ok":
                    return proc, base
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None, f"conveyor web exited with {proc.returncode}"
        assert time.monotonic() < deadline, "conveyor web did not start within 30s"
        time.sleep(0.1)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response read from
    ``sock`` (the body by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def raw_request(port: int, head: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, exactly as given) on a real socket; returns
    the response's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        return read_response(sock)
