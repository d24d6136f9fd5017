"""The app object (conveyor.core.app): the registry, function jobs, periodic tasks and queue
gates, typed extensions, and an engine that never loads the testing modes by itself."""

from __future__ import annotations

import asyncio
import subprocess
import threading

import pytest
import redis
from support import PYTHON, python_env, run_burst

from conveyor import App, ConfigurationError, FunctionJob, Job, Settings
from conveyor.core.app import app_of
from conveyor.core.extensions import ExtensionKey


def test_a_function_job_still_runs_as_a_function(app: App) -> None:
    @app.job(queue="math")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert issubclass(add, FunctionJob) and add.wire_name() == "add"
    assert app.find("add") is add and app_of(add) is app


def test_names_and_aliases_are_unique(app: App) -> None:
    @app.job(name="Mailer", aliases=("OldMailer",))
    class Mailer(Job):
        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match="'OldMailer' is already taken by"):

        @app.job(name="OldMailer")
        def other() -> None: ...

    assert app.find("OldMailer") is Mailer


def test_only_jobs_can_be_registered(app: App) -> None:
    with pytest.raises(ConfigurationError, match="is not a Job subclass"):
        app.register(int)  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match="cannot decorate"):
        app.job(42)  # type: ignore[call-overload]


def test_periodic_tasks_and_gates(app: App) -> None:
    with pytest.raises(ConfigurationError, match="interval must be > 0, got 0"):
        app.add_periodic("tick", 0, lambda: None)
    app.add_periodic("tick", 5, lambda: None)
    app.add_periodic("tick", 10, lambda: None)  # the same name replaces
    assert [t.interval for t in app.periodic_tasks if t.name == "tick"] == [10]
    app.gate_queue("bulk", lambda: False)
    assert app.queue_gates["bulk"]() is False


def test_configure_only_before_redis_is_used(settings: Settings) -> None:
    app = App(settings)
    app.configure(settings.replace(concurrency=2))
    assert app.settings.concurrency == 2
    app.store.client.ping()
    with pytest.raises(ConfigurationError, match="before the app touches Redis"):
        app.configure(settings)
    app.close()


def test_extensions_are_typed_and_say_what_is_missing(app: App) -> None:
    counter: ExtensionKey[list[int]] = ExtensionKey("counter")
    assert app.extensions.get(counter) is None and counter not in app.extensions
    app.extensions.setdefault(counter, []).append(1)
    assert app.extensions[counter] == [1] and counter in app.extensions
    with pytest.raises(KeyError, match="holds no 'other'"):
        app.extensions[ExtensionKey[int]("other")]


def test_the_engine_never_imports_the_testing_modes() -> None:
    code = (
        "import sys\n"
        "from conveyor import App, Worker\n"
        "app = App()\n"
        "@app.job\n"
        "def f() -> None: ...\n"
        "assert 'conveyor.core.testing' not in sys.modules, 'loaded with the engine'\n"
        "app.testing.fake\n"
        "assert 'conveyor.core.testing' in sys.modules\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", code],
        check=False,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_jobs_reach_redis_through_their_threads_own_connection(app: App, r: redis.Redis) -> None:
    # app.redis() in a job: the worker thread's own connection on the app's store, kept
    # across its jobs (the same client id for every job a thread runs).
    seen: dict[int, set[int]] = {}

    @app.job
    def count_visit(page: str) -> None:
        client = app.redis()
        client.incr(f"visits:{page}")
        seen.setdefault(threading.get_ident(), set()).add(client.client_id())

    count_visit.bulk_perform_async([["home"]] * 40)
    run_burst(app)
    assert r.get("visits:home") == "40"
    assert seen and all(len(ids) == 1 for ids in seen.values()), "one connection per thread"
    assert len({i for ids in seen.values() for i in ids}) == len(seen)


def test_async_jobs_reach_redis_through_their_slots_own_connection(
    app: App, r: redis.Redis
) -> None:
    # app.aredis() in an asyncio worker: its slot's own connection (a job runs in its slot's
    # task), kept across the slot's jobs; outside a worker, the loop's client of the store.
    app.configure(app.settings.replace(worker_mode="asyncio"))
    seen: dict[int, set[int]] = {}

    @app.job
    async def count_visit(page: str) -> None:
        client = app.aredis()
        await client.incr(f"visits:{page}")
        slot = id(asyncio.current_task())
        seen.setdefault(slot, set()).add(await client.client_id())

    count_visit.bulk_perform_async([["home"]] * 40)
    run_burst(app)
    assert r.get("visits:home") == "40"
    assert seen and all(len(ids) == 1 for ids in seen.values()), "one connection per slot"
    assert len({i for ids in seen.values() for i in ids}) == len(seen)

    async def outside() -> int:
        try:
            return int(await app.aredis().get("visits:home"))
        finally:
            await app.aclose()

    assert asyncio.run(outside()) == 40


def test_async_jobs_of_a_threads_worker_reach_redis_and_their_loop_closes_cleanly(
    app: App, r: redis.Redis
) -> None:
    # In threads mode async def jobs share one event loop thread: app.aredis() is that loop's
    # client of the store, closed before the loop at shutdown (a connection outliving its
    # uvloop loop made the close fail with EBUSY, an error the test run reports).
    @app.job
    async def count_visit(page: str) -> None:
        await app.aredis().incr(f"visits:{page}")

    count_visit.bulk_perform_async([["home"]] * 40)
    run_burst(app)
    assert r.get("visits:home") == "40"
