"""``conveyor cron``, ``conveyor flags`` and ``conveyor check``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner, Result

from conveyor.cli import main


@pytest.fixture
def cli(redis_url: str, r: redis.Redis) -> Iterator[CliRunner]:
    yield CliRunner(env={"CONVEYOR_REDIS_URL": redis_url, "COLUMNS": "200"})


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, list(args), catch_exceptions=False)


def test_cron_lifecycle(cli: CliRunner, r: redis.Redis) -> None:
    listed = run(cli, "cron", "list", "-r", "apps.cli.features_app:app", "--json")
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.output)
    assert (entry["name"], entry["schedule"], entry["tz"], entry["enabled"]) == (
        "nightly",
        "0 3 * * *",
        "Asia/Seoul",
        True,
    )
    assert run(cli, "cron", "disable", "nightly").output.strip() == "nightly: disabled"
    table = run(cli, "cron", "list").output
    assert "nightly" in table and "disabled" in table
    assert run(cli, "cron", "enable", "nightly").exit_code == 0
    ran = run(cli, "cron", "run", "nightly")
    assert "enqueued nightly now as" in ran.output
    assert json.loads(r.rpop("queue:default") or "")["class"] == "refresh"
    assert run(cli, "cron", "destroy", "nightly").output.strip() == "nightly: destroyed"
    missing = cli.invoke(main, ["cron", "disable", "nightly"])
    assert missing.exit_code == 1 and "no cron entry named 'nightly'" in missing.output


def test_flags_commands(cli: CliRunner) -> None:
    assert run(cli, "flags", "enable", "new_billing", "--description", "billing v2").exit_code == 0
    assert run(cli, "flags", "percentage", "search_v2", "30").exit_code == 0
    listed = json.loads(run(cli, "flags", "list", "--json").output)
    assert [(f["name"], f["enabled"], f["percentage"]) for f in listed] == [
        ("new_billing", True, 0),
        ("search_v2", False, 30),
    ]
    assert run(cli, "flags", "disable", "new_billing").output.strip() == "new_billing: off"
    assert "off" in run(cli, "flags", "list").output
    bad = cli.invoke(main, ["flags", "percentage", "x", "130"])
    assert bad.exit_code == 2 and "130" in bad.output
    assert run(cli, "flags", "delete", "search_v2").exit_code == 0
    gone = cli.invoke(main, ["flags", "delete", "search_v2"])
    assert gone.exit_code == 1 and "no feature flag named 'search_v2'" in gone.output


def test_check_fails_on_dedup_without_idempotency(cli: CliRunner) -> None:
    bad = cli.invoke(main, ["check", "-r", "apps.cli.features_app:app"])
    assert bad.exit_code == 1
    assert "error: risky: configures deduplication but is not declared idempotent" in bad.output
    assert "1 error(s) in job declarations" in bad.output
    good = cli.invoke(main, ["check", "-r", "apps.cli.clean_app"])
    assert good.exit_code == 0 and good.output.strip() == "ok"


def test_check_strict_fails_jobs_that_do_not_declare_idempotency(cli: CliRunner) -> None:
    relaxed = cli.invoke(main, ["check", "-r", "apps.cli.clean_app"])
    assert relaxed.exit_code == 0
    strict = cli.invoke(main, ["check", "--strict", "-r", "apps.cli.clean_app"])
    assert strict.exit_code == 1, strict.output
    assert "declares neither idempotent=True nor idempotent=False" in strict.output
