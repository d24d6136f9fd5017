"""A worker process for the bulk-operation race and crash tests: ``python
tests/apps/operations_app.py`` with CONVEYOR_* settings (SMTP and base URL from CONVEYOR_SMTP_* /
CONVEYOR_OPERATIONS_*).

The operation ``side_update`` records its effects in Redis so tests count what really ran:
``processed`` (hash: entity id -> times processed), ``outcomes`` (list: batch:outcome:pid).
Parameters: ``n`` entities, ``deny`` ids (service errors), ``crash`` ids (exceptions),
``wait`` ids that block until the key ``go`` exists (after INCR ``waiting``). A key
``hold_after:<batch>`` makes that batch sleep after it was counted, before it is acknowledged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import redis

from conveyor import App, Settings, Worker
from conveyor.features.operations import BulkOperation, BulkOperations, Entity, ServiceResult

app = App(Settings.load())
side = redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"], decode_responses=True)
# Keyed by int: the lookup gets the user id in the type start() was given (7, not "7").
users: dict[int | str, str] = {7: "ada@example.com"}
operations = BulkOperations(app, recipient=users.get)


def _bounded_wait(key: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not side.exists(key) and time.monotonic() < deadline:
        time.sleep(0.002)


class SideUpdate(BulkOperation):
    operation_type = "side_update"
    title = "Side update"

    def collect(self, parameters: dict[str, Any], user_id: int | str) -> Iterable[Entity]:
        return [
            Entity(i, "Project", f"project {i}", f"acme/project-{i}")
            for i in range(int(parameters["n"]))
        ]

    def process(self, entity: Entity, parameters: dict[str, Any]) -> ServiceResult | None:
        if entity.id in parameters.get("wait", ()):
            side.incr("waiting")
            _bounded_wait("go", 30)
        side.hincrby("processed", str(entity.id), 1)
        if entity.id in parameters.get("crash", ()):
            raise RuntimeError(f"lost the connection while updating {entity.id}")
        if entity.id in parameters.get("deny", ()):
            return ServiceResult.error("Permission denied")
        return None

    def after_batch(self, operation_id: str | None, batch: int, outcome: str) -> None:
        side.rpush("outcomes", f"{batch}:{outcome}:{os.getpid()}")
        if side.exists(f"hold_after:{batch}"):
            time.sleep(60)  # counted, not yet acknowledged: the test kills us here


operations.register(SideUpdate())


if __name__ == "__main__":
    Worker(app).run()
