"""The ``conveyor`` command: data commands in-process with click's runner, the worker as a real
subprocess (it installs signal handlers, which must not touch the test process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from support import PYTHON, ROOT, protected_redis, python_env
from support.web import BEARER, LOCAL, TOKEN

from conveyor import App, Settings
from conveyor.api import Api
from conveyor.cli import main
from conveyor.cli.common import CliState
from conveyor.cli.worker import child_argv
from conveyor.web import WebSettings, create_app


@pytest.fixture
def cli(redis_url: str, r: redis.Redis) -> Iterator[CliRunner]:
    yield CliRunner(env={"CONVEYOR_REDIS_URL": redis_url, "COLUMNS": "200"})


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with Api.from_settings(settings) as data_api:
        yield data_api


def run(cli: CliRunner, *args: str, input: str | None = None) -> Result:
    return cli.invoke(main, list(args), input=input, catch_exceptions=False)


def _fail(r: redis.Redis, key: str, jid: str, score: float = 100.0, **extra: object) -> None:
    payload = {"class": "Hard", "args": [1], "queue": "default", "jid": jid, **extra}
    r.zadd(key, {json.dumps(payload): score})


def test_enqueue_parses_json_args_into_the_named_queue(cli: CliRunner, api: Api) -> None:
    result = run(cli, "enqueue", "HardWorker", '"bob"', "5", '{"k": [1, null]}', "-q", "critical")
    assert result.exit_code == 0, result.output
    [job] = api.queue("critical").jobs()
    assert job.job_class == "HardWorker" and job.args == ["bob", 5, {"k": [1, None]}]
    assert f"enqueued HardWorker {job.jid} on queue critical" in result.output


def test_enqueue_negative_number_and_delay(cli: CliRunner, api: Api) -> None:
    result = run(cli, "enqueue", "Later", "-5", "--in", "60")
    assert result.exit_code == 0, result.output
    [job] = api.scheduled.jobs()
    assert job.args == [-5] and job.score is not None and job.score > time.time() + 50


def test_enqueue_bad_json_names_the_value(cli: CliRunner, api: Api) -> None:
    result = cli.invoke(main, ["enqueue", "HardWorker", "5", "bob"])
    assert result.exit_code == 2
    assert "argument 2 'bob' is not valid JSON" in result.output
    assert "'\"bob\"'" in result.output  # says how to write it
    assert "Traceback" not in result.output and api.stats().enqueued == 0


def test_stats_json_and_table(cli: CliRunner, r: redis.Redis) -> None:
    r.set("stat:processed", 42)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    r.set(f"stat:failed:{today}", 3)
    _fail(r, "retry", "a" * 24)
    data = json.loads(run(cli, "stats", "--json", "--days", "2").output)
    assert data["processed"] == 42 and data["retry_size"] == 1
    assert data["history"]["failed"][today] == 3 and len(data["history"]["processed"]) == 2
    table = run(cli, "stats").output
    assert "processed" in table and "42" in table and today in table
    bad = cli.invoke(main, ["stats", "--days", "0"])
    assert bad.exit_code == 2 and "0 is out of range" in bad.output


def test_queues_list_jobs_and_clear_with_confirmation(cli: CliRunner, api: Api) -> None:
    for i in range(3):
        api.enqueue("Hard", [i], queue="mail")
    listing = json.loads(run(cli, "queues", "--json").output)
    assert listing == [{"name": "mail", "size": 3, "latency": pytest.approx(0, abs=5)}]
    assert "mail" in run(cli, "queues").output
    jobs = json.loads(run(cli, "queues", "jobs", "mail", "--json", "-n", "2").output)
    assert [j["args"] for j in jobs] == [[2], [1]]

    refused = cli.invoke(main, ["queues", "clear", "mail"], input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert api.queue("mail").size() == 3
    cleared = run(cli, "queues", "clear", "mail", "--yes")
    assert "3 job(s) deleted" in cleared.output and api.queue("mail").size() == 0
    missing = cli.invoke(main, ["queues", "clear", "nosuch", "--yes"])
    assert missing.exit_code == 1 and "no queue named 'nosuch'" in missing.output


def test_retry_set_list_retry_delete(cli: CliRunner, api: Api, r: redis.Redis) -> None:
    _fail(r, "retry", "j1", 100, error_class="KeyError", error_message="boom", retry_count=2)
    _fail(r, "retry", "j2", 200, queue="low")
    listed = json.loads(run(cli, "retry", "list", "--json").output)
    assert [j["jid"] for j in listed] == ["j1", "j2"] and listed[0]["error_message"] == "boom"
    assert "KeyError: boom" in run(cli, "retry").output  # the group alone lists

    shown = json.loads(run(cli, "retry", "show", "j1").output)
    assert shown["payload"]["retry_count"] == 2 and shown["error_backtrace"] is None

    moved = run(cli, "retry", "retry", "j1")
    assert "moved Hard j1 to queue default" in moved.output
    assert api.queue("default").jobs()[0].retry_count == 1
    assert "deleted j2" in run(cli, "retry", "delete", "j2").output
    assert api.retries.size() == 0

    missing = cli.invoke(main, ["retry", "retry", "j1"])
    assert missing.exit_code == 1
    assert "no job with jid 'j1' in the retry set" in missing.output
    assert "Traceback" not in missing.output
    neither = cli.invoke(main, ["retry", "delete"])
    assert neither.exit_code == 2 and "give either a JID or --all" in neither.output


def test_dead_retry_all_and_delete_all(cli: CliRunner, api: Api, r: redis.Redis) -> None:
    for i in range(150):
        _fail(r, "dead", f"d{i}", 100 + i)
    result = run(cli, "dead", "retry", "--all")
    assert "moved 150 job(s) from the dead set" in result.output
    assert api.queue("default").size() == 150 and api.dead.size() == 0
    for i in range(3):
        _fail(r, "dead", f"x{i}", i)
    assert "kill" not in run(cli, "dead", "--help").output
    assert cli.invoke(main, ["dead", "delete", "--all"], input="n\n").exit_code == 1
    assert api.dead.size() == 3
    assert "deleted 3 job(s)" in run(cli, "dead", "delete", "--all", "--yes").output


def test_scheduled_kill_and_interrupted_retry(cli: CliRunner, api: Api, r: redis.Redis) -> None:
    _fail(r, "schedule", "s1", time.time() + 300)
    _fail(r, "schedule", "s2", time.time() + 400)
    assert "moved s1 to the dead set" in run(cli, "scheduled", "kill", "s1").output
    assert "moved 1 job(s)" in run(cli, "scheduled", "kill", "--all").output
    assert [j.jid for j in api.dead.jobs()] == ["s2", "s1"]
    _fail(r, "interrupted", "i1", 5, queue="imports", interrupted_count=4)
    run(cli, "interrupted", "retry", "i1")
    assert api.queue("imports").jobs()[0].jid == "i1"


def test_processes_list_quiet_stop(cli: CliRunner, r: redis.Redis) -> None:
    info = {"hostname": "h", "pid": 77, "concurrency": 5, "queues": ["default"]}
    r.sadd("processes", "h:77:abc", "h:78:expired")
    r.hset("h:77:abc", mapping={"info": json.dumps(info), "busy": 2, "beat": time.time()})
    [proc] = json.loads(run(cli, "processes", "--json").output)
    assert proc["identity"] == "h:77:abc" and proc["busy"] == 2 and proc["concurrency"] == 5
    table = run(cli, "processes", "list").output
    assert "h:77:abc" in table and "2/5" in table and "h:78:expired" not in table
    assert "sent quiet to h:77:abc" in run(cli, "processes", "quiet", "h:77:abc").output
    assert "sent stop to 1 process(es)" in run(cli, "processes", "stop", "--all").output
    assert r.lrange("h:77:abc-signals", 0, -1) == ["TERM", "TSTP"]
    unknown = cli.invoke(main, ["processes", "stop", "h:1:zzz"])
    assert unknown.exit_code == 1 and "no live process with identity 'h:1:zzz'" in unknown.output


def test_busy_shows_running_jobs(cli: CliRunner, r: redis.Redis) -> None:
    r.sadd("processes", "h:1:a")
    r.hset("h:1:a", mapping={"info": "{}", "busy": 1})
    payload = json.dumps({"class": "Slow", "args": [9], "jid": "jj", "queue": "low"})
    r.hset("h:1:a:work", "t1", json.dumps({"queue": "low", "payload": payload, "run_at": 1}))
    [item] = json.loads(run(cli, "busy", "--json").output)
    assert item["identity"] == "h:1:a" and item["job"]["class"] == "Slow"
    assert "Slow" in run(cli, "busy").output


def test_prefix_option_scopes_every_command(cli: CliRunner, settings: Settings) -> None:
    run(cli, "--prefix", "tenant", "enqueue", "Hard", "1")
    with Api.from_settings(settings.replace(key_prefix="tenant")) as scoped:
        assert scoped.stats().enqueued == 1
    assert json.loads(run(cli, "stats", "--json").output)["enqueued"] == 0


def test_unreachable_redis_is_one_clear_line(redis_url: str) -> None:
    result = CliRunner().invoke(main, ["--redis-url", "redis://127.0.0.1:1/0", "stats"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Redis error:") and "--redis-url" in result.output
    assert "Traceback" not in result.output


def test_bad_redis_url_is_refused() -> None:
    result = CliRunner().invoke(main, ["--redis-url", "http://x", "stats"])
    assert result.exit_code == 1 and "'http://x' must start with redis://" in result.output


def test_redis_url_prints_the_configured_url(cli: CliRunner, redis_url: str) -> None:
    assert run(cli, "redis", "url").output.strip() == redis_url


def test_redis_url_and_errors_mask_the_password(tmp_path: Path) -> None:
    with protected_redis(tmp_path, "s3cret-pw") as url:
        shown = CliRunner().invoke(main, ["--redis-url", url, "redis", "url"])
        assert shown.exit_code == 0
        assert shown.output.strip() == url.replace("default:s3cret-pw@", "")
        assert "Conveyor stats" in CliRunner().invoke(main, ["--redis-url", url, "stats"]).output
    bad = CliRunner().invoke(main, ["--redis-url", "http://ops:s3cret-pw@x", "stats"])
    assert bad.exit_code == 1 and "'http://x' must start with" in bad.output
    assert "s3cret-pw" not in bad.output


def test_worker_reports_a_bad_app_module(cli: CliRunner) -> None:
    missing = cli.invoke(main, ["worker", "-r", "apps.does_not_exist"])
    assert missing.exit_code == 1 and "cannot import app module 'apps.does_not_exist'" in (
        missing.output
    )
    several = cli.invoke(main, ["worker", "-r", "apps.two_apps"])
    assert several.exit_code == 1 and "several App instances (first, second)" in several.output
    wrong = cli.invoke(main, ["worker", "-r", "apps.basic:tick"])
    assert wrong.exit_code == 1 and "apps.basic:tick is a" in wrong.output
    bad_queue = cli.invoke(main, ["worker", "-r", "apps.basic", "-q", "low,x"])
    assert bad_queue.exit_code == 1 and "queue weight 'x' for 'low'" in bad_queue.output


def test_console_script_runs_a_burst_worker(redis_url: str, settings: Settings) -> None:
    script = shutil.which("conveyor")
    command = [script] if script else [PYTHON, "-m", "conveyor.cli"]
    app = App(settings)
    for i in range(20):
        app.enqueue("tick", i)
    app.enqueue("nap", 0.01, queue="low")
    app.close()
    env = python_env(CONVEYOR_REDIS_URL=redis_url)
    done = subprocess.run(
        [*command, "worker", "-r", "apps.basic", "-q", "default,2", "-q", "low", "--burst"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with Api.from_settings(settings) as api:
        stats = api.stats()
    assert stats.processed == 21 and stats.enqueued == 0 and stats.failed == 0
    assert "burst: queues empty" in done.stderr


def processed_metric(settings: Settings, job_class: str) -> float | None:
    """``conveyor_jobs_processed_total`` for ``job_class`` as ``/metrics`` shows it."""
    app = App(settings)
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        text = client.get("/metrics").text
    app.close()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "conveyor_jobs_processed_total" and (
                sample.labels.get("class") == job_class
            ):
                return sample.value
    return None


def test_worker_with_metrics_publishes_job_metrics(redis_url: str, settings: Settings) -> None:
    def burst(*extra: str) -> None:
        app = App(settings)
        for i in range(5):
            app.enqueue("tick", i)
        app.close()
        done = subprocess.run(
            [PYTHON, "-m", "conveyor.cli", "worker", "-r", "apps.basic", "--burst", *extra],
            env=python_env(CONVEYOR_REDIS_URL=redis_url),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    burst()
    assert processed_metric(settings, "tick") is None, "nothing counted without --metrics"
    burst("--metrics")
    assert processed_metric(settings, "tick") == 5


def test_supervised_children_get_the_metrics_flag() -> None:
    params = dict.fromkeys(("concurrency", "timeout", "tag", "redis_url", "prefix", "log_level"))
    params |= {"require": "apps.basic", "strict": False, "burst": False, "metrics": True}
    argv = child_argv(CliState(), params, ())
    assert "--metrics" in argv and "--burst" not in argv


WITHOUT_EXTRAS = """
import sys
# As after `pip install conveyor` without the imports/automation extras.
for name in ("sqlalchemy", "boto3", "botocore", "psycopg"):
    sys.modules[name] = None
from conveyor.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--help"], 0, "automation"),
        (["automation", "check", str(ROOT / "examples/automation/settings.json")], 0, "ok:"),
        (["import", "status"], 1, "pip install 'conveyor[imports]'"),
    ],
)
def test_the_cli_works_without_the_optional_extras(
    redis_url: str, args: list[str], code: int, expected: str
) -> None:
    done = subprocess.run(
        [PYTHON, "-c", WITHOUT_EXTRAS, "--redis-url", redis_url, *args],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stderr
    assert expected in done.stdout + done.stderr
