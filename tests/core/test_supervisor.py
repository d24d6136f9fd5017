"""``conveyor worker --processes N``: real child processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import PYTHON, ROOT, python_env, wait_for

from conveyor import App, ConfigurationError, Settings
from conveyor.api import Api
from conveyor.core.supervisor import Backoff, Supervisor

pytestmark = pytest.mark.slow


def _children(proc: subprocess.Popen[bytes]) -> list[int]:
    try:
        return sorted(c.pid for c in psutil.Process(proc.pid).children())
    except psutil.NoSuchProcess:
        return []


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _live_pids(api: Api) -> list[int]:
    return sorted(p.pid for p in api.processes.list() if p.pid is not None)


@pytest.fixture
def supervisor(redis_url: str, r: object) -> Iterator[subprocess.Popen[bytes]]:
    env = python_env(
        CONVEYOR_REDIS_URL=redis_url,
        CONVEYOR_HEARTBEAT_INTERVAL="0.3",
        CONVEYOR_LIVENESS_TTL="2",
        CONVEYOR_RECOVERY_INTERVAL="0.5",
        CONVEYOR_POLL_INTERVAL_AVERAGE="0.2",
        CONVEYOR_SHUTDOWN_TIMEOUT="3",
    )
    proc = subprocess.Popen(
        [PYTHON, "-m", "conveyor.cli", "worker", "-r", "apps.basic", "-p", "2", "-c", "3"],
        env=env,
        cwd=ROOT,
        start_new_session=True,  # its own process group, so teardown can end every child
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    else:
        # Children left behind by a failed test (the group outlives its leader).
        for pid in _children(proc):
            os.kill(pid, signal.SIGKILL)
    assert proc.stderr is not None
    proc.stderr.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with Api.from_settings(settings) as data_api:
        yield data_api


def test_two_processes_drain_quiet_and_stop_on_sigterm(
    supervisor: subprocess.Popen[bytes], api: Api, settings: Settings
) -> None:
    wait_for(lambda: len(_children(supervisor)) == 2, timeout=10)
    children = _children(supervisor)
    wait_for(lambda: _live_pids(api) == children, timeout=15)

    app = App(settings)
    app.client.enqueue_bulk("tick", [[i] for i in range(60)])
    app.close()
    wait_for(lambda: api.stats().processed == 60, timeout=20)
    assert api.stats().enqueued == 0 and api.stats().failed == 0

    supervisor.send_signal(signal.SIGTSTP)
    wait_for(lambda: all(p.quiet for p in api.processes.list()), timeout=5)
    assert _children(supervisor) == children  # quiet is not stop

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(15) == 0
    assert api.processes.list() == []  # both unregistered on their way out
    assert not any(_running(pid) for pid in children)


def test_a_killed_child_is_restarted(supervisor: subprocess.Popen[bytes], api: Api) -> None:
    wait_for(lambda: len(_children(supervisor)) == 2, timeout=10)
    first = _children(supervisor)
    wait_for(lambda: _live_pids(api) == first, timeout=15)

    os.kill(first[0], signal.SIGKILL)
    replaced: list[int] = []

    def restarted() -> bool:
        now = _children(supervisor)  # one snapshot per check
        replaced[:] = [pid for pid in now if pid not in first]
        return len(now) == 2 and first[0] not in now and len(replaced) == 1

    wait_for(restarted, timeout=10)
    replacement = replaced[0]
    wait_for(lambda: replacement in _live_pids(api), timeout=15)
    assert first[1] in _children(supervisor)  # the healthy sibling was left alone

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(15) == 0
    assert supervisor.stderr is not None
    log = supervisor.stderr.read().decode()
    assert f"(pid {first[0]}) died (signal SIGKILL); restarting in" in log


def test_crashing_children_restart_with_backoff_and_clean_exits_are_final(tmp_path: Path) -> None:
    # Each child records its start and exits 3 on its first two runs, 0 on the third.
    script = textwrap.dedent(
        f"""
        import os, sys
        path = os.path.join({str(tmp_path)!r}, "runs-" + os.environ["SLOT_HINT"])
        with open(path, "a") as f:
            f.write("x")
        sys.exit(3 if os.path.getsize(path) < 3 else 0)
        """
    )
    env = {**os.environ, "SLOT_HINT": "all"}
    sup = Supervisor([PYTHON, "-c", script], 1, backoff=Backoff(base=0.05, cap=0.2), env=env)
    assert sup.run() == 0
    assert (tmp_path / "runs-all").read_text() == "xxx"
    assert sup.done() and sup.children[0].failures == 2


def test_supervisor_kills_children_past_the_stop_deadline(tmp_path: Path) -> None:
    # A child that ignores TERM is killed at the deadline, and the exit status says so.
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
        """
    )
    sup = Supervisor([PYTHON, "-c", script], 1, stop_timeout=0.5)

    def stop_when_ready() -> None:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sup.request(signal.SIGTERM)  # what the SIGTERM handler does

    threading.Thread(target=stop_when_ready, daemon=True).start()
    handler = signal.getsignal(signal.SIGTERM)
    assert sup.run() == 1
    assert ready.exists() and sup.killed == 1 and sup.done()
    assert signal.getsignal(signal.SIGTERM) is handler  # run() restores the handlers


def test_children_stop_when_the_supervisor_is_killed(
    supervisor: subprocess.Popen[bytes], api: Api
) -> None:
    wait_for(lambda: len(_children(supervisor)) == 2, timeout=10)
    children = _children(supervisor)
    wait_for(lambda: _live_pids(api) == children, timeout=15)
    supervisor.kill()
    supervisor.wait(5)
    # Orphans notice their parent is gone, stop gracefully and unregister.
    wait_for(lambda: not any(_running(pid) for pid in children), timeout=15)
    assert api.processes.list() == []


def test_a_password_on_a_child_command_line_is_refused() -> None:
    argv = [PYTHON, "-m", "conveyor.cli", "--redis-url", "redis://:hunter2@cache:6379/0", "worker"]
    with pytest.raises(ConfigurationError) as refused:
        Supervisor(argv, 2)
    assert "'redis://cache:6379/0' holds a password" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    assert Supervisor([*argv[:3], "worker"], 2).argv[-1] == "worker"
