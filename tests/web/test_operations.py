"""The bulk operations pages and JSON API of the dashboard (SPEC OPS-5, WEB-1), through
Starlette's TestClient against a real Redis, with operations made by the operations store."""

from __future__ import annotations

import html
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from support.web import BEARER, LOCAL, TOKEN, login

from conveyor import App, FakeClock, Settings
from conveyor.features.operations import (
    BulkOperations,
    OperationsSettings,
    OperationStore,
    entity_link,
)
from conveyor.web import WebSettings, create_app

USER_ID = "user-4242"  # must never reach a page
EMAIL = "ada@example.com"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Iterator[App]:
    application = App(settings, clock=clock)
    yield application
    application.close()


@pytest.fixture
def store(app: App, clock: FakeClock) -> OperationStore:
    return OperationStore(app.store, now=clock.time)


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL) as c:
        yield c


def fail(store: OperationStore, op_id: str, batch: str, ids: range) -> None:
    items = [
        store.failed_item(
            entity_id=i,
            entity_type="Project",
            entity_name=f"project <{i}>",
            entity_full_path=f"acme/web app {i}",
            error_message=f"<b>Permission denied</b> for {i}",
            error_code="service_error",
        )
        for i in ids
    ]
    store.record_batch(op_id, batch, 0, items)


def test_list_api_has_progress_and_no_personal_data(
    client: TestClient, store: OperationStore, clock: FakeClock
) -> None:
    first = store.create_operation("label_update", USER_ID, 200, {"email": EMAIL})
    store.record_batch(first, "b0", 40, [])
    fail(store, first, "b1", range(10))
    clock.advance(5)
    second = store.create_operation("archive", USER_ID, 4, {})
    listing = client.get("/api/operations").json()
    assert [o["id"] for o in listing] == [first, second]
    assert listing[0]["operation_type"] == "label_update"
    assert (listing[0]["processed_items"], listing[0]["failed_items"]) == (50, 10)
    assert (listing[0]["percent"], listing[0]["status"]) == (25.0, "running")
    assert listing[0]["created_at"] == 1_700_000_000.0
    assert listing[1]["percent"] == 0.0 and listing[1]["status"] == "pending"
    assert USER_ID not in str(listing) and EMAIL not in str(listing)


def test_one_operation_with_paged_failed_items_and_e_mail_links(
    client: TestClient, store: OperationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_OPERATIONS_BASE_URL", "https://gitlab.example.com/")
    op_id = store.create_operation("label_update", USER_ID, 100, {})
    fail(store, op_id, "b0", range(30))
    page1 = client.get(f"/api/operations/{op_id}?per_page=20").json()
    page2 = client.get(f"/api/operations/{op_id[:10]}?per_page=20&page=2").json()
    assert (page1["total"], len(page1["items"]), len(page2["items"])) == (30, 20, 10)
    assert page2["id"] == op_id, "a unique prefix is enough"
    first = page1["items"][0]
    assert first["entity_name"] == "project <0>" and first["error_code"] == "service_error"
    assert first["link"] == "https://gitlab.example.com/acme/web%20app%200"
    assert first["link"] == entity_link("https://gitlab.example.com", "acme/web app 0")
    assert page2["items"][-1]["entity_id"] == 29, "oldest first"
    assert USER_ID not in str(page1)
    assert client.get("/api/operations/" + "f" * 24).status_code == 404
    assert client.get("/api/operations/not%20an%20id").status_code == 404


def test_links_use_the_apps_declared_operations_settings(app: App, store: OperationStore) -> None:
    BulkOperations(app, OperationsSettings(base_url="https://code.example.org"))
    op_id = store.create_operation("label_update", USER_ID, 3, {})
    fail(store, op_id, "b0", range(1))
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        item = client.get(f"/api/operations/{op_id}").json()["items"][0]
    assert item["link"] == "https://code.example.org/acme/web%20app%200"


def test_a_finished_operation_shows_its_final_totals(
    client: TestClient, store: OperationStore
) -> None:
    op_id = store.create_operation("archive", USER_ID, 3, {})
    store.record_batch(op_id, "b0", 2, [])
    fail(store, op_id, "b1", range(1))
    assert store.finish_operation(op_id)
    assert client.get("/api/operations").json() == []
    done = client.get(f"/api/operations/{op_id}").json()
    assert (done["status"], done["finished"], done["percent"]) == ("finished", True, 100.0)
    assert (done["successful_items"], done["failed_items"], done["items"]) == (2, 1, [])
    page = client.get(f"/operations/{op_id}")
    assert page.status_code == 200 and "failed items went out in the failure e-mail" in page.text


def test_pages_show_progress_and_failed_items_without_personal_data(
    client: TestClient, store: OperationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_OPERATIONS_BASE_URL", "https://gitlab.example.com")
    op_id = store.create_operation("label_update", USER_ID, 120, {"email": EMAIL})
    store.record_batch(op_id, "b0", 30, [])
    fail(store, op_id, "b1", range(30))
    listing = client.get("/operations")
    assert listing.status_code == 200
    assert 'href="/operations"' in listing.text and 'aria-current="page"' in listing.text
    assert f'href="/operations/{op_id}"' in listing.text
    assert '<progress max="120" value="60"' in listing.text
    assert '<span data-op-field="percent">50</span>%' in listing.text
    detail = client.get(f"/operations/{op_id}")
    assert detail.status_code == 200
    assert f'data-op-detail="{op_id}"' in detail.text and "<progress" in detail.text
    assert "service_error" in detail.text
    assert html.escape("<b>Permission denied</b> for 0") in detail.text
    assert "<b>Permission denied" not in detail.text, "error messages are escaped"
    assert 'href="https://gitlab.example.com/acme/web%20app%200"' in detail.text
    assert detail.text.count('rel="noopener noreferrer"') == 25, "one page of failed items"
    assert "page 1 of 2 (30)" in detail.text
    assert "project &lt;29&gt;" in client.get(f"/operations/{op_id}?page=2").text
    for text in (listing.text, detail.text):
        assert USER_ID not in text and EMAIL not in text
    missing = client.get("/operations/" + "0" * 24)
    assert missing.status_code == 404


def test_the_operations_routes_need_a_login(app: App, store: OperationStore) -> None:
    op_id = store.create_operation("archive", USER_ID, 1, {})
    with TestClient(create_app(app, WebSettings(token=TOKEN)), base_url=LOCAL) as anonymous:
        for path in ("/api/operations", f"/api/operations/{op_id}"):
            assert anonymous.get(path).status_code == 401, path
        for path in ("/operations", f"/operations/{op_id}"):
            answer = anonymous.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
        login(anonymous)
        assert anonymous.get(f"/operations/{op_id}").status_code == 200


def test_an_undelivered_e_mail_keeps_the_operation_on_the_dashboard(
    client: TestClient, store: OperationStore
) -> None:
    op_id = store.create_operation("archive", USER_ID, 1, {})
    fail(store, op_id, "b0", range(1))
    store.mark_notify_failed(op_id, "no e-mail address was found for the operation's user")
    [listed] = client.get("/api/operations").json()
    assert (listed["id"], listed["status"]) == (op_id, "notify_failed")
    assert listed["notify_error"] == "no e-mail address was found for the operation's user"
    listing = client.get("/operations")
    assert f'href="/operations/{op_id}"' in listing.text and "notify_failed" in listing.text
    detail = client.get(f"/operations/{op_id}")
    assert "The failure e-mail was not delivered" in detail.text
    assert f"conveyor ops dismiss {op_id}" in detail.text
    assert USER_ID not in detail.text
