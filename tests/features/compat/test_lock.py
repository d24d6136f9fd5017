"""conveyor.features.compat.lock: the lock file and the check of each kind of change between
two releases."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import App, Job, Settings
from conveyor.errors import CompatibilityError, ConfigurationError, NotFoundError
from conveyor.features.compat.lock import (
    DEFAULT_LOCK,
    LiveProbe,
    assert_compatible,
    check,
    declare_queue_renamed,
    declare_removed,
    read_lock,
    render,
    snapshot,
    write_lock,
)
from conveyor.features.compat.maintenance import remove_jobs
from conveyor.features.cron import schedule
from conveyor.features.flags import Flags
from conveyor.features.transitions import enqueue_as

Declare = Callable[[App], None]


@pytest.fixture
def release(settings: Settings) -> Iterator[Callable[[Declare], App]]:
    """Builds one release of an app: ``release(lambda app: ...declarations...)``."""
    apps: list[App] = []

    def build(declare: Declare) -> App:
        app = App(settings)
        declare(app)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


def rules(findings: list[Any], level: str = "error") -> list[tuple[str, str]]:
    return [(f.subject, f.rule) for f in findings if f.level == level]


def worker(perform: Callable[..., None], name: str = "ExampleWorker", **options: Any) -> Declare:
    """A release declaring one class whose perform is ``perform`` (self first)."""

    def declare(app: App) -> None:
        cls = type(name, (Job,), {"perform": perform, "__module__": "jobs"})
        app.register(cls, **options)

    return declare


def v_base(self: Job, object_id: int, arg1: str) -> None: ...


# -- snapshot -------------------------------------------------------------------------------------


def test_snapshot_records_every_class_deterministically(
    release: Callable[[Declare], App], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def declare(app: App) -> None:
        @app.job(queue="mail", aliases=("Zed", "Alpha"), feature_flag="mails")
        def send(user_id: int, when: dt.date = dt.date(2024, 1, 1), *rest: int) -> None: ...

        @app.job(name="HardWorker", deprecated=True)
        class Hard(Job):
            def perform(
                self, a: int, opts: dict[str, int] | None = None, n: tuple[int] = (1,)
            ) -> None: ...

        schedule(app, "nightly", "0 3 * * *", Hard, args=[1])

    app = release(declare)
    monkeypatch.chdir(tmp_path)
    written = write_lock(app)
    text = (tmp_path / DEFAULT_LOCK).read_text()
    assert text == render(snapshot(release(declare))), "same code, same bytes"
    assert json.loads(text) == written and text.endswith("}\n")
    lock = read_lock()
    assert lock["jobs"]["send"] == {
        "aliases": ["Alpha", "Zed"],
        "deprecated": False,
        "enqueue_as": None,
        "feature_flag": "mails",
        "params": [
            {"kind": "positional", "name": "user_id", "required": True},
            {
                "default": {"$not_json": "datetime.date"},
                "kind": "positional",
                "name": "when",
                "required": False,
            },
            {"kind": "var_positional", "name": "rest"},
        ],
        "python": "tests.features.compat.test_lock."
        "test_snapshot_records_every_class_deterministically"
        ".<locals>.declare.<locals>.send",
        "queue": "mail",
    }
    hard = lock["jobs"]["HardWorker"]
    assert hard["deprecated"] is True
    assert [p.get("default") for p in hard["params"]] == [None, None, [1]]
    assert lock["cron"] == {
        "nightly": {
            "args": [1],
            "job_class": "HardWorker",
            "queue": "default",
            "schedule": "0 3 * * *",
            "tz": "UTC",
        }
    }
    assert check(app, DEFAULT_LOCK) == []


def test_read_lock_refuses_what_is_not_a_lock(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no lock file at .*conveyor compat snapshot"):
        read_lock(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(CompatibilityError, match="is not valid JSON"):
        read_lock(bad)
    bad.write_text('{"jobs": []}')
    with pytest.raises(CompatibilityError, match="not a Conveyor lock file"):
        read_lock(bad)
    bad.write_text('{"conveyor_lock": 99, "jobs": {}}')
    with pytest.raises(CompatibilityError, match="lock version 99"):
        read_lock(bad)


# -- arguments ------------------------------------------------------------------------------------


def test_safe_argument_changes_pass(release: Callable[[Declare], App]) -> None:
    lock = snapshot(release(worker(v_base)))

    def extra_optional(
        self: Job, object_id: int, arg1: str, new_arg: str | None = None
    ) -> None: ...

    def params_hash(self: Job, object_id: int, arg1: str, params: dict[str, Any] = {}) -> None: ...  # noqa: B006

    def varargs(self: Job, object_id: int, *args: Any) -> None: ...

    for perform in (extra_optional, params_hash, varargs):
        assert check(release(worker(perform)), lock) == [], perform.__name__


def test_argument_removed_without_deprecation_names_the_release_sequence(
    release: Callable[[Declare], App],
) -> None:
    lock = snapshot(release(worker(v_base)))

    def removed(self: Job, object_id: int) -> None: ...

    [finding] = check(release(worker(removed)), lock)
    assert (finding.level, finding.subject, finding.rule) == (
        "error",
        "ExampleWorker",
        "argument-removed",
    )
    assert "release M gives it a default (`arg1=None`)" in finding.message
    assert "release M+1 stops passing it" in finding.message
    with pytest.raises(CompatibilityError, match="1 unsafe job change"):
        assert_compatible(release(worker(removed)), lock)

    # The safe path: M gives it a default, M+2 removes it (a warning remains to read).
    def deprecated_arg(self: Job, object_id: int, arg1: str | None = None) -> None: ...

    m = release(worker(deprecated_arg))
    assert check(m, lock) == []
    warnings = assert_compatible(release(worker(removed)), snapshot(m))
    assert rules(warnings, "warning") == [("ExampleWorker", "optional-argument-removed")]


def test_unsafe_argument_changes(release: Callable[[Declare], App]) -> None:
    def optional(self: Job, object_id: int, arg1: str = "x") -> None: ...

    lock = snapshot(release(worker(optional)))

    def required_added(
        self: Job, object_id: int, arg1: str = "x", more: int = 0, must: int = 0, *, kw: int
    ) -> None: ...

    def renamed(self: Job, object_id: int, label: str = "x") -> None: ...

    def reordered(self: Job, arg1: str, object_id: int) -> None: ...

    def default_removed(self: Job, object_id: int, arg1: str) -> None: ...

    def default_changed(self: Job, object_id: int, arg1: str = "y") -> None: ...

    def many_optional(
        self: Job, object_id: int, arg1: str = "x", new: int = 0, other: int = 1
    ) -> None: ...

    def appended_required(self: Job, object_id: int, arg1: str, extra: int) -> None: ...

    cases = {
        renamed: ["argument-renamed"],
        reordered: ["argument-moved", "argument-moved"],
        default_removed: ["default-removed"],
        appended_required: ["default-removed", "required-argument-added"],
        required_added: ["required-argument-added"],
        many_optional: [],
    }
    for perform, expected in cases.items():
        found = check(release(worker(perform)), lock)
        assert sorted(r for _, r in rules(found)) == expected, perform.__name__
    changed = check(release(worker(default_changed)), lock)
    assert rules(changed, "warning") == [("ExampleWorker", "default-changed")]
    assert "from 'x' to 'y'" in changed[0].message


# -- classes and queues ---------------------------------------------------------------------------


def test_removing_a_class_takes_a_deprecation_release_and_remove_jobs(
    release: Callable[[Declare], App], r: redis.Redis
) -> None:
    def keep(app: App) -> None:
        worker(v_base, "Other")(app)

    m0 = release(lambda app: (worker(v_base)(app), keep(app)))
    gone = release(keep)
    assert rules(check(gone, snapshot(m0))) == [
        ("ExampleWorker", "class-removed-without-deprecation")
    ]
    m1 = release(lambda app: (worker(v_base, deprecated=True)(app), keep(app)))
    assert check(m1, snapshot(m0)) == []
    [finding] = check(gone, snapshot(m1))
    assert finding.rule == "class-removed-without-remove-jobs"
    assert "declare_removed(app, 'ExampleWorker')" in finding.message

    m2 = release(lambda app: (keep(app), declare_removed(app, "ExampleWorker")))
    assert check(m2, snapshot(m1)) == [], "offline: the declaration is enough"
    m1.enqueue("ExampleWorker", 1, "a")
    m1.enqueue("ExampleWorker", 2, "b", at=m1.clock.time() + 60)
    [live] = check(m2, snapshot(m1), probe=LiveProbe(m2))
    assert live.rule == "class-removed-while-enqueued"
    assert "2 job(s) of ExampleWorker are still in Redis (queue:default 1, schedule 1)" in (
        live.message
    )
    assert remove_jobs(m2, ["ExampleWorker"]).total == 2
    assert check(m2, snapshot(m1), probe=LiveProbe(m2)) == []
    assert snapshot(m2)["removed"] == ["ExampleWorker"]


def test_renaming_a_class_needs_an_alias(release: Callable[[Declare], App], r: redis.Redis) -> None:
    m0 = release(worker(v_base, "OldName"))
    bare = release(worker(v_base, "NewName"))
    findings = check(bare, snapshot(m0))
    assert rules(findings) == [("OldName", "class-renamed-without-alias")]
    finding = findings[0]
    assert "aliases=('OldName',)" in finding.message and "Release M+2" in finding.message

    switch = enqueue_as("OldName", flag="new_name")
    m1 = release(worker(v_base, "NewName", aliases=("OldName",), enqueue_as=switch))
    assert check(m1, snapshot(m0)) == [], "renamed with alias: no error, no new-class warning"

    m2 = release(worker(v_base, "NewName"))
    assert rules(check(m2, snapshot(m1)), "warning") == [("OldName", "alias-dropped")]
    live = check(m2, snapshot(m1), probe=LiveProbe(m2))
    assert rules(live) == [("OldName", "alias-dropped-while-flag-off")]
    m1.enqueue("OldName", 1, "a")
    Flags.of(m1).enable("new_name")
    assert rules(check(m2, snapshot(m1), probe=LiveProbe(m2))) == [
        ("OldName", "alias-dropped-while-enqueued")
    ]
    r.delete("queue:default")
    assert check(m2, snapshot(m1), probe=LiveProbe(m2)) == []


def test_renaming_a_queue_needs_migrate_queue(release: Callable[[Declare], App]) -> None:
    m0 = release(
        lambda app: (worker(v_base, queue="old")(app), worker(v_base, "B", queue="x")(app))
    )
    moved = release(
        lambda app: (worker(v_base, queue="new")(app), worker(v_base, "B", queue="x")(app))
    )
    [finding] = check(moved, snapshot(m0))
    assert finding.rule == "queue-renamed"
    assert "declare_queue_renamed(app, 'old', 'new')" in finding.message
    assert "listen on both queues" in finding.message

    def declared(app: App) -> None:
        worker(v_base, queue="new")(app)
        worker(v_base, "B", queue="x")(app)
        declare_queue_renamed(app, "old", "new")

    assert check(release(declared), snapshot(m0)) == []
    # Moving one class off a queue other classes still use strands nothing.
    shared = release(
        lambda app: (worker(v_base, queue="x")(app), worker(v_base, "B", queue="x")(app))
    )
    other = release(
        lambda app: (worker(v_base, queue="new")(app), worker(v_base, "B", queue="x")(app))
    )
    assert rules(check(other, snapshot(shared)), "warning") == [("ExampleWorker", "queue-changed")]
    assert rules(check(other, snapshot(shared))) == []


def test_new_classes_pass_with_a_note_unless_gated(release: Callable[[Declare], App]) -> None:
    lock = snapshot(release(worker(v_base)))
    grown = release(lambda app: (worker(v_base)(app), worker(v_base, "Fresh")(app)))
    findings = check(grown, lock)
    assert rules(findings) == [] and rules(findings, "warning") == [("Fresh", "new-class")]
    gated = release(
        lambda app: (worker(v_base)(app), worker(v_base, "Fresh", feature_flag="fresh")(app))
    )
    assert check(gated, lock) == []


def test_cron_entries_outlive_their_declaration(
    release: Callable[[Declare], App], r: redis.Redis
) -> None:
    def with_cron(app: App) -> None:
        worker(v_base)(app)
        schedule(app, "nightly", "0 3 * * *", "ExampleWorker", args=[1, "a"])

    m0 = release(with_cron)
    m1 = release(worker(v_base))
    [finding] = check(m1, snapshot(m0))
    assert (
        finding.rule == "cron-entry-removed" and "conveyor cron destroy nightly" in finding.message
    )
    assert check(m1, snapshot(m0), probe=LiveProbe(m1)) == [], "not in Redis: nothing to do"


def test_code_only_mistakes(release: Callable[[Declare], App]) -> None:
    def declare(app: App) -> None:
        worker(v_base, "Still")(app)
        declare_removed(app, "Still")
        worker(v_base, "Bad", enqueue_as={"old": "Missing", "flag": "f"})(app)
        worker(v_base, "Old", queue="q")(app)
        declare_queue_renamed(app, "q", "q2")

    declare_app = release(declare)
    findings = check(declare_app, snapshot(declare_app))
    assert rules(findings) == [("Bad", "enqueue-as-invalid"), ("Still", "removed-but-registered")]
    assert rules(findings, "warning") == [("queue q", "queue-still-used")]
    with pytest.raises(ConfigurationError, match="two different queue names"):
        declare_queue_renamed(declare_app, "a", "a")
