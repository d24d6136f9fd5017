"""Caller variables are data (issue #15): a template-injection corpus through the real
``ansible-playbook`` and a real ``python:`` step, reached through the HTTP API (real-time and
batch), through task lines and through file names; operator variables cannot be overridden.

Every payload would run ``touch pwned`` in the step's working directory (the settings file's
directory, ``tmp_path``) if it were templated; the tests assert each value arrives literally
and that the marker file never appears. Without the ``!unsafe`` values (the runner writing
caller data as plain JSON extra vars, as before) these tests fail: the marker is created and
the web token is read from the node's environment.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from support import ROOT, running_worker, wait_for
from support.web import BEARER, TOKEN, served

from conveyor import App, Settings
from conveyor.automation import Playbook, format_workflow_path, load_automation_settings
from conveyor.automation.engine import Automation
from conveyor.automation.runner import run_step
from conveyor.automation.settings import parse_automation_settings
from conveyor.automation.variables import check_caller_vars, redact, unsafe_yaml
from conveyor.errors import VariableRejected
from conveyor.web import WebSettings, create_app
from conveyor.web.automation import automation_extension

EXAMPLE = ROOT / "examples" / "automation"
MARKER = "pwned"
SECRET = "web-token-that-must-not-leak-1234"

#: Template injections, including attempts to escape the ``!unsafe`` scalar they are written
#: into, YAML tags, Jinja statements and comments, and shell metacharacters for playbooks that
#: put a value in a command.
CORPUS = [
    "{{ lookup('pipe', 'touch pwned') }}",
    "{{ query('pipe', 'touch pwned') }}",
    "{{ q('pipe', 'touch pwned') }}",
    "{{lookup('pipe','touch pwned')}}",
    "{% for x in [1] %}{{ lookup('pipe', 'touch pwned') }}{% endfor %}",
    "{% set x = lookup('pipe', 'touch pwned') %}{{ x }}",
    "{{ lookup('env', 'CONVEYOR_WEB_TOKEN') }}",
    "{{ 7 * 7 }}",
    "{# a comment #}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "!unsafe {{ lookup('pipe', 'touch pwned') }}",
    "\" !unsafe \"{{ lookup('pipe', 'touch pwned') }}",
    "x\nv0: {{ lookup('pipe', 'touch pwned') }}",
    "\\\"\n{{ lookup('pipe', 'touch pwned') }}\n",
    "!!python/object/apply:os.system ['touch pwned']",
    "--- !unsafe\n{{ lookup('pipe', 'touch pwned') }}",
    "\u2028{{ lookup('pipe', 'touch pwned') }}\x85\x7f\t😀 ü",
    "$(touch pwned)`touch pwned`;touch pwned",
    "",
]
#: The payloads that can be file names (no '/').
FILE_NAMES = [v for v in CORPUS if v and "/" not in v and "\x00" not in v]

#: Reports each ``v<i>`` as it arrived, a value derived from it by a template, and runs each
#: through a shell command the way a careless playbook would (quoted).
INJECT_PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: use every value in a command
      ansible.builtin.shell: "printf '%s' {{{{ item | quote }}}} > /dev/null"
      loop: "{{{{ [{names}] }}}}"
    - name: report what arrived
      ansible.builtin.copy:
        dest: "{{{{ conveyor_result_path }}}}"
        content: "{{{{ {{{facts}}} | to_json }}}}"
"""


def inject_playbook(count: int) -> str:
    names = ", ".join(f"v{i}" for i in range(count))
    facts = ", ".join(f"'v{i}': v{i}, 'd{i}': 'pre-' ~ v{i}" for i in range(count))
    return INJECT_PLAYBOOK.format(names=names, facts=facts)


def corpus_vars() -> dict[str, str]:
    return {f"v{i}": value for i, value in enumerate(CORPUS)}


def assert_literal(facts: dict[str, Any], tmp_path: Path) -> None:
    for i, value in enumerate(CORPUS):
        assert facts[f"v{i}"] == value, (i, facts[f"v{i}"])
        assert facts[f"d{i}"] == "pre-" + value, (i, facts[f"d{i}"])
    assert not (tmp_path / MARKER).exists(), "an injected command ran"
    assert SECRET not in json.dumps(facts)


STEPS = textwrap.dedent(
    """\
    import os

    def echo(variables):
        return {k: v for k, v in variables.items() if k.startswith("v")}

    def plan(variables):
        # The request's r<i> become the task line's v<i>: execute reads them from the line.
        from conveyor.automation import format_workflow_path
        data = {"v" + k[1:]: v for k, v in variables.items() if k.startswith("r")}
        with open(variables["prepare_path"], "w") as f:
            f.write(format_workflow_path("lines", data) + "\\n")
    """
)


