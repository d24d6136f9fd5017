"""Authentication and CSRF on every route of the dashboard (conveyor.web.auth, conveyor.web.csrf).

The action routes are enumerated from the app itself (extensions' included), so a new action
that forgot protection fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient
from support.web import BEARER, EXTENSION, LOCAL, TOKEN, csrf_of, login

from conveyor import App, ConfigurationError, Settings
from conveyor.web import WebSettings, create_app, redact_url

SAFE = {"GET", "HEAD", "OPTIONS"}


def action_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(method, concrete path)`` of every state-changing route, Mounts included."""
    for route in routes:
        if isinstance(route, Mount):
            yield from action_routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - SAFE):
                path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: f"x-{m.group(1)}", route.path)
                yield method, prefix + path


def read_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[str]:
    """Concrete path of every GET route, Mounts of routes included (not static files)."""
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            yield from read_routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route) and "GET" in (route.methods or set()):
            yield prefix + re.sub(r"\{(\w+)(:\w+)?\}", lambda m: f"x-{m.group(1)}", route.path)


def state_of(r: redis.Redis) -> dict[str, object]:
    """Every key with its type and content, to prove a refused request changed nothing (but
    the failed-login counters it is meant to change)."""
    out: dict[str, object] = {}
    for key in r.scan_iter("*"):
        if key.startswith("conveyor:web:login-failures:"):
            continue
        kind = r.type(key)
        if kind == "list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "set":
            out[key] = sorted(r.smembers(key))
        elif kind == "string":
            out[key] = r.get(key)
    return out


@pytest.fixture
def seeded(app: App, r: redis.Redis) -> App:
    @app.job(queue="mail", retry=0)
    def boom(n: int) -> None:
        raise RuntimeError("boom")

    for i in range(3):
        boom.perform_async(i)
    boom.perform_in(60, 99)
    r.zadd("dead", {'{"class":"Dead","args":[],"jid":"d1","queue":"q"}': 1.0})
    r.zadd("retry", {'{"class":"Retry","args":[],"jid":"r1","queue":"q"}': 2.0})
    r.hset("conveyor:flags", "beta", '{"enabled": true}')
    return app


@pytest.fixture
def web(seeded: App) -> Iterator[TestClient]:
    # Dozens of wrong tokens in a row here: throttling is tested in test_login.py.
    settings = WebSettings(token=TOKEN, login_delay=0, login_max_failures=10_000)
    asgi = create_app(seeded, settings, extensions=[EXTENSION])
    with TestClient(asgi, base_url=LOCAL) as client:
        yield client


def test_enumeration_finds_every_action_including_extensions(web: TestClient) -> None:
    found = set(action_routes(list(web.app.routes)))  # type: ignore[attr-defined]
    assert len(found) >= 40, sorted(found)
    for expected in (
        ("POST", "/api/dead/x-jid/retry"),
        ("POST", "/api/retries/bulk"),
        ("POST", "/api/processes/x-identity/quiet"),
        ("POST", "/api/cron/x-name/enable"),
        ("POST", "/api/flags/x-name/percentage"),
        ("POST", "/api/queues/x-name/clear"),
        ("POST", "/api/probe/poke"),
        ("POST", "/probe/poke"),
        ("POST", "/login"),
        ("POST", "/logout"),
    ):
        assert expected in found


def test_every_action_refuses_unauthenticated_requests(web: TestClient, r: redis.Redis) -> None:
    before = state_of(r)
    for method, path in action_routes(list(web.app.routes)):  # type: ignore[attr-defined]
        answer = web.request(method, path, follow_redirects=False)
        if path == "/login":  # open by design, but never without the CSRF token
            assert answer.status_code == 403, (method, path)
            continue
        assert answer.status_code == 401, (method, path, answer.status_code)
        wrong = web.request(
            method, path, headers={"Authorization": "Bearer wrong-token"}, follow_redirects=False
        )
        assert wrong.status_code == 401, (method, path, "wrong bearer")
    assert state_of(r) == before, "a refused request changed Redis"
    assert not getattr(web.app.state, "poked", False)  # type: ignore[attr-defined]


