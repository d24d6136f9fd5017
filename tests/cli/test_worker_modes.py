"""``conveyor worker --mode asyncio`` and ``-p auto`` (conveyor/cli/worker.py), as real
processes (the password handling of ``-p N`` is in test_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import redis
from click.testing import CliRunner
from support import PYTHON, ROOT, python_env, wait_for

from conveyor import App, Settings
from conveyor.cli import main
from conveyor.cli.worker import process_count

WORKER = [PYTHON, "-m", "conveyor.cli", "worker", "-r", "apps.aio_basic"]


def cores() -> int:
    return len(os.sched_getaffinity(0))


def test_process_count_takes_a_number_or_auto_and_names_a_bad_value() -> None:
    assert process_count("auto") == cores() and process_count("AUTO") == cores()
    assert process_count("3") == 3 and process_count(None) is None
    result = CliRunner().invoke(main, ["worker", "-r", "apps.aio_basic", "-p", "lots"])
    assert result.exit_code == 2
    assert "'lots' is not a process count; write a number >= 1 or 'auto'" in result.output
    zero = CliRunner().invoke(main, ["worker", "-r", "apps.aio_basic", "-p", "0"])
    assert zero.exit_code == 2 and "'0' is not a process count" in zero.output


def test_mode_asyncio_runs_async_jobs_on_the_main_thread_of_the_worker(
    redis_url: str, settings: Settings, r: redis.Redis
) -> None:
    app = App(settings)
    for i in range(30):
        app.enqueue("note", i)
    app.close()
    done = subprocess.run(
        [*WORKER, "--mode", "asyncio", "--burst", "-c", "5"],
        env=python_env(CONVEYOR_REDIS_URL=redis_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    notes = [n.split(":") for n in r.lrange("notes", 0, -1)]
    assert sorted(int(n) for n, _, _ in notes) == list(range(30))
    assert {thread for _, _, thread in notes} == {"MainThread"}  # no hop to a worker thread
    assert r.get("stat:processed") == "30"
    assert "started (asyncio): 5 slots" in done.stderr


@pytest.mark.timeout(60)
def test_p_auto_starts_one_asyncio_process_per_core(redis_url: str, r: redis.Redis) -> None:
    proc = subprocess.Popen(
        [*WORKER, "-p", "auto", "--mode", "asyncio"],
        env=python_env(CONVEYOR_REDIS_URL=redis_url, CONVEYOR_SHUTDOWN_TIMEOUT="3"),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: r.scard("processes") == cores(), timeout=30)
        infos = [json.loads(r.hget(p, "info") or "{}") for p in r.smembers("processes")]
        assert {info["mode"] for info in infos} == {"asyncio"}
        assert len({info["pid"] for info in infos}) == cores()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert r.scard("processes") == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