def write_settings(tmp_path: Path) -> Path:
    (tmp_path / "inject.yml").write_text(inject_playbook(len(CORPUS)))
    (tmp_path / "inject_steps.py").write_text(STEPS)
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    base = {"allowApiExecution": True, "throttling": {"enable": False}}
    workflows = [
        {**base, "name": "ansible", "mode": "realtime",
         "steps": {"execute": {"playbook": "inject.yml"}}},
        {**base, "name": "python", "mode": "realtime",
         "steps": {"execute": {"playbook": "python:inject_steps:echo"}}},
        {**base, "name": "lines",
         "steps": {"prepare": {"playbook": "python:inject_steps:plan"},
                   "execute": {"playbook": "inject.yml"}}},
        {**base, "name": "migrate_tmpimg", "vars": {"src_dir": str(src), "dest_dir": str(dest)},
         "steps": {
             "prepare": {"playbook": str(EXAMPLE / "workflows" / "prepare_file_to_migrate.yml")},
             "execute": {"playbook": str(EXAMPLE / "playbooks" / "file_migration.yml")}}},
    ]  # fmt: skip
    meta = {"enable": True, "cpuAverage": {"interval": 0.3}, "workDir": str(tmp_path / "work")}
    document = {"functions": {"backend": {"automation": {"meta": meta, "workflows": workflows}}}}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def cluster(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[httpx.Client, Automation]]:
    """The web API (no node) and one node (a worker thread here) on the test Redis; the node's
    environment holds the web token, as a node started beside the web app would."""
    monkeypatch.setenv("CONVEYOR_WEB_TOKEN", SECRET)
    auto_settings = load_automation_settings(write_settings(tmp_path))
    web_app = App(settings)
    web_engine = Automation(web_app, auto_settings, grace=1)
    probe = Automation(web_app, auto_settings)
    node_app = App(settings.replace(queues=probe.queues, concurrency=2))
    node = Automation(node_app, auto_settings, node="node", grace=1, term=5)
    node.install()
    web = create_app(
        web_app, WebSettings(token=TOKEN), extensions=[automation_extension(web_engine)]
    )
    with (
        running_worker(node_app),
        served(web) as base,
        httpx.Client(base_url=base, headers=BEARER, timeout=180) as client,
    ):
        wait_for(web_engine.nodes, timeout=10)
        yield client, web_engine
    node.close()
    node_app.close()
    web_app.close()


def finished_run(client: httpx.Client, location: str) -> dict[str, Any]:
    def done() -> bool:
        return bool(client.get(location).json()["progress"]["finished"])

    wait_for(done, timeout=180, interval=0.25)
    body: dict[str, Any] = client.get(location, params={"tasks": "true"}).json()
    return body


@pytest.mark.timeout(300)
def test_injections_through_the_http_api_task_lines_and_file_names(
    tmp_path: Path, cluster: tuple[httpx.Client, Automation]
) -> None:
    client, _ = cluster
    # 1. The HTTP API, real-time: the real ansible-playbook and a real python: step.
    path = format_workflow_path("ansible", corpus_vars())
    answer = client.get(path)  # the workflow's mode is realtime; GET with a Bearer token
    assert answer.status_code == 200, answer.text
    assert_literal(answer.json()["facts"], tmp_path)
    answer = client.post(format_workflow_path("python", corpus_vars()))
    assert answer.status_code == 200, answer.text
    facts = answer.json()["facts"]
    assert facts == corpus_vars()
    assert not (tmp_path / MARKER).exists()

    # 2. Task lines: prepare writes one line carrying the corpus; execute is the playbook.
    request = {f"r{i}": value for i, value in enumerate(CORPUS)}
    started = client.post(format_workflow_path("lines", request, steps={"prepare": True}))
    assert started.status_code == 202, started.text
    run = finished_run(client, started.headers["location"])
    assert (run["state"], run["succeeded"]) == ("done", 1), run
    assert_literal(run["tasks"][0]["facts"], tmp_path)

    # 3. File names: the example's prepare lists them, its execute moves each by name.
    for name in FILE_NAMES:
        (tmp_path / "src" / name).write_text(name)
    started = client.post("/automation/workflows/migrate_tmpimg/steps/prepare=true")
    assert started.status_code == 202, started.text
    run = finished_run(client, started.headers["location"])
    assert (run["state"], run["succeeded"], run["failed"]) == ("done", len(FILE_NAMES), 0), run
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(FILE_NAMES)
    assert sorted(t["vars"]["file"] for t in run["tasks"]) == sorted(FILE_NAMES)
    assert not (tmp_path / MARKER).exists(), "an injected command ran"


