"""Run the bulk-operations example end to end, with a real worker process:

    python -m examples.bulk_operations.run [--projects 500] [--flag-off]

1. creates a SQLite database with a group of projects (some archived, some locked) and a user;
2. starts a local SMTP server that prints what it receives (aiosmtpd; or give --smtp-host/
   --smtp-port to use a real one, with CONVEYOR_SMTP_* for TLS and auth);
3. starts ``conveyor worker -r examples.bulk_operations.app`` as a child process;
4. turns the feature flag on and starts the operation through the service;
5. shows ``conveyor ops watch`` until it completes, prints the failure e-mail and the table;
6. stops the worker (SIGTERM).

Redis: ``CONVEYOR_REDIS_URL``, else the embedded server. Keys live under the prefix
``bulk-example`` so the example never touches other apps' jobs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "bulk-example"
GROUP = "acme"


def create_database(path: Path, projects: int) -> dict[str, int]:
    """The schema and rows; every 10th project archived, every 25th locked."""
    from examples.bulk_operations.app import SCHEMA

    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO users VALUES (7, 'Ada Lovelace', 'ada@example.com')")
    archived = locked = 0
    for i in range(1, projects + 1):
        is_archived, is_locked = int(i % 10 == 0), int(i % 25 == 0 and i % 10 != 0)
        archived += is_archived
        locked += is_locked
        conn.execute(
            "INSERT INTO projects (group_path, name, full_path, archived, locked) "
            "VALUES (?, ?, ?, ?, ?)",
            (GROUP, f"Service {i}", f"{GROUP}/service-{i}", is_archived, is_locked),
        )
    conn.execute(
        "INSERT INTO projects (group_path, name, full_path) VALUES ('other', 'x', 'other/x')"
    )
    conn.commit()
    conn.close()
    return {"projects": projects, "archived": archived, "locked": locked}


class Sink:
    """A local SMTP server keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


def start_sink() -> tuple[Sink, Any, int]:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        sys.exit(
            "this example needs aiosmtpd for its local SMTP server: pip install aiosmtpd, "
            "or pass --smtp-host/--smtp-port of a real server"
        )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    return sink, controller, port


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bulk operations example (SQLite + real worker)")
    parser.add_argument("--projects", type=int, default=500)
    parser.add_argument("--flag-off", action="store_true", help="show the legacy path")
    parser.add_argument("--smtp-host")
    parser.add_argument("--smtp-port", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)

    db = Path(tempfile.mkdtemp(prefix="conveyor-bulk-example-")) / "example.db"
    counts = create_database(db, args.projects)
    print(f"database {db}: {counts}")
    sink = controller = None
    if args.smtp_host:
        smtp_host, smtp_port = args.smtp_host, args.smtp_port
    else:
        sink, controller, smtp_port = start_sink()
        smtp_host = "127.0.0.1"
        print(f"local SMTP server on {smtp_host}:{smtp_port}")
    env = environment(db, smtp_host, smtp_port)
    os.environ.update(env)  # the app module imported below reads the same settings

    from examples.bulk_operations import app as example

    worker = subprocess.Popen(
        [*CLI, "worker", "-r", "examples.bulk_operations.app", "-c", "5"],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        if args.flag_off:
            run_legacy(example, db, counts, args.timeout)
        else:
            run_tracked(example, env, args.timeout, sink)
        print(
            f"projects labelled PCI: {labelled(db)} of {counts['projects']} "
            f"({counts['archived']} archived and {counts['locked']} locked left unchanged)"
        )
        if sink is not None:
            print(f"e-mails received: {len(sink.messages)}")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        if controller is not None:
            controller.stop()
        example.app.close()
    return 0


CLI = [sys.executable, "-m", "conveyor.cli"]


def environment(db: Path, smtp_host: str, smtp_port: int) -> dict[str, str]:
    """What the worker and this process share: database, key prefix, SMTP and base URL."""
    env = dict(os.environ)
    env.update(
        EXAMPLE_DB=str(db),
        CONVEYOR_KEY_PREFIX=PREFIX,
        CONVEYOR_SMTP_HOST=smtp_host,
        CONVEYOR_SMTP_PORT=str(smtp_port),
        CONVEYOR_SMTP_SENDER=env.get("CONVEYOR_SMTP_SENDER", "noreply@example.com"),
        CONVEYOR_OPERATIONS_BASE_URL=env.get(
            "CONVEYOR_OPERATIONS_BASE_URL", "https://gitlab.example.com"
        ),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return env


def set_flag(example: Any, on: bool) -> None:
    from conveyor.features.flags import Flags

    flags = Flags.of(example.app)
    flag = example.operations.settings.flag
    if on:
        flags.enable(flag)
    else:
        flags.disable(flag)
    print(f"feature flag {flag}: {'on' if on else 'off'}")


def start(example: Any) -> str:
    """The bulk-update service call an application makes (e.g. from a web request)."""
    result = example.operations.start(
        "security_label_update", user_id=7, parameters={"group": GROUP, "label": "PCI"}
    )
    print(f"started: scheduler job {result.jid}")
    return str(result.jid)


def run_tracked(example: Any, env: dict[str, str], timeout: float, sink: Sink | None) -> None:
    set_flag(example, True)
    op_id = start(example)
    store = example.operations.store
    wait(lambda: store.get_operation(op_id) or store.finished(op_id), timeout, "the scheduler")
    watch = [*CLI, "ops", "watch", op_id, "--interval", "0.2", "--timeout", str(timeout)]
    subprocess.run(watch, env=env, check=True)
    subprocess.run([*CLI, "ops", "show", op_id, "--items", "3"], env=env, check=True)
    if sink is not None:
        wait(lambda: sink.messages, 30, "the failure e-mail")
        show_message(sink.messages[0], Path(env["EXAMPLE_DB"]).with_name("failure-email.eml"))


def run_legacy(example: Any, db: Path, counts: dict[str, int], timeout: float) -> None:
    set_flag(example, False)
    start(example)
    expected = counts["projects"] - failures(counts)
    wait(lambda: labelled(db) == expected, timeout, "the legacy batches")
    print("legacy path: no operation was tracked and no e-mail is sent")


def failures(counts: dict[str, int]) -> int:
    return counts["archived"] + counts["locked"]


def labelled(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(
            conn.execute("SELECT count(*) FROM projects WHERE security_labels = 'PCI'").fetchone()[
                0
            ]
        )
    finally:
        conn.close()


def show_message(message: EmailMessage, path: Path) -> None:
    path.write_bytes(bytes(message))
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    print("\n----- failure e-mail -----")
    print(f"To: {message['To']}\nSubject: {message['Subject']}")
    print(f"Parts: {[p.get_content_type() for p in message.iter_parts()]}")
    if text is not None:
        lines = text.get_content().splitlines()
        print("\n".join(lines[:20]))
        if len(lines) > 20:
            print(f"... ({len(lines) - 20} more lines; the HTML part has the same content)")
    print(f"(the whole message, both parts: {path})")
    print("--------------------------\n")
    assert html is not None


if __name__ == "__main__":
    raise SystemExit(main())
