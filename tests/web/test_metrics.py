"""``/metrics`` (conveyor.web.metrics), parsed with prometheus_client's own text parser; the
values must match what the jobs did."""

from __future__ import annotations

import redis
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from support import run_burst
from support.metrics import scenario
from support.web import BEARER, LOCAL, TOKEN, login

from conveyor import App, Settings
from conveyor.cli import main
from conveyor.clock import SYSTEM_CLOCK
from conveyor.core.health import Health
from conveyor.core.housekeeping import Heartbeat
from conveyor.features import metrics
from conveyor.features.cron import Cron, CronEntry
from conveyor.web import WebSettings, create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_match_what_the_jobs_did(settings: Settings, r: redis.Redis) -> None:
    app, _ = scenario(settings.replace(queues=(("mail", 1), ("default", 1))), r)
    run_burst(app)
    metrics.flush(app)
    app.client.enqueue("Later", [1], {"queue": "waiting"})
    app.client.enqueue("Later", [2], {"queue": "waiting"})
    Cron(app).put(CronEntry("nightly", "0 3 * * *", "Report"))
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        got = scrape(client)
    app.close()

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("conveyor_jobs_processed_total", **{"class": "slow", "queue": "mail"}) == 4
    assert value("conveyor_jobs_processed_total", **{"class": "bad", "queue": "mail"}) == 2
    assert value("conveyor_jobs_failed_total", **{"class": "bad", "queue": "mail"}) == 2
    assert value("conveyor_job_retries_total", **{"class": "slow", "queue": "mail"}) == 1
    assert value("conveyor_dedup_dropped_total", **{"class": "dup"}) == 1
    assert value("conveyor_concurrency_deferred_total", **{"class": "limited"}) == 1
    slow = {"class": "slow", "queue": "mail"}
    assert value("conveyor_job_duration_seconds_bucket", le="0.25", **slow) == 0
    assert value("conveyor_job_duration_seconds_bucket", le="0.5", **slow) == 4
    assert value("conveyor_job_duration_seconds_bucket", le="+Inf", **slow) == 4
    assert value("conveyor_job_duration_seconds_count", **slow) == 4
    assert abs(value("conveyor_job_duration_seconds_sum", **slow) - 1.2) < 1e-9
    bad = {"class": "bad", "queue": "mail"}
    assert value("conveyor_job_duration_seconds_bucket", le="1.0", **bad) == 0
    assert value("conveyor_job_duration_seconds_bucket", le="2.5", **bad) == 2
    # Read from Redis at scrape time.
    assert value("conveyor_stat_processed_total") == 7
    assert value("conveyor_stat_failed_total") == 2
    assert value("conveyor_queue_size", queue="waiting") == 2
    assert value("conveyor_queue_size", queue="mail") == 0
    assert value("conveyor_queue_latency_seconds", queue="waiting") >= 0
    assert value("conveyor_set_size", set="dead") == 2
    assert value("conveyor_dead_jobs") == 2
    assert value("conveyor_set_size", set="retry") == 0
    assert value("conveyor_processes", state="running") == 0
    assert value("conveyor_cron_entries", state="enabled") == 1


def test_metrics_need_a_login_unless_public(settings: Settings, r: redis.Redis) -> None:
    from conveyor import App

    app = App(settings)
    with TestClient(create_app(app, WebSettings(token=TOKEN)), base_url=LOCAL) as client:
        assert client.get("/metrics").status_code == 401
    public = WebSettings(token=TOKEN, public_metrics=True)
    with TestClient(create_app(app, public), base_url=LOCAL) as client:
        assert "conveyor_stat_processed_total 0.0" in client.get("/metrics").text
    off = WebSettings(token=TOKEN, metrics=False)
    with TestClient(create_app(app, off), headers=BEARER, base_url=LOCAL) as client:
        assert client.get("/metrics").status_code == 404
    app.close()


def test_loop_health_and_trimmed_sets_reach_metrics_the_page_and_the_cli(
    settings: Settings, r: redis.Redis
) -> None:
    """A process whose fetch loop keeps failing (as its heartbeat reports it) shows as
    unhealthy in /metrics, on the Processes page and in ``conveyor processes``; entries the
    dead set dropped are counted."""
    app = App(settings.replace(dead_max_jobs=1))

    @app.job(retry=0)
    def doomed(n: int) -> None:
        raise RuntimeError(f"doomed {n}")

    doomed.perform_async(1)
    doomed.perform_async(2)
    run_burst(app)  # the second dead job trims the first
    health = Health(SYSTEM_CLOCK)
    fetch = health.register("fetch")
    for _ in range(3):
        health.failed(fetch, RuntimeError("boom"))
    beat = Heartbeat(app, "host:1:sick", started_at=app.clock.time())
    beat.beat({}, quiet=False, health=health.report())
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        samples = scrape(client)
        login(client)
        page = client.get("/processes").text
    assert samples[("conveyor_unhealthy_processes", ())] == 1
    assert samples[("conveyor_loop_errors", (("loop", "fetch"),))] == 3
    assert samples[("conveyor_trimmed_total", (("set", "dead"),))] == 1
    assert samples[("conveyor_trimmed_total", (("set", "interrupted"),))] == 0
    assert 'data-field="health"' in page and "unhealthy: fetch" in page
    wide = CliRunner(env={"COLUMNS": "250"})
    listed = wide.invoke(main, ["--redis-url", settings.redis_url or "", "processes"])

    assert listed.exit_code == 0 and "fetch failing (3 errors)" in listed.output
    app.close()
