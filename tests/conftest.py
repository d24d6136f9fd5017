"""Test session fixtures: a real redis-server started for the session (or the one named by
CONVEYOR_TEST_REDIS_URL), flushed before every test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from support import PYTHON, StartProcess, free_port, python_env

from conveyor import App, Settings
from conveyor.redis.embedded import find_server_binary


@contextmanager
def _redis_server() -> Iterator[str]:
    """A real redis-server on a free port for the session; yields its URL."""
    binary = shutil.which("redis-server") or find_server_binary()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="conveyor-test-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"test redis-server ({binary}) did not start on port {port}")
    client.close()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("CONVEYOR_TEST_REDIS_URL")
    if url:
        yield url
        return
    with _redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def store_b_url() -> Iterator[str]:
    """A second real redis-server, for tests of stores (several Redis instances)."""
    with _redis_server() as url:
        yield url


@pytest.fixture
def rb(store_b_url: str) -> Iterator[redis.Redis]:
    """A client of the second server (store ``b``), flushed before the test."""
    client = redis.Redis.from_url(store_b_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, r: redis.Redis) -> Settings:
    """Settings with short intervals, so crash recovery and polling happen within a test. The
    worker mode is pinned to threads, the mode most tests were written for (an app of only
    ``async def`` jobs would otherwise get asyncio mode); asyncio and auto have their own tests."""
    return Settings(
        redis_url=redis_url,
        worker_mode="threads",
        concurrency=4,
        heartbeat_interval=0.5,
        liveness_ttl=2.0,
        recovery_interval=0.5,
        poll_interval_average=0.2,
        shutdown_timeout=5.0,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    application = App(settings)
    yield application
    application.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[StartProcess]:
    """Start real child processes; any still running when the test ends is killed. Their
    stderr goes to ``proc-<n>.log`` files in the test's tmp_path (a pipe nobody reads could
    fill up and block a chatty child)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"proc-{len(procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [PYTHON, *args], env=python_env(**env), stdout=subprocess.DEVNULL, stderr=log
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


# -- log scan (SPEC IMP-2) ------------------------------------------------------------------------
# Every log line of the run (this process and child *.log files) is scanned at the end for the
# fixture personal data of tests/apps/imports/fixtures.py; a hit fails the run
# (tests/support/log_scan.py).
pytest_plugins = ["support.log_scan"]
