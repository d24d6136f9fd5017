"""Test session fixtures: a real redis-server started for the session (or the one named by
CONVEYOR_TEST_REDIS_URL), flushed before every test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from conveyor import App, Settings
from conveyor.redis.embedded import find_server_binary

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("CONVEYOR_TEST_REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server") or find_server_binary()
    port = _free_port()
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
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, r: redis.Redis) -> Settings:
    """Settings with short intervals, so crash recovery and polling happen within a test."""
    return Settings(
        redis_url=redis_url,
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


def python_env(**extra: str) -> dict[str, str]:
    """Environment for child Python processes that must import conveyor and the test apps."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


PYTHON = sys.executable

#: Starts ``python <args...>`` with the test PYTHONPATH and extra environment variables.
StartProcess = Callable[..., "subprocess.Popen[bytes]"]


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
# fixture personal data of tests/import_apps/fixtures.py; a hit fails the run (tests/log_scan.py).
pytest_plugins = ["log_scan"]
