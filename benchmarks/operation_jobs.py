"""The bulk operation of benchmarks/operations.py: ``bench_update`` over ``n`` synthetic entities,
every ``fail_every``-th refused by the service (so the tracked path records failed items and
renders an e-mail). ``python -m benchmarks.operation_jobs`` runs one worker process.

With ``BENCH_ROUNDTRIPS_FILE`` set, the worker counts its Redis round trips (every request
redis-py writes to a connection: one per command, one per pipeline or script call) and, when it
exits, writes them to that file as JSON: in total, and inside the batch jobs' bodies.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import Iterable
from email.message import EmailMessage
from typing import Any

import redis.connection

from conveyor import App, Settings, Worker
from conveyor.features.operations import (
    BulkOperation,
    BulkOperations,
    Entity,
    OperationsSettings,
    ServiceResult,
)

OPERATION = "bench_update"


class Synthetic(BulkOperation):
    operation_type = OPERATION
    title = "Benchmark update"

    def collect(self, parameters: dict[str, Any], user_id: str) -> Iterable[Entity]:
        return [Entity(i, "Project", f"p{i}", f"bench/p{i}") for i in range(int(parameters["n"]))]

    def process(self, entity: Entity, parameters: dict[str, Any]) -> ServiceResult | None:
        every = int(parameters.get("fail_every") or 0)
        if every and int(entity.id) % every == 0:
            return ServiceResult.error("Permission denied")
        return None


def create_app(settings: Settings, batch_size: int = 100) -> tuple[App, BulkOperations]:
    app = App(settings)
    # The e-mail is rendered in full but not sent: the benchmark measures tracking, not SMTP.
    ops = BulkOperations(
        app,
        OperationsSettings(batch_size=batch_size),
        recipient=lambda user_id: "bench@example.com",
        mailer=_discard,
    )
    ops.register(Synthetic())
    return app, ops


def _discard(message: EmailMessage) -> None:
    bytes(message)


class RoundTrips:
    """Counts requests written to Redis connections, per process and per thread."""

    def __init__(self) -> None:
        self.total = 0
        self.lock = threading.Lock()
        self.local = threading.local()
        self.in_batches: dict[str, list[int]] = {}

    def install(self) -> None:
        original = redis.connection.AbstractConnection.send_packed_command
        counter = self

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            with counter.lock:
                counter.total += 1
            counter.local.n = getattr(counter.local, "n", 0) + 1
            original(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    def measure(self, ops: BulkOperations, name: str) -> None:
        """Wrap ``ops.<name>`` so each call's round trips (in its own thread) are recorded."""
        inner = getattr(ops, name)
        calls = self.in_batches.setdefault(name, [])

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            before = getattr(self.local, "n", 0)
            try:
                return inner(*args, **kwargs)
            finally:
                with self.lock:
                    calls.append(getattr(self.local, "n", 0) - before)

        setattr(ops, name, wrapped)

    def dump(self, path: str) -> None:
        with self.lock:
            data = {"total": self.total, "calls": {k: list(v) for k, v in self.in_batches.items()}}
        with open(path, "w") as f:
            json.dump(data, f)


if __name__ == "__main__":
    worker_app, operations = create_app(Settings.load())
    out = os.environ.get("BENCH_ROUNDTRIPS_FILE")
    if out:
        trips = RoundTrips()
        trips.install()
        for method in ("schedule", "run_batch", "run_legacy_batch", "complete"):
            trips.measure(operations, method)
        atexit.register(trips.dump, out)
    Worker(worker_app).run(install_signals=True)
