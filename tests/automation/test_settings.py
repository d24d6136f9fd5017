from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from support import ROOT

from conveyor.automation import (
    AutomationSettingsError,
    Playbook,
    Throttle,
    load_automation_settings,
    merge_vars,
    parse_automation_settings,
)
from conveyor.errors import ConfigurationError

EXAMPLE = ROOT / "examples" / "automation" / "settings.json"
W = "functions.backend.automation.workflows"
#: Field names the fuzzer mixes in, so it reaches past the first "unknown field".
_FIELD_NAMES = [
    "meta", "workflows", "enable", "keyword", "cpuAverage", "interval", "window", "alpha",
    "minDwell", "workDir", "realtime", "perNode", "runs", "maxUnfinished", "ttl", "name",
    "description", "allowApiExecution", "vars", "steps", "throttling", "mode", "exposeOutput",
    "prepare", "execute", "complete", "schedule", "playbook", "timeout", "leaderElection",
    "type", "path", "authEndpoint", "cpu", "deactive", "reactive",
]  # fmt: skip


def doc(*workflows: dict[str, Any], meta: Any = None, **backend: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"workflows": list(workflows)}
    if meta is not None:
        section["meta"] = meta
    return {"functions": {"backend": {"automation": section, **backend}}}


def wf(name: str = "w", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "steps": {"execute": {"playbook": "run.yml"}}}
    out.update(fields)
    return out


def problems(data: Any) -> list[str]:
    with pytest.raises(AutomationSettingsError) as info:
        parse_automation_settings(data)
    assert isinstance(info.value, ConfigurationError)
    return list(info.value.problems)


def test_defaults_follow_the_seed() -> None:
    s = parse_automation_settings(
        doc(
            wf(
                steps={
                    "execute": {"playbook": "e.yml"},
                    "prepare": {"playbook": "p.yml"},
                    "complete": {"playbook": "c.yml"},
                }
            )
        )
    )
    assert (s.meta.enable, s.meta.keyword) == (False, "automation")
    w = s.workflow("w")
    assert (w.enable, w.allow_api_execution, w.description, dict(w.vars)) == (True, False, "", {})
    assert w.steps.execute.timeout == 180 and w.steps.complete is not None
    assert w.steps.complete.timeout == 60
    assert w.steps.prepare is not None and w.steps.prepare.schedule is None
    assert w.steps.prepare.leader_election.type == "file"
    assert w.steps.prepare.leader_election.lease_path("w") is None
    assert (w.throttling.enable, w.throttling.cpu.deactive, w.throttling.cpu.reactive) == (
        True,
        60,
        40,
    )
    assert s.warnings == ()


def test_the_example_file_validates() -> None:
    s = load_automation_settings(EXAMPLE)
    assert s.meta.enable and s.names == ("migrate_tmpimg",)
    w = s.workflow("migrate_tmpimg")
    assert w.steps.prepare is not None and w.steps.prepare.schedule == "0 1 * * *"
    # The manual's `"path": null`: the lease every node sharing the Redis sees.
    assert w.steps.prepare.leader_election.lease_path(w.name) is None
    assert w.steps.execute.playbook.path == "playbooks/file_migration.yml"
    assert s.warnings == ()  # every playbook it names exists next to it


def test_every_problem_is_reported_once_with_its_json_path() -> None:
    data = doc(
        wf("a"),
        wf("a", allowAPIExecution=True),
        wf("c", steps={"execute": {"playbook": "x.yml", "timeout": "fast"}}),
        wf("d", throttling={"cpu": {"deactive": 160}}),
        meta={"enable": "yes", "keywrd": "x"},
    )
    found = problems(data)
    assert found == [
        'functions.backend.automation.meta.keywrd: unknown field; did you mean "keyword"?',
        'functions.backend.automation.meta.enable: must be true or false, got "yes"',
        f'{W}[1].name: duplicates the name of workflows[0]; names must be unique, got "a"',
        f'{W}[1].allowAPIExecution: unknown field; did you mean "allowApiExecution"?',
        f'{W}[2].steps.execute.timeout: must be a positive number, got "fast"',
        f"{W}[3].throttling.cpu.deactive: must be between 0 and 100, got 160",
    ]


