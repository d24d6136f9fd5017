"""The scrubber (conveyor.logs.scrub) against secrets in every shape they reach a log line:
``key=value``, ``key: value``, JSON and Python-repr pairs (quoted values with spaces and
escapes), URL user info and query strings, header lines; for every secret word. And uvicorn's
request lines lose the client address and the query string."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conveyor.logs import scrub
from conveyor.logs.config import RequestLineFilter, make_formatter

KEYS = [
    "pass",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "password",
    "db_pass",
    "DB_PASSWORD",
    "x-api-key",
    "client_secret",
    "Access-Token",
]
#: Shapes a key and a value take in text; ``{k}`` the key, ``{v}`` the value.
BARE_SHAPES = [
    "{k}={v}",
    "{k}: {v}",
    "{k} = {v}",
    "https://host/path?page=2&{k}={v}&x=1",
    "cmd --flag {k}={v} --other",
]
QUOTED_SHAPES = [
    '{{"{k}": "{v}", "n": 1}}',
    "{{'{k}': '{v}', 'n': 1}}",
    '{k}="{v}"',
    "{k}: '{v}'",
]
#: A value has letters and digits (and, when quoted, spaces, quotes and backslashes).
BARE_VALUE = st.text("abcdefghijKLMNOP0123456789-_.~+/", min_size=4, max_size=30)
QUOTED_VALUE = st.text("abcdefghijKLMNOP0123456789 -_.,;:&}", min_size=4, max_size=30)


def survives(value: str, text: str) -> bool:
    return value in scrub.Scrubber().scrub_text(text)


@hsettings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), shape=st.sampled_from(BARE_SHAPES), value=BARE_VALUE)
def test_bare_values_never_survive(key: str, shape: str, value: str) -> None:
    text = "before " + shape.format(k=key, v="Zq" + value) + " after"
    assert not survives("Zq" + value, text), text


@hsettings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), shape=st.sampled_from(QUOTED_SHAPES), value=QUOTED_VALUE)
def test_quoted_values_survive_in_no_part(key: str, shape: str, value: str) -> None:
    text = "got " + shape.format(k=key, v="Zq" + value) + " done"
    out = scrub.Scrubber().scrub_text(text)
    for part in ("Zq" + value).split():
        if len(part) >= 3:
            assert part not in out, (text, out)


@hsettings(max_examples=200, deadline=None)
@given(
    value=st.text("abcdefKLMN0123 \\\"'", min_size=4, max_size=30).map(lambda v: "Zq" + v),
    key=st.sampled_from(KEYS),
)
def test_json_encoded_values_never_survive(key: str, value: str) -> None:
    text = json.dumps({key: value, "other": 1})  # escapes quotes and backslashes
    out = scrub.Scrubber().scrub_text(text)
    assert all(part not in out for part in value.split() if len(part) >= 4), (text, out)
    assert json.loads(out)["other"] == 1  # still valid JSON


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Basic ZqdXNlcjpwYXNzd29yZA==",
        "authorization: Zqsecretvalue Zqsecondword",
        "Proxy-Authorization: Digest username=Zqx, response=Zqsecretvalue",
        "Cookie: conveyor_session=Zqsecretvalue; theme=Zqdark",
        "Set-Cookie: sid=Zqsecretvalue; Path=/Zq; HttpOnly",
        "X-Api-Key: Zqsecretvalue Zqsecondword",
        "X-Auth-Token: Zqsecretvalue",
    ],
)
def test_header_lines_lose_their_whole_value(line: str) -> None:
    out = scrub.Scrubber().scrub_text(f"request headers:\n{line}\nAccept: text/html")
    name = line.split(":", maxsplit=1)[0]
    assert f"{name}: [redacted]" in out and "Accept: text/html" in out
    assert "Zq" not in out, out


@hsettings(max_examples=200, deadline=None)
@given(
    user=BARE_VALUE,
    password=st.text("abcKLM012/@:?#", min_size=4, max_size=20),
    scheme=st.sampled_from(["redis", "https", "amqp"]),
)
def test_url_user_info_never_survives(user: str, password: str, scheme: str) -> None:
    out = scrub.Scrubber().scrub_text(f"connect {scheme}://Zq{user}:Zy{password}@host:1/0 ok")
    assert f"Zq{user}" not in out and f"Zy{password}" not in out
    # A raw "?" or "#" reads as the start of a query, and the "@" after it could as well be a
    # query option's value: then more is redacted (no reading may leave a piece of a secret).
    if "?" not in password and "#" not in password:
        assert "@host:1/0 ok" in out


def test_words_that_merely_contain_pass_are_kept() -> None:
    text = "passed=12 bypass=on compass=north passage=3 tokens_used: 4 Basic authentication is off"
    out = scrub.Scrubber().scrub_text(text)
    assert out.startswith("passed=12 bypass=on compass=north passage=3")
    assert "Basic authentication is off" in out


def test_mapping_keys_named_pass_or_pwd_are_secret() -> None:
    clean = scrub.Scrubber().scrub_mapping(
        {"pass": "a", "db_pwd": "b", "smtp.pass": "c", "passed": 3, "bypass": "on"}
    )
    assert clean == {
        "pass": "[redacted]",
        "db_pwd": "[redacted]",
        "smtp.pass": "[redacted]",
        "passed": 3,
        "bypass": "on",
    }


def test_uvicorn_request_lines_lose_the_client_and_the_query() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter("json"))
    handler.addFilter(RequestLineFilter())
    fmt = '%s - "%s %s HTTP/%s" %d'
    args = ("198.51.100.23:40000", "GET", "/api/queues/x/jobs?user=ada&page=2", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, fmt, args, None)
    handler.handle(record)
    event = json.loads(stream.getvalue())["event"]
    assert event == '- - "GET /api/queues/x/jobs HTTP/1.1" 200'