def test_every_read_route_needs_a_login(web: TestClient) -> None:
    found = set(read_routes(list(web.app.routes)))  # type: ignore[attr-defined]
    for expected in ("/api/operations", "/api/operations/x-id", "/operations/x-id", "/dead"):
        assert expected in found, sorted(found)
    for path in sorted(found - {"/login", "/healthz"}):
        answer = web.get(path, follow_redirects=False)
        if path.startswith("/api/") or path == "/metrics":
            assert answer.status_code == 401, (path, answer.status_code)
        else:
            assert answer.status_code == 303, (path, answer.status_code)
            assert answer.headers["location"].startswith("/login"), path


def test_every_action_refuses_a_session_without_a_valid_csrf_token(
    web: TestClient, r: redis.Redis, seeded: App
) -> None:
    login(web)
    other = TestClient(web.app, base_url=LOCAL)
    other_token = login(other)
    before = state_of(r)
    for method, path in action_routes(list(web.app.routes)):  # type: ignore[attr-defined]
        for data, headers in (
            ({}, {}),
            ({"csrf_token": "forged"}, {}),
            ({"csrf_token": other_token}, {}),
            ({}, {"X-CSRF-Token": other_token}),
        ):
            answer = web.request(
                method, path, data=data or None, headers=headers, follow_redirects=False
            )
            assert answer.status_code == 403, (method, path, data, headers, answer.status_code)
    assert state_of(r) == before, "a request without a valid CSRF token changed Redis"
    assert not getattr(web.app.state, "poked", False)  # type: ignore[attr-defined]


def test_the_right_csrf_token_or_a_bearer_token_is_accepted(
    web: TestClient, r: redis.Redis
) -> None:
    token = login(web)
    answer = web.post("/api/dead/d1/retry", headers={"X-CSRF-Token": token})
    assert answer.status_code == 200, answer.text
    form = web.post(
        "/api/retries/r1/delete",
        data={"csrf_token": token, "next": "/retries"},
        follow_redirects=False,
    )
    assert form.status_code == 303 and form.headers["location"] == "/retries"
    assert r.zcard("retry") == 0
    assert web.post("/api/probe/poke", headers={"X-CSRF-Token": token}).status_code == 200
    fresh = TestClient(web.app, base_url=LOCAL)
    assert fresh.post("/api/flags/beta/disable", headers=BEARER).json()["summary"] == "off"


def test_anonymous_access_only_when_allowed_and_still_csrf_protected(seeded: App) -> None:
    with pytest.raises(ConfigurationError, match="--allow-anonymous"):
        WebSettings()
    asgi = create_app(seeded, WebSettings(allow_anonymous=True))
    with TestClient(asgi, base_url=LOCAL, client=("127.0.0.1", 50000)) as client:
        assert client.get("/api/stats").status_code == 200
        assert client.post("/api/flags/beta/disable").status_code == 403
        token = client.get("/api/session").json()["csrf_token"]
        answer = client.post("/api/flags/beta/disable", headers={"X-CSRF-Token": token})
        assert answer.status_code == 200


