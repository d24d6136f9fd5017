"""Bulk operations across real processes (SPEC OPS-2, OPS-3): batches finishing at the same
instant in several processes complete the operation once and send one e-mail; a batch
redelivered after its worker was SIGKILLed is not counted twice."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from support import APPS, StartProcess, wait_for
from support.mail import Received, smtp_server

from conveyor import App, Settings
from conveyor.features.flags import Flags
from conveyor.features.operations import BulkOperations
from conveyor.redis.operations import CompletionPush, OperationStore

APP = str(APPS / "operations_app.py")
FAST = {
    "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
    "CONVEYOR_LIVENESS_TTL": "2",
    "CONVEYOR_RECOVERY_INTERVAL": "0.5",
    "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.2",
    "CONVEYOR_SHUTDOWN_TIMEOUT": "3",
}

Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def smtp() -> Iterator[tuple[Received, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def spawn(redis_url: str, smtp: tuple[Received, int], processes: StartProcess) -> Spawn:
    def start(**env: str) -> subprocess.Popen[bytes]:
        return processes(
            APP,
            **{
                "CONVEYOR_REDIS_URL": redis_url,
                "CONVEYOR_SMTP_HOST": "127.0.0.1",
                "CONVEYOR_SMTP_PORT": str(smtp[1]),
                "CONVEYOR_SMTP_SENDER": "noreply@example.com",
                "CONVEYOR_OPERATIONS_BASE_URL": "https://gitlab.example.com",
                "CONVEYOR_OPERATIONS_BATCH_SIZE": "1",
                **FAST,
                **env,
            },
        )

    return start


def start_operation(settings: Settings, parameters: dict[str, Any], batch_size: int = 1) -> str:
    """Start ``side_update`` as the service would (its definition lives in the workers)."""
    app = App(settings)
    Flags(app, cache_ttl=0).enable("security_bulk_operations_notifications")
    ops = BulkOperations(app)
    result = ops.scheduler_job.perform_async("side_update", 7, parameters)
    app.close()
    return result.jid


def outcomes(r: redis.Redis) -> list[tuple[int, str, int]]:
    out = []
    for entry in r.lrange("outcomes", 0, -1):
        batch, outcome, pid = entry.split(":")
        out.append((int(batch), outcome, int(pid)))
    return out


def finished(r: redis.Redis, op_id: str) -> dict[str, str]:
    import json

    raw = r.get(f"conveyor:background-operation-finished:{op_id}")
    return json.loads(raw) if raw else {}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_batches_finishing_together_in_three_processes_complete_once(
    spawn: Spawn, r: redis.Redis, settings: Settings, smtp: tuple[Received, int]
) -> None:
    received, _ = smtp
    # One entity per batch. No prefetch: a process holds at most 5 jobs, so the 12 batches need
    # all three processes; and a process refills once 2 slots are free, so with 12 batches
    # (not 15) none is left waiting in the queue while the others hold their threads.
    n = 12
    workers = [spawn(CONVEYOR_CONCURRENCY="5", CONVEYOR_PREFETCH="0") for _ in range(3)]
    wait_for(lambda: r.scard("processes") == 3, timeout=30, interval=0.05)
    op_id = start_operation(
        settings, {"n": n, "deny": [3, 11], "crash": [8], "wait": list(range(n))}
    )
    wait_for(lambda: int(r.get("waiting") or 0) == n, timeout=25, interval=0.02)
    r.set("go", 1)  # every batch finishes now, in three processes
    wait_for(lambda: finished(r, op_id), timeout=30, interval=0.05)
    wait_for(lambda: received.count() >= 1, timeout=10)

    summary = finished(r, op_id)
    assert (summary["total_items"], summary["successful_items"], summary["failed_items"]) == (
        "12",
        "9",
        "3",
    )
    seen = outcomes(r)
    assert sorted(b for b, _, _ in seen) == list(range(n)), "each batch counted once"
    assert [o for _, o, _ in seen].count("completed") == 1
    assert len({pid for _, _, pid in seen}) == 3, "the batches ran in all three processes"
    assert r.hgetall("processed") == {str(i): "1" for i in range(n)}
    assert received.count() == 1, "exactly one e-mail"
    message = received.messages[0][2]
    assert message["Subject"] == "Side update: 3 of 12 items failed"
    assert "https://gitlab.example.com/acme/project-8" in message.get_body(("plain",)).get_content()
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(20) == 0
    assert received.count() == 1


def _hammer(url: str, op_ids: list[str], batches: list[int], barrier: Any, out: Any) -> None:
    app = App(Settings(redis_url=url))
    store = OperationStore(app.store)
    for n, op_id in enumerate(op_ids):
        push = CompletionPush(f"race-{n}", f'{{"class":"Done","args":["{op_id}"]}}')
        barrier.wait(20)  # every process starts each round at the same instant
        for b in batches:
            counted = store.record_batch(op_id, str(b), 1, [], completion=push)
            out.put((n, b, counted.outcome))
    app.close()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_counting_script_completes_once_under_concurrent_processes(
    app: App, r: redis.Redis, redis_url: str
) -> None:
    """8 processes released together by a barrier count 40 batches, each batch sent by two of
    them; three rounds."""
    ctx = multiprocessing.get_context("spawn")
    store = OperationStore(app.store)
    rounds = 3
    op_ids = [store.create_operation("race", 1, 40, {}) for _ in range(rounds)]
    barrier = ctx.Barrier(8)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_hammer,
            args=(redis_url, op_ids, [(i * 5 + j) % 40 for j in range(10)], barrier, out),
        )
        for i in range(8)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in range(80 * rounds)]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    for n, op_id in enumerate(op_ids):
        seen = [o for round_no, _, o in results if round_no == n]
        assert seen.count("completed") == 1
        assert seen.count("duplicate") == 40
        op = store.get_operation(op_id)
        assert op is not None and (op.successful_items, op.failed_items) == (40, 0)
        assert r.llen(f"queue:race-{n}") == 1, "one completion job pushed"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_batch_redelivered_after_sigkill_is_not_counted_twice(
    spawn: Spawn, r: redis.Redis, settings: Settings, smtp: tuple[Received, int]
) -> None:
    received, _ = smtp
    # 6 entities, 2 per batch: batch 0 is counted and then held (not acknowledged); batch 2
    # blocks before counting; batch 1 finishes normally. Then the worker is killed.
    r.set("hold_after:0", 1)
    victim = spawn(CONVEYOR_CONCURRENCY="3", CONVEYOR_OPERATIONS_BATCH_SIZE="2")
    op_id = start_operation(settings, {"n": 6, "deny": [1, 4], "wait": [4]})
    wait_for(
        lambda: (
            {(b, o) for b, o, _ in outcomes(r)} >= {(0, "counted"), (1, "counted")}
            and r.get("waiting") == "1"
        ),
        timeout=40,
        interval=0.05,
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    store = OperationStore(App(settings).store)
    before = store.get_operation(op_id)
    assert before is not None and before.processed_items == 4, "batches 0 and 1 counted"

    r.delete("hold_after:0")
    r.set("go", 1)
    survivor = spawn(CONVEYOR_CONCURRENCY="3", CONVEYOR_OPERATIONS_BATCH_SIZE="2")
    wait_for(lambda: finished(r, op_id), timeout=40, interval=0.1)
    wait_for(lambda: received.count() >= 1, timeout=10)

    seen = [(b, o) for b, o, pid in outcomes(r) if pid == survivor.pid]
    assert (0, "duplicate") in seen, "the redelivered batch 0 was recognised"
    assert (2, "completed") in seen
    summary = finished(r, op_id)
    assert (summary["successful_items"], summary["failed_items"]) == ("4", "2"), "exact"
    processed = {int(k): int(v) for k, v in r.hgetall("processed").items()}
    assert processed[0] == processed[1] == 2, "batch 0 ran twice (at least once delivery)..."
    assert received.count() == 1, "...and was counted once: one e-mail"
    assert received.messages[0][2]["Subject"] == "Side update: 2 of 6 items failed"
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(20) == 0