@pytest.mark.parametrize(
    ("workflow", "path", "fragment"),
    [
        ({"steps": {"execute": {"playbook": "x"}}}, "[0].name", "missing"),
        (wf(name="bad name"), "[0].name", "letters, digits"),
        (wf(steps=None), "[0].steps", "missing"),
        (wf(steps={"prepare": {"playbook": "p.yml"}}), "[0].steps.execute", "missing"),
        (wf(steps={"execute": {}}), "[0].steps.execute.playbook", "missing"),
        (wf(steps={"execute": {"playbook": 3}}), "[0].steps.execute.playbook", "string"),
        (wf(steps={"execute": {"playbook": "python:m:"}}), "[0].steps.execute.playbook", "python:"),
        (wf(steps={"execute": {"playbook": "x", "timeout": 0}}), "[0].steps.execute.timeout", "0"),
        (
            wf(steps={"execute": {"playbook": "x", "timeout": True}}),
            "[0].steps.execute.timeout",
            "got true",
        ),
        (wf(steps={"execute": {"playbook": "x", "vars": [1]}}), "[0].steps.execute.vars", "object"),
        (wf(steps={"execute": {"playbook": "x"}, "cleanup": {}}), "[0].steps.cleanup", "unknown"),
        (
            wf(steps={"execute": {"playbook": "x"}, "complete": {"playbook": "c", "timeout": -1}}),
            "[0].steps.complete.timeout",
            "positive",
        ),
        (
            wf(steps={"execute": {"playbook": "x"}, "prepare": {"playbook": "p", "schedule": "x"}}),
            "[0].steps.prepare.schedule",
            "cron",
        ),
        (
            wf(
                steps={
                    "execute": {"playbook": "x"},
                    "prepare": {"playbook": "p", "leaderElection": {"type": "zookeeper"}},
                }
            ),
            "[0].steps.prepare.leaderElection.type",
            "zookeeper",
        ),
        (wf(enable=1), "[0].enable", "true or false"),
        (wf(description=5), "[0].description", "string"),
        (wf(throttling={"cpu": {"deactive": "high"}}), "[0].throttling.cpu.deactive", "number"),
        (wf(throttling={"cpu": {"reactive": [40]}}), "[0].throttling.cpu.reactive", "number"),
        (wf(throttling={"enable": "no"}), "[0].throttling.enable", "true or false"),
        ("not an object", "[0]", "JSON object"),
    ],
)
def test_bad_fields_name_their_path(workflow: Any, path: str, fragment: str) -> None:
    found = problems(doc(workflow))
    assert len(found) == 1, found
    assert found[0].startswith(f"{W}{path}: ")
    assert fragment in found[0]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "(document): must be a JSON object, got []"),
        ({"functions": {}}, "functions.backend: missing"),
        ({"functions": {"backend": {"automation": 1}}}, "functions.backend.automation: must be"),
        (doc(meta={"keyword": "a/b"}), "functions.backend.automation.meta.keyword: must be"),
        ({"functions": {"backend": {"automation": {"workflows": {}}}}}, f"{W}: must be a JSON"),
    ],
)
def test_bad_documents(data: Any, expected: str) -> None:
    assert problems(data)[0].startswith(expected)


def test_null_means_the_default() -> None:
    s = parse_automation_settings(
        doc(
            wf(
                enable=None,
                allowApiExecution=None,
                vars=None,
                throttling={"enable": None, "cpu": {"deactive": None, "reactive": None}},
                steps={"execute": {"playbook": "x", "timeout": None, "vars": None}},
            ),
            meta={"enable": None, "keyword": None},
        )
    )
    w = s.workflow("w")
    assert (s.meta.enable, s.meta.keyword, w.enable, w.allow_api_execution) == (
        False,
        "automation",
        True,
        False,
    )
    assert w.steps.execute.timeout == 180 and w.throttling.cpu.reactive == 40


def test_missing_workflows_is_an_empty_list() -> None:
    s = parse_automation_settings({"functions": {"backend": {"automation": {}}}})
    assert s.workflows == () and not s.meta.enable


def test_reactive_above_deactive_or_out_of_range_becomes_two_thirds() -> None:
    s = parse_automation_settings(
        doc(
            wf("a", throttling={"cpu": {"deactive": 90, "reactive": 95}}),
            wf("b", throttling={"cpu": {"deactive": 30, "reactive": -5}}),
            wf("c", throttling={"cpu": {"deactive": 50, "reactive": 50}}),
            # 0 would never be undercut: a throttled node would never resume (issue #16).
            wf("d", throttling={"cpu": {"deactive": 60, "reactive": 0}}),
        )
    )
    assert s.workflow("a").throttling.cpu.reactive == 60
    assert s.workflow("b").throttling.cpu.reactive == 20
    assert s.workflow("c").throttling.cpu.reactive == 50  # equal is not "above"
    assert s.workflow("d").throttling.cpu.reactive == 40
    assert len(s.warnings) == 3
    assert s.warnings[0].startswith(f"{W}[0].throttling.cpu.reactive: 95 is above deactive (90)")
    assert s.warnings[2].startswith(f"{W}[3].throttling.cpu.reactive: 0 is ")
    assert "would never resume" in s.warnings[2]
    throttle = Throttle.from_settings(s.workflow("a").throttling)
    assert (throttle.deactive, throttle.reactive) == (90, 60)


