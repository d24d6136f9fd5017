"""The request body limit (conveyor.web.body_limit) on every route, whoever the caller is: a
declared oversize body is refused before it is read, a streamed one as soon as it passes the
limit, and the server's memory stays bounded (measured on a real ``conveyor web`` process)."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient
from support import StartProcess
from support.web import BEARER, LOCAL, TOKEN, login, read_response, start_web

from conveyor import App
from conveyor.web import WebSettings, create_app

MB = 1024 * 1024
UPLOAD = 60 * MB


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def head(path: str, port: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: Bearer {TOKEN}"]
    lines += ["Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def stream_until_answered(sock: socket.socket, total: int, chunk: bytes, give_up: int) -> int:
    """Send ``total`` body bytes as HTTP chunks of ``chunk`` without blocking, stopping as
    soon as the server answers (or once ``give_up`` bytes went unanswered); returns the body
    bytes sent by then."""
    sock.setblocking(False)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, offset = 0, 0
    while sent < min(total, give_up):
        readable, writable, _ = select.select([sock], [sock], [], 30)
        if readable:
            break
        assert writable, "the server neither read nor answered for 30s"
        try:
            offset += sock.send(frame[offset:])
        except (BrokenPipeError, ConnectionResetError):
            break
        if offset == len(frame):
            sent, offset = sent + len(chunk), 0
    sock.setblocking(True)
    return sent


@pytest.fixture
def web_process(processes: StartProcess, redis_url: str, r: redis.Redis) -> tuple[int, int]:
    """A real ``conveyor web`` (default 1 MiB limit): its pid and port."""
    proc, base = start_web(processes, redis_url)
    return proc.pid, int(base.rsplit(":", 1)[1])


def test_a_declared_60_mb_body_is_refused_before_a_byte_is_read(
    web_process: tuple[int, int], r: redis.Redis
) -> None:
    _, port = web_process
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Only the headers go out: the answer must come without the body ever being sent.
        sock.sendall(head("/api/flags", port, f"Content-Length: {UPLOAD}"))
        status, headers, body = read_response(sock)
    assert status == 413, body
    assert b"larger than 1048576 bytes" in body and headers["connection"] == "close"
    assert r.hgetall("conveyor:flags") == {}


def test_a_streamed_60_mb_body_is_cut_off_at_the_limit_with_bounded_memory(
    web_process: tuple[int, int], r: redis.Redis
) -> None:
    pid, port = web_process
    before = peak_rss(pid)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head("/api/flags", port, "Transfer-Encoding: chunked"))
        opening = b'{"name": "big", "state": "enabled", "description": "'
        sock.sendall(f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
        # Socket buffers hold a few MB the server never reads; past 20 MB it is not refusing.
        sent = stream_until_answered(sock, UPLOAD, b"A" * (64 * 1024), give_up=20 * MB)
        assert sent < 20 * MB, f"{sent / MB:.0f} MB of the upload went unanswered"
        status, _, body = read_response(sock)
    grown = peak_rss(pid) - before
    print(f"sent {sent / MB:.1f} MB before the 413; server peak RSS grew {grown / MB:.1f} MB")
    assert status == 413, body
    assert grown < 30 * MB, f"the server's peak memory grew by {grown / MB:.0f} MB"
    assert r.hgetall("conveyor:flags") == {}


@pytest.fixture
def small(app: App) -> TestClient:
    return TestClient(create_app(app, WebSettings(token=TOKEN, max_body=4096)), base_url=LOCAL)


def test_json_and_form_posts_over_the_limit_get_413_and_change_nothing(
    small: TestClient, r: redis.Redis
) -> None:
    big = {"name": "big", "state": "enabled", "description": "x" * 5000}
    assert small.post("/api/flags", json=big, headers=BEARER).status_code == 413
    csrf = login(small)
    form = {**big, "csrf_token": csrf}
    # The CSRF check reads a form's body itself; the action reads it when the header has it.
    assert small.post("/api/flags", data=form).status_code == 413
    assert small.post("/api/flags", data=big, headers={"X-CSRF-Token": csrf}).status_code == 413
    files = {"upload": ("big.bin", b"\0" * 5000)}
    assert small.post("/api/flags", files=files, data={"csrf_token": csrf}).status_code == 413
    assert r.hgetall("conveyor:flags") == {}
    fits = small.post("/api/flags", json={"name": "ok", "state": "enabled"}, headers=BEARER)
    assert fits.status_code == 200 and r.hget("conveyor:flags", "ok")


def test_chunked_bodies_are_counted_whatever_the_route(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"{"
        for _ in range(10):
            yield b" " * 1024

    # No Content-Length: counted as it streams, on a route that reads it and on one that
    # never heard of bodies (the login form, without a session).
    streamed = small.post("/api/flags", content=chunks(), headers=BEARER)
    assert streamed.status_code == 413
    assert small.post("/login", content=chunks()).status_code == 413


def test_a_malformed_or_deeply_nested_body_is_a_clear_400(small: TestClient) -> None:
    deep = small.post("/api/flags", content=b"[" * 4000, headers=BEARER)
    assert deep.status_code == 400 and "not valid JSON" in deep.json()["error"]
    array = small.post("/api/flags", content=json.dumps([1, 2]), headers=BEARER)
    assert array.status_code == 400 and "JSON object" in array.json()["error"]
