"""The manual's two URLs (seed 004), verbatim apart from the host, opened with
``curl -H 'Authorization: Bearer …'`` (a GET, as a link is opened), start runs that a node
finishes (issue #16)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis
from support import python_env, running_worker, wait_for
from support.automation import STEPS, load
from support.web import TOKEN, served

from conveyor import App, Settings
from conveyor.automation.engine import Automation
from conveyor.web import WebSettings, create_app
from conveyor.web.automation import automation_extension

#: The manual's URLs, from https://foo.com on.
MANUAL_URLS = [
    "/automation/workflows/migrate_tmpimg",
    "/automation/workflows/migrate_tmpimg/steps/prepare=false;complete=false;/vars/"
    "src_path=/tmp/source1.jpg;dest_path=/newdir/source1.jpg",
]


def curl(url: str, *headers: str) -> tuple[int, dict[str, object]]:
    args = ["curl", "-s", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}"]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=60, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


@pytest.mark.timeout(180)
def test_the_manuals_urls_work_with_curl_and_a_bearer_token(
    tmp_path: Path,
    settings: Settings,
    redis_url: str,
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The python: steps run in child processes that import tests/apps/automation.
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    document = {"functions": {"backend": {"automation": {
        "meta": {"enable": True},
        "workflows": [{
            "name": "migrate_tmpimg", "allowApiExecution": True, "vars": {"redis_url": redis_url},
            "steps": {"execute": {"playbook": f"{STEPS}:record"},
                      "complete": {"playbook": f"{STEPS}:complete"}},
            "throttling": {"enable": False}}]}}}}  # fmt: skip
    (tmp_path / "settings.json").write_text(json.dumps(document))
    auto = load(tmp_path / "settings.json")
    web_app = App(settings)
    engine = Automation(web_app, auto)
    node_app = App(settings.replace(queues=engine.queues))
    node = Automation(node_app, auto, node="manual-node", term=5)
    node.install()
    asgi = create_app(web_app, WebSettings(token=TOKEN), extensions=[automation_extension(engine)])
    try:
        with running_worker(node_app), served(asgi) as base:
            runs = []
            for path in MANUAL_URLS:
                status, body = curl(base + path, f"Authorization: Bearer {TOKEN}")
                assert status == 202, body
                runs.append(str(body["id"]))
            for run_id in runs:
                wait_for(lambda run_id=run_id: engine.run_status(run_id).finished, 60)  # type: ignore[union-attr]
            # Without the token the same link is refused.
            status, body = curl(base + MANUAL_URLS[0])
            assert status == 401, body
    finally:
        node.close()
        node_app.close()
        web_app.close()
    first, second = (engine.run_status(run_id) for run_id in runs)
    assert first is not None and second is not None
    assert (first.state, first.complete, first.prepare) == ("done", True, False)
    assert (second.state, second.complete, second.prepare) == ("done", False, False)
    assert second.request == {"src_path": "/tmp/source1.jpg", "dest_path": "/newdir/source1.jpg"}
    records = [json.loads(x) for x in r.lrange("side:records", 0, -1)]
    assert {"src_path": "/tmp/source1.jpg", "dest_path": "/newdir/source1.jpg"} in records
    assert r.llen("side:completes") == 1, "complete ran for the first URL only"