def test_the_runner_keeps_caller_data_literal_for_ansible_and_python(tmp_path: Path) -> None:
    (tmp_path / "inject.yml").write_text(inject_playbook(len(CORPUS)))
    (tmp_path / "inject_steps.py").write_text(STEPS)
    env = {"CONVEYOR_WEB_TOKEN": SECRET}
    ansible = run_step(
        Playbook.parse("inject.yml"),
        {"operator": "{{ 6 * 7 }}"},
        data=corpus_vars(),
        timeout=120,
        base_dir=str(tmp_path),
        env=env,
    )
    assert ansible.ok, ansible.output
    assert_literal(ansible.facts, tmp_path)
    python = run_step(
        Playbook.parse("python:inject_steps:echo"),
        {},
        data=corpus_vars(),
        timeout=60,
        base_dir=str(tmp_path),
        env=env,
    )
    assert python.ok, python.output
    assert python.facts == corpus_vars()
    assert not (tmp_path / MARKER).exists()
    with pytest.raises(ValueError, match="may not repeat operator variables"):
        run_step(Playbook.parse("inject.yml"), {"v0": "op"}, data={"v0": "x"}, timeout=5)


def test_operator_variables_are_still_templates(tmp_path: Path) -> None:
    """Only caller data is !unsafe: the operator's own variables may use Ansible templates."""
    (tmp_path / "site.yml").write_text(
        textwrap.dedent(
            """\
            - hosts: localhost
              gather_facts: false
              tasks:
                - ansible.builtin.copy:
                    dest: "{{ conveyor_result_path }}"
                    content: "{{ {'answer': answer, 'data': data} | to_json }}"
            """
        )
    )
    result = run_step(
        Playbook.parse("site.yml"),
        {"answer": "{{ 6 * 7 }}"},
        data={"data": "{{ 6 * 7 }}"},
        timeout=120,
        base_dir=str(tmp_path),
    )
    assert result.ok, result.output
    assert result.facts == {"answer": 42, "data": "{{ 6 * 7 }}"}


WORKFLOW = parse_automation_settings(
    {"functions": {"backend": {"automation": {"workflows": [{
        "name": "w", "vars": {"src": "/in", "n": 1},
        "steps": {"prepare": {"playbook": "p.yml", "vars": {"limit": 3}},
                  "execute": {"playbook": "x.yml", "vars": {"mode": "fast"}},
                  "complete": {"playbook": "c.yml", "vars": {"report": "/r"}}}}]}}}}
).workflow("w")  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["src", "n", "limit", "mode", "report", "src_dir", "dest_dir", "prepare_path",
     "conveyor_result_path", "ansible_connection", "ansible_python_interpreter", "_fail_total",
     "_request_total", "hostvars", "lookup", "omit", "environment"],
)  # fmt: skip
def test_callers_cannot_set_operator_or_engine_variables(name: str) -> None:
    with pytest.raises(VariableRejected) as info:
        check_caller_vars(WORKFLOW, {"file": "a", name: "x"})
    assert info.value.variable == name
    assert "'x'" not in str(info.value), "the message names the variable, never its value"


def test_caller_variables_are_strings_with_identifier_names() -> None:
    assert check_caller_vars(WORKFLOW, {"file": "a", "size": 3}) == {"file": "a", "size": "3"}
    for bad in ("1x", "a-b", "", "a b"):
        with pytest.raises(VariableRejected, match="bad variable name"):
            check_caller_vars(WORKFLOW, {bad: "x"})
    with pytest.raises(VariableRejected, match="not valid Unicode"):
        check_caller_vars(WORKFLOW, {"file": "a\udcff"})


def test_redact_hides_caller_values_in_messages() -> None:
    text = "cannot open /data/alice/report-2024.pdf for alice (id 7, 17 files)"
    hidden = redact(text, ["alice", "report-2024.pdf", "7"])
    assert (
        hidden == "cannot open /data/[redacted]/[redacted] for [redacted] (id [redacted], 17 files)"
    )
    assert redact(None, ["x"]) is None


def test_unsafe_yaml_is_what_ansible_reads() -> None:
    from ansible.parsing.dataloader import DataLoader

    values = {f"v{i}": v for i, v in enumerate(CORPUS)} | {"empty": ""}
    loaded = DataLoader().load(unsafe_yaml(values))
    assert {k: str(v) for k, v in loaded.items()} == values
    assert unsafe_yaml({}) == "{}\n"
    with pytest.raises(ValueError, match="bad variable name"):
        unsafe_yaml({"a: b": "x"})
