"""The dashboard's access log (conveyor.web.access): route templates, never the caller's path
segments or query string, no client address unless asked for; in-process, fuzzed over the
URL grammar, and from a real ``conveyor web`` process."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from support import StartProcess
from support.logs import Captured, log_pipeline
from support.web import BEARER, LOCAL, TOKEN, start_web

from conveyor import App
from conveyor.web import WebExtension, WebSettings, create_app

MARK = "Zq9marker"


async def _vars(request: Request) -> Response:
    return JSONResponse({"ok": True})


#: A route shaped like the automation API's (``/{keyword}/workflows/{rest:path}``).
VARS = WebExtension(
    name="vars",
    pages=(Route("/auto/workflows/{rest:path}", _vars, methods=["POST"]),),
    api_prefixes=("/auto/",),
)


@pytest.fixture
def pipeline() -> Iterator[Callable[..., Captured]]:
    with log_pipeline() as configure:
        yield configure


def access_lines(captured: Captured) -> list[dict[str, object]]:
    return [line for line in captured.lines() if line.get("logger") == "conveyor.web.access"]


def server_text(captured: Captured) -> str:
    """Every line but the test client's own (httpx logs the URLs it requests)."""
    lines = captured.lines()
    return "\n".join(json.dumps(x) for x in lines if not str(x["logger"]).startswith("httpx"))


def test_lines_name_the_route_not_the_path_query_or_client(
    app: App, pipeline: Callable[..., Captured]
) -> None:
    out = pipeline()
    asgi = create_app(app, WebSettings(token=TOKEN), extensions=[VARS])
    with TestClient(asgi, base_url=LOCAL, headers=BEARER, client=("198.51.100.23", 1)) as c:
        c.get(f"/api/queues/{MARK}-queue/jobs?page=2&token={MARK}-query")
        c.post(f"/auto/workflows/echo/vars/username={MARK}-ada;password={MARK}-pw")
        c.get(f"/api/dead/{MARK}-jid")
        c.get(f"/no/such/{MARK}-page")
        c.get("/api/stats", headers={"Authorization": f"Bearer {MARK}-wrong"})
    lines = access_lines(out)
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [
        ("GET", "/api/queues/{name}/jobs", 200),
        ("POST", "/auto/workflows/{rest}", 200),
        ("GET", "/api/dead/{jid}", 404),
        ("GET", "[no route]", 404),
        ("GET", "/api/stats", 401),
    ]
    assert all("client" not in x and isinstance(x["duration_ms"], float) for x in lines)
    assert MARK not in server_text(out) and "198.51.100.23" not in server_text(out)


def test_client_addresses_only_when_asked_for(app: App, pipeline: Callable[..., Captured]) -> None:
    out = pipeline()
    asgi = create_app(app, WebSettings(token=TOKEN, log_client_ip=True))
    with TestClient(asgi, base_url=LOCAL, headers=BEARER, client=("198.51.100.23", 1)) as c:
        c.get("/api/stats")
    assert access_lines(out)[0]["client"] == "198.51.100.23"


def test_refused_requests_are_logged_with_their_route(
    app: App, pipeline: Callable[..., Captured]
) -> None:
    out = pipeline()
    asgi = create_app(app, WebSettings(token=TOKEN, max_body=10))
    with TestClient(asgi, base_url=LOCAL, headers=BEARER) as c:
        c.post(f"/api/flags/{MARK}/enable", content=b"x" * 100)
        c.get("/api/stats", headers={"host": f"{MARK}.example"})
    assert [(x["route"], x["status"]) for x in access_lines(out)] == [
        ("/api/flags/{name}/enable", 413),
        ("/api/stats", 400),
    ]
    assert MARK not in server_text(out)


_SEGMENT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1
).map(lambda text: MARK + text)


@hsettings(max_examples=60, deadline=None)
@given(
    template=st.sampled_from(
        [
            "/api/queues/{}/jobs",
            "/api/queues/{}/clear",
            "/api/retries/{}",
            "/api/flags/{}/percentage",
            "/api/processes/{}/quiet",
            "/queues/{}",
            "/auto/workflows/{}",
            "/{}",
        ]
    ),
    segment=_SEGMENT,
    query=st.dictionaries(st.text(min_size=1), _SEGMENT, max_size=3),
)
def test_fuzzed_urls_never_reach_the_log(
    template: str, segment: str, query: dict[str, str]
) -> None:
    # Hypothesis and function-scoped fixtures do not mix: the app has no Redis (every route
    # answers 401 or 404 before one is needed), and the log pipeline is set up per example.
    asgi = create_app(App(), WebSettings(token=TOKEN), extensions=[VARS])
    path = template.format(urllib.parse.quote(segment, safe=""))
    client = TestClient(asgi, base_url=LOCAL, follow_redirects=False)  # no lifespan: no Redis
    with log_pipeline() as configure:
        out = configure()
        client.post(path, params=query)
        client.get(path, params=query)
        assert len(access_lines(out)) == 2
        assert MARK not in server_text(out)


def test_a_real_conveyor_web_process_logs_routes_only(
    processes: StartProcess, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    proc, base = start_web(processes, redis_url)
    with httpx.Client(base_url=base, headers=BEARER) as client:
        client.get(f"/api/queues/{MARK}/jobs", params={"secret": MARK})
        client.post(f"/api/flags/{MARK}/enable")
        client.get(f"/{MARK}/vars/username={MARK}")
    proc.terminate()
    proc.wait(15)
    text = (tmp_path / "proc-0.log").read_text()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    routes = [(x["route"], x["status"]) for x in lines if x["logger"] == "conveyor.web.access"]
    assert ("/api/queues/{name}/jobs", 200) in routes
    assert "/api/flags/{name}/enable" in [route for route, _ in routes]
    assert ("[no route]", 404) in routes
    assert not [x for x in lines if x["logger"] == "uvicorn.access"], "uvicorn's access log is on"
    assert MARK not in text and "127.0.0.1" not in text.replace(base, "")
