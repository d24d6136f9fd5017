"""Per-workflow automation metrics on the web app's /metrics (issue #16): a batch run with
failing tasks and a real-time task on a real node worker, the exposition parsed with
prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from support import running_worker, wait_for
from support.automation import load, write_settings
from support.web import BEARER, TOKEN, served

from conveyor import App, Settings
from conveyor.automation.engine import Automation
from conveyor.web import WebSettings, create_app
from conveyor.web.automation import automation_extension

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.mark.timeout(180)
def test_metrics_show_per_workflow_counters_after_a_run_with_failures(
    tmp_path: Path, settings: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support import python_env

    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    auto = load(write_settings(tmp_path, settings.redis_url or "", leader={"type": "redis"}))
    web_app = App(settings)
    engine = Automation(web_app, auto)
    node_app = App(settings.replace(queues=engine.queues, concurrency=3))
    node = Automation(node_app, auto, node="metrics-node", term=5)
    node.install()
    asgi = create_app(web_app, WebSettings(token=TOKEN), extensions=[automation_extension(engine)])
    try:
        with (
            running_worker(node_app),
            served(asgi) as base,
            httpx.Client(base_url=base, headers=BEARER, timeout=60) as client,
        ):
            wait_for(engine.nodes, timeout=10)
            run = engine.start_run(
                "batch", request_vars={"count": "5", "fail_every": "2"}, source="cli"
            )
            wait_for(lambda: (s := engine.run_status(run.id)) is not None and s.finished, 90)
            realtime = engine.run_task("batch", request_vars={"i": "rt"})
            assert realtime.ok
            answer = client.get("/metrics")
            assert answer.status_code == 200, answer.text
    finally:
        node.close()
        node_app.close()
        web_app.close()
    found = samples(answer.text)
    tasks = "conveyor_automation_tasks"
    assert value(found, f"{tasks}_started_total", workflow="batch", mode="batch") == 5
    assert value(found, f"{tasks}_succeeded_total", workflow="batch", mode="batch") == 2
    assert value(found, f"{tasks}_failed_total", workflow="batch", mode="batch") == 3
    assert value(found, f"{tasks}_timed_out_total", workflow="batch", mode="batch") == 0
    assert value(found, f"{tasks}_started_total", workflow="batch", mode="realtime") == 1
    assert value(found, f"{tasks}_succeeded_total", workflow="batch", mode="realtime") == 1
    step = "conveyor_automation_step_duration_seconds"
    assert value(found, f"{step}_count", workflow="batch", step="execute") == 6
    assert value(found, f"{step}_count", workflow="batch", step="prepare") == 1
    assert value(found, f"{step}_count", workflow="batch", step="complete") == 1
    assert value(found, f"{step}_bucket", workflow="batch", step="execute", le="+Inf") == 6
    assert value(found, f"{step}_sum", workflow="batch", step="execute") > 0
    runs = "conveyor_automation_runs"
    assert value(found, f"{runs}_finished_total", workflow="batch", state="done") == 1
    assert value(found, f"{runs}_finished_total", workflow="batch", state="failed") == 0
    assert value(found, runs, workflow="batch", state="executing") == 0
    assert value(found, "conveyor_automation_master_changes_total", workflow="batch") >= 1
    assert value(found, "conveyor_automation_rejected_writes_total", workflow="batch") == 0
    assert value(found, "conveyor_automation_nodes", workflow="batch") == 1
    assert value(found, "conveyor_automation_throttled_nodes", workflow="batch") == 0
    assert value(found, "conveyor_automation_workflow_faults", workflow="batch") == 0
