"""The web dashboard's login state (conveyor.redis.web_logins) against a real Redis: every key it
writes expires, sessions are capped, revocation by credentials, failure windows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support import wait_for

from conveyor import App, Settings
from conveyor.redis.web_logins import WebAuthStore

HOUR_MS = 3_600_000


@pytest.fixture
def auth(app: App) -> WebAuthStore:
    return WebAuthStore(app.store)


def test_sessions_expire_and_are_capped(auth: WebAuthStore, r: redis.Redis) -> None:
    for n in range(5):
        revoked = auth.create_session(f"d{n}", "ops", "cred-a", ttl_ms=HOUR_MS, keep=3)
        assert revoked == (1 if n >= 3 else 0)
    assert [k for k in ("d0", "d1") if auth.session(k)] == []  # the oldest went first
    assert auth.session("d4") is not None and auth.session_count() == 3
    for key in r.scan_iter("conveyor:web:session:*"):
        assert 0 < r.pttl(key) <= HOUR_MS, key


def test_expired_sessions_leave_the_index(auth: WebAuthStore, r: redis.Redis) -> None:
    auth.create_session("short", "ops", "cred-a", ttl_ms=1, keep=10)
    wait_for(lambda: not r.exists("conveyor:web:session:short"))  # its index entry is stale
    auth.create_session("next", "ops", "cred-a", ttl_ms=HOUR_MS, keep=10)
    assert r.zrange("conveyor:web:sessions", 0, -1) == ["next"]


def test_revoking_one_or_every_session_of_other_credentials(auth: WebAuthStore) -> None:
    auth.create_session("old1", "ops", "cred-a", ttl_ms=HOUR_MS, keep=10)
    auth.create_session("old2", "token", "cred-a", ttl_ms=HOUR_MS, keep=10)
    auth.create_session("new", "ops", "cred-b", ttl_ms=HOUR_MS, keep=10)
    assert auth.revoke_other_credentials("cred-b") == 2
    assert auth.session("old1") is None and auth.session("new") is not None
    assert auth.revoke("new") and not auth.revoke("new")
    assert auth.session_count() == 0


def test_failure_windows(auth: WebAuthStore, r: redis.Redis) -> None:
    subjects = [("client", "c1"), ("user", "u1")]
    assert [f.count for f in auth.failures(subjects)] == [0, 0]
    for _ in range(3):
        counts = auth.record_failure(subjects, window_ms=60_000, limit=3)
    assert [f.count for f in counts] == [3, 3]
    assert all(0 < f.ttl_ms <= 60_000 for f in auth.failures(subjects))
    # A counter restored without its TTL gets one back rather than locking out forever.
    r.persist("conveyor:web:login-failures:client:c1")
    again = auth.record_failure(subjects[:1], window_ms=60_000, limit=3)[0]
    assert again.count == 4 and 0 < r.pttl("conveyor:web:login-failures:client:c1") <= 60_000
    auth.clear_failures(subjects)
    assert [f.count for f in auth.failures(subjects)] == [0, 0]


@pytest.fixture
def prefixed(settings: Settings) -> Iterator[WebAuthStore]:
    other = App(settings.replace(key_prefix="myapp"))
    yield WebAuthStore(other.store)
    other.close()


def test_keys_follow_the_prefix(prefixed: WebAuthStore, r: redis.Redis) -> None:
    prefixed.create_session("d", "ops", "c", ttl_ms=HOUR_MS, keep=10)
    prefixed.record_failure([("client", "x")], window_ms=1000, limit=3)
    assert sorted(r.scan_iter("*")) == [
        "myapp:conveyor:web:login-failures:client:x",
        "myapp:conveyor:web:session:d",
        "myapp:conveyor:web:sessions",
    ]
