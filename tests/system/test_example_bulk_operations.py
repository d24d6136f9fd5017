"""The runnable example examples/bulk_operations (SQLite rows, a real worker process, a local
SMTP server) run end to end by its documented command."""

from __future__ import annotations

import email
import email.policy
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest
import redis
from support import PYTHON, ROOT, python_env


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_example_runs_and_mails_the_failures(redis_url: str, r: redis.Redis) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "examples.bulk_operations.run", "--projects", "60", "--timeout", "60"],
        check=False,
        cwd=ROOT,
        env=python_env(CONVEYOR_REDIS_URL=redis_url, COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # 60 projects: 6 archived (service errors), 1 locked (trigger aborts: unexpected error)
    assert "operation" in out and "finished: 53 succeeded, 7 failed of 60" in out
    assert "Subject: Security label update: 7 of 60 items failed" in out
    assert "Parts: ['text/plain', 'text/html']" in out
    [eml] = [
        line.split(": ", 1)[1].rstrip(")") for line in out.splitlines() if "both parts" in line
    ]
    message = email.message_from_bytes(Path(eml).read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for i in (10, 20, 30, 40, 50, 60):
        assert f"https://gitlab.example.com/acme/service-{i}" in text
        assert f'href="https://gitlab.example.com/acme/service-{i}"' in html
    assert text.count("Project is archived; unarchive it to change its labels [service_error]") == 6
    assert "Error: An unexpected error occurred. [unexpected_error]" in text
    assert "project row is locked" not in text, "exception text stays in the worker's log"
    assert "projects labelled PCI: 53 of 60" in out
    assert "e-mails received: 1" in out
    assert not r.keys("bulk-example:background_operation:*"), "the operation was deleted"
