"""conveyor.logs: one JSON (or text) pipeline for structlog and stdlib loggers, personal data
scrubbed from every line, and the import logging contract (SPEC IMP-2)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import structlog
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from support import ROOT, StartProcess, run_burst, wait_for
from support.logs import Captured, log_pipeline

from conveyor import App, Settings, logs, pytest_plugin
from conveyor.errors import ConfigurationError, MissingLogContext
from conveyor.logs import scrub

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


@pytest.fixture
def pipeline() -> Iterator[Callable[..., Captured]]:
    """``pipeline(fmt="json", **settings)``: conveyor.logs onto a buffer, put back after."""
    with log_pipeline() as configure:
        yield configure


# -- shape --------------------------------------------------------------------------------------
def test_structlog_and_stdlib_lines_are_one_json_object_each(
    pipeline: Callable[..., Captured],
) -> None:
    out = pipeline("json")
    logging.getLogger("conveyor.worker").info("worker %s started", "w-1")
    logs.get_logger("conveyor.imports").warning("stage done", stage="issues", count=3)
    structlog.get_logger("myapp").info("app line", answer=42)
    lines = out.lines()
    assert [line["event"] for line in lines] == ["worker w-1 started", "stage done", "app line"]
    assert [line["logger"] for line in lines] == [
        "conveyor.worker",
        "conveyor.imports",
        "myapp",
    ]
    assert [line["level"] for line in lines] == ["info", "warning", "info"]
    for line in lines:
        assert ISO_UTC.match(line["timestamp"]), line
        assert line["pid"] == os.getpid()
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert lines[1]["stage"] == "issues" and lines[1]["count"] == 3
    assert lines[2]["answer"] == 42


def test_levels_below_the_setting_are_dropped(pipeline: Callable[..., Captured]) -> None:
    stream = io.StringIO()
    logs.configure(Settings(log_format="json", log_level="WARNING"), stream=stream)
    logging.getLogger("conveyor.x").info("quiet")
    logging.getLogger("conveyor.x").warning("loud")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_configure_again_replaces_its_own_handler_only(pipeline: Callable[..., Captured]) -> None:
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    try:
        first = pipeline("json")
        second = pipeline("json")
        logging.getLogger("conveyor.x").warning("once")
        assert first.text == "" and len(second.lines()) == 1
        assert other in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(other)


def test_job_lines_carry_jid_class_queue_and_worker(
    pipeline: Callable[..., Captured], app: App, r: redis.Redis
) -> None:
    out = pipeline("json")

    @app.job()
    def notify(address: str) -> None:
        logging.getLogger("tests.jobs").warning("notifying %s", address)

    jid = notify.perform_async("someone@example.com").jid
    logs.bind_process(worker="host-1:99")
    run_burst(app)
    lines = [line for line in out.lines() if line["logger"] == "tests.jobs"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["jid"], line["class"], line["queue"]) == (jid, "notify", "default")
    assert line["worker"] == "host-1:99"
    assert line["event"] == "notifying [email]"
    assert "someone@example.com" not in out.text


# -- scrubbing ----------------------------------------------------------------------------------
def test_emails_tokens_and_credentials_are_scrubbed_from_text() -> None:
    s = scrub.Scrubber()
    text = (
        "to ada@example.com cc <B.O-B+x@mail.example.co.uk>; Authorization: Bearer abc.DEF-123_x; "
        "url https://alice:pw0rd@git.example.com/repo?token=s3cr3t&page=2 password=hunter2 "
        "key ghp_0123456789abcdefghijABCDEFGHIJ012345 aws AKIAABCDEFGHIJKLMNOP "
        "hmac 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 "
        "b64 QWxhZGRpbjpvcGVuIHNlc2FtZQ8xYjJjM2Q0ZTVmNmc3aDhpOWo "
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcDEF123_-xyz"
    )
    out = s.scrub_text(text)
    for secret in (
        "ada@example.com",
        "B.O-B+x@mail.example.co.uk",
        "abc.DEF-123_x",
        "alice",
        "pw0rd",
        "s3cr3t",
        "hunter2",
        "ghp_0123456789",
        "AKIAABCDEFGHIJKLMNOP",
        "9f86d081884c7d659a2f",
        "QWxhZGRpbjpvcGVu",
        "eyJhbGciOiJIUzI1NiJ9",
    ):
        assert secret not in out, (secret, out)
    assert out.count("[email]") == 2
    assert "page=2" in out and "git.example.com/repo" in out  # the rest stays readable


def test_identifiers_are_kept() -> None:
    s = scrub.Scrubber()
    text = (
        "job 3f2a0c9e1b7d4a5f6e8d9c0b stage issues uuid 123e4567-e89b-12d3-a456-426614174000 "
        "hex 0123456789abcdef0123456789abcdef queue critical conveyor.jobs.SendReport; "
        "Basic authentication is off, digest mismatch, token expired"
    )
    assert s.scrub_text(text) == text


def test_personal_and_secret_keys_are_redacted_at_any_depth() -> None:
    s = scrub.Scrubber()
    event = {
        "event": "imported",
        "username": "ada_l",
        "Author": {"id": 7, "name": "Ada L", "login": "ada_l"},
        "records": [{"email": "x@y.io", "id": 1}, ("assignee", {"user": "bob"})],
        "X-Api-Key": "abc",
        "db_password": 1234,
        "headers": {"Cookie": "sid=1", "Accept": "json"},
        "count": 3,
        "missing": None,
    }
    clean = s.scrub_mapping(event)
    assert clean == {
        "event": "imported",
        "username": "[redacted]",
        "Author": {"id": 7, "name": "[redacted]", "login": "[redacted]"},
        "records": [{"email": "[email]", "id": 1}, ["assignee", {"user": "[redacted]"}]],
        "X-Api-Key": "[redacted]",
        "db_password": "[redacted]",
        "headers": {"Cookie": "[redacted]", "Accept": "json"},
        "count": 3,
        "missing": None,
    }


def test_keys_objects_and_bytes_are_scrubbed_as_text() -> None:
    class Person:
        def __str__(self) -> str:
            return "Person(ada@example.com)"

    clean = scrub.Scrubber().scrub_mapping(
        {"by_mail": {"ada@example.com": 2}, "who": Person(), "raw": b"from bob@example.org"}
    )
    assert clean == {
        "by_mail": {"[email]": 2},
        "who": "Person([email])",
        "raw": "from [email]",
    }


def test_registered_personal_keys_are_redacted(pipeline: Callable[..., Captured]) -> None:
    out = pipeline("json")
    log = logs.get_logger("conveyor.test")
    log.info("before", reviewer_logon="zed")
    logs.register_personal_keys("reviewer-logon")
    log.info("after", reviewer_logon="zed", nested={"Reviewer_Logon": "zed"})
    before, after = out.lines()
    assert before["reviewer_logon"] == "zed"
    assert after["reviewer_logon"] == "[redacted]"
    assert after["nested"] == {"Reviewer_Logon": "[redacted]"}
    assert "reviewer_logon" in logs.default_scrubber().personal_keys


def test_exception_messages_and_tracebacks_are_scrubbed(
    pipeline: Callable[..., Captured],
) -> None:
    out = pipeline("json")

    def fail() -> None:
        address = "carol@example.net"
        raise ValueError(f"no account for {address}, token=abcd1234efgh")

    for logger in (logging.getLogger("conveyor.std"), logs.get_logger("conveyor.sl")):
        try:
            fail()
        except ValueError as exc:
            logger.exception("failed: %s", exc)
    lines = out.lines()
    assert len(lines) == 2
    for line in lines:
        assert line["event"] == "failed: no account for [email], token=[redacted]"
        assert "Traceback (most recent call last)" in line["exception"]
        assert "ValueError: no account for [email], token=[redacted]" in line["exception"]
    assert "carol@" not in out.text and "abcd1234efgh" not in out.text


def test_hash_option_gives_stable_keyed_tags(pipeline: Callable[..., Captured]) -> None:
    out = pipeline("json")
    logs.configure(Settings(log_format="json"), stream=out.stream, hash_key="deployment-secret-1")
    log = logging.getLogger("conveyor.h")
    log.warning("a ada@example.com")
    log.warning("b ada@example.com")
    log.warning("c bob@example.com")
    tags = [re.search(r"\[email:([0-9a-f]{8})\]", line["event"]) for line in out.lines()]
    assert all(tags)
    first, second, third = (tag.group(1) for tag in tags if tag)
    assert first == second != third
    other = scrub.Scrubber(hash_key=b"another-key").scrub_text("ada@example.com")
    assert other != f"[email:{first}]" and other.startswith("[email:")


def test_the_scrubber_never_raises(pipeline: Callable[..., Captured]) -> None:
    out = pipeline("json")

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    logs.get_logger("conveyor.x").warning("odd value", value=Hostile())
    logging.getLogger("conveyor.x").warning("odd arg", extra={"value": Hostile()})
    lines = out.lines()
    assert len(lines) == 2
    for line in lines:
        assert line["event"].startswith("[log line dropped: scrubbing failed with RuntimeError")
        assert line["level"] == "warning" and ISO_UTC.match(line["timestamp"])


@hsettings(max_examples=300, deadline=None)
@given(
    before=st.text(max_size=40),
    address=st.emails(),
    after=st.text(max_size=40),
)
def test_random_emails_in_random_text_never_survive(before: str, address: str, after: str) -> None:
    scrubber = scrub.Scrubber()
    for text in (f"{before}{address}{after}", f"{before} {address} {after}", address):
        clean = scrubber.scrub_text(text)
        assert address not in clean and address.lower() not in clean.lower()
    nested = scrubber.scrub_mapping({"k": [{"deep": f"{before}<{address}>{after}"}]})
    assert address not in json.dumps(nested, ensure_ascii=False)


@hsettings(max_examples=50, deadline=None)
@given(address=st.emails(), words=st.lists(st.text(min_size=1, max_size=10), max_size=4))
def test_random_emails_never_reach_a_json_line(address: str, words: list[str]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.make_formatter("json"))
    logger = logging.getLogger("conveyor.hypothesis")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("%s wrote %s", " ".join(words), address, extra={"contact": [address]})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = stream.getvalue()
    assert address not in line and address not in json.loads(line)["event"]


# -- import logging contract ----------------------------------------------------------------------
def test_import_lines_carry_importer_ids_and_status(pipeline: Callable[..., Captured]) -> None:
    out = pipeline("json")
    log = logs.import_logger("project_export", "imp-1", project_id=5)
    log.info("stage started", stage="issues", status="running")
    logs.log_record(log, "issue", 42, "imported", stage="issues")
    logs.log_record(log, "comment", "c-9", "failed", error="ValueError")
    started, record, failed = out.lines()
    for line in (started, record, failed):
        assert (line["importer"], line["import_id"], line["project_id"]) == (
            "project_export",
            "imp-1",
            5,
        )
        assert line["logger"] == "conveyor.imports"
        assert not any(key.startswith("_conveyor") for key in line)
    assert started["status"] == "running"
    assert (record["event"], record["record_type"], record["record_id"], record["status"]) == (
        "record",
        "issue",
        42,
        "imported",
    )
    assert record["level"] == "info" and failed["level"] == "warning"


@pytest.mark.parametrize("env", ["test", "development"])
def test_missing_ids_raise_in_test_and_development_mode(
    pipeline: Callable[..., Captured], env: str
) -> None:
    out = pipeline("json", env=env)
    log = logs.import_logger("project_export", "imp-1", project_id=None)
    with pytest.raises(MissingLogContext) as caught:
        log.info("stage started", status="running")
    assert caught.value.missing == ("project_id",)
    assert "'stage started' lacks project_id" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)

    log = logs.import_logger("project_export", "")
    with pytest.raises(MissingLogContext) as caught:
        log.info("stage started")
    assert caught.value.missing == ("import_id", "status")
    with pytest.raises(MissingLogContext, match="lacks record_id"):
        logs.log_record(logs.import_logger("p", "imp-2"), "issue", None, "imported")
    assert out.text == ""  # nothing half-logged


def test_missing_ids_are_flagged_not_raised_in_production(
    pipeline: Callable[..., Captured],
) -> None:
    out = pipeline("json", env="production")
    log = logs.import_logger("project_export", "imp-1", project_id=None)
    log.info("stage started")
    logs.log_record(log, "issue", None, "imported")
    first, second = out.lines()
    assert first["missing_context"] == ["status", "project_id"]
    assert second["missing_context"] == ["project_id", "record_id"]


def test_environment_comes_from_conveyor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = logs.set_environment(None)
    try:
        monkeypatch.setenv("CONVEYOR_ENV", "production")
        assert logs.environment() == "production" and not logs.strict()
        monkeypatch.setenv("CONVEYOR_ENV", "development")
        assert logs.strict()
        monkeypatch.setenv("CONVEYOR_ENV", "staging")  # unknown: never break production logs
        assert logs.environment() == "production"
        monkeypatch.delenv("CONVEYOR_ENV")
        assert logs.environment() == "production"
    finally:
        logs.set_environment(previous)
    with pytest.raises(ConfigurationError, match="'qa' is not one of"):
        logs.set_environment("qa")


def test_the_pytest_plugin_sets_test_mode_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config
) -> None:
    monkeypatch.delenv("CONVEYOR_ENV", raising=False)
    pytest_plugin.pytest_configure(pytestconfig)
    assert os.environ["CONVEYOR_ENV"] == "test"
    monkeypatch.setenv("CONVEYOR_ENV", "production")
    pytest_plugin.pytest_configure(pytestconfig)
    assert os.environ["CONVEYOR_ENV"] == "production"


# -- text mode and settings -----------------------------------------------------------------------
def test_text_mode_is_readable_and_scrubbed(pipeline: Callable[..., Captured]) -> None:
    out = pipeline("text")
    logging.getLogger("conveyor.worker").warning("mail to ada@example.com bounced")
    logs.get_logger("conveyor.imports").info("stage", stage="issues", username="ada")
    first, second = out.text.splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[warning\s*\] mail to \[email\] bounced", first)
    assert "[conveyor.worker]" in first
    assert "stage=issues" in second and "username=[redacted]" in second
    assert "ada@" not in out.text and "{" not in out.text


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Tty()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("json", Tty()) == "json"


def test_log_settings_from_environment_and_validation() -> None:
    loaded = Settings.load(
        env={"CONVEYOR_LOG_FORMAT": "text", "CONVEYOR_LOG_LEVEL": "debug", "CONVEYOR_ENV": "test"}
    )
    assert (loaded.log_format, loaded.log_level, loaded.env) == ("text", "debug", "test")
    with pytest.raises(ConfigurationError, match="log_format must be auto, json or text"):
        Settings(log_format="xml")
    with pytest.raises(ConfigurationError, match="log_level must be"):
        Settings(log_level="LOUD")
    with pytest.raises(ConfigurationError, match="env must be development, test or production"):
        Settings(env="staging")


# -- a real worker process ------------------------------------------------------------------------
LOG_APP = textwrap.dedent(
    """
    import logging
    from conveyor import App
    from conveyor.logs import import_logger, log_record

    app = App()

    @app.job(retry=False)
    def welcome(user_id, address):
        logging.getLogger("log_app").info("welcoming %s", address)
        log = import_logger("demo", "imp-7")
        log_record(log, "user", user_id, "imported")
        raise RuntimeError("mailbox " + address + " is full")
    """
)


def test_worker_process_writes_scrubbed_json_lines(
    processes: StartProcess, redis_url: str, tmp_path: Path, settings: Settings
) -> None:
    (tmp_path / "log_app.py").write_text(LOG_APP)
    app = App(settings)
    app.enqueue("welcome", 7, "dora@example.com")
    app.close()
    path = os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "tests")])
    proc = processes(
        "-m",
        "conveyor.cli",
        "worker",
        "-r",
        "log_app",
        "--burst",
        CONVEYOR_REDIS_URL=redis_url,
        PYTHONPATH=path,
    )
    wait_for(lambda: proc.poll() is not None, timeout=60)
    text = (tmp_path / "proc-0.log").read_text()
    assert proc.returncode == 0, text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert "dora@example.com" not in text
    started = next(line for line in lines if line["event"].startswith("worker "))
    identity = started["worker"]
    assert identity and all(line["worker"] == identity for line in lines)
    welcome = next(line for line in lines if line["logger"] == "log_app")
    assert welcome["event"] == "welcoming [email]"
    assert welcome["class"] == "welcome" and welcome["queue"] == "default" and welcome["jid"]
    record = next(line for line in lines if line["logger"] == "conveyor.imports")
    assert (record["importer"], record["import_id"], record["record_id"]) == ("demo", "imp-7", 7)
    assert record["jid"] == welcome["jid"]


def test_uvicorn_lines_lose_their_colour_copy_and_keep_the_message() -> None:
    import io
    import logging

    from conveyor.logs.config import make_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter("json"))
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started %d", (7,), None)
    record.color_message = "Started \x1b[36m%d\x1b[0m"
    handler.emit(record)
    line = json.loads(stream.getvalue())
    assert line["event"] == "Started 7" and "color_message" not in line


def test_the_hint_fixes_what_is_missing(pipeline: Callable[..., Captured]) -> None:
    """MissingLogContext always suggested passing ``status`` (issue 19)."""
    pipeline("json", env="test")
    with pytest.raises(MissingLogContext) as caught:
        logs.import_logger("project_export", None).info("stage started", status="running")
    hint = str(caught.value)
    assert "give import_id to import_logger(importer, import_id)" in hint
    assert "status=" not in hint
    with pytest.raises(MissingLogContext) as caught:
        logs.log_record(logs.import_logger("p", "imp-2"), "issue", None, "imported")
    assert "log_record(log, record_type, record_id, status)" in str(caught.value)
    assert "status=" not in str(caught.value)
    with pytest.raises(MissingLogContext) as caught:
        logs.import_logger("p", "imp-3").info("stage started")
    assert "log.info('stage started', status='running')" in str(caught.value)
    with pytest.raises(MissingLogContext) as caught:
        logs.import_logger("p", "imp-4", project_id=None).info("x", status="running")
    assert "pass project_id on the call" in str(caught.value)