def test_pages_redirect_to_login_and_the_api_answers_401(web: TestClient) -> None:
    page = web.get("/dead?page=2", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/dead"
    api = web.get("/api/stats")
    assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
    assert web.get("/metrics").status_code == 401
    assert web.get("/healthz").text == "ok"
    assert web.get("/static/app.css").status_code == 200


def test_login_with_a_wrong_token_fails_and_sets_no_session(web: TestClient) -> None:
    page = web.get("/login")
    answer = web.post("/login", data={"token": "nope-nope-nope", "csrf_token": csrf_of(page.text)})
    assert answer.status_code == 401
    assert "Wrong token" in answer.text
    assert web.get("/api/stats").status_code == 401


def test_user_and_password_login_and_logout(seeded: App) -> None:
    settings = WebSettings(user="ops", password="correct horse battery")
    with TestClient(create_app(seeded, settings), base_url=LOCAL) as client:
        token = csrf_of(client.get("/login").text)
        bad = client.post("/login", data={"user": "ops", "password": "wrong", "csrf_token": token})
        assert bad.status_code == 401
        good = client.post(
            "/login",
            data={"user": "ops", "password": "correct horse battery", "csrf_token": token},
            follow_redirects=False,
        )
        assert good.status_code == 303
        page = client.get("/")
        assert page.status_code == 200 and "Log out" in page.text
        assert csrf_of(page.text) != token, "the CSRF token is rotated at login"
        assert client.post("/logout", follow_redirects=False).status_code == 403
        out = client.post(
            "/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
        )
        assert out.status_code == 303
        assert client.get("/api/stats").status_code == 401


def test_a_session_ends_when_the_credentials_change(seeded: App) -> None:
    first = WebSettings(token=TOKEN, secret_key="s" * 32)
    with TestClient(create_app(seeded, first), base_url=LOCAL) as client:
        login(client)
        assert client.get("/api/stats").status_code == 200
        cookies = dict(client.cookies)
    rotated = WebSettings(token="another-Kp4wQ9zR7mX2vL", secret_key="s" * 32)
    with TestClient(create_app(seeded, rotated), cookies=cookies, base_url=LOCAL) as client:
        assert client.get("/api/stats").status_code == 401


def test_login_never_redirects_off_site(web: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = web.get("/login")
        answer = web.post(
            "/login",
            data={"token": TOKEN, "csrf_token": csrf_of(page.text), "next": target},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/", target


def test_no_secret_on_any_page(seeded: App) -> None:
    settings = WebSettings(token=TOKEN, secret_key="k" * 40)
    with TestClient(create_app(seeded, settings), base_url=LOCAL) as client:
        login(client)
        paths = ["/", "/queues", "/queues/mail", "/busy", "/retries", "/scheduled", "/dead"]
        paths += ["/interrupted", "/processes", "/cron", "/flags", "/metrics", "/api/stats"]
        for path in paths:
            text = client.get(path).text
            assert TOKEN not in text and "k" * 40 not in text, path
        headers = client.get("/").headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"


def test_redis_passwords_are_never_shown() -> None:
    assert redact_url("redis://user:hunter2@cache:6380/2") == "redis://cache:6380/2"
    assert redact_url("unix:///run/redis.sock?password=hunter2") == "unix:///run/redis.sock"
    assert redact_url(None) == "embedded"


def test_web_settings_from_settings_extra_and_environment() -> None:
    extra = {"user": "ops", "password": "from the file 1", "poll_interval": 2}
    settings = Settings(extra={"web": extra})
    loaded = WebSettings.load(settings, env={"CONVEYOR_WEB_PASSWORD": "from the env 2"})
    assert (loaded.user, loaded.password, loaded.poll_interval) == ("ops", "from the env 2", 2)
    assert loaded.auth_methods == ("password",)
    both = WebSettings.load(None, env={"CONVEYOR_WEB_TOKEN": TOKEN}, public_metrics=True)
    assert both.token == TOKEN and both.public_metrics
    with pytest.raises(ConfigurationError, match="unknown web setting"):
        WebSettings.load(Settings(extra={"web": {"tokn": "x"}}), env={})
    with pytest.raises(ConfigurationError, match="go together"):
        WebSettings(user="ops")
    with pytest.raises(ConfigurationError, match="too guessable"):
        WebSettings(token="short")
    assert TOKEN not in repr(both)
    empty = WebSettings.load(None, env={}, token="", allow_anonymous=True)
    assert empty.token is None, "an empty --token / CONVEYOR_WEB_TOKEN counts as unset"


# -- fuzzing the URL grammar ---------------------------------------------------------------------
_SEGMENT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@pytest.fixture(scope="module")
def bare() -> TestClient:
    # No lifespan and no credentials: every request must be refused before Redis is needed.
    asgi = create_app(App(), WebSettings(token=TOKEN), extensions=[EXTENSION])
    return TestClient(asgi, base_url=LOCAL, follow_redirects=False)


@hsettings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    segments=st.lists(_SEGMENT, min_size=1, max_size=4),
    prefix=st.sampled_from(["", "/api", "/api/queues", "/api/dead", "/probe", "/static/.."]),
)
def test_fuzzed_paths_are_never_served_without_a_login(
    bare: TestClient, method: str, segments: list[str], prefix: str
) -> None:
    path = prefix + "/" + "/".join(quote(s, safe="") for s in segments)
    answer = bare.request(method, path)
    assert answer.status_code in (303, 400, 401, 403, 404, 405), (method, path, answer.text)
    if answer.status_code == 303:
        assert answer.headers["location"].startswith("/login?next="), path


@hsettings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=st.text(max_size=40))
def test_fuzzed_next_targets_stay_on_the_site(web: TestClient, target: str) -> None:
    page = web.get("/login")
    answer = web.post(
        "/login",
        data={"token": TOKEN, "csrf_token": csrf_of(page.text), "next": target},
        follow_redirects=False,
    )
    location = answer.headers["location"]
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location
    assert urlsplit(location).netloc == "" and urlsplit(location).scheme == ""
