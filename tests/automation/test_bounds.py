"""Bounded work for authenticated callers (issue #15): a cap and a TTL on unfinished batch runs,
a per-node limit of real-time steps (429 with Retry-After past it), 503 with Retry-After when no
node can take a real-time task; through the real web app on a real Redis, real-time tasks run
by a real node worker (a thread of this process) and real ``python:`` steps."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import redis
from support import running_worker, wait_for
from support.web import BEARER, TOKEN, served

from conveyor import App, Settings
from conveyor.automation import AutomationSettings, load_automation_settings
from conveyor.automation.engine import Automation
from conveyor.web import WebSettings, create_app
from conveyor.web.automation import automation_extension

STEPS = textwrap.dedent(
    """\
    import time

    def nap(variables):
        time.sleep(float(variables.get("seconds", "0")))
        return {"slept": variables.get("seconds", "0")}
    """
)


def write_settings(tmp_path: Path, *, meta: dict[str, Any], throttling: Any = None) -> Path:
    (tmp_path / "bound_steps.py").write_text(STEPS)
    workflow = {
        "name": "nap",
        "allowApiExecution": True,
        "steps": {"execute": {"playbook": "python:bound_steps:nap", "timeout": 30}},
        "throttling": throttling or {"enable": False},
    }
    document = {
        "functions": {
            "backend": {
                "automation": {
                    "meta": {"enable": True, **meta},
                    "workflows": [workflow],
                }
            }
        }
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(document))
    return path


@contextmanager
def web(app: App, automation: Automation) -> Iterator[httpx.Client]:
    asgi = create_app(app, WebSettings(token=TOKEN), extensions=[automation_extension(automation)])
    with served(asgi) as base, httpx.Client(base_url=base, headers=BEARER, timeout=60) as c:
        yield c


@contextmanager
def node(settings: Settings, auto: AutomationSettings, **kwargs: Any) -> Iterator[Automation]:
    """A node whose worker (a thread here) takes the workflow's real-time queue."""
    node_app = App(settings.replace(queues=(("automation-rt.nap", 1),), concurrency=4))
    engine = Automation(node_app, auto, node="n1", grace=1, **kwargs)
    engine.install()
    try:
        with running_worker(node_app):
            wait_for(engine.nodes, timeout=10)
            yield engine
    finally:
        engine.close()
        node_app.close()


def test_unfinished_runs_are_capped_per_workflow(tmp_path: Path, app: App) -> None:
    auto = load_automation_settings(write_settings(tmp_path, meta={"runs": {"maxUnfinished": 2}}))
    engine = Automation(app, auto)
    with web(app, engine) as client:
        for _ in range(2):
            assert client.post("/automation/workflows/nap").status_code == 202
        refused = client.post("/automation/workflows/nap")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "maxUnfinished" in refused.json()["error"]
    assert len(engine.store.active("nap")) == 2, "the refused run was not created"


def test_unfinished_runs_expire_after_the_ttl(tmp_path: Path, app: App, r: redis.Redis) -> None:
    auto = load_automation_settings(
        write_settings(tmp_path, meta={"runs": {"maxUnfinished": 1, "ttl": 1}})
    )
    engine = Automation(app, auto)  # no node runs the workflow: the run can never finish
    run = engine.start_run("nap", prepare=False, source="cli")
    time.sleep(1.2)
    engine.master.tick()  # any node's master loop expires old runs, master or not
    expired = engine.run_status(run.id)
    assert expired is not None and expired.state == "expired" and expired.finished
    assert expired.error is not None and "meta.runs.ttl" in expired.error
    assert engine.store.active("nap") == []
    assert engine.store.metrics("nap")["runs_finished|expired"] == 1
    assert r.ttl(app.store.keys.automation_run(run.id)) > 0, "kept for a while, then dropped"
    # The cap counts unfinished runs only: a new run is accepted again.
    assert engine.start_run("nap", prepare=False, source="cli").state == "preparing"
    # A task of the expired run that a node fetches late is not run.
    outcome = engine.store.task_start(run.id, "nap", 0, 0, "n1")
    assert outcome == "finished"


def test_real_time_steps_are_limited_per_node(tmp_path: Path, app: App, settings: Settings) -> None:
    auto = load_automation_settings(
        write_settings(tmp_path, meta={"realtime": {"perNode": 1}, "cpuAverage": {"interval": 0.2}})
    )
    engine = Automation(app, auto)
    with node(settings, auto) as n1, web(app, engine) as client:
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                client.post("/automation/workflows/nap/vars/seconds=4", params={"mode": "realtime"})
            )
        )
        slow.start()
        wait_for(lambda: n1.monitor.realtime_running == 1, timeout=20)
        refused = client.post("/automation/workflows/nap", params={"mode": "realtime"})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "real-time slot" in refused.json()["error"]
        slow.join(60)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["facts"] == {"slept": "4"}
        # The slot is free again.
        again = client.post("/automation/workflows/nap", params={"mode": "realtime"})
        assert again.status_code == 200, again.text
    assert engine.store.metrics("nap")["tasks_succeeded|realtime"] == 2


def test_real_time_is_503_without_a_node_or_when_every_node_is_throttled(
    tmp_path: Path, app: App, settings: Settings
) -> None:
    auto = load_automation_settings(
        write_settings(
            tmp_path,
            meta={"cpuAverage": {"interval": 0.2, "window": 0.2, "minDwell": 0}},
            throttling={"enable": True, "cpu": {"deactive": 50, "reactive": 30}},
        )
    )
    engine = Automation(app, auto)
    with web(app, engine) as client:
        nobody = client.post("/automation/workflows/nap", params={"mode": "realtime"})
        assert nobody.status_code == 503, nobody.text
        assert "no automation node runs" in nobody.json()["error"]
        assert int(nobody.headers["retry-after"]) >= 1
        with node(settings, auto, cpu_source=lambda: 100.0) as busy:
            wait_for(lambda: all(n.throttled for n in engine.nodes()), timeout=20)
            throttled = client.post("/automation/workflows/nap", params={"mode": "realtime"})
            assert throttled.status_code == 503, throttled.text
            assert "throttled" in throttled.json()["error"]
            assert int(throttled.headers["retry-after"]) >= 5
            assert busy.monitor.realtime_running == 0
    assert app.store.client.llen("queue:automation-rt.nap") == 0, "nothing was handed over"