def _s3(**leader: Any) -> dict[str, Any]:
    steps = {
        "execute": {"playbook": "x"},
        "prepare": {"playbook": "p", "leaderElection": {"type": "aws-s3", **leader}},
    }
    return wf(steps=steps)


S3 = {"aws_s3": {"endpoints": [{"name": "mystorage", "bucket": "leases", "region": "eu-west-1"}]}}


def test_auth_endpoint_resolves_against_the_function_endpoints() -> None:
    s = parse_automation_settings(doc(_s3(path="locks/", authEndpoint="mystorage@aws_s3"), **S3))
    prepare = s.workflow("w").steps.prepare
    assert prepare is not None
    leader = prepare.leader_election
    assert leader.type == "aws-s3" and leader.lease_path("w") == "locks/w.txt"
    assert leader.auth_endpoint is not None
    assert str(leader.auth_endpoint) == "mystorage@aws_s3"
    assert leader.auth_endpoint.config["bucket"] == "leases"
    # endpoints may also be an object keyed by name
    keyed = {"aws_s3": {"endpoints": {"mystorage": {"bucket": "b"}}}}
    assert parse_automation_settings(doc(_s3(path="x", authEndpoint="mystorage@aws_s3"), **keyed))


@pytest.mark.parametrize(
    ("leader", "fragment"),
    [
        ({"path": "l/", "authEndpoint": "other@aws_s3"}, 'names endpoint "other" but'),
        ({"path": "l/", "authEndpoint": "mystorage"}, '"{endpoint}@{function}"'),
        ({"path": "l/", "authEndpoint": "@aws_s3"}, '"{endpoint}@{function}"'),
        ({"path": "l/"}, 'is required for "aws-s3"'),
        ({"authEndpoint": "mystorage@aws_s3"}, "path: is required"),
        ({"path": "", "authEndpoint": "mystorage@aws_s3"}, "path: must be a non-empty"),
    ],
)
def test_bad_s3_leader_election(leader: dict[str, Any], fragment: str) -> None:
    found = problems(doc(_s3(**leader), **S3))
    assert len(found) == 1 and fragment in found[0], found
    assert found[0].startswith(f"{W}[0].steps.prepare.leaderElection.")


def test_s3_endpoint_of_another_function_is_refused() -> None:
    other = {"gcs": {"endpoints": [{"name": "mystorage"}]}}
    found = problems(doc(_s3(path="l", authEndpoint="mystorage@gcs"), **other))
    assert found == [
        f'{W}[0].steps.prepare.leaderElection.authEndpoint: must name an "aws_s3" endpoint '
        'for "aws-s3", got "mystorage@gcs"'
    ]


def test_python_playbooks_and_paths() -> None:
    p = Playbook.parse("python:jobs.files:Mover.run")
    assert (p.kind, p.module, p.function, p.path) == ("python", "jobs.files", "Mover.run", None)
    assert Playbook.parse("playbooks/x.yml").kind == "ansible"
    for bad in ("python:", "python:a", "python:a:b:c", "python:1a:b", "python:a:", " "):
        with pytest.raises(AutomationSettingsError):
            Playbook.parse(bad)


def test_missing_playbook_files_warn_when_loaded_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "here.yml").write_text("---\n")
    data = doc(
        wf("a", steps={"execute": {"playbook": "here.yml"}, "complete": {"playbook": "gone.yml"}}),
        wf("b", steps={"execute": {"playbook": "python:mod:fn"}}),
    )
    file = tmp_path / "settings.json"
    file.write_text(json.dumps(data))
    s = load_automation_settings(file)
    assert s.base_dir == str(tmp_path)
    assert len(s.warnings) == 1
    assert s.warnings[0].startswith(f"{W}[0].steps.complete.playbook: playbook file")


