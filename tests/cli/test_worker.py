"""``conveyor worker -p N`` keeps the Redis password off every command line (issue #15): the
children get the URL through their environment, readable by the same user only, never through
``/proc/<pid>/cmdline``, which every local user reads (``ps``)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from support import PYTHON, ROOT, protected_redis, python_env, stop_session, wait_for

from conveyor import App, Settings
from conveyor.api import Api

pytestmark = pytest.mark.slow

PASSWORD = "pw-" + secrets.token_hex(12)


@pytest.fixture
def protected_url(tmp_path: Path) -> Iterator[str]:
    with protected_redis(tmp_path, PASSWORD) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()  # the password is really required
        yield url


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "conveyor.cli", *args],
        env=python_env(CONVEYOR_HEARTBEAT_INTERVAL="0.3", CONVEYOR_LIVENESS_TTL="2", **env),
        cwd=ROOT,
        start_new_session=True,  # its own process group: teardown ends every child
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return []


def _runs_jobs(url: str, count: int) -> None:
    app = App(Settings(redis_url=url))
    app.client.enqueue_bulk("tick", [[i] for i in range(count)])
    app.close()
    with Api.from_settings(Settings(redis_url=url)) as api:
        wait_for(lambda: api.stats().processed >= count, timeout=60)
        assert api.stats().failed == 0


@pytest.mark.parametrize("given", ["env", "option"])
def test_the_password_is_on_no_child_command_line_and_the_workers_run(
    protected_url: str, given: str
) -> None:
    args = ["worker", "-r", "apps.basic", "-p", "2", "-c", "2"]
    if given == "option":
        # As in the finding: the operator typed it; the children must not repeat it.
        proc = _start([*args, "--redis-url", protected_url], {})
    else:
        proc = _start(args, {"CONVEYOR_REDIS_URL": protected_url})
    try:
        wait_for(lambda: len(_children(proc)) == 2, timeout=30)
        children = _children(proc)
        with Api.from_settings(Settings(redis_url=protected_url)) as api:
            wait_for(lambda: len(api.processes.list()) == 2, timeout=30)
        _runs_jobs(protected_url, 40)
        for child in children:
            cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().decode()
            assert "worker" in cmdline and "--processes\x001" in cmdline
            assert PASSWORD not in cmdline, f"child {child.pid}: {cmdline!r}"
            assert PASSWORD in child.environ().get("CONVEYOR_REDIS_URL", "")
        listing = subprocess.run(
            ["ps", "-eo", "pid,args", "--width", "4000"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        shown = [line for line in listing.splitlines() if PASSWORD in line]
        if given == "env":
            assert shown == [], "ps shows no password at all"
        else:
            assert [int(line.split()[0]) for line in shown] == [proc.pid], "only what was typed"
    finally:
        stop_session(proc)
    # Nothing left behind: every child ended with the supervisor.
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
