"""Pinning worker processes to a core (conveyor/core/affinity.py): ``conveyor worker -p 2
--cpu-affinity one`` runs each child on one core of its own, workers started separately take
free cores before sharing one, and jobs run; real processes and a real Redis."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import pytest
from support import PYTHON, ROOT, python_env, stop_session, wait_for

from conveyor import App, Settings
from conveyor.api import Api

pytestmark = pytest.mark.slow

ALLOWED = sorted(os.sched_getaffinity(0))


@contextmanager
def worker(
    settings: Settings, state: Path, *args: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "conveyor.cli", "worker", "-r", "apps.basic", "-c", "2", *args],
        env=python_env(
            CONVEYOR_REDIS_URL=str(settings.redis_url),
            CONVEYOR_KEY_PREFIX=settings.key_prefix,
            CONVEYOR_STATE_DIR=str(state),
            **env,
        ),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        stop_session(proc)


def affinities(settings: Settings, pids: list[int]) -> list[list[int]]:
    """Once every worker registered and 20 jobs ran: each process's cores."""
    with Api.from_settings(settings) as api:
        wait_for(lambda: len(api.processes.list()) == len(pids), timeout=30)
        app = App(settings)
        app.client.enqueue_bulk("tick", [[i] for i in range(20)])
        app.close()
        wait_for(lambda: api.stats().processed >= 20, timeout=30)
    return sorted(sorted(psutil.Process(pid).cpu_affinity()) for pid in pids)


def test_each_process_of_a_supervisor_runs_on_a_core_of_its_own_only_when_asked(
    settings: Settings, tmp_path: Path
) -> None:
    with worker(settings, tmp_path, "-p", "2") as proc:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2, timeout=30)
        pids = [c.pid for c in psutil.Process(proc.pid).children()]
        assert affinities(settings, pids) == [ALLOWED, ALLOWED], "the OS places them"
    with worker(settings, tmp_path, "-p", "2", "--cpu-affinity", "one") as proc:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2, timeout=30)
        pinned = affinities(settings, [c.pid for c in psutil.Process(proc.pid).children()])
    assert all(len(cores) == 1 for cores in pinned), pinned
    if len(ALLOWED) > 1:
        assert pinned[0] != pinned[1], "the two processes share no core"


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
def test_workers_started_separately_take_free_cores_before_sharing_one(
    settings: Settings, tmp_path: Path
) -> None:
    # As the first processes of two separate `-p N` commands, both would pick the first core:
    # the claim of that core by one sends the other to another core.
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                worker(settings, tmp_path, "--cpu-affinity", "one", CONVEYOR_WORKER_SLOT="0")
            )
            for _ in range(2)
        ]
        pinned = affinities(settings, [p.pid for p in procs])
    assert all(len(cores) == 1 for cores in pinned) and pinned[0] != pinned[1], pinned