def test_unreadable_or_invalid_json_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(AutomationSettingsError, match="cannot read the file"):
        load_automation_settings(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"functions": ')
    with pytest.raises(AutomationSettingsError, match="not valid JSON") as info:
        load_automation_settings(bad)
    assert len(info.value.problems) == 1 and str(bad) in str(info.value)


def test_cpu_average_basis_is_global() -> None:
    s = parse_automation_settings(doc(meta={"cpuAverage": {"interval": 2, "window": 18}}))
    assert s.meta.cpu_average.effective_alpha == pytest.approx(0.2)
    s = parse_automation_settings(doc(meta={"cpuAverage": {"alpha": 0.5}}))
    assert s.meta.cpu_average.effective_alpha == 0.5
    found = problems(doc(meta={"cpuAverage": {"alpha": 1.5, "window": 0}}))
    assert [p.split(":")[0] for p in found] == [
        "functions.backend.automation.meta.cpuAverage.window",
        "functions.backend.automation.meta.cpuAverage.alpha",
    ]


def test_operator_variable_precedence_workflow_then_step() -> None:
    data = doc(
        wf(
            vars={"a": "wf", "b": "wf", "c": "wf"},
            steps={
                "execute": {"playbook": "x", "vars": {"b": "step", "c": "step"}},
                "complete": {"playbook": "c"},
            },
        )
    )
    w = parse_automation_settings(data).workflow("w")
    # The operator's layers: workflow < step. Callers add data under other names only
    # (tests/automation/test_variables.py).
    assert w.step_vars("execute") == {"a": "wf", "b": "step", "c": "step"}
    assert w.step_vars("complete") == {"a": "wf", "b": "wf", "c": "wf"}
    assert w.step_vars("prepare") == {"a": "wf", "b": "wf", "c": "wf"}  # no prepare step
    assert merge_vars(None, {}, None) == {}
    layers = ({"x": {"deep": 1}}, {"x": {"other": 2}})
    assert merge_vars(*layers) == {"x": {"other": 2}}  # shallow, like Ansible extra vars
    assert layers[0] == {"x": {"deep": 1}}  # inputs untouched


def test_settings_are_frozen_and_inputs_not_mutated() -> None:
    data = doc(wf())
    before = copy.deepcopy(data)
    s = parse_automation_settings(data)
    assert data == before
    with pytest.raises(AttributeError):
        s.meta.enable = True  # type: ignore[misc]


def test_conveyor_extensions_of_meta_and_workflows() -> None:
    s = parse_automation_settings(
        doc(
            wf("a", mode="realtime", exposeOutput=True),
            wf("b"),
            meta={
                "workDir": "/srv/work",
                "realtime": {"perNode": 2},
                "runs": {"maxUnfinished": 5, "ttl": 60},
                "cpuAverage": {"minDwell": 0},
            },
        )
    )
    assert (s.workflow("a").mode, s.workflow("a").expose_output) == ("realtime", True)
    assert (s.workflow("b").mode, s.workflow("b").expose_output) == ("batch", False)
    assert s.meta.work_dir == "/srv/work"
    assert s.meta.realtime.per_node == 2
    assert (s.meta.runs.max_unfinished, s.meta.runs.ttl) == (5, 60.0)
    assert s.meta.cpu_average.min_dwell == 0
    defaults = parse_automation_settings(doc(wf("a")))
    assert defaults.meta.work_dir is None and defaults.meta.realtime.per_node == 4
    assert (defaults.meta.runs.max_unfinished, defaults.meta.runs.ttl) == (100, 86400.0)
    assert defaults.meta.cpu_average.min_dwell == 15.0


def test_bad_extension_values_name_their_path() -> None:
    found = problems(
        doc(
            wf("a", mode="fast", exposeOutput="yes"),
            meta={
                "workDir": "relative/dir",
                "realtime": {"perNode": 0},
                "runs": {"maxUnfinished": 1.5, "ttl": -1},
                "cpuAverage": {"minDwell": -2},
            },
        )
    )
    paths = sorted(p.split(":")[0] for p in found)
    assert paths == sorted(
        [
            "functions.backend.automation.meta.workDir",
            "functions.backend.automation.meta.cpuAverage.minDwell",
            "functions.backend.automation.meta.realtime.perNode",
            "functions.backend.automation.meta.runs.maxUnfinished",
            "functions.backend.automation.meta.runs.ttl",
            "functions.backend.automation.workflows[0].mode",
            "functions.backend.automation.workflows[0].exposeOutput",
        ]
    ), found


# -- hostile settings files: never a traceback, a clean error or success -------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@hsettings(max_examples=400, deadline=None)
@given(section=_JSON, workflows=st.lists(_JSON, max_size=3))
def test_fuzzed_documents_give_a_clean_error_or_settings(section: Any, workflows: Any) -> None:
    documents = [
        section,
        {"functions": {"backend": {"automation": section}}},
        {"functions": {"backend": {"automation": {"meta": section, "workflows": workflows}}}},
        {"functions": {"backend": {"automation": {"meta": {"enable": True}, "workflows": [
            {"name": "w", "steps": {"execute": {"playbook": "x"}, "prepare": section}}
        ]}}}},
    ]  # fmt: skip
    for document in documents:
        try:
            parse_automation_settings(document)
        except AutomationSettingsError as exc:
            assert exc.problems and all(isinstance(p, str) for p in exc.problems)


@hsettings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzzed_files_give_a_clean_error_or_settings(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "setting.json"
        path.write_bytes(raw)
        try:
            load_automation_settings(path)
        except AutomationSettingsError as exc:
            assert exc.problems


def test_deeply_nested_json_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "setting.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AutomationSettingsError, match="not valid JSON"):
        load_automation_settings(path)
