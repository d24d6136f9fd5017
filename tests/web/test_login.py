"""Logins (conveyor.web.login, conveyor.web.sessions): failed logins slowed then refused with
429 per client and per user, across web processes sharing the Redis; sessions revoked
server-side at logout and when the credentials change. (Weak credentials: test_strength.py.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import redis
from starlette.testclient import TestClient
from support import wait_for
from support.web import LOCAL, TOKEN, csrf_of, login, served

from conveyor import App, Settings
from conveyor.web import WebSettings, create_app

PASSWORD = "correct horse battery staple"
FAST = {"login_delay": 0, "login_max_failures": 3, "login_window": 60}


def client(asgi: object, address: str = "192.0.2.1") -> TestClient:
    return TestClient(asgi, base_url=LOCAL, client=(address, 40000))  # type: ignore[arg-type]


def try_token(browser: TestClient, token: str) -> httpx.Response:
    page = browser.get("/login")
    data = {"token": token, "csrf_token": csrf_of(page.text), "next": "/"}
    return browser.post("/login", data=data, follow_redirects=False)


def try_password(browser: TestClient, user: str, password: str) -> httpx.Response:
    page = browser.get("/login")
    data = {"user": user, "password": password, "csrf_token": csrf_of(page.text)}
    return browser.post("/login", data=data, follow_redirects=False)


def test_failed_logins_are_slowed_then_refused_per_client(app: App) -> None:
    asgi = create_app(app, WebSettings(token=TOKEN, login_delay=0.2, login_max_failures=3))
    with client(asgi) as guesser:
        waits = []
        for _ in range(3):
            started = time.monotonic()
            assert try_token(guesser, "wrong-guess-0000000000").status_code == 401
            waits.append(time.monotonic() - started)
        # 0.2 s, then 0.4 s, then 0.8 s: each failure is answered later than the one before.
        assert waits[0] >= 0.2 and waits[1] >= 0.4 and waits[2] >= 0.8, waits
        refused = try_token(guesser, TOKEN)  # the right token, too late
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 900
        assert "Too many failed logins" in refused.text
        assert guesser.get("/api/stats").status_code == 401
    with client(asgi, "192.0.2.2") as neighbour:  # another client is not locked out
        assert try_token(neighbour, TOKEN).status_code == 303


def test_wrong_bearer_tokens_count_as_failed_logins(app: App) -> None:
    asgi = create_app(app, WebSettings(token=TOKEN, **FAST))
    with client(asgi) as guesser:
        for guess in ("guess-1", "guess-2", "guess-3"):
            answer = guesser.get("/api/stats", headers={"Authorization": f"Bearer {guess}"})
            assert answer.status_code == 401
        right = guesser.get("/api/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
        assert "too many failed logins" in right.json()["error"]
    with client(asgi, "192.0.2.9") as other:
        ok = other.get("/api/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_a_user_is_locked_whatever_client_guesses(app: App) -> None:
    settings = WebSettings(token=TOKEN, user="ops", password=PASSWORD, **FAST)
    asgi = create_app(app, settings)
    for n in range(3):  # three guessers, one wrong password each
        with client(asgi, f"198.51.100.{n}") as guesser:
            assert try_password(guesser, "ops", f"wrong password {n}").status_code == 401
    with client(asgi, "203.0.113.5") as fresh:
        assert try_password(fresh, "ops", PASSWORD).status_code == 429
        # The token is a different credential: it still logs in from a clean client.
        assert try_token(fresh, TOKEN).status_code == 303


def test_a_success_clears_the_failures(app: App) -> None:
    asgi = create_app(app, WebSettings(token=TOKEN, **FAST))
    with client(asgi) as person:
        for _ in range(2):
            assert try_token(person, "typo-typo-typo").status_code == 401
        assert try_token(person, TOKEN).status_code == 303
        for _ in range(2):
            assert try_token(person, "typo-typo-typo").status_code == 401
        assert try_token(person, TOKEN).status_code == 303


def test_the_lockout_ends_with_its_window(app: App) -> None:
    asgi = create_app(app, WebSettings(token=TOKEN, **{**FAST, "login_window": 1}))
    with client(asgi) as person:
        for _ in range(3):
            try_token(person, "typo-typo-typo")
        assert try_token(person, TOKEN).status_code == 429
        wait_for(lambda: try_token(person, TOKEN).status_code == 303, timeout=20, interval=0.3)


def test_failures_are_shared_by_web_processes_on_the_same_redis(settings: Settings) -> None:
    first, second = App(settings), App(settings)  # separate connections, shared Redis only
    try:
        web_settings = WebSettings(token=TOKEN, **FAST)
        with (
            served(create_app(first, web_settings)) as one,
            served(create_app(second, web_settings)) as two,
        ):
            wrong = {"Authorization": "Bearer not-the-token"}
            assert httpx.get(f"{one}/api/stats", headers=wrong).status_code == 401
            assert httpx.get(f"{two}/api/stats", headers=wrong).status_code == 401
            assert httpx.get(f"{one}/api/stats", headers=wrong).status_code == 401
            right = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(f"{two}/api/stats", headers=right).status_code == 429
    finally:
        first.close()
        second.close()


def test_concurrent_guesses_cannot_slip_in_under_the_limit(app: App) -> None:
    settings = WebSettings(token=TOKEN, login_delay=0.2, login_max_failures=3)
    with served(create_app(app, settings)) as base:
        browsers = [httpx.Client(base_url=base, timeout=30) for _ in range(12)]
        forms = []
        for browser in browsers:
            page = browser.get("/login")
            forms.append({"token": f"guess-{len(forms)}", "csrf_token": csrf_of(page.text)})
        start = threading.Barrier(len(browsers))

        def guess(i: int) -> int:
            start.wait()
            return browsers[i].post("/login", data=forms[i]).status_code

        with ThreadPoolExecutor(len(browsers)) as pool:
            statuses = sorted(pool.map(guess, range(len(browsers))))
        for browser in browsers:
            browser.close()
    assert statuses == [401] * 3 + [429] * 9


# -- sessions ------------------------------------------------------------------------------------
def test_logout_revokes_the_session_for_every_copy_of_the_cookie(app: App) -> None:
    asgi = create_app(app, WebSettings(token=TOKEN))
    with TestClient(asgi, base_url=LOCAL) as browser:
        csrf = login(browser)
        stolen = dict(browser.cookies)
        out = browser.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert out.status_code == 303
    with TestClient(asgi, base_url=LOCAL, cookies=stolen) as thief:
        assert thief.get("/api/stats").status_code == 401
        assert thief.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_a_password_change_revokes_sessions_even_if_it_is_changed_back(
    app: App, r: redis.Redis
) -> None:
    def web(password: str) -> TestClient:
        settings = WebSettings(user="ops", password=password, secret_key="k" * 32)
        return TestClient(create_app(app, settings), base_url=LOCAL)

    with web(PASSWORD) as browser:
        assert try_password(browser, "ops", PASSWORD).status_code == 303
        assert browser.get("/api/stats").status_code == 200
        cookies = dict(browser.cookies)
    assert len(list(r.scan_iter("conveyor:web:session:*"))) == 1
    with web("another long passphrase here") as restarted:  # start: stale sessions revoked
        assert list(r.scan_iter("conveyor:web:session:*")) == []
        restarted.cookies.update(cookies)
        assert restarted.get("/api/stats").status_code == 401
    with web(PASSWORD) as back:
        back.cookies.update(cookies)
        assert back.get("/api/stats").status_code == 401


def test_redis_never_holds_the_session_id_and_a_login_replaces_the_old_session(
    app: App, r: redis.Redis
) -> None:
    import base64
    import json

    asgi = create_app(app, WebSettings(token=TOKEN))
    with TestClient(asgi, base_url=LOCAL) as browser:
        login(browser)
        raw = browser.cookies["conveyor_session"].split(".")[0]
        first = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))["sid"]
        dump = repr({k: r.dump(k) for k in r.scan_iter("*")})
        assert first not in dump and len(list(r.scan_iter("conveyor:web:session:*"))) == 1
        login(browser)  # logging in again ends the session the browser had
        assert len(list(r.scan_iter("conveyor:web:session:*"))) == 1
        assert browser.get("/api/stats").status_code == 200
