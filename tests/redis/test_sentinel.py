"""Sentinel URLs against a real primary, replica and three Sentinels (conveyor/redis/sentinel.py,
the durable enqueue of conveyor/core/client.py): the worker, client, CLI, dashboard and Redis
lease on a ``redis+sentinel://`` URL; following a SIGKILLed primary; reloading Lua scripts on
the new primary; ``min_replicas`` confirmed by ``WAIT``."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient
from support import run_burst, running_worker, wait_for
from support.sentinel import HOST, Cluster, sentinel_cluster
from support.web import BEARER, LOCAL, TOKEN

from conveyor import App, Job, Settings
from conveyor.automation.lease import RedisLease
from conveyor.cli import main
from conveyor.errors import ConfigurationError, NotDurableError
from conveyor.redis import sentinel as sentinel_module
from conveyor.redis.connection import connect
from conveyor.redis.store import Store
from conveyor.web import WebSettings, create_app

PASSWORD = "s3cret-Pw-77"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that do not fail anything over."""
    with sentinel_cluster(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own, for a test that kills its primary."""
    with sentinel_cluster(tmp_path) as started:
        yield started


@pytest.fixture
def clean(cluster: Cluster) -> Cluster:
    primary = cluster.node(cluster.primary_port())
    primary.flushall()
    primary.close()
    return cluster


def test_worker_cli_and_dashboard_run_on_a_sentinel_url(clean: Cluster) -> None:
    url = clean.url()
    app = App(Settings(redis_url=url, concurrency=2))
    ran: list[int] = []

    @app.job()
    def note(n: int) -> None:
        ran.append(n)

    for n in range(5):
        note.perform_async(n)
    run_burst(app)
    assert sorted(ran) == [0, 1, 2, 3, 4]
    primary = clean.node(clean.primary_port())
    assert primary.get("stat:processed") == "5", "the jobs ran against the Sentinels' primary"
    primary.close()

    result = CliRunner(env={"CONVEYOR_REDIS_URL": url, "COLUMNS": "200"}).invoke(
        main, ["stats"], catch_exceptions=False
    )
    assert result.exit_code == 0 and "5" in result.output, result.output

    with TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    ) as client:
        assert client.get("/api/stats").json()["processed"] == 5
        page = client.get("/").text
    hosts = ",".join(f"{HOST}:{port}" for port in clean.sentinel_ports)
    assert f"redis+sentinel://{hosts}/mymaster/0" in page
    app.close()


def test_the_password_reaches_the_primary_and_is_never_shown(clean: Cluster) -> None:
    primary = clean.node(clean.primary_port())
    replica = clean.node(clean.first_replica)
    for node in (primary, replica):
        node.config_set("requirepass", PASSWORD)
    try:
        url = clean.url().replace("://", f"://:{PASSWORD}@")
        app = App(Settings(redis_url=url))
        assert app.enqueue("Anything", 1)
        with TestClient(
            create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
        ) as client:
            page = client.get("/").text
        assert "redis+sentinel://" in page and PASSWORD not in page
        app.close()
        wrong = App(Settings(redis_url=clean.url(), reconnect_timeout=0.5))
        with pytest.raises(redis.AuthenticationError):
            wrong.enqueue("Anything", 1)
        wrong.close()
    finally:
        for node in (primary, replica):
            node.execute_command("AUTH", PASSWORD)
            node.config_set("requirepass", "")
            node.close()


def test_sentinels_that_ask_for_a_password_get_the_settings_one_and_never_show_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Sentinel-only-pw-31"
    with sentinel_cluster(tmp_path, sentinel_password=secret) as guarded:
        # Without it, or with a wrong one: at once, an error that names the setting (not
        # "no master found" after the whole reconnect window).
        for given, says in ((None, "ask for a password"), ("wrong-pw", "refused")):
            bare = App(Settings(redis_url=guarded.url(), sentinel_password=given))
            started = time.monotonic()
            with pytest.raises(ConfigurationError, match="sentinel_password") as refused:
                bare.enqueue("Anything", 1)
            assert says in str(refused.value) and time.monotonic() - started < 5
            bare.close()

        async def refused_async() -> None:
            bare = App(Settings(redis_url=guarded.url()))
            with pytest.raises(ConfigurationError, match="ask for a password"):
                await bare.aenqueue("Anything", 1)
            await bare.aclose()

        asyncio.run(refused_async())
        # From the environment, as documented: enqueue (sync and async), a worker, the CLI.
        env = {"CONVEYOR_REDIS_URL": guarded.url(), "CONVEYOR_SENTINEL_PASSWORD": secret}
        settings = Settings.load(env=env)
        app = App(settings)
        ran: list[int] = []

        @app.job()
        def note(n: int) -> None:
            ran.append(n)

        async def enqueue_async() -> None:
            other = App(settings)
            await other.aenqueue("note", 2)
            await other.aclose()

        note.perform_async(1)
        asyncio.run(enqueue_async())
        run_burst(app)
        assert sorted(ran) == [1, 2]
        result = CliRunner(env={**env, "COLUMNS": "200"}).invoke(
            main, ["stats"], catch_exceptions=False
        )
        assert result.exit_code == 0 and secret not in result.output, result.output
        assert secret not in repr(settings) and secret not in caplog.text
        app.close()


def test_min_replicas_is_confirmed_and_a_shortfall_raises(clean: Cluster) -> None:
    app = App(Settings(redis_url=clean.url(), min_replicas=1, min_replicas_timeout=0.3))

    class Plain(Job):
        def perform(self, n: int) -> None: ...

    app.register(Plain)
    assert Plain.perform_async(1).replicas == 1
    assert Plain.perform_in(60, 2).replicas == 1
    assert len(Plain.bulk_perform_async([[n] for n in range(10)], batch_size=4)) == 10
    replica_proc = clean.nodes[clean.first_replica]
    replica_proc.send_signal(signal.SIGSTOP)  # a replica that stops acknowledging
    try:
        with pytest.raises(NotDurableError) as one:
            Plain.perform_async(3)
        with pytest.raises(NotDurableError) as bulk:
            Plain.bulk_perform_async([[n] for n in range(10)], batch_size=4)
    finally:
        replica_proc.send_signal(signal.SIGCONT)
    message = str(one.value)
    assert "written to the Redis primary but confirmed by 0 of the 1 replica" in message
    assert "failover of the primary before they reach a replica loses them" in message
    assert one.value.jids and one.value.jids[0] in message
    # The job was written: it runs unless the primary fails before the replica has it.
    primary = clean.node(clean.primary_port())
    queued = primary.lrange("queue:default", 0, -1)
    assert any(one.value.jids[0] in raw for raw in queued)
    # A bulk enqueue stops at the first unconfirmed batch: 4 jobs written, 6 never sent.
    assert len(bulk.value.jids) == 4 and bulk.value.confirmed == ()
    assert primary.llen("queue:default") == 1 + 10 + 1 + 4
    primary.close()
    app.close()


def test_min_replicas_holds_for_the_async_enqueue_too(clean: Cluster) -> None:
    app = App(Settings(redis_url=clean.url(), min_replicas=1, min_replicas_timeout=0.3))

    class Plain(Job):
        def perform(self, n: int) -> None: ...

    app.register(Plain)

    async def scenario() -> tuple[int | None, NotDurableError]:
        confirmed = (await Plain.aperform_async(1)).replicas
        replica_proc = clean.nodes[clean.first_replica]
        replica_proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotDurableError) as short:
                await Plain.aperform_async(2)
        finally:
            replica_proc.send_signal(signal.SIGCONT)
        await app.aclose()
        return confirmed, short.value

    confirmed, short = asyncio.run(scenario())
    assert confirmed == 1
    assert "confirmed by 0 of the 1 replica" in str(short) and len(short.jids) == 1
    app.close()


def test_a_script_on_a_replica_named_as_primary_moves_to_the_real_primary(
    clean: Cluster,
) -> None:
    """A Sentinel on the losing side of a partition can still name the old primary after it
    was demoted. Producing that partition needs control of the network, so a stand-in for
    the Sentinel client names the replica first; the Redis servers are real."""
    primary_port = clean.primary_port()
    answers = iter([(HOST, clean.first_replica)])

    class StaleSentinel(redis.sentinel.Sentinel):
        def discover_master(self, service_name: str) -> tuple[str, int]:
            return next(answers, (HOST, primary_port))

    stale = StaleSentinel([(HOST, port) for port in clean.sentinel_ports])
    client = stale.master_for(
        "mymaster",
        connection_pool_class=sentinel_module._Pool,
        decode_responses=True,
        reconnect_timeout=5.0,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 2),
    )
    primary = clean.node(primary_port)
    primary.lpush("queue:default", '{"jid":"j1"}')
    # Neither server has the script: the replica loads it and refuses to run it, then the
    # retry on the primary meets NOSCRIPT again.
    primary.script_flush()
    clean.node(clean.first_replica).script_flush()
    # fetch.lua moves the job into the working list: a write, refused by the replica.
    assert Store(client).fetch("w1", ["default"], 1) == [("default", '{"jid":"j1"}')]
    assert primary.lrange("conveyor:working:w1", 0, -1) == ['{"jid":"j1"}']
    assert client.connection_pool.master_address == (HOST, primary_port)
    primary.close()
    client.close()


def test_enqueue_scripts_lease_and_dashboard_follow_a_sigkilled_primary(
    fresh: Cluster,
) -> None:
    app = App(Settings(redis_url=fresh.url()))
    dashboard = TestClient(
        create_app(app, WebSettings(token=TOKEN)), headers=BEARER, base_url=LOCAL
    )
    assert dashboard.get("/api/stats").json()["enqueued"] == 0
    lease = RedisLease(app.store, "nightly")
    term = lease.acquire("node-a", 60)
    assert term is not None
    app.enqueue("Before", 1)
    assert app.store.fetch("w1", ["default"], 1), "fetch.lua loaded on the first primary"
    assert app.store.client.wait(1, 5000) == 1, "the replica has everything so far"
    old = fresh.primary_port()
    killed_at = fresh.kill(old)

    # The enqueue waits out the failover instead of failing.
    result = app.enqueue("During", 2)
    waited = time.time() - killed_at
    new = fresh.wait_promoted(old)
    assert new == fresh.first_replica
    print(f"\nenqueue during the failover returned after {waited:.1f}s")
    primary = fresh.node(new)
    assert any(result.jid in raw for raw in primary.lrange("queue:default", 0, -1))

    # The dashboard opened before the kill answers from the new primary.
    assert dashboard.get("/api/stats").json()["enqueued"] == 1

    # The lease carries on: same holder, same fence, on the new primary.
    renewed = lease.renew(term, 60)
    assert renewed is not None and renewed.fence == term.fence

    # The new primary's script cache may be empty (a restart, SCRIPT FLUSH): NOSCRIPT reloads.
    primary.script_flush()
    assert [q for q, _ in app.store.fetch("w1", ["default"], 5)] == ["default"]
    fresh.start_node(old)  # back as systemd would bring it; the Sentinels make it a replica
    try:
        wait_for(lambda: fresh.replica_synced(old), timeout=45, interval=0.2)
    except AssertionError:
        # Sentinel reconverts a returning primary about 10 s after it is back; once in a CI
        # run it had not within 30 s. That is Redis's timing, not what this test is about (the
        # durable enqueue below needs a replica): do what an operator would.
        print("\nSentinel left the old primary alone for 45 s; REPLICAOF sent by the test")
        node = fresh.node(old)
        node.execute_command("REPLICAOF", "127.0.0.1", str(new))
        node.close()
        wait_for(lambda: fresh.replica_synced(old), timeout=30, interval=0.2)
    primary.script_flush()
    durable = App(Settings(redis_url=fresh.url(), min_replicas=1))
    assert durable.enqueue("After", 3).replicas == 1, "push.lua reloaded, then WAIT"
    primary.close()
    durable.close()
    dashboard.close()
    app.close()


def test_a_worker_carries_on_across_the_failover(fresh: Cluster) -> None:
    app = App(
        Settings(redis_url=fresh.url(), concurrency=2, heartbeat_interval=0.5, liveness_ttl=10)
    )
    side = connect(app.settings)
    done: set[int] = set()

    @app.job()
    def mark(n: int) -> None:
        done.add(n)

    with running_worker(app) as worker:
        for n in range(20):
            mark.perform_async(n)
        wait_for(lambda: len(done) == 20, timeout=20)
        old = fresh.primary_port()
        fresh.kill(old)
        stop = threading.Event()
        count = 20

        def produce() -> None:
            nonlocal count
            while not stop.is_set() and count < 60:
                mark.perform_async(count)
                count += 1
                time.sleep(0.05)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        new = fresh.wait_promoted(old)
        producer.join(30)
        stop.set()
        wait_for(lambda: len(done) == 60, timeout=30)
        # The heartbeat reached the new primary: this process is registered and alive there.
        primary = fresh.node(new)
        wait_for(lambda: primary.sismember("processes", worker.identity), timeout=10)
        assert primary.exists(f"conveyor:alive:{worker.identity}")
        primary.close()
    side.close()
    app.close()
