"""A node's step processes die with it (issue #16): a real ``conveyor automation node`` is
SIGKILLed while a step (a ``python:`` callable and a grandchild it started) runs for 30 s; the
step's processes must be gone within 2 s. And a node starting up kills the leftovers of a
crashed node (processes whose owner is gone), not those of a live one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis
from support import PYTHON, StartProcess, python_env, wait_for
from support.automation import cli_node, observer_engine, write_settings

from conveyor.automation.children import OWNER_ENV, owner_tag, sweep_leftovers

pytestmark = [pytest.mark.slow]


def owned_by(pid: int) -> list[psutil.Process]:
    """Live (not zombie) processes whose environment names ``pid`` as their node."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            tag = process.environ().get(OWNER_ENV, "")
        except psutil.Error:
            continue
        if tag.startswith(f"{pid}:"):
            found.append(process)
    return found


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.timeout(180)
def test_sigkill_of_a_node_takes_its_step_processes_with_it(
    tmp_path: Path, redis_url: str, r: redis.Redis, processes: StartProcess
) -> None:
    marker = f"conveyor-linger-{uuid.uuid4().hex}"
    settings = write_settings(
        tmp_path,
        redis_url,
        leader={"type": "file", "path": None},
        extra_vars={"marker": marker},
    )
    document = settings.read_text().replace("steps:execute", "steps:linger")
    settings.write_text(document)
    node = cli_node(processes, settings, "doomed", "--redis-url", redis_url)
    obs = observer_engine(redis_url, settings)
    try:
        obs.start_run("batch", request_vars={"i": "0"}, prepare=False, source="cli")
        wait_for(lambda: r.llen("side:lingering") == 1, timeout=60)
        wait_for(lambda: any(marker in " ".join(p.cmdline()) for p in owned_by(node.pid)), 20)
        steps = owned_by(node.pid)
        # The python: step and its grandchild (and the reaper above them).
        assert len(steps) >= 2, [p.cmdline() for p in steps]
        node.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        node.wait(10)
        wait_for(lambda: not any(alive(p) for p in steps), timeout=10, interval=0.02)
        gone_after = time.monotonic() - killed
        print(f"step processes gone {gone_after:.3f}s after the SIGKILL")
        assert gone_after < 2.0, f"step processes outlived the node by {gone_after:.2f}s"
        assert not [p for p in psutil.process_iter(["cmdline"]) if alive(p)
                    and marker in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    finally:
        obs.app.close()
        for process in owned_by(node.pid):  # a failing run must not leave them behind
            process.kill()


def _leftover(owner: str) -> subprocess.Popen[bytes]:
    """A process that looks like a step of the node ``owner``, in a session of its own."""
    return subprocess.Popen(
        [PYTHON, "-c", "import time; time.sleep(60)"],
        env=python_env(**{OWNER_ENV: owner}),
        start_new_session=True,
    )


def test_a_starting_node_sweeps_the_leftovers_of_a_dead_one() -> None:
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead_tag = owner_tag(dead.pid)
    dead.wait(10)
    orphan = _leftover(dead_tag)  # its node is gone
    mine = _leftover(owner_tag())  # this process is alive: not a leftover
    reused = _leftover(f"{os.getpid()}:1.00")  # a reused pid: the start time differs
    try:
        wait_for(lambda: psutil.Process(orphan.pid).environ().get(OWNER_ENV), timeout=10)
        found = sweep_leftovers()
        assert orphan.pid in found and reused.pid in found
        assert mine.pid not in found
        assert orphan.wait(10) == -signal.SIGKILL
        assert reused.wait(10) == -signal.SIGKILL
        assert mine.poll() is None
    finally:
        for proc in (orphan, mine, reused):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
