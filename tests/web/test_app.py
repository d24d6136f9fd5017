"""The JSON API, the actions and the pages of the dashboard (conveyor.web), through Starlette's
TestClient against a real Redis; plus a Sidekiq 6 deployment seen through the dashboard."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from support import run_burst
from support.web import BEARER, LOCAL, TOKEN, csrf_of, login

from conveyor import App, Settings
from conveyor.features.cron import Cron, CronEntry
from conveyor.features.flags import Flags
from conveyor.web import (
    WEB_EXTENSIONS,
    NavItem,
    WebExtension,
    WebSettings,
    context_of,
    create_app,
)


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    application = App(settings.replace(queues=(("mail", 1), ("default", 1))))
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL) as c:
        yield c


def failing(app: App) -> type:
    @app.job(queue="mail", retry=0)
    def explode(n: int) -> None:
        raise ValueError(f"<script>alert({n})</script>")

    return explode


def test_stats_history_and_queues(app: App, client: TestClient) -> None:
    @app.job(queue="mail")
    def send(n: int) -> None: ...

    for i in range(3):
        send.perform_async(i)
    failing(app).perform_async(1)
    stats = client.get("/api/stats").json()
    assert stats["enqueued"] == 4 and stats["queues"] == {"mail": 4}
    run_burst(app)
    stats = client.get("/api/stats").json()
    assert (stats["processed"], stats["failed"], stats["dead_size"]) == (4, 1, 1)
    history = client.get("/api/history?days=3").json()
    assert len(history["days"]) == 3 and history["processed"][-1] == 4
    assert history["failed"][-1] == 1
    assert client.get("/api/history?days=0").status_code == 400
    assert client.get("/api/queues").json() == [{"name": "mail", "size": 0, "latency": 0.0}]


def test_queue_paging_and_delete(app: App, client: TestClient, r: redis.Redis) -> None:
    @app.job(queue="bulk")
    def item(n: int) -> None: ...

    item.bulk_perform_async([[i] for i in range(30)])
    page1 = client.get("/api/queues/bulk/jobs?per_page=20").json()
    page2 = client.get("/api/queues/bulk/jobs?per_page=20&page=2").json()
    assert (page1["total"], len(page1["jobs"]), len(page2["jobs"])) == (30, 20, 10)
    assert page1["jobs"][0]["args"] == [29], "newest first"
    jid = page2["jobs"][-1]["jid"]
    assert client.post(f"/api/queues/bulk/jobs/{jid}/delete").json()["ok"]
    assert client.post(f"/api/queues/bulk/jobs/{jid}/delete").status_code == 404
    assert client.get("/api/queues").json()[0]["size"] == 29
    cleared = client.post("/api/queues/bulk/clear").json()
    assert cleared["deleted"] == 29 and r.llen("queue:bulk") == 0


def test_dead_job_retry_delete_and_bulk(app: App, client: TestClient, r: redis.Redis) -> None:
    explode = failing(app)
    for i in range(4):
        explode.perform_async(i)
    run_burst(app)
    dead = client.get("/api/dead").json()
    assert dead["total"] == 4 and not dead["killable"]
    first, second, third, fourth = (j["jid"] for j in dead["jobs"])
    detail = client.get(f"/api/dead/{first}").json()
    assert detail["error_class"] == "ValueError" and "<script>" in detail["error_message"]
    moved = client.post(f"/api/dead/{first}/retry").json()
    assert moved["queue"] == "mail" and r.llen("queue:mail") == 1
    assert client.post(f"/api/dead/{first}/retry").status_code == 404
    bulk = client.post("/api/dead/bulk", json={"action": "delete", "jids": [second, "nope"]})
    assert bulk.json()["done"] == 1
    assert (
        client.post("/api/dead/bulk", json={"action": "kill", "jids": [third]}).status_code == 400
    )
    assert client.post("/api/dead/bulk", json={"action": "retry", "jids": []}).status_code == 400
    assert client.post(f"/api/dead/{third}/kill").status_code == 404, "no kill for dead jobs"
    assert client.post("/api/dead/retry_all").json()["done"] == 2
    assert r.llen("queue:mail") == 3 and r.zcard("dead") == 0
    assert fourth


def test_retry_and_scheduled_sets_kill_and_retry_all(
    app: App, client: TestClient, r: redis.Redis
) -> None:
    @app.job(queue="mail", retry=3)
    def flaky(n: int) -> None:
        raise RuntimeError("flaky")

    for i in range(3):
        flaky.perform_async(i)
    flaky.perform_in(3600, 9)
    run_burst(app)
    retries = client.get("/api/retries").json()
    assert retries["total"] == 3 and retries["killable"]
    jid = retries["jobs"][0]["jid"]
    assert client.post(f"/api/retries/{jid}/kill").json()["ok"] and r.zcard("dead") == 1
    assert client.post("/api/retries/kill_all").json()["done"] == 2 and r.zcard("dead") == 3
    scheduled = client.get("/api/scheduled").json()
    assert scheduled["total"] == 1
    assert client.post("/api/scheduled/retry_all").json()["done"] == 1
    assert r.llen("queue:mail") == 1 and r.zcard("schedule") == 0
    assert client.get("/api/interrupted").json()["total"] == 0
    assert client.post("/api/dead/delete_all").json()["done"] == 3


def test_processes_busy_and_signals(app: App, client: TestClient, r: redis.Redis) -> None:
    ident = "web-test-host:4242:abcdef012345"
    info = {"hostname": "web-test-host", "pid": 4242, "concurrency": 5, "queues": ["default"]}
    r.sadd("processes", ident)
    r.hset(
        ident, mapping={"info": json.dumps(info), "busy": 1, "beat": time.time(), "quiet": "false"}
    )
    r.expire(ident, 60)
    payload = {"class": "Slow", "args": [1], "jid": "abc", "queue": "default"}
    work = {"queue": "default", "payload": json.dumps(payload), "run_at": int(time.time())}
    r.hset(f"{ident}:work", "t1", json.dumps(work))
    processes = client.get("/api/processes").json()
    assert [p["identity"] for p in processes] == [ident]
    assert "info" not in processes[0]
    busy = client.get("/api/busy").json()
    assert busy[0]["job"]["class"] == "Slow" and busy[0]["thread"] == "t1"
    assert client.post(f"/api/processes/{ident}/quiet").json()["ok"]
    assert r.lrange(f"{ident}-signals", 0, -1) == ["TSTP"]
    assert client.post("/api/processes/stop_all").json()["count"] == 1
    assert client.post("/api/processes/nobody:1:2/stop").status_code == 404


def test_cron_and_flags(app: App, client: TestClient, r: redis.Redis) -> None:
    Cron(app).put(CronEntry("nightly", "0 3 * * *", "Report", [1], "reports"))
    entries = client.get("/api/cron").json()
    assert entries[0]["name"] == "nightly" and entries[0]["next_tick"] is not None
    assert client.post("/api/cron/nightly/disable").json()["enabled"] is False
    assert Cron(app).get("nightly").enabled is False
    assert client.get("/api/cron").json()[0]["next_tick"] is None
    assert client.post("/api/cron/nightly/enable").json()["enabled"] is True
    jid = client.post("/api/cron/nightly/enqueue").json()["jid"]
    assert jid in r.lindex("queue:reports", 0)
    assert client.post("/api/cron/missing/enable").status_code == 404

    assert client.post("/api/flags", json={"name": "beta", "state": "enabled"}).json()["ok"]
    assert (
        client.post("/api/flags/beta/percentage", json={"percentage": 30}).json()["summary"]
        == "30% of actors"
    )
    assert client.post("/api/flags/beta/percentage", json={"percentage": 130}).status_code == 400
    assert client.post("/api/flags/Bad Name/enable").status_code == 400
    assert client.get("/api/flags").json()[0]["percentage"] == 30
    assert not Flags(app, cache_ttl=0).enabled("beta")
    assert client.post("/api/flags/beta/delete").json()["ok"]
    assert client.get("/api/flags").json() == []


def test_pages_render_and_forms_redirect_back_with_a_flash(app: App, r: redis.Redis) -> None:
    explode = failing(app)
    explode.perform_async(1)
    run_burst(app)
    explode.perform_async(2)
    Cron(app).put(CronEntry("nightly", "0 3 * * *", "Report"))
    Flags(app).enable("beta", "the beta")
    with TestClient(create_app(app, WebSettings(token=TOKEN)), base_url=LOCAL) as browser:
        login(browser)
        for path, expected in (
            ("/", "History"),
            ("/queues", "mail"),
            ("/queues/mail", "explode"),
            ("/busy", "No job is running"),
            ("/retries", "Nothing here"),
            ("/scheduled", "Nothing here"),
            ("/dead", "explode"),
            ("/interrupted", "Nothing here"),
            ("/processes", "No live process"),
            ("/cron", "nightly"),
            ("/flags", "the beta"),
        ):
            page = browser.get(path)
            assert page.status_code == 200 and expected in page.text, path
        dead = browser.get("/dead").text
        assert "<script>alert(1)</script>" not in dead, "job data is escaped"
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dead
        jid = r.zrange("dead", 0, 0)[0]
        jid = json.loads(jid)["jid"]
        detail = browser.get(f"/dead/{jid}")
        assert detail.status_code == 200 and "ValueError" in detail.text
        assert browser.get("/dead/nope").status_code == 404
        answer = browser.post(
            "/api/dead/bulk",
            data={"csrf_token": csrf_of(dead), "action": "retry", "jid": [jid], "next": "/dead"},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/dead"
        assert "retry: 1 of 1 job(s)" in browser.get("/dead").text
        assert r.llen("queue:mail") == 2
        failed = browser.post(
            "/api/cron/ghost/enable", data={"csrf_token": csrf_of(dead), "next": "/cron"}
        )
        assert "no cron entry named" in failed.text, "errors come back as a flash too"


def test_extensions_add_nav_pages_api_routes_and_templates(app: App) -> None:
    async def page(request: Request) -> Response:
        web = context_of(request)
        return web.render(request, "error.html", message="extension page")

    async def data(request: Request) -> Response:
        return Response('{"from": "extension"}', media_type="application/json")

    ext = WebExtension(
        name="reports",
        nav=(NavItem("Reports", "/reports"),),
        pages=(Route("/reports", page),),
        api=(Route("/reports", data),),
    )
    app.extensions[WEB_EXTENSIONS] = ["tests_web_ext_missing:extension"]
    with pytest.raises(Exception, match="cannot be loaded"):
        create_app(app, WebSettings(token=TOKEN))
    app.extensions[WEB_EXTENSIONS] = ["support.web:EXTENSION"]  # by "module:attribute"
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        assert client.post("/api/probe/poke").json() == {"ok": True}
    app.extensions[WEB_EXTENSIONS] = [ext]
    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        assert client.get("/api/reports").json() == {"from": "extension"}
        login(client)
        page_text = client.get("/reports").text
        assert "extension page" in page_text and 'href="/reports"' in page_text


def test_sidekiq_6_deployment_is_readable(app: App, client: TestClient, r: redis.Redis) -> None:
    """Keys exactly as Ruby Sidekiq 6.4 writes them (a process, its busy work, a retry, stats)."""
    ident = "ruby-host:777:0f1e2d3c4b5a"
    now = time.time()
    info = {
        "hostname": "ruby-host",
        "started_at": now - 60,
        "pid": 777,
        "tag": "rails",
        "concurrency": 10,
        "queues": ["default", "critical"],
        "labels": [],
        "identity": ident,
    }
    r.sadd("processes", ident)
    r.hset(
        ident,
        mapping={
            "info": json.dumps(info),
            "busy": "1",
            "beat": str(now),
            "quiet": "false",
            "rss": "123456",
            "rtt_us": "250",
        },
    )
    r.expire(ident, 60)
    job = {
        "retry": True,
        "queue": "default",
        "class": "HardWorker",
        "args": ["bob", 5],
        "jid": "b4a577edbccf1d805744efa9",
        "created_at": now - 5,
        "enqueued_at": now - 4,
    }
    # Sidekiq 6's Workers API hash: "<identity>:workers", thread id -> JSON with a payload hash.
    r.hset(
        f"{ident}:workers",
        "owx2qcb2n",
        json.dumps({"queue": "default", "payload": json.dumps(job), "run_at": int(now) - 3}),
    )
    failed = {**job, "jid": "1a2b3c4d5e6f7a8b9c0d1e2f", "retry_count": 0}
    failed.update(error_message="undefined method", error_class="NoMethodError", failed_at=now)
    r.zadd("retry", {json.dumps(failed): now + 30})
    r.lpush("queue:critical", json.dumps({**job, "queue": "critical", "jid": "c" * 24}))
    r.sadd("queues", "critical")
    r.set("stat:processed", 1200)
    r.set("stat:failed", 7)

    stats = client.get("/api/stats").json()
    assert (stats["processed"], stats["failed"], stats["workers_size"]) == (1200, 7, 1)
    process = client.get("/api/processes").json()[0]
    assert (process["tag"], process["concurrency"], process["rss_kb"]) == ("rails", 10, 123456)
    busy = client.get("/api/busy").json()[0]
    assert busy["job"]["class"] == "HardWorker" and busy["identity"] == ident
    retry = client.get("/api/retries").json()["jobs"][0]
    assert retry["error_class"] == "NoMethodError"
    assert client.get("/api/queues").json()[0]["name"] == "critical"
    assert client.post(f"/api/processes/{ident}/quiet").json()["ok"]
    assert r.lrange(f"{ident}-signals", 0, -1) == ["TSTP"], "what Sidekiq 6 polls for"
    moved = client.post(f"/api/retries/{failed['jid']}/retry").json()
    pushed = json.loads(r.lindex("queue:default", 0))
    assert moved["queue"] == "default"
    assert pushed["class"] == "HardWorker" and pushed["error_class"] == "NoMethodError"
    login(client)
    assert "HardWorker" in client.get("/busy").text
    assert "ruby-host:777" in client.get("/processes").text


def test_mounted_under_a_prefix_links_and_redirects_follow_it(app: App) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops", app=create_app(app, WebSettings(token=TOKEN)))])
    with TestClient(outer, base_url=LOCAL) as client:
        first = client.get("/ops/queues", follow_redirects=False)
        assert first.headers["location"] == "/ops/login?next=/ops/queues"
        form = client.get("/ops/login")
        assert 'href="/ops/static/app.css"' in form.text
        answer = client.post(
            "/ops/login",
            data={"token": TOKEN, "csrf_token": csrf_of(form.text), "next": "/ops/queues"},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/ops/queues"
        page = client.get("/ops/queues")
        assert 'href="/ops/dead"' in page.text and 'action="/ops/logout"' in page.text
        assert client.get("/ops/api/stats").status_code == 200
