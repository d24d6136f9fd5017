"""The automation HTTP API: the real web app served by uvicorn, called with httpx, on a real
Redis; real-time tasks run real ``python:`` steps, batch runs a real node process."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT, running_worker, wait_for
from support.automation import write_http_settings
from support.web import BEARER, TOKEN, served

from conveyor import App, Settings
from conveyor.automation import (
    AutomationSettings,
    format_workflow_path,
    load_automation_settings,
)
from conveyor.automation.engine import Automation
from conveyor.web import WebSettings, create_app
from conveyor.web.automation import automation_extension


@pytest.fixture
def automation(tmp_path: Path, app: App) -> Automation:
    return Automation(app, load_automation_settings(write_http_settings(tmp_path)), grace=1)


@pytest.fixture
def client(app: App, automation: Automation) -> Iterator[httpx.Client]:
    """The API over an engine that is no node (as the web app is). Failed logins are answered
    at once: the growing delay has its own tests (tests/web/test_auth.py)."""
    web = create_app(
        app,
        WebSettings(token=TOKEN, login_delay=0),
        extensions=[automation_extension(automation)],
    )
    with served(web) as base, httpx.Client(base_url=base, headers=BEARER, timeout=60) as c:
        yield c


@contextmanager
def realtime_node(
    settings: Settings, automation: AutomationSettings, workflows: Sequence[str]
) -> Iterator[Automation]:
    """An engine installed as a node whose worker (a thread of this process) takes the
    real-time queues of ``workflows``: real-time tasks go through Redis to it, as to any node."""
    node_app = App(settings.replace(queues=tuple((f"automation-rt.{n}", 1) for n in workflows)))
    node = Automation(node_app, automation, node="rt-node", grace=1)
    node.install()
    try:
        with running_worker(node_app):
            wait_for(node.nodes, timeout=10)
            yield node
    finally:
        node.close()
        node_app.close()


@pytest.fixture
def rt_client(settings: Settings, automation: Automation) -> Iterator[httpx.Client]:
    """The API (over an engine that is no node) with a real-time node beside it."""
    web = create_app(
        automation.app, WebSettings(token=TOKEN), extensions=[automation_extension(automation)]
    )
    with (
        realtime_node(settings, automation.settings, RT),
        served(web) as base,
        httpx.Client(base_url=base, headers=BEARER, timeout=60) as c,
    ):
        yield c


#: The workflows of write_http_settings the real-time node serves.
RT = ("open", "slowpoke", "broken")


def test_realtime_runs_one_task_with_vars_holding_slash_equals_and_escapes(
    rt_client: httpx.Client,
) -> None:
    path = format_workflow_path(
        "open", {"src_path": "/tmp/a=b/c.jpg", "semi": "x;y", "pct": "100%"}
    )
    assert "%3B" in path and "%25" in path  # the escapes travel as sent
    answer = rt_client.post(path, params={"mode": "realtime"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["mode"] == "realtime" and body["ok"] is True
    assert body["node"] == "rt-node"
    assert body["facts"]["vars"] == {
        "wf": "w",
        "layer": "step",  # workflow < step, the operator's; the request's beside them
        "src_path": "/tmp/a=b/c.jpg",
        "semi": "x;y",
        "pct": "100%",
    }
    assert body["vars"]["semi"] == "x;y"
    assert "output" not in body, "the raw output only for workflows with exposeOutput"


def test_a_request_may_not_set_an_operator_or_engine_variable(client: httpx.Client) -> None:
    for name in ("layer", "wf", "src_dir", "dest_dir", "ansible_connection", "_fail_total",
                 "conveyor_result_path", "prepare_path", "hostvars"):  # fmt: skip
        for params in ({}, {"mode": "realtime"}):
            answer = client.post(f"/automation/workflows/open/vars/{name}=x", params=params)
            assert answer.status_code == 400, (name, answer.text)
            assert answer.json()["variable"] == name
            assert name in answer.json()["error"]


def test_realtime_failure_and_timeout_statuses(rt_client: httpx.Client) -> None:
    client = rt_client
    failed = client.post(
        "/automation/workflows/broken/vars/x=secret-value", params={"mode": "realtime"}
    )
    assert failed.status_code == 502
    assert failed.json()["ok"] is False
    # The step's message held the caller's value: it stays out of errors and logs.
    assert failed.json()["error"] == "RuntimeError: boom [redacted]"
    assert "secret-value" not in failed.json()["log"]
    timed = client.post("/automation/workflows/slowpoke", params={"mode": "realtime"})
    assert timed.status_code == 504
    assert timed.json()["timed_out"] is True and timed.json()["returncode"] is None


def test_authentication_is_required(client: httpx.Client) -> None:
    url = "/automation/workflows/open"
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-123"}):
        for method, path in (
            ("POST", url),
            ("GET", "/automation/runs/abc"),
            ("GET", "/automation/nodes"),
        ):
            answer = client.request(method, path, headers=headers, follow_redirects=False)
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert "authentication required" in answer.json()["error"]
            assert TOKEN not in answer.text


def test_forbidden_unknown_and_disabled(client: httpx.Client) -> None:
    closed = client.post("/automation/workflows/closed")
    assert closed.status_code == 403
    assert "allowApiExecution" in closed.json()["error"]
    for name in ("nope", "off"):
        answer = client.post(f"/automation/workflows/{name}", params={"mode": "realtime"})
        assert answer.status_code == 404, name
        assert answer.json()["workflow"] == name
    assert client.post("/other/workflows/open").status_code == 404


def test_automation_switched_off_is_404(tmp_path: Path, app: App) -> None:
    off = Automation(app, load_automation_settings(write_http_settings(tmp_path, enable=False)))
    web = create_app(app, WebSettings(token=TOKEN), extensions=[automation_extension(off)])
    with served(web) as base, httpx.Client(base_url=base, headers=BEARER) as c:
        assert c.post("/automation/workflows/open").status_code == 404
        assert c.post("/automation/workflows/open", params={"mode": "realtime"}).status_code == 404


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("/automation/workflows/open/steps/prepare=maybe;", "prepare=maybe"),
        ("/automation/workflows/open/steps/deploy=true", "deploy=true"),
        ("/automation/workflows/open/vars/novalue", "novalue"),
        ("/automation/workflows/open/vars/1x=2", "1x=2"),
        ("/automation/workflows/open/vars/a=1;a=2", "a=2"),
        ("/automation/workflows/open/other", "other"),
        ("/automation/workflows/open/vars/a=%FF", "a=%FF"),
        ("/automation/workflows/b@d", "b@d"),
        ("/automation/workflows/open/steps/execute=false", "steps"),
    ],
)
def test_malformed_paths_are_400_naming_the_part(
    client: httpx.Client, path: str, segment: str
) -> None:
    answer = client.post(path)
    assert answer.status_code == 400, answer.text
    assert answer.json()["segment"] == segment
    assert answer.json()["error"]


def test_bad_query_is_400(client: httpx.Client) -> None:
    assert client.post("/automation/workflows/open", params={"mode": "fast"}).status_code == 400
    answer = client.post("/automation/workflows/open", params={"mod": "realtime"})
    assert answer.status_code == 400 and answer.json()["segment"] == "query"
    prepare_rt = client.post(
        "/automation/workflows/open/steps/prepare=true", params={"mode": "realtime"}
    )
    assert prepare_rt.status_code == 400


def test_get_starts_a_run_with_a_bearer_token_only(
    app: App, automation: Automation, client: httpx.Client
) -> None:
    """The manual's URLs are links: a GET starts a run, but never on a cookie's strength."""
    started = client.get("/automation/workflows/open/vars/k=v")
    assert started.status_code == 202, started.text
    assert started.json()["run"]["request"] == {"k": "v"}
    from starlette.testclient import TestClient
    from support.web import LOCAL, login

    web = create_app(app, WebSettings(token=TOKEN), extensions=[automation_extension(automation)])
    with TestClient(web, base_url=LOCAL) as browser:
        login(browser)
        refused = browser.get("/automation/workflows/open")
        assert refused.status_code == 405
        assert "Bearer" in refused.json()["error"]
    anonymous = create_app(
        app,
        WebSettings(token=TOKEN, allow_anonymous=True),
        extensions=[automation_extension(automation)],
    )
    with TestClient(anonymous, base_url=LOCAL) as stranger:
        # 405 from this handler, or 401 where anonymous access is loopback-only: no run either way.
        assert stranger.get("/automation/workflows/open").status_code in (401, 405)
    assert len(automation.store.active("open")) == 1, "only the Bearer GET started a run"


def test_batch_returns_202_with_location_and_prepare_off_by_default(
    client: httpx.Client, automation: Automation
) -> None:
    answer = client.post("/automation/workflows/open/vars/k=v=w")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert answer.headers["location"] == f"/automation/runs/{body['id']}" == body["location"]
    assert body["run"]["prepare"] is False and body["run"]["complete"] is True
    assert body["run"]["request"] == {"k": "v=w"}
    assert body["run"]["source"] == "api"
    status = client.get(answer.headers["location"])
    assert status.status_code == 200
    assert status.json()["id"] == body["id"] and status.json()["workflow"] == "open"
    assert status.json()["progress"]["finished"] is False
    listed = client.get("/automation/runs", params={"workflow": "open"}).json()["runs"]
    assert [r["id"] for r in listed] == [body["id"]]
    explicit = client.post("/automation/workflows/open/steps/prepare=true;complete=false")
    assert explicit.json()["run"]["prepare"] is True
    assert explicit.json()["run"]["complete"] is False
    assert automation.run_status(body["id"]) is not None


def test_unknown_runs_are_404(client: httpx.Client) -> None:
    assert client.get("/automation/runs/0123abcd").status_code == 404
    assert client.get("/automation/runs/not-hex").status_code == 404
    assert client.get("/automation/runs", params={"limit": "0"}).status_code == 400


def test_batch_run_end_to_end_on_a_node(
    tmp_path: Path, client: httpx.Client, redis_url: str, processes: Any
) -> None:
    settings_file = tmp_path / "settings.json"
    node = processes(
        "-c",
        "import sys; from conveyor.automation.process import serve; "
        "serve(sys.argv[1], redis_url=sys.argv[2], term=5, threads=3)",
        str(settings_file),
        redis_url,
        CONVEYOR_HEARTBEAT_INTERVAL="0.5",
    )
    started = client.post("/automation/workflows/batch/steps/prepare=true")
    assert started.status_code == 202, started.text
    location = started.headers["location"]

    def finished() -> bool:
        return bool(client.get(location).json()["progress"]["finished"])

    wait_for(finished, timeout=90, interval=0.25)
    assert node.poll() is None
    run = client.get(location, params={"tasks": "true"}).json()
    assert run["state"] == "done", run
    assert run["progress"] == {"ended": 3, "total": 3, "percent": 100.0, "finished": True}
    files = sorted(t["vars"]["file"] for t in run["tasks"])
    assert files == sorted(["a/b=c", "d;e", "ü"])
    sizes = len("a/b=c") + len("d;e") + len("ü")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["_request_total"] == 3 and report["_fail_total"] == 0
    assert report["_src_size_total"] == sizes == run["src_size_total"]
    nodes = client.get("/automation/nodes").json()["nodes"]
    assert len(nodes) == 1 and nodes[0]["pid"] == node.pid


_TOKENS = [
    "open",
    "closed",
    "off",
    "nope",
    "steps",
    "vars",
    "prepare=true",
    "complete=false",
    "execute=false",
    "k=v",
    "a=b=c",
    "%3B",
    "%2F",
    "%",
    "%ZZ",
    "%FF",
    "%C3%BC",
    "ü",
    ";",
    "=",
    "/",
    "..",
]
_SEGMENT = st.lists(
    st.sampled_from(_TOKENS) | st.text(alphabet="ab_-.=;%Z9~!:@ ", max_size=3), max_size=5
).map("".join)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(parts=st.lists(_SEGMENT, max_size=6), mode=st.sampled_from([None, "batch", "realtime", "x"]))
def test_fuzzed_paths_never_500(client: httpx.Client, parts: list[str], mode: str | None) -> None:
    from urllib.parse import quote

    raw = "/automation/workflows/" + "/".join(parts)
    url = httpx.URL(str(client.base_url)).copy_with(raw_path=quote(raw, safe="/;=%:@!~").encode())
    params = {} if mode is None else {"mode": mode}
    answer = client.post(url, params=params)
    # 503: a real-time call with no node running (this app has none), never a crash.
    assert answer.status_code < 500 or answer.status_code in (502, 503, 504), (raw, answer.text)
    assert answer.headers["content-type"].startswith("application/json") or answer.status_code in (
        404,
        405,
    )


def test_the_api_joins_the_web_app_from_the_environment(
    tmp_path: Path, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_AUTOMATION_SETTINGS", str(write_http_settings(tmp_path)))
    web = create_app(app, WebSettings(token=TOKEN))  # no explicit extension
    with served(web) as base, httpx.Client(base_url=base, timeout=60) as c:
        answer = c.post("/automation/workflows/open/vars/x=1", headers=BEARER)
        assert answer.status_code == 202, answer.text
        assert answer.json()["run"]["request"] == {"x": "1"}
        assert c.get("/automation/nodes").status_code == 401
        # The dashboard's own pages still send a browser to the login page.
        assert c.get("/queues", follow_redirects=False).status_code == 303
    monkeypatch.delenv("CONVEYOR_AUTOMATION_SETTINGS")
    plain = create_app(app, WebSettings(token=TOKEN))
    with served(plain) as base, httpx.Client(base_url=base, headers=BEARER) as c:
        assert c.post("/automation/workflows/open").status_code == 404


def test_realtime_task_runs_the_example_ansible_playbook(
    tmp_path: Path, app: App, settings: Settings
) -> None:
    example = ROOT / "examples" / "automation" / "playbooks"
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a;b=c.jpg").write_bytes(b"x" * 321)
    document = {
        "functions": {
            "backend": {
                "automation": {
                    "meta": {"enable": True},
                    "workflows": [
                        {
                            "name": "migrate_tmpimg",
                            "allowApiExecution": True,
                            "exposeOutput": True,
                            "throttling": {"enable": False},
                            "vars": {"src_dir": str(src), "dest_dir": str(dest)},
                            "steps": {"execute": {"playbook": str(example / "file_migration.yml")}},
                        }
                    ],
                }
            }
        }
    }
    (tmp_path / "settings.json").write_text(json.dumps(document))
    engine = Automation(app, load_automation_settings(tmp_path / "settings.json"))
    web = create_app(app, WebSettings(token=TOKEN), extensions=[automation_extension(engine)])
    with (
        realtime_node(settings, engine.settings, ["migrate_tmpimg"]),
        served(web) as base,
        httpx.Client(base_url=base, headers=BEARER, timeout=120) as c,
    ):
        path = format_workflow_path("migrate_tmpimg", {"file": "a;b=c.jpg"})
        answer = c.post(path, params={"mode": "realtime"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["facts"] == {"src_size": 321, "dest_size": 321}
        assert (dest / "a;b=c.jpg").stat().st_size == 321
        assert not (src / "a;b=c.jpg").exists()
        again = c.post(path, params={"mode": "realtime"})  # the file is gone now
        assert again.status_code == 502
        assert "missing or not a regular file" in again.json()["output"]


def test_a_logged_in_browser_needs_the_csrf_token(app: App, automation: Automation) -> None:
    from starlette.testclient import TestClient
    from support.web import LOCAL, login

    web = create_app(app, WebSettings(token=TOKEN), extensions=[automation_extension(automation)])
    with TestClient(web, base_url=LOCAL) as browser:
        csrf = login(browser)
        refused = browser.post("/automation/workflows/open")
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["error"]
        accepted = browser.post("/automation/workflows/open", headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 202, accepted.text
