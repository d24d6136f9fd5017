"""The Workflows and Imports pages in a real browser: Playwright driving Debian's chromium
against the dashboard served by uvicorn, over a real automation node (file lease, worker,
``python:`` steps) and a real project import with failed records.

Screenshots go to the test's temporary folder; with ``CONVEYOR_UPDATE_SCREENSHOTS=1`` they also
replace docs/screenshots/{workflows,workflow-run,imports,import}.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apps.imports import fixtures
from support import running_worker, wait_for
from support.automation import running_node
from support.browser import DOCS, chromium_page, require_browser
from support.web import TOKEN, served

from conveyor.automation.engine import Automation
from conveyor.features.imports import Imports
from conveyor.features.imports.project import ProjectImporter, start_project_import
from conveyor.web import WebSettings, create_app

sync_api = require_browser()


@pytest.fixture
def browser_page() -> Iterator[sync_api.Page]:
    with chromium_page(sync_api) as page:
        yield page


@pytest.fixture
def node(
    tmp_path: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Automation]:
    """An automation node whose app also runs imports (queues of both)."""
    queues = (("automation.batch", 1), ("imports", 1))
    with running_node(tmp_path, redis_url, monkeypatch, node="node-a", queues=queues) as node:
        yield node


def test_workflows_and_imports_pages_in_chromium(
    node: Automation, browser_page: sync_api.Page, tmp_path: Path
) -> None:
    page = browser_page
    expect = sync_api.expect
    app = node.app
    imports = Imports(app)
    imports.register(ProjectImporter(label_batch=4))
    good = fixtures.issues(6)[0]
    source = fixtures.build(
        tmp_path / "export.tar.gz",
        issue_count=6,
        per_issue=2,
        extra_labels=[{"id": 90, "name": "odd", "color": "red", "description": ""}],
        extra_issues=[{**good, "id": 2001, "title": ""}, {**good, "id": 2002, "state": "x"}],
    )
    db = f"sqlite:///{tmp_path / 'projects.db'}"
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with running_worker(app):
        import_id = start_project_import(imports, source, db, workdir=str(tmp_path))
        run = node.start_run("batch", request_vars={"count": "5", "fail_every": "3"}, source="cli")
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
        wait_for(lambda: not imports.get(import_id).active, timeout=60)
        wait_for(lambda: any(n.cpu_average is not None for n in node.nodes()), timeout=10)

        web = create_app(app, WebSettings(token=TOKEN, poll_interval=1.0))
        with served(web) as base:
            page.goto(base + "/workflows")
            expect(page).to_have_url(f"{base}/login?next=/workflows")
            page.fill('input[name="token"]', TOKEN)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/workflows")

            # Workflows: the master, the node, the run.
            workflow = page.locator('section[data-workflow="batch"]')
            expect(workflow.locator('[data-field="holder"]')).to_contain_text("node-a")
            expect(workflow.locator('[data-field="holder"]')).to_contain_text("term live")
            run_row = page.locator(f'tr[data-run="{run.id}"]')
            expect(run_row).to_contain_text("done")
            expect(run_row).to_contain_text("5/5")
            node_row = page.locator('tr[data-node="node-a"]')
            expect(node_row).to_contain_text("taking tasks")
            expect(node_row).to_contain_text("batch (fence")
            expect(page.locator("nav a.active")).to_have_text("Workflows")
            shot("workflows")

            run_row.locator("a").click()
            expect(page).to_have_url(f"{base}/workflows/runs/{run.id}")
            expect(page.locator("tr[data-task]")).to_have_count(5)
            expect(page.locator('tr[data-task="3"]')).to_contain_text("this task fails on purpose")
            expect(page.locator('tr[data-task="1"]')).to_contain_text("ok")
            expect(page.locator('[data-field="failed"]')).to_have_text("2")
            shot("workflow-run")

            # Imports: the list, then the import with its stages and failures.
            page.click('nav a:text-is("Imports")')
            expect(page).to_have_url(f"{base}/imports")
            row = page.locator(f'tr[data-import="{import_id}"]')
            expect(row).to_contain_text("project_export")
            expect(row).to_contain_text("finished")
            shot("imports")

            row.locator("a").first.click()
            expect(page).to_have_url(f"{base}/imports/{import_id}")
            expect(page.locator("tr[data-stage]")).to_have_count(len(ProjectImporter.stages))
            expect(page.locator("tr[data-failure]")).to_have_count(3)
            failure = page.locator('tr[data-failure="issues/2001"]')
            expect(failure).to_contain_text("'title' must be a non-empty string")
            text = page.locator("main").inner_text()
            for secret in [*fixtures.PERSONAL_DATA, str(tmp_path), "acme/billing-api"]:
                assert secret not in text, secret
            shot("import")

    assert all(p.stat().st_size > 5000 for p in shots), "screenshots were written"
    if os.environ.get("CONVEYOR_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, DOCS / path.name)
