"""``conveyor compat``: snapshot and check in CI, then remove-jobs and migrate-queue with a dry
run first, against three releases of one app (tests/apps/compat)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from conveyor import App, Settings
from conveyor.cli import main
from conveyor.features.cron import CRON_ENTRIES, Cron


@pytest.fixture
def cli(redis_url: str, r: redis.Redis) -> Iterator[CliRunner]:
    yield CliRunner(env={"CONVEYOR_REDIS_URL": redis_url, "COLUMNS": "200"})


@pytest.fixture
def lock(cli: CliRunner, tmp_path: Path) -> Path:
    """The lock of release M (tests/apps/compat/v1.py)."""
    path = tmp_path / "conveyor.lock.json"
    result = run(cli, "compat", "snapshot", "-r", "apps.compat.v1", "--lock", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {path}: 3 job class(es), 1 cron"
    return path


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, list(args), catch_exceptions=False)


def test_snapshot_is_stable_and_check_passes_on_the_same_code(
    cli: CliRunner, lock: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again.json"
    run(cli, "compat", "snapshot", "-r", "apps.compat.v1", "--lock", str(again))
    assert again.read_bytes() == lock.read_bytes()
    assert set(json.loads(lock.read_text())["jobs"]) == {"Doomed", "ExampleWorker", "Mailer"}
    result = run(cli, "compat", "check", "-r", "apps.compat.v1", "--lock", str(lock))
    assert (result.exit_code, result.output.strip()) == (0, "ok")


def test_check_fails_on_unsafe_changes_naming_the_safe_sequence(cli: CliRunner, lock: Path) -> None:
    result = cli.invoke(
        main, ["compat", "check", "-r", "apps.compat.v2_unsafe", "--lock", str(lock), "--offline"]
    )
    assert result.exit_code == 1
    out = result.output
    assert "error: ExampleWorker: [argument-removed] argument 'arg1' (position 2)" in out
    assert "release M+1 stops passing it from every producer" in out
    assert "error: Doomed: [class-removed-without-remove-jobs]" in out
    assert "declare_removed(app, 'Doomed')" in out
    assert "error: Mailer: [queue-renamed] queue 'mailers' became 'mail'" in out
    assert "conveyor compat migrate-queue -r APP" in out
    assert "error: cron doomed-nightly: [cron-entry-removed]" in out
    assert "Error: 4 unsafe job change(s) against" in out

    as_json = cli.invoke(
        main,
        [
            "compat",
            "check",
            "-r",
            "apps.compat.v2_unsafe",
            "--lock",
            str(lock),
            "--offline",
            "--json",
        ],
    )
    assert as_json.exit_code == 1
    listed = json.loads(as_json.stdout)
    assert sorted(f["rule"] for f in listed if f["level"] == "error") == [
        "argument-removed",
        "class-removed-without-remove-jobs",
        "cron-entry-removed",
        "queue-renamed",
    ]


def test_the_safe_release_passes_once_redis_is_cleaned_up(
    cli: CliRunner, lock: Path, settings: Settings, r: redis.Redis
) -> None:
    check = ["compat", "check", "-r", "apps.compat.v2_safe", "--lock", str(lock)]
    offline = run(cli, *check, "--offline")
    assert offline.exit_code == 0 and offline.output.strip() == "ok"

    # Production still holds work of release M: Doomed jobs, its cron entry, 'mailers' jobs.
    m = App(settings)
    for i in range(3):
        m.enqueue("Doomed", i)
    m.enqueue("Doomed", 9, at=m.clock.time() + 600)
    m.enqueue("Mailer", 7, {"k": "v"}, queue="mailers")
    from apps.compat import v1

    Cron(m).put(v1.app.extensions[CRON_ENTRIES]["doomed-nightly"])
    live = cli.invoke(main, check)
    assert live.exit_code == 1
    assert "4 job(s) of Doomed are still in Redis (queue:default 3, schedule 1)" in live.output

    dry = run(cli, "compat", "remove-jobs", "-r", "apps.compat.v2_safe", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove 4 job(s) of Doomed: queue:default 3, schedule 1" in dry.output
    assert "cron doomed-nightly: would be destroyed" in dry.output
    assert r.llen("queue:default") == 3 and r.hlen("conveyor:cron") == 1

    done = run(cli, "compat", "remove-jobs", "-r", "apps.compat.v2_safe")
    assert "removed 4 job(s) of Doomed: queue:default 3, schedule 1" in done.output
    assert "cron doomed-nightly: destroyed" in done.output
    assert r.llen("queue:default") == 0 and r.hlen("conveyor:cron") == 0
    assert run(cli, *check).output.strip() == "ok"

    moved = run(cli, "compat", "migrate-queue", "-r", "apps.compat.v2_safe", "--dry-run")
    assert "would move 1 job(s) from mailers to mail: queue:mailers 1" in moved.output
    moved = run(cli, "compat", "migrate-queue", "-r", "apps.compat.v2_safe", "--json")
    [report] = json.loads(moved.output)
    assert (report["total"], report["forgotten"]) == (1, True)
    assert json.loads(r.lindex("queue:mail", 0) or "")["queue"] == "mail"
    m.close()


def test_maintenance_commands_by_name_and_their_usage_errors(
    cli: CliRunner, settings: Settings, r: redis.Redis
) -> None:
    m = App(settings)
    m.enqueue("Gone", 1)
    m.enqueue("Gone", 2, queue="low")
    typo = cli.invoke(main, ["compat", "remove-jobs", "Gone", "Other"])
    assert typo.exit_code == 1 and "no job class named 'Other'" in typo.output
    assert "--allow-unknown" in typo.output and m.store.client.llen("queue:default") == 1
    out = run(cli, "compat", "remove-jobs", "Gone", "Other", "--allow-unknown", "--json")
    report = json.loads(out.output)
    assert report["removed"] == {"queue:default": 1, "queue:low": 1} and report["total"] == 2
    m.enqueue("Job", 1, queue="a")
    assert "moved 1 job(s) from a to b" in run(cli, "compat", "migrate-queue", "a", "b").output
    missing = cli.invoke(main, ["compat", "remove-jobs"])
    assert missing.exit_code == 2 and "name the job classes" in missing.output
    half = cli.invoke(main, ["compat", "migrate-queue", "a"])
    assert half.exit_code == 2 and "give both OLD and NEW" in half.output
    m.close()
