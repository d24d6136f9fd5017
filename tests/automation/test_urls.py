from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conveyor.automation import (
    WorkflowRequest,
    WorkflowUrlError,
    format_workflow_path,
    parse_task_line,
    parse_workflow_path,
)

BASE = "/automation/workflows/migrate_tmpimg"


def test_name_alone_runs_every_step_but_prepare_for_clients() -> None:
    assert parse_workflow_path(BASE) == WorkflowRequest("migrate_tmpimg")
    assert parse_workflow_path(BASE).steps == ("execute", "complete")
    assert parse_workflow_path(BASE + "/") == WorkflowRequest("migrate_tmpimg")
    own = parse_workflow_path(BASE, client=False)  # the master's own (cron) run
    assert own.steps == ("prepare", "execute", "complete")


def test_the_seed_example() -> None:
    r = parse_workflow_path(
        BASE + "/steps/prepare=false;complete=false;"
        "/vars/src_path=/tmp/source1.jpg;dest_path=/newdir/source1.jpg"
    )
    assert r.steps == ("execute",)
    assert dict(r.vars) == {"src_path": "/tmp/source1.jpg", "dest_path": "/newdir/source1.jpg"}


def test_values_keep_slashes_and_equals_and_only_the_first_equals_splits() -> None:
    r = parse_workflow_path(BASE + "/vars/q=a=b==c;p=/x/steps/y/vars/z;empty=;u=//")
    assert dict(r.vars) == {"q": "a=b==c", "p": "/x/steps/y/vars/z", "empty": "", "u": "//"}


def test_percent_escapes_are_decoded_after_splitting() -> None:
    r = parse_workflow_path(BASE + "/vars/a=x%3By;b=100%25;c=%ED%95%9C;d=50%;e=%zz")
    assert dict(r.vars) == {"a": "x;y", "b": "100%", "c": "한", "d": "50%", "e": "%zz"}


def test_steps_switches() -> None:
    r = parse_workflow_path(BASE + "/steps/prepare=true;execute=FALSE")
    assert r.steps == ("prepare", "complete")
    assert parse_workflow_path(BASE + "/steps/;;complete=false;;/").steps == ("execute",)
    assert parse_workflow_path(BASE + "/steps/").steps == ("execute", "complete")
    assert parse_workflow_path(BASE + "/steps").steps == ("execute", "complete")
    assert parse_workflow_path(BASE + "/vars").vars == {}


def test_custom_keyword() -> None:
    assert parse_workflow_path("/jobs/workflows/w", keyword="jobs").workflow == "w"
    with pytest.raises(WorkflowUrlError, match="/jobs/workflows/"):
        parse_workflow_path("/automation/workflows/w", keyword="jobs")


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("automation/workflows/w", "automation/workflows/w"),
        ("/other/workflows/w", "other"),
        ("/automation/workflow/w", "workflow"),
        ("/automation/workflows/", ""),
        ("/automation/workflows/bad%20name", "bad%20name"),
        ("/automation/workflows/w/run", "run"),
        ("/automation/workflows/w/steps/prepare=maybe", "prepare=maybe"),
        ("/automation/workflows/w/steps/prepare", "prepare"),
        ("/automation/workflows/w/steps/cleanup=true", "cleanup=true"),
        ("/automation/workflows/w/steps/complete=false;complete=true", "complete=true"),
        ("/automation/workflows/w/steps/execute=false;complete=false", "steps"),
        ("/automation/workflows/w/steps/x=1/foo", "x=1"),
        ("/automation/workflows/w/vars/novalue", "novalue"),
        ("/automation/workflows/w/vars/=1", "=1"),
        ("/automation/workflows/w/vars/1a=1", "1a=1"),
        ("/automation/workflows/w/vars/a=1;a=2", "a=2"),
        ("/automation/workflows/w/vars/a=%ff", "a=%ff"),
    ],
)
def test_bad_paths_name_the_segment(path: str, segment: str) -> None:
    with pytest.raises(WorkflowUrlError) as info:
        parse_workflow_path(path)
    if segment:
        assert info.value.segment == segment
        assert repr(segment) in str(info.value) or segment == "steps"


def test_vars_must_come_last() -> None:
    # after /vars/ everything is variables: a later /steps/ is part of a value, not a segment
    r = parse_workflow_path(BASE + "/vars/a=1/steps/prepare=true")
    assert dict(r.vars) == {"a": "1/steps/prepare=true"} and not r.prepare


