from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from conveyor import App, ConfigurationError, Job
from conveyor.features.check import assert_valid, check_app
from conveyor.features.cron import schedule
from conveyor.features.dedup import Deduplicate, deduplicate


def messages(app: App) -> list[str]:
    return [str(p) for p in check_app(app)]


def test_a_clean_app_has_no_problems(app: App) -> None:
    @app.job(idempotent=True, deduplicate=deduplicate("until_executed"))
    def fine(x: int) -> None: ...

    assert messages(app) == []
    assert_valid(app)


def test_dedup_without_idempotency_is_an_error(app: App) -> None:
    @app.job(deduplicate=deduplicate())
    def risky(x: int) -> None: ...

    [problem] = check_app(app)
    assert problem.level == "error" and problem.subject == "risky"
    assert "not declared idempotent" in problem.message
    with pytest.raises(ConfigurationError, match="risky: configures deduplication"):
        assert_valid(app)


def test_other_declaration_mistakes(app: App) -> None:
    # deduplicate() refuses this combination now; a hand-built policy still gets caught here.
    @app.job(idempotent=True, deduplicate=Deduplicate(if_deduplicated="reschedule_once"))
    def resched(x: int) -> None: ...

    @app.job(idempotency_arguments=[0])
    def pointless(x: int) -> None: ...

    @app.job(idempotent=True, idempotency_arguments=[0, 3])
    def past_end(a: int, b: int) -> None: ...

    @app.job(concurrency_limit=-2)
    class Broken(Job):
        def perform(self, *, must: int) -> None: ...

    schedule(app, "ruby-cron", "* * * * *", "RubyOnly")
    found = messages(app)
    expected = [
        "error: Broken: Broken: concurrency_limit=-2 must be a whole number >= 1",
        "error: Broken: perform requires keyword-only argument(s) must",
        "error: past_end: idempotency_arguments [3] point past perform's 2 positional",
        "warning: pointless: idempotency_arguments has no effect without deduplication",
        "error: resched: if_deduplicated='reschedule_once' needs strategy 'until_executed'",
        "warning: cron ruby-cron: job class 'RubyOnly' is not registered",
    ]
    assert len(found) == len(expected)
    for text, prefix in zip(found, expected, strict=True):
        assert text.startswith(prefix), (text, prefix)


def test_idempotent_worker_fixture_runs_perform_twice(
    app: App, r: redis.Redis, idempotent_worker: Callable[..., None]
) -> None:
    @app.job(idempotent=True)
    def upsert(key: str) -> None:
        r.set(key, "v")
        r.incr("upsert-calls")

    idempotent_worker(upsert, "k")
    assert r.get("k") == "v" and r.get("upsert-calls") == "2"


def test_bad_flag_names_are_refused_at_declaration(app: App) -> None:
    with pytest.raises(ConfigurationError, match="feature_flag='Bad Flag' is not a flag name"):
        app.job(feature_flag="Bad Flag")(lambda: None)


def test_strict_requires_every_job_to_declare_idempotency(app: App) -> None:
    """GitLab fails every worker not declared idempotent or explicitly not (issue 19)."""

    @app.job()
    def undecided(x: int) -> None: ...

    @app.job(idempotent=False)
    def not_safe(x: int) -> None: ...

    @app.job(idempotent=True)
    def safe(x: int) -> None: ...

    assert messages(app) == []
    strict = [str(p) for p in check_app(app, strict=True)]
    assert len(strict) == 1
    assert strict[0].startswith("error: undecided: declares neither idempotent=True nor")
    with pytest.raises(ConfigurationError, match="undecided"):
        assert_valid(app, strict=True)
