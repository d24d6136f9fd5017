"""The application module of the bulk-operations example: what a worker loads with
``conveyor worker -r examples.bulk_operations.app``.

The entities are rows of the SQLite table ``projects`` (database file: ``EXAMPLE_DB``). The
operation ``security_label_update`` adds a security label to every project of a group:

- an archived project is refused by the service -> ``service_error``;
- a project locked by a (simulated) migration makes SQLite's trigger abort the UPDATE ->
  ``unexpected_error``.

The failure e-mail goes to the e-mail address of the user who started the operation, looked up
in the ``users`` table (the only personal data the operation touches).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from conveyor import App
from conveyor.features.operations import BulkOperation, BulkOperations, Entity, ServiceResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    group_path TEXT NOT NULL,
    name TEXT NOT NULL,
    full_path TEXT NOT NULL UNIQUE,
    archived INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0,
    security_labels TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS projects_locked BEFORE UPDATE ON projects
WHEN OLD.locked = 1
BEGIN
    SELECT RAISE(ABORT, 'project row is locked by a running migration');
END;
"""

_local = threading.local()


def db_path() -> str:
    return os.environ.get("EXAMPLE_DB", "bulk_operations_example.db")


def connection() -> sqlite3.Connection:
    """One connection per thread (worker threads update rows concurrently)."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(db_path(), timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        _local.conn = conn
    return conn


class SecurityLabelUpdate(BulkOperation):
    """Add (or remove) a security label on every project of a group."""

    operation_type = "security_label_update"
    title = "Security label update"
    batch_size = 50

    def collect(self, parameters: dict[str, Any], user_id: int | str) -> Iterable[Entity]:
        rows = connection().execute(
            "SELECT id, name, full_path FROM projects WHERE group_path = ? ORDER BY id",
            (parameters["group"],),
        )
        return [Entity(row[0], "Project", row[1], row[2]) for row in rows]

    def process(self, entity: Entity, parameters: dict[str, Any]) -> ServiceResult | None:
        conn = connection()
        row = conn.execute(
            "SELECT archived, security_labels FROM projects WHERE id = ?", (entity.id,)
        ).fetchone()
        if row is None:
            return ServiceResult.error("Project not found (deleted since the operation started)")
        archived, labels = row
        if archived:
            return ServiceResult.error("Project is archived; unarchive it to change its labels")
        current = {x for x in labels.split(",") if x}
        label = str(parameters["label"])
        wanted = current | {label} if parameters.get("mode", "ADD") == "ADD" else current - {label}
        # Idempotent: running a batch twice (after a crash) sets the same labels again.
        conn.execute(
            "UPDATE projects SET security_labels = ? WHERE id = ?",
            (",".join(sorted(wanted)), entity.id),
        )
        return None


def recipient(user_id: int | str) -> str | None:
    row = connection().execute("SELECT email FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else str(row[0])


app = App()  # settings from CONVEYOR_* when first used (not at import)
operations = BulkOperations(app, recipient=recipient)  # CONVEYOR_OPERATIONS_* / CONVEYOR_SMTP_*
operations.register(SecurityLabelUpdate())
