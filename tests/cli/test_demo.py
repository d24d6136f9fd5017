"""``conveyor demo``: real jobs on a real worker, on the test Redis and on the embedded one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis
from support import PYTHON, ROOT, protected_redis, python_env

pytestmark = pytest.mark.slow

JOBS = ("resize_image", "fetch_page", "ChargeCard", "send_reminder")


def _conveyor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "conveyor.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _check_report(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "All jobs done" in out
    for name in JOBS:
        assert name in out
    assert "try 1 raised ConnectionError" in out  # the flaky job failed once, then succeeded
    assert "fetched example.com (async)" in out and "reminded ops" in out
    assert "Traceback" not in done.stderr


def test_demo_on_a_given_redis_leaves_no_keys_and_touches_nothing(
    redis_url: str, r: redis.Redis
) -> None:
    r.lpush("queue:default", '{"class":"Mine","args":[],"jid":"keep"}')
    r.set("stat:processed", 7)
    done = _conveyor("--redis-url", redis_url, "demo", env=python_env(COLUMNS="200"))
    _check_report(done)
    assert "keys under conveyor-demo-" in done.stdout
    assert list(r.scan_iter(match="conveyor-demo*")) == []
    assert r.lrange("queue:default", 0, -1) == ['{"class":"Mine","args":[],"jid":"keep"}']
    assert r.get("stat:processed") == "7"


def test_demo_masks_the_password_of_its_redis(tmp_path: Path) -> None:
    with protected_redis(tmp_path, "s3cret-pw") as url:
        done = _conveyor("--redis-url", url, "demo", env=python_env(COLUMNS="200"))
    _check_report(done)
    assert f"on {url.replace('default:s3cret-pw@', '')} (keys under" in done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_demo_on_the_embedded_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = python_env(COLUMNS="200")
    env.pop("CONVEYOR_REDIS_URL", None)
    env.pop("CONVEYOR_KEY_PREFIX", None)
    sock = state / "redis.sock"
    try:
        done = _conveyor("--state-dir", str(state), "demo", env=env)
        _check_report(done)
        assert f"unix://{sock}" in done.stdout
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        assert list(client.scan_iter(match="conveyor-demo*")) == []
        client.close()
    finally:
        stopped = _conveyor("--state-dir", str(state), "redis", "stop", env=env)
    assert stopped.returncode == 0 and "stopped the embedded Redis" in stopped.stdout
    again = _conveyor("--state-dir", str(state), "redis", "stop", env=env)
    assert "no embedded Redis is running" in again.stdout
    assert not os.path.exists(sock) or not _answers(sock)


def _answers(sock: Path) -> bool:
    client = redis.Redis(unix_socket_path=str(sock), socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()
