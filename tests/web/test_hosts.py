"""The Host allow-list (conveyor.web.hosts) and anonymous mode kept to loopback: a DNS
rebinding page (``Host: evil.example`` on 127.0.0.1) is refused on a real socket, with or
without credentials, and anonymous mode starts only on a loopback address."""

from __future__ import annotations

import re

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from support.web import LOCAL, TOKEN, raw_request, served

from conveyor import App, ConfigurationError
from conveyor.web import WebSettings, create_app


def get(port: int, path: str, host: str | None, *extra: str) -> tuple[int, bytes]:
    lines = [f"GET {path} HTTP/1.1", *([f"Host: {host}"] if host is not None else []), *extra]
    status, _, body = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    return status, body


def test_a_rebinding_host_is_refused_on_a_real_socket_even_with_the_token(
    app: App, r: redis.Redis
) -> None:
    r.hset("conveyor:flags", "beta", '{"enabled": true}')
    with served(create_app(app, WebSettings(token=TOKEN))) as base:
        port = int(base.rsplit(":", 1)[1])
        bearer = f"Authorization: Bearer {TOKEN}"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
            assert get(port, "/api/flags", host, bearer)[0] == 200, host
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "::1"):
            status, body = get(port, "/api/flags", host, bearer)
            assert status == 400, host
            assert b"is not served here" in body and b"beta" not in body
        # HTTP/1.0 may leave Host out: not served either.
        status, _, body = raw_request(port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert status == 400 and b"no Host header" in body


def test_anonymous_mode_serves_only_loopback_hosts_and_clients(app: App, r: redis.Redis) -> None:
    r.hset("conveyor:flags", "beta", '{"enabled": true}')
    with served(create_app(app, WebSettings(allow_anonymous=True))) as base:
        port = int(base.rsplit(":", 1)[1])
        assert get(port, "/api/flags", f"127.0.0.1:{port}")[0] == 200
        status, body = get(port, "/api/flags", "rebind.evil.example")
        assert status == 400 and b"beta" not in body
    # The same app reached from another machine (through a proxy, say) is not anonymous.
    asgi = create_app(app, WebSettings(allow_anonymous=True))
    with TestClient(asgi, base_url=LOCAL, client=("192.0.2.7", 40000)) as remote:
        assert remote.get("/api/flags").status_code == 401
    with TestClient(asgi, base_url=LOCAL, client=("::1", 40000)) as local:
        assert local.get("/api/flags").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "dashboard.example.com"])
def test_anonymous_mode_refuses_to_start_off_loopback(host: str) -> None:
    allowed = ("dashboard.example.com",)
    with pytest.raises(ConfigurationError, match=r"only on a loopback address.*127\.0\.0\.1"):
        WebSettings(allow_anonymous=True, host=host, allowed_hosts=allowed)


def test_anonymous_mode_refuses_non_loopback_host_names() -> None:
    with pytest.raises(ConfigurationError, match=r"only loopback Host names; remove evil\.example"):
        WebSettings(allow_anonymous=True, allowed_hosts=("evil.example",))
    with pytest.raises(ConfigurationError, match="only loopback Host names"):
        WebSettings(allow_anonymous=True, allowed_hosts=("*",))
    assert WebSettings(allow_anonymous=True, host="::1", allowed_hosts=("localhost",))


def test_listening_on_all_interfaces_needs_named_hosts(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"all interfaces.*--allowed-host"):
        WebSettings(token=TOKEN, host="0.0.0.0")
    with pytest.raises(ConfigurationError, match=r"'https://x\.example/' is not a host name"):
        WebSettings(token=TOKEN, allowed_hosts=("https://x.example/",))
    settings = WebSettings(token=TOKEN, host="0.0.0.0", allowed_hosts=("Dash.Example.com",))
    assert settings.host_allow_list == {"dash.example.com"}
    with TestClient(create_app(app, settings), base_url="http://dash.example.com:7433") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"host": "localhost"}).status_code == 400
    anything = WebSettings(token=TOKEN, host="0.0.0.0", allowed_hosts=("*",))
    assert anything.host_allow_list is None
    loaded = WebSettings.load(
        None,
        env={"CONVEYOR_WEB_ALLOWED_HOSTS": "a.example, b.example", "CONVEYOR_WEB_TOKEN": TOKEN},
    )
    assert loaded.allowed_hosts == ("a.example", "b.example")


#: What a correct allow-list for the default settings accepts, written independently of
#: conveyor.web.config.normalise_host: the three loopback names, any case, optional port.
ACCEPTED = re.compile(r"(?i)(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?")


@pytest.fixture(scope="module")
def default_app() -> TestClient:
    # /healthz needs no Redis: the fuzzing below exercises the Host check alone.
    asgi = create_app(App(), WebSettings(token=TOKEN))
    return TestClient(asgi, base_url=LOCAL)


_HOST_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=40),
    st.builds(
        lambda name, port: f"{name}:{port}" if port is not None else name,
        st.sampled_from(["localhost", "LocalHost", "127.0.0.1", "[::1]", "evil.example"]),
        st.one_of(st.none(), st.integers(0, 99999).map(str), st.just("")),
    ),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["localhost", "127.0.0.1", "[::1]"]),
        st.sampled_from([".", ".evil.example", "@evil.example", "%00", "/x", ":80:80", "]"]),
    ),
)


@hsettings(max_examples=300, deadline=None)
@given(host=_HOST_TEXT)
def test_fuzzed_host_headers_are_served_only_when_allowed(
    default_app: TestClient, host: str
) -> None:
    status = default_app.get("/healthz", headers={"host": host}).status_code
    assert status == (200 if ACCEPTED.fullmatch(host) else 400), host
