"""The toolkit with a small importer of its own and an injected clock: the stuck detector
(SPEC IMP-7), the cache TTL and refetch (IMP-4), progress pointers (IMP-5), retryable and
non-retryable record errors (IMP-3) and the pending set that advances stages (no waiting)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from support import run_burst, wait_for

from conveyor import App, FakeClock, Settings
from conveyor.errors import ImportPipelineError, NotFoundError, RecordError
from conveyor.features.cron import Cron
from conveyor.features.imports import (
    ImportCache,
    Importer,
    Imports,
    ImportSettings,
    ImportState,
    RecordRef,
    StageRun,
    is_importing,
)
from conveyor.features.imports.model import error_message
from conveyor.features.imports.pipeline import STUCK_CRON


class ListImporter(Importer):
    """Imports ``options["items"]`` into the Redis hash ``imported``: ``load`` walks the items
    with a cursor, ``items`` fans out into record jobs, ``done`` does nothing."""

    name = "list"
    stages = ("load", "items", "done")
    record_stages = frozenset({"items"})

    def __init__(self, side: redis.Redis) -> None:
        super().__init__()
        self.side = side
        self.flags: list[bool] = []

    def run_stage(self, run: StageRun) -> None:
        if run.stage == "load":
            start = int(run.cursor() or 0)
            items = run.options["items"]
            for i in range(start, len(items)):
                self.side.rpush("loaded", items[i])
                run.save_cursor(str(i + 1))
                if items[i] == "crash-once" and not self.side.getset("crashed", "1"):
                    raise RuntimeError("interrupted")

    def records(self, run: StageRun) -> Iterator[tuple[RecordRef, str]]:
        items = run.options["items"]
        for i in range(int(run.cursor() or 0), len(items)):
            yield RecordRef(str(i), items[i]), str(i + 1)

    def import_record(self, run: StageRun, ref: RecordRef) -> None:
        self.flags.append(is_importing())
        if ref.locator == "bad":
            raise ValueError("record 3 has no title")
        if ref.locator == "flaky":
            raise RecordError("database locked", retryable=True)
        self.side.hincrby("imported", ref.locator, 1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def setup(
    settings: Settings, clock: FakeClock, r: redis.Redis
) -> Iterator[tuple[Imports, ListImporter]]:
    app = App(settings.replace(queues="imports"), clock=clock)
    imports = Imports(app, ImportSettings(stuck_after=600, record_retry=0, record_concurrency=100))
    importer = ListImporter(r)
    imports.register(importer)
    yield imports, importer
    app.close()


def test_stages_advance_when_their_last_job_ends(
    setup: tuple[Imports, ListImporter], r: redis.Redis
) -> None:
    imports, importer = setup
    import_id = imports.start("list", {"items": ["a", "b", "bad", "c", "flaky"]})
    run_burst(imports.app)
    state = imports.get(import_id)
    assert state.status == "finished"
    assert r.hgetall("imported") == {"a": "1", "b": "1", "c": "1"}
    assert all(importer.flags), "record jobs run with the importing flag set"
    failures = {f.record_id: f for f in imports.failures(import_id)}
    assert set(failures) == {"2", "4"}
    assert (failures["2"].error_class, failures["2"].retryable) == ("ValueError", False)
    assert failures["2"].message == "record 3 has no title"
    assert failures["4"].retryable, "a retryable error out of retries is recorded as such"
    items = next(s for s in state.stages if s.name == "items")
    assert (items.total, items.done, items.failed) == (5, 5, 2)
    assert r.scard(imports.app.store.keys.import_pending(import_id, "items")) == 0


def test_a_redelivered_record_is_counted_once(setup: tuple[Imports, ListImporter]) -> None:
    imports, _ = setup
    import_id = imports.start("list", {"items": ["a", "b"]})
    imports.run_stage(import_id, "load")
    imports.run_stage(import_id, "items")
    imports.run_record(import_id, "items", "0", "a")
    imports.run_record(import_id, "items", "0", "a")  # the same job delivered twice
    items = next(s for s in imports.get(import_id).stages if s.name == "items")
    assert (items.total, items.done) == (2, 1)
    imports.run_stage(import_id, "items")  # the stage job again: nothing counted twice
    items = next(s for s in imports.get(import_id).stages if s.name == "items")
    assert (items.total, items.done) == (2, 1)
    imports.run_record(import_id, "items", "1", "b")
    assert imports.get(import_id).stage == "done"


def test_a_stage_job_resumes_from_its_cursor(
    setup: tuple[Imports, ListImporter], r: redis.Redis
) -> None:
    imports, _ = setup
    import_id = imports.start("list", {"items": ["a", "crash-once", "b", "c"]})
    with pytest.raises(RuntimeError):
        imports.run_stage(import_id, "load")
    assert r.lrange("loaded", 0, -1) == ["a", "crash-once"]
    imports.run_stage(import_id, "load")
    assert r.lrange("loaded", 0, -1) == ["a", "crash-once", "b", "c"], "continued, not restarted"
    assert imports.get(import_id).stage == "items"


def test_stuck_detector_fails_a_stalled_import_not_a_slow_one(
    setup: tuple[Imports, ListImporter], clock: FakeClock
) -> None:
    imports, _ = setup
    stalled = imports.start("list", {"items": ["a"]})
    slow = imports.start("list", {"items": ["a", "b", "c", "d"]})
    for step in range(1, 5):  # the slow one saves a cursor every 200 s: progress moves
        clock.advance(200)
        imports.store.save_cursor(slow, "load:", str(step), now=clock.time())
        assert imports.fail_stuck() == ([stalled] if step == 3 else []), step
    assert imports.get(stalled).status == "failed"
    assert "no progress for 600 s" in imports.get(stalled).error
    assert imports.get(slow).status == "running"
    clock.advance(601)
    assert imports.fail_stuck() == [slow], "once it stops moving, it is stuck too"
    imports.run_stage(stalled, "load")  # jobs of a failed import do nothing
    assert imports.get(stalled).stage == "load"


def test_stuck_detector_runs_from_cron(setup: tuple[Imports, ListImporter]) -> None:
    imports, _ = setup
    cron = Cron(imports.app)
    cron.sync()
    entry = cron.get(STUCK_CRON)
    assert entry.job_class == "conveyor.ImportStuckDetector"
    assert entry.schedule == "*/5 * * * *"


def test_cache_ttl_and_refetch_on_miss(
    settings: Settings, clock: FakeClock, r: redis.Redis
) -> None:
    app = App(settings, clock=clock)
    cache = ImportCache(app, "imp-1")
    assert cache.ttl == 24 * 3600
    calls: list[str] = []

    def refetch() -> str:
        calls.append("db")
        return "17"

    assert cache.fetch("label:bug", refetch) == "17"
    assert cache.fetch("label:bug", refetch) == "17"
    assert calls == ["db"], "the second read is served from the cache"
    clock.advance(24 * 3600 - 1)
    assert cache.get("label:bug") == "17"
    clock.advance(2)
    assert cache.get("label:bug") is None, "expired after 24 h by the injected clock"
    assert cache.fetch("label:bug", refetch) == "17"
    assert calls == ["db", "db"], "a miss refetches"
    assert cache.fetch("label:none", lambda: None) is None
    assert cache.get("label:none") is None, "a missing value is not cached"
    raw = r.get(app.store.keys.import_cache("imp-1", "label:bug"))
    assert raw is not None and json.loads(raw)["value"] == "17"
    assert 0 < r.ttl(app.store.keys.import_cache("imp-1", "label:bug")) <= 25 * 3600
    app.close()


def test_service_errors_say_what_to_do(setup: tuple[Imports, ListImporter]) -> None:
    imports, _ = setup
    with pytest.raises(NotFoundError, match="conveyor import status"):
        imports.get("nope")
    import_id = imports.start("list", {"items": []})
    with pytest.raises(ImportPipelineError, match="still running"):
        imports.retry_missing(import_id)
    with pytest.raises(ImportPipelineError, match="exists already"):
        imports.start("list", {"items": []}, import_id=import_id)


def test_keep_alive_refreshes_a_long_call_so_it_is_not_taken_for_stuck(
    setup: tuple[Imports, ListImporter], clock: FakeClock
) -> None:
    imports, importer = setup
    import_id = imports.start("list", {"items": ["a"]})
    run = StageRun(imports, imports.get(import_id), "load", importer)
    clock.advance(700)
    with run.keep_alive(every=0.01):  # one long call that cannot report progress itself
        wait_for(lambda: imports.get(import_id).progressed_at == clock.time(), timeout=10)
        assert imports.fail_stuck() == []
    clock.advance(601)
    assert imports.fail_stuck() == [import_id], "after the call ends, silence counts again"


def test_failure_messages_keep_the_driver_error_not_the_sql_parameters() -> None:
    from sqlalchemy.exc import IntegrityError

    wrapped = IntegrityError(
        "INSERT INTO users (username, email) VALUES (?, ?)",
        ("someone", "someone@example.com"),
        Exception("UNIQUE constraint failed: users.username"),
    )
    assert "someone@example.com" in str(wrapped)
    assert error_message(wrapped) == "UNIQUE constraint failed: users.username"
    assert error_message(ValueError("x" * 600)).endswith("…")


def test_transient_errors_are_retried_and_bad_data_is_not(r: redis.Redis) -> None:
    importer = ListImporter(r)
    assert importer.retryable(redis.exceptions.ConnectionError("cache unreachable"))
    assert importer.retryable(TimeoutError())
    assert importer.retryable(RecordError("locked", retryable=True))
    assert not importer.retryable(RecordError("no title"))
    assert not importer.retryable(ValueError("bad date"))


class BrokenStage(Importer):
    name = "broken"
    stages = ("load", "done")

    def __init__(self) -> None:
        super().__init__()
        self.failed_calls: list[str] = []

    def run_stage(self, run: StageRun) -> None:
        raise RuntimeError("the source is unreachable")

    def failed(self, state: ImportState) -> None:
        self.failed_calls.append(state.id)


def test_a_stage_out_of_retries_fails_the_import(settings: Settings, r: redis.Redis) -> None:
    app = App(settings.replace(queues="imports"))
    imports = Imports(app, ImportSettings(stage_retry=0))
    importer = BrokenStage()
    imports.register(importer)
    import_id = imports.start("broken", {})
    run_burst(app)
    state = imports.get(import_id)
    assert state.status == "failed"
    assert state.error == "stage load failed: RuntimeError: the source is unreachable"
    assert importer.failed_calls == [import_id], "the importer's failed hook ran once"
    app.close()


def test_upserts_compile_for_postgresql() -> None:
    from sqlalchemy.dialects import postgresql

    from conveyor.features.imports.project.schema import Label, upsert_statement

    row = {"project_id": 1, "export_id": 2, "name": "bug", "color": "#d73a4a"}
    keys = ["project_id", "export_id"]
    update = upsert_statement(
        "postgresql", Label.__table__, [row], keys=keys, update_columns=["name", "color"]
    )
    sql = str(update.compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT (project_id, export_id) DO UPDATE SET name = excluded.name" in sql
    ignore = upsert_statement("postgresql", Label.__table__, [row], keys=keys)
    assert "ON CONFLICT (project_id, export_id) DO NOTHING" in str(
        ignore.compile(dialect=postgresql.dialect())
    )
    assert upsert_statement("mssql", Label.__table__, [row], keys=keys) is None


def test_a_failure_message_drops_the_driver_detail_that_quotes_values() -> None:
    exc = ValueError(
        'duplicate key value violates unique constraint "users_username_key"\n'
        "DETAIL:  Key (username)=(ada_fx) already exists."
    )
    assert (
        error_message(exc) == 'duplicate key value violates unique constraint "users_username_key"'
    )
