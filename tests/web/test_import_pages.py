"""The dashboard's Imports pages (conveyor.web.import_pages) over real imports: the project importer
runs a fixture export with bad records through a real worker on a real Redis; the pages are
rendered through Starlette's TestClient."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.imports import fixtures
from starlette.testclient import TestClient
from support import running_worker, wait_for
from support.web import BEARER, LOCAL, TOKEN

from conveyor import App, Settings
from conveyor.features.imports import Imports
from conveyor.features.imports.project import ProjectImporter, start_project_import
from conveyor.web import WebSettings, create_app


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    application = App(settings.replace(queues="imports"))
    yield application
    application.close()


def run_import(app: App, tmp_path: Path) -> tuple[Imports, str]:
    imports = Imports(app)
    imports.register(ProjectImporter(label_batch=4))
    good = fixtures.issues(3)[0]
    source = fixtures.build(
        tmp_path / "export.tar.gz",
        issue_count=3,
        per_issue=1,
        extra_labels=[{"id": 90, "name": "odd", "color": "red", "description": ""}],
        extra_issues=[{**good, "id": 2001, "title": ""}],
    )
    db = f"sqlite:///{tmp_path / 'projects.db'}"
    import_id = start_project_import(imports, source, db, workdir=str(tmp_path))
    with running_worker(app):
        wait_for(lambda: not imports.get(import_id).active, timeout=60)
    return imports, import_id


def test_imports_list_and_detail_show_progress_and_failures(app: App, tmp_path: Path) -> None:
    imports, import_id = run_import(app, tmp_path)
    state = imports.get(import_id)
    assert state.status == "finished"
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        listing = client.get("/imports")
        assert listing.status_code == 200
        page = listing.text
        assert 'href="/imports"' in page, "the nav has the Imports entry"
        assert f'data-import="{import_id}"' in page
        assert f'href="/imports/{import_id}"' in page
        assert "project" in page and "finished" in page
        assert f"{state.done}/{state.total}" in page

        detail = client.get(f"/imports/{import_id}")
        assert detail.status_code == 200
        body = detail.text
        for stage in state.stages:
            assert f'data-stage="{stage.name}"' in body
        failures = imports.failures(import_id)
        assert {(f.stage, f.record_id) for f in failures} == {("labels", "90"), ("issues", "2001")}
        for f in failures:
            assert f'data-failure="{f.stage}/{f.record_id}"' in body
            assert html.escape(f.message, quote=True).replace("&#x27;", "&#39;") in body
            assert f.error_class in body
        assert "&#39;color&#39; must look like #1f75cb" in body, "messages are escaped"
        assert "Failed records <small>2</small>" in body
        # Never the record contents, the people in them or the import's options.
        for secret in [*fixtures.PERSONAL_DATA, str(tmp_path), "sqlite:///", "acme/billing-api"]:
            assert secret not in body and secret not in page, secret


def test_import_errors_are_escaped_and_unknown_ids_are_404(app: App) -> None:
    imports = Imports(app)
    imports.register(ProjectImporter())
    import_id = imports.start(
        ProjectImporter.name, {"source": "/nowhere.tar.gz", "db": "sqlite://"}
    )
    assert imports.fail(import_id, "<script>alert('x')</script> stopped")
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        body = client.get(f"/imports/{import_id}").text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; stopped" in body
        assert "<script>alert" not in body
        assert "failed" in body and "No record failed." in body
        assert "/nowhere.tar.gz" not in body
        missing = client.get("/imports/0123abcd")
        assert missing.status_code == 404 and "no import" in missing.text
        assert client.get("/imports/%3Cb%3E").status_code == 404


def test_imports_page_needs_login(app: App) -> None:
    with TestClient(create_app(app, WebSettings(token=TOKEN)), base_url=LOCAL) as client:
        answer = client.get("/imports", follow_redirects=False)
        assert answer.status_code in (302, 303, 307)
        assert "/login" in answer.headers["location"]
        empty = client.get("/imports", headers=BEARER)
        assert empty.status_code == 200 and "No import yet" in empty.text
