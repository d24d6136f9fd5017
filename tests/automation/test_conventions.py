"""The manual's conventions (issue #16): the settings file's default path, read by the node,
the CLI and the web app alike; ``meta.workDir`` for prepare files; what ``automation check``
says about each workflow's lease."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from support import python_env, running_worker, wait_for
from support.automation import load, write_settings
from support.web import TOKEN

from conveyor import App, Settings
from conveyor.automation import settings as settings_module
from conveyor.automation.batch import resolve_work_dir
from conveyor.automation.engine import Automation
from conveyor.automation.lease_check import explain_leases, mount_of
from conveyor.automation.settings import SETTINGS_ENV, settings_path
from conveyor.cli import main
from conveyor.web import WebSettings, create_app
from conveyor.web import automation as web_automation


def test_the_settings_file_is_the_option_else_the_environment_else_the_manuals() -> None:
    assert settings_path(None, {}) == ("/usr/local/m2/setting.json", "the default")
    assert settings_path(None, {SETTINGS_ENV: "/etc/a.json"}) == ("/etc/a.json", SETTINGS_ENV)
    assert settings_path("b.json", {SETTINGS_ENV: "/etc/a.json"}) == ("b.json", "--settings")


def test_node_cli_and_web_read_the_default_file(
    tmp_path: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    missing = tmp_path / "m2" / "setting.json"
    monkeypatch.setattr(settings_module, "DEFAULT_SETTINGS_FILE", str(missing))
    runner = CliRunner()
    # Not there: every command says which file it looked for and how to name another.
    for args in (["automation", "node"], ["automation", "run", "batch"], ["automation", "check"]):
        result = runner.invoke(main, ["--redis-url", redis_url, *args])
        assert result.exit_code != 0, args
        assert str(missing) in result.output, (args, result.output)
    app = App(Settings(redis_url=redis_url))
    assert web_automation.discover(app) is None
    # There: the CLI and the web app use it without being told.
    missing.parent.mkdir()
    missing.write_text(write_settings(tmp_path, redis_url).read_text())
    checked = runner.invoke(main, ["automation", "check"])
    assert checked.exit_code == 0, checked.output
    started = runner.invoke(
        main, ["--redis-url", redis_url, "automation", "run", "batch", "--json"]
    )
    assert started.exit_code == 0, started.output
    assert json.loads(started.output)["workflow"] == "batch"
    assert web_automation.discover(app) is not None
    web = create_app(app, WebSettings(token=TOKEN))
    assert any(getattr(route, "path", "").startswith("/automation/") for route in web.routes)
    app.close()


def test_prepare_files_go_to_the_work_dir(
    tmp_path: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    settings_file = write_settings(tmp_path, redis_url)
    document = json.loads(settings_file.read_text())
    work = tmp_path / "work"
    document["functions"]["backend"]["automation"]["meta"]["workDir"] = str(work)
    settings_file.write_text(json.dumps(document))
    app = App(Settings(redis_url=redis_url, queues=(("automation.batch", 1),)))
    node = Automation(app, load(settings_file), node="wd", term=2.0)
    node.install()
    with running_worker(app):
        run = node.start_run("batch", request_vars={"count": "1"}, source="cli")
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=60)
    node.close()
    app.close()
    (used,) = r.lrange("side:prepare_paths", 0, -1)
    assert Path(used).parent == work and used.endswith(".txt")
    assert Path(used).name.startswith("batch-")
    assert not Path(used).exists(), "the prepare file is removed after the run's list is read"
    assert oct(work.stat().st_mode & 0o777) == "0o700"


def test_without_work_dir_the_manuals_workflow_dir_else_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.automation import batch

    manual = tmp_path / "workflow"
    monkeypatch.setattr(batch, "MANUAL_WORK_DIR", str(manual))
    state = tmp_path / "state"
    assert resolve_work_dir(None, str(state)) == str(state / "workflow")  # /workflow missing
    manual.mkdir()
    assert resolve_work_dir(None, str(state)) == str(manual)
    if os.geteuid() != 0:  # root may write anywhere
        manual.chmod(0o500)
        assert resolve_work_dir(None, str(state)) == str(state / "workflow")


def test_check_explains_each_lease_and_warns_on_a_local_file_lease(tmp_path: Path) -> None:
    shared, local = tmp_path / "shared", tmp_path / "local"
    shared.mkdir()
    local.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(f"rootfs / ext4 rw 0 0\nnas:/export {shared} nfs4 rw 0 0\n")

    def wf(name: str, leader: dict[str, object] | None) -> dict[str, object]:
        prepare = {"playbook": "python:m:f"}
        if leader is not None:
            prepare["leaderElection"] = leader
        return {"name": name, "steps": {"prepare": prepare, "execute": {"playbook": "python:m:f"}}}

    document = {"functions": {"backend": {"automation": {"workflows": [
        wf("manual", {"type": "file", "path": None}),
        wf("default", None),
        wf("on_nfs", {"type": "file", "path": f"{shared}/"}),
        wf("on_disk", {"type": "file", "path": f"{local}/"}),
        wf("unmounted", {"type": "file", "path": f"{tmp_path}/nowhere/"}),
        wf("keyed", {"type": "redis", "path": "team-a"}),
    ]}}}}  # fmt: skip
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(document))
    lines, warnings = explain_leases(load(settings_file), mounts_file=str(mounts))
    assert lines == [
        "lease: manual: redis lease conveyor:lease:manual in the Redis every node shares "
        "(leaderElection.path is null)",
        "lease: default: redis lease conveyor:lease:default in the Redis every node shares "
        "(leaderElection.path is null)",
        f"lease: on_nfs: file lease {shared}/on_nfs.txt",
        f"lease: on_disk: file lease {local}/on_disk.txt",
        f"lease: unmounted: file lease {tmp_path}/nowhere/unmounted.txt",
        "lease: keyed: redis lease conveyor:lease:team-a in the Redis every node shares",
    ]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"on_disk: file lease {local}/on_disk.txt is on a local file")
    assert "(ext4 mounted at /)" in warnings[0] and "path to null" in warnings[0]
    assert warnings[1].startswith(f"unmounted: lease directory {tmp_path}/nowhere does not exist")
    assert mount_of(str(shared / "x"), str(mounts)) is not None
    # The command prints them: warnings on stderr, the lease lines after the verdict.
    result = CliRunner().invoke(main, ["automation", "check", str(settings_file)])
    assert result.exit_code == 0, result.output
    assert "lease: manual: redis lease conveyor:lease:manual" in result.output
    assert "warning: unmounted: lease directory" in result.output
