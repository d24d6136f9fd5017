"""Worker-side job metrics published to Redis (conveyor.features.metrics,
conveyor.redis.metrics)."""

from __future__ import annotations

import pytest
import redis
from support import run_burst
from support.metrics import scenario

from conveyor import App, ConfigurationError, Settings
from conveyor.clock import FakeClock
from conveyor.features import metrics
from conveyor.features.metrics import BUCKETS, Recorder


def test_counts_by_class_and_queue_durations_drops_and_deferrals(
    settings: Settings, r: redis.Redis
) -> None:
    app, _ = scenario(settings.replace(queues=(("mail", 1), ("default", 1))), r)
    try:
        run_burst(app)
        metrics.flush(app)
        snap = metrics.read(app)
    finally:
        app.close()
    assert snap.counter("processed") == {
        ("slow", "mail"): 4,
        ("bad", "mail"): 2,
        ("dup", "default"): 1,
    }
    assert snap.counter("failed") == {("bad", "mail"): 2}
    assert snap.counter("retried") == {("slow", "mail"): 1}
    assert snap.counter("dedup_dropped") == {("dup",): 1}
    assert snap.counter("concurrency_deferred") == {("limited",): 1}
    slow = snap.durations[("slow", "mail")]
    assert slow.count == 4 and slow.sum == pytest.approx(1.2)
    assert slow.buckets["0.25"] == 0 and slow.buckets["0.5"] == 4 and slow.buckets["+Inf"] == 4
    bad = snap.durations[("bad", "mail")]
    assert (bad.buckets["1.0"], bad.buckets["2.5"], bad.sum) == (0, 2, pytest.approx(4.0))
    assert list(slow.buckets) == ["+Inf" if b == float("inf") else repr(b) for b in BUCKETS]
    assert r.get("stat:processed") == "7", "the core counters are untouched"


def test_nothing_is_published_until_a_flush_and_counts_add_up(app: App, r: redis.Redis) -> None:
    recorder = Recorder(app, flush_interval=3600)
    recorder.count("processed", "A", "q", n=2)
    assert metrics.read(app).counter("processed") == {}
    assert recorder.flush() == 1
    recorder.count("processed", "A", "q", n=3)
    recorder.observe("A", "q", 0.07)
    recorder.flush()
    snap = metrics.read(app)
    assert snap.counter("processed") == {("A", "q"): 5}
    assert snap.durations[("A", "q")].buckets["0.05"] == 0
    assert snap.durations[("A", "q")].buckets["0.1"] == 1
    assert recorder.flush() == 0, "an empty flush sends nothing"
    assert metrics.reset(app) and metrics.read(app).counter("processed") == {}


def test_a_failed_flush_keeps_the_counts(settings: Settings) -> None:
    app = App(settings.replace(redis_url="redis://127.0.0.1:1/0"))
    recorder = Recorder(app)
    recorder.count("failed", "A", "q")
    with pytest.raises(redis.ConnectionError):
        recorder.flush()
    app.close()
    app.configure(settings)
    assert recorder.flush() == 1
    assert metrics.read(app).counter("failed") == {("A", "q"): 1}
    app.close()


def test_producers_flush_after_the_interval(app: App, r: redis.Redis) -> None:
    clock = FakeClock()
    producer = App(app.settings, clock=clock)
    metrics.install(producer, flush_interval=10)

    @producer.job(idempotent=True)
    def once() -> None: ...

    once.perform_async()
    once.perform_async()
    assert metrics.read(producer).counter("dedup_dropped") == {}
    clock.advance(11)
    once.perform_async()
    assert metrics.read(producer).counter("dedup_dropped") == {("once",): 2}
    producer.close()


def test_bad_flush_interval_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="flush_interval"):
        metrics.install(app, flush_interval=0)


@pytest.mark.slow
def test_a_stopping_worker_process_publishes_its_last_counts(
    settings: Settings, r: redis.Redis
) -> None:
    import signal
    import subprocess

    from support import APPS, PYTHON, python_env, wait_for

    app = App(settings)
    proc = subprocess.Popen(
        [PYTHON, str(APPS / "metrics_app.py")],
        env=python_env(CONVEYOR_REDIS_URL=str(settings.redis_url), CONVEYOR_CONCURRENCY="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for i in range(12):
            app.client.enqueue("tally", [i])
        wait_for(lambda: r.get("stat:processed") == "12", timeout=20)
        assert metrics.read(app).counter("processed") == {}, "nothing flushed while running"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert metrics.read(app).counter("processed") == {("tally", "default"): 12}
    app.close()
