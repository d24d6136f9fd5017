"""Helpers shared by tests: bounded waits, in-process workers, child processes and ports.

The test apps live in ``tests/apps`` (importable as ``apps.*``); the web, browser, mail and
automation helpers in the submodules of this package."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis

from conveyor import App, Worker
from conveyor.core.aio_worker import AioWorker
from conveyor.core.modes import create_worker

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: The test apps, run as scripts by the crash tests or imported as ``apps.*``.
APPS = TESTS / "apps"
PYTHON = sys.executable

#: Starts ``python <args...>`` with the test PYTHONPATH and extra environment variables.
StartProcess = Callable[..., "subprocess.Popen[bytes]"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_env(**extra: str) -> dict[str, str]:
    """Environment for child Python processes that must import conveyor and the test apps."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def stop_session(proc: subprocess.Popen[bytes]) -> None:
    """Stop a command started with ``start_new_session=True`` as an operator would (SIGTERM),
    then kill its whole process group if it is still running 20 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def live_process_holding(app: App, r: redis.Redis, identity: str, n: int) -> list[str]:
    """A live worker process ``identity`` (its liveness key set) holding ``n`` jobs of class
    ``c`` (jids ``j0``, ``j1``, ...) in its working list: their payloads, in order."""
    keys = app.store.keys
    r.set(keys.liveness(identity), "1", px=10_000)
    raws = [f'{{"class":"c","args":[{i}],"jid":"j{i}","queue":"q"}}' for i in range(n)]
    r.lpush(keys.working(identity), *raws)
    return raws


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "",
    *,
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; fail the test
    after ``timeout`` seconds, saying ``what`` was awaited (the only wait helper of the suite).

    >>> row = wait_for(lambda: r.hget("h", "k"), 5, "the row")     # doctest: +SKIP
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


def run_burst(app: App, timeout: float = 30.0) -> Worker | AioWorker:
    """Run a burst worker (threads or asyncio, as ``app.settings.worker_mode`` says) in this
    process until the queues are empty."""
    worker = create_worker(app, burst=True)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"burst worker still running after {timeout}s"
    return worker


@contextmanager
def running_worker(app: App) -> Iterator[Worker | AioWorker]:
    """A worker (threads or asyncio, as ``app.settings.worker_mode`` says) running in a thread
    for the duration of the block; stopped gracefully after."""
    worker = create_worker(app)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop within 30s"


@contextmanager
def protected_redis(directory: Path, password: str) -> Iterator[str]:
    """A real redis-server with ``requirepass`` (set in a 0600 config file, so not on its own
    command line) for the block; yields its URL with the password."""
    import shutil

    import redis

    from conveyor.redis.embedded import find_server_binary

    conf = directory / "redis.conf"
    conf.touch(mode=0o600)
    port = free_port()
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsave ''\nappendonly no\ndir {directory}\n"
        f"requirepass {password}\n"
    )
    binary = shutil.which("redis-server") or find_server_binary()
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL)
    url = f"redis://default:{password}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, timeout=20)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
