"""The dashboard with two stores (two real redis-servers): the root overview and ``/api/stats``
sum both, ``/stores/<name>/`` serves every page, API read and action for one store, the
selector links them, an unknown store is a 404, and authentication covers the store paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient
from support.web import BEARER, LOCAL, TOKEN, login

from conveyor import App, Job, Settings
from conveyor.web import WebSettings, create_app


@pytest.fixture
def app(settings: Settings, store_b_url: str, rb: redis.Redis) -> Iterator[App]:
    application = App(
        settings.replace(stores={"b": store_b_url}, routing_rules=[["class=Heavy", "heavy", "b"]])
    )

    class Heavy(Job):
        def perform(self, n: int) -> None: ...

    @application.job
    def light(n: int) -> None: ...

    application.register(Heavy)
    Heavy.bulk_perform_async([[i] for i in range(3)])
    light.bulk_perform_async([[i] for i in range(2)])
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL) as c:
        yield c


def test_root_stats_sum_every_store(client: TestClient) -> None:
    stats = client.get("/api/stats").json()
    assert stats["enqueued"] == 5
    assert stats["queues"] == {"heavy": 3, "default": 2}
    parts = {p["name"]: p for p in stats["stores"]}
    assert parts["default"]["stats"]["enqueued"] == 2
    assert parts["b"]["stats"]["enqueued"] == 3
    assert parts["b"]["url"].startswith("redis://127.0.0.1:")


def test_store_paths_serve_one_store(client: TestClient, rb: redis.Redis) -> None:
    assert client.get("/stores/b/api/stats").json()["enqueued"] == 3
    assert client.get("/stores/default/api/stats").json()["enqueued"] == 2
    assert [q["name"] for q in client.get("/stores/b/api/queues").json()] == ["heavy"]
    assert [q["name"] for q in client.get("/api/queues").json()] == ["default"]
    jobs = client.get("/stores/b/api/queues/heavy/jobs").json()
    assert len(jobs["jobs"]) == 3
    # An action under a store path changes that store.
    answer = client.post("/stores/b/api/queues/heavy/clear")
    assert answer.status_code == 200, answer.text
    assert rb.llen("queue:heavy") == 0
    assert client.get("/api/stats").json()["enqueued"] == 2


def test_unknown_store_is_not_found(client: TestClient) -> None:
    assert client.get("/stores/c/api/stats").status_code == 404
    assert client.get("/stores/B/").status_code == 404


def test_overview_page_sums_and_links_each_store(app: App) -> None:
    with TestClient(create_app(app, WebSettings(token=TOKEN)), base_url=LOCAL) as browser:
        login(browser)
        page = browser.get("/").text
        assert 'href="/stores/b/"' in page and 'href="/stores/default/"' in page
        assert 'data-store="b"' in page
        assert 'href="/stores/b/queues/heavy"' in page
        store_page = browser.get("/stores/b/queues").text
        # Links on a store's pages stay in that store.
        assert 'href="/stores/b/queues/heavy"' in store_page
        assert 'data-base="/stores/b"' in store_page
        assert 'aria-current="true">b</a>' in store_page


def test_store_paths_need_authentication_like_the_root(app: App) -> None:
    with TestClient(create_app(app, WebSettings(token=TOKEN)), base_url=LOCAL) as anonymous:
        api = anonymous.get("/stores/b/api/stats")
        assert api.status_code == 401 and api.json()["error"].startswith("authentication")
        page = anonymous.get("/stores/b/queues", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert anonymous.post("/stores/b/api/queues/heavy/clear").status_code == 401
        # A session without its CSRF token cannot act on a store either.
        login(anonymous)
        refused = anonymous.post("/stores/b/api/queues/heavy/clear")
        assert refused.status_code == 403


def test_one_store_has_no_selector(settings: Settings) -> None:
    single = App(settings)
    with TestClient(
        create_app(single, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as c:
        assert "stores" not in c.get("/api/stats").json()
        assert c.get("/stores/default/api/stats").status_code == 404
        assert 'class="stores"' not in c.get("/").text
    single.close()
