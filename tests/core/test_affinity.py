"""Pinning worker processes to a core (conveyor/core/affinity.py): ``conveyor worker -p 2
--cpu-affinity one`` runs each child on one core of its own, and jobs run; real processes and
a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import pytest
from support import PYTHON, ROOT, python_env, wait_for

from conveyor import App, Settings
from conveyor.api import Api

pytestmark = pytest.mark.slow


def _children_affinity(settings: Settings, extra: list[str]) -> list[list[int]]:
    url = str(settings.redis_url)
    proc = subprocess.Popen(
        [PYTHON, "-m", "conveyor.cli", "worker", "-r", "apps.basic", "-p", "2", "-c", "2", *extra],
        env=python_env(CONVEYOR_REDIS_URL=url, CONVEYOR_KEY_PREFIX=settings.key_prefix),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Api.from_settings(settings) as api:
            wait_for(lambda: len(api.processes.list()) == 2, timeout=30)  # both started
        children = psutil.Process(proc.pid).children()
        app = App(settings)
        app.client.enqueue_bulk("tick", [[i] for i in range(20)])
        app.close()
        with Api.from_settings(settings) as api:
            wait_for(lambda: api.stats().processed >= 20, timeout=30)
        return sorted(sorted(child.cpu_affinity()) for child in children)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_each_process_runs_on_a_core_of_its_own_only_when_asked(settings: Settings) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert _children_affinity(settings, []) == [allowed, allowed], "the OS places them"
    pinned = _children_affinity(settings, ["--cpu-affinity", "one"])
    assert all(len(cores) == 1 for cores in pinned), pinned
    if len(allowed) > 1:
        assert pinned[0] != pinned[1], "the two processes share no core"
