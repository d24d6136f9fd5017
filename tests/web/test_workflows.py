"""The dashboard's Workflows pages (conveyor.web.workflows) over a real engine: one node with a
real file lease and a real worker runs a workflow of ``python:`` steps
(tests/apps/automation/steps.py) on a real Redis; the pages are rendered through Starlette's
TestClient."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient
from support import running_worker, wait_for
from support.automation import running_node, write_web_settings
from support.web import BEARER, LOCAL, TOKEN

from conveyor import App, Settings
from conveyor.automation.engine import Automation
from conveyor.web import WebSettings, create_app
from conveyor.web.automation import SETTINGS_ENV


@pytest.fixture
def node(
    tmp_path: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Automation]:
    with running_node(tmp_path, redis_url, monkeypatch, node="solo") as automation:
        yield automation


def cell(body: str, field: str) -> str:
    found = re.search(rf'data-field="{field}">(.*?)</td>', body, re.S)
    assert found, f"no {field} cell"
    return found.group(1)


def test_workflows_page_shows_master_nodes_runs_and_a_run_with_its_tasks(node: Automation) -> None:
    with running_worker(node.app):
        run = node.start_run("batch", request_vars={"count": "4", "fail_every": "2"}, source="cli")
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
        wait_for(
            lambda: any(n.id == "solo" and n.cpu_average is not None for n in node.nodes()),
            timeout=10,
        )
        done = node.run_status(run.id)
        assert done is not None and (done.succeeded, done.failed) == (2, 2)
        with TestClient(
            create_app(node.app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
        ) as client:
            answer = client.get("/workflows")
            assert answer.status_code == 200
            page = answer.text
            assert 'href="/workflows"' in page, "the nav has the Workflows entry"
            assert 'data-workflow="batch"' in page
            # The master, as the file lease holds it.
            assert "solo" in cell(page, "holder") and "term live" in cell(page, "holder")
            assert cell(page, "fence") == str(done.fence)
            assert "<time" in cell(page, "expires") and "in " in cell(page, "expires")
            # The node.
            row = re.search(r'<tr data-node="solo">(.*?)</tr>', page, re.S)
            assert row, "the node row"
            assert "taking tasks" in row.group(1) and "batch (fence" in row.group(1)
            assert re.search(r'class="num">\d+\.\d%</td>', row.group(1)), "CPU average"
            assert 'class="num">4</td>' in row.group(1), "tasks run"
            # The run row: state, progress, ok, failed, sizes.
            run_row = re.search(rf'<tr data-run="{run.id}">(.*?)</tr>', page, re.S)
            assert run_row, "the run row"
            text = run_row.group(1)
            assert ">done<" in text and "4/4" in text
            sizes = [str(done.src_size_total), str(done.dest_size_total)]
            assert sizes == ["20", "18"], "sizes of the two tasks that succeeded"
            assert re.findall(r'class="num">(\d+)</td>', text) == ["2", "2", *sizes]

            detail = client.get(f"/workflows/runs/{run.id}")
            assert detail.status_code == 200
            body = detail.text
            for index in range(4):
                task = re.search(rf'<tr data-task="{index}">(.*?)</tr>', body, re.S)
                assert task, f"task {index}"
                assert "solo" in task.group(1)
                if index % 2 == 0:
                    assert "failed" in task.group(1)
                    assert f"task {index} fails on purpose" in task.group(1)
                else:
                    assert ">ok<" in task.group(1)
                assert re.search(r'class="num">\d+\.\d\ds</td>', task.group(1)), "duration"
            assert cell(body, "succeeded") == "2" and cell(body, "failed") == "2"
            # Task variables (the paths prepare listed) are not shown.
            assert "/tmp/a=b/" not in body and "/tmp/a=b/" not in page

            assert client.get("/workflows/runs/0123456789ab").status_code == 404
            assert client.get("/workflows/runs/not-hex").status_code == 404


def test_workflows_nav_follows_the_automation_settings(
    settings: Settings, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    plain = App(settings)
    try:
        with TestClient(
            create_app(plain, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
        ) as client:
            page = client.get("/").text
            assert 'href="/workflows"' not in page
            assert client.get("/workflows").status_code == 404
        monkeypatch.setenv(SETTINGS_ENV, str(write_web_settings(tmp_path, redis_url)))
        with TestClient(
            create_app(plain, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
        ) as client:
            answer = client.get("/workflows")
            assert answer.status_code == 200
            assert 'href="/workflows"' in answer.text
            assert 'data-workflow="batch"' in answer.text
            assert "none yet" in cell(answer.text, "holder"), "no master ever held the lease"
            assert "No node has sent a heartbeat recently" in answer.text
            assert "No run yet" in answer.text
    finally:
        plain.close()