def test_task_lines_from_a_prepare_file() -> None:
    for line in (
        "example.com/automation/workflows/migrate_tmpimg/vars/src_path=/tmp/s1.jpg;dest_path=/n/s1.jpg",
        "https://foo.com/automation/workflows/migrate_tmpimg/vars/src_path=/tmp/s1.jpg;dest_path=/n/s1.jpg\n",
        "  /automation/workflows/migrate_tmpimg/vars/src_path=/tmp/s1.jpg;dest_path=/n/s1.jpg  ",
    ):
        r = parse_task_line(line)
        assert r.steps == ("execute",)
        assert dict(r.vars) == {"src_path": "/tmp/s1.jpg", "dest_path": "/n/s1.jpg"}
    for bad in ("", "example.com", "https://example.com"):
        with pytest.raises(WorkflowUrlError):
            parse_task_line(bad)


def test_format_writes_readable_paths() -> None:
    path = format_workflow_path(
        "migrate_tmpimg",
        {"src_path": "/tmp/a b;c.jpg", "n": 3},
        steps={"prepare": False, "complete": False},
    )
    assert path == (
        BASE + "/steps/prepare=false;complete=false;/vars/src_path=/tmp/a%20b%3Bc.jpg;n=3"
    )
    with pytest.raises(WorkflowUrlError):
        format_workflow_path("bad name")
    with pytest.raises(WorkflowUrlError):
        format_workflow_path("w", {"1x": "v"})
    with pytest.raises(WorkflowUrlError):
        format_workflow_path("w", steps={"cleanup": True})


NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
KEYS = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}\Z")
# any Unicode text except lone surrogates (not encodable, so not in any URL)
VALUES = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@given(
    NAMES,
    st.dictionaries(KEYS, VALUES, max_size=5),
    st.dictionaries(st.sampled_from(["prepare", "execute", "complete"]), st.booleans()),
)
@example("w", {"a": "/x=y;z%41/vars/"}, {})
def test_any_values_round_trip(
    name: str, variables: dict[str, str], steps: dict[str, bool]
) -> None:
    on = {"prepare": False, "execute": True, "complete": True, **steps}
    path = format_workflow_path(name, variables, steps=steps)
    if not any(on.values()):
        with pytest.raises(WorkflowUrlError):
            parse_workflow_path(path)
        return
    r = parse_workflow_path(path)
    assert r.workflow == name and dict(r.vars) == variables
    assert (r.prepare, r.execute, r.complete) == (on["prepare"], on["execute"], on["complete"])
    assert parse_task_line("https://example.com" + path).vars == r.vars


@given(st.dictionaries(KEYS, st.text("/=abc", max_size=8), max_size=4))
def test_slash_and_equals_stay_literal(variables: dict[str, str]) -> None:
    path = format_workflow_path("w", variables)
    assert "%" not in path  # readable as in the seed: /tmp/x, a=b
    assert dict(parse_workflow_path(path).vars) == variables


SEGMENTS = st.sampled_from(
    ["automation", "workflows", "w", "steps", "vars", "prepare=false;", "a=b", "=", ";", "%", ""]
)


@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(st.one_of(SEGMENTS, st.text(max_size=6)), max_size=8).map(
            lambda parts: "/" + "/".join(parts)
        ),
    )
)
@example("/automation/workflows/w/vars/a=%C0%80")
@example("/automation/workflows/%ED%A0%80")
def test_fuzzed_paths_raise_only_the_url_error(path: str) -> None:
    try:
        r = parse_workflow_path(path)
    except WorkflowUrlError as exc:
        assert str(exc)
    else:
        assert r.workflow and r.steps
        assert all(isinstance(v, str) for v in r.vars.values())


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(max_size=120),
        st.lists(st.one_of(SEGMENTS, st.text(max_size=8)), max_size=8).map(
            lambda parts: "example.com/" + "/".join(parts)
        ),
        st.lists(st.one_of(SEGMENTS, st.text(max_size=8)), max_size=8).map(
            lambda parts: "https://h/" + "/".join(parts)
        ),
    )
)
@example("://")
@example("https://")
@example("/automation/workflows/w/vars/a=%ED%A0%80")
def test_fuzzed_task_lines_raise_only_the_url_error(line: str) -> None:
    """A prepare file is written from data (file names): any line is a task or a clean error."""
    try:
        r = parse_task_line(line)
    except WorkflowUrlError as exc:
        assert str(exc)
    else:
        assert r.workflow and r.steps == ("execute",)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in r.vars.items())
