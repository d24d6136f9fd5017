from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.payload import check_args, dumps, malformed_record, new_jid, parse, quarantine
from conveyor.errors import PayloadError, SerializationError
from conveyor.redis import decode_raw

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def test_jid_is_24_lowercase_hex_and_unique() -> None:
    jids = {new_jid() for _ in range(1000)}
    assert len(jids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{24}", j) for j in jids)


@given(st.lists(json_values, max_size=5))
def test_json_native_args_survive_a_round_trip(args: list[object]) -> None:
    checked = check_args(args, "Job")
    assert json.loads(dumps({"args": checked}))["args"] == checked


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([dt.datetime(2024, 1, 1)], "args[0] is a datetime.datetime"),
        ([1, {"when": {1, 2}}], "args[1]['when'] is a builtins.set"),
        ([float("nan")], "args[0] is nan"),
        ([{1: "x"}], "non-string key 1"),
        ([[object()]], "args[0][0] is a builtins.object"),
    ],
)
def test_non_json_args_are_refused_naming_the_value(args: list[object], fragment: str) -> None:
    with pytest.raises(SerializationError) as info:
        check_args(args, "Mailer")
    assert "Mailer" in str(info.value)
    assert fragment in str(info.value)


def test_args_must_be_a_list() -> None:
    with pytest.raises(SerializationError, match="args must be a list"):
        check_args("abc", "Job")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('{"args": []}', "lacks required field(s) class"),
        ('{"class": "X"}', "lacks required field(s) args"),
        ('{"class": "X", "args": {}}', "'args' must be a list"),
        ('{"class": 5, "args": []}', "'class' must be a non-empty string"),
    ],
)
def test_parse_rejects_what_is_not_a_job(raw: str, fragment: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(fragment)):
        parse(raw)


def test_parse_keeps_unknown_fields() -> None:
    raw = '{"class":"X","args":[1],"bid":"b-1","custom":{"a":[1,2]}}'
    job = parse(raw)
    assert job["bid"] == "b-1" and job["custom"] == {"a": [1, 2]}
    assert json.loads(dumps(job)) == json.loads(raw)


def test_malformed_record_keeps_an_object_and_wraps_text() -> None:
    kept = malformed_record('{"args": [1], "x": 1}', "q", "lacks class", 10.0)
    assert kept["x"] == 1 and kept["queue"] == "q" and kept["error_message"] == "lacks class"
    wrapped = malformed_record("garbage", "q", "not JSON", 10.0)
    assert wrapped["args"] == ["garbage"] and wrapped["class"] == "Conveyor::MalformedPayload"
    assert wrapped["failed_at"] == 10.0 and wrapped["retry"] is False


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip(value: float) -> None:
    assert json.loads(dumps({"x": value}))["x"] == value


def test_floats_are_written_as_ruby_writes_them() -> None:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed: cannot compare with Ruby's JSON")
    rng = random.Random(7)
    values = [0.0, -0.0, 1e-4, 1e-5, 1e15, 1e16, 999999999999999.9, 123.456, 1.5e300, 5e-324]
    values += [rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for _ in range(300)]
    ours = dumps(values)
    ruby = subprocess.run(
        ["ruby", "-rjson", "-e", "puts JSON.generate(JSON.parse(STDIN.read))"],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert ours == ruby


def test_a_string_that_looks_like_a_marker_is_left_alone() -> None:
    job = {"args": ["\x00cvf:1\x00", 1e20], "s": "1e+5 and 1234567890123456.7"}
    assert json.loads(dumps(job)) == job


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"class":"A","args":[NaN]}', "NaN is not a number"),
        ('{"class":"A","args":[-Infinity]}', "-Infinity is not a number"),
        ('{"class":"A","args":[1e999]}', "overflows a 64-bit float"),
        ("[" * 100_000 + "]" * 100_000, "nested more than 100 levels"),
        ('{"class":"A","args":' + "[" * 101 + "]" * 101 + "}", "nested more than 100 levels"),
        ('{"class":"A","args":["\\udcff"]}', "lone UTF-16 surrogate"),
        (decode_raw(b'{"class":"A","args":["\xff"]}'), "not valid UTF-8"),
    ],
    ids=["nan", "-inf", "1e999", "recursion", "depth-101", "surrogate", "utf8"],
)
def test_parse_refuses_what_cannot_be_written_back(raw: str, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        parse(raw)


def test_parse_accepts_depth_100_and_surrogate_pairs() -> None:
    nested = "[" * 99 + "]" * 99  # the object itself is the 100th level
    assert parse('{"class":"A","args":' + nested + "}")["class"] == "A"
    assert parse('{"class":"A","args":["\\ud83d\\ude00"]}')["args"] == ["\U0001f600"]


def test_dumps_escapes_lone_surrogates_so_redis_can_take_it() -> None:
    text = dumps({"error_message": os.fsdecode(b"report-\xff.csv"), "n": 1e16})
    assert text.encode("utf-8") and json.loads(text)["error_message"] == "report-\udcff.csv"
    assert '"n":1.0e+16' in text  # still written as Ruby writes floats


def test_malformed_record_keeps_invalid_utf8_as_base64() -> None:
    raw = b"\xff\xfe not json"
    record = malformed_record(decode_raw(raw), "q", "payload is not valid UTF-8", 5.0)
    assert base64.b64decode(record["raw_base64"]) == raw and record["args"] == []
    assert quarantine(decode_raw(raw), "q", "x", 5.0).encode("utf-8")


def test_check_args_refuses_nesting_workers_would_refuse() -> None:
    deep: list[object] = []
    for _ in range(120):
        deep = [deep]
    with pytest.raises(SerializationError, match="more than 100 levels deep"):
        check_args([deep], "Job")
