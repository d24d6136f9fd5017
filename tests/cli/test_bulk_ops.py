"""``conveyor ops list|show|watch`` (conveyor.cli.bulk_ops) against a real Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner, Result

from conveyor import App
from conveyor.cli import main
from conveyor.redis.operations import OperationStore


@pytest.fixture
def cli(redis_url: str, r: redis.Redis) -> Iterator[CliRunner]:
    yield CliRunner(env={"CONVEYOR_REDIS_URL": redis_url, "COLUMNS": "200"})


@pytest.fixture
def store(app: App) -> OperationStore:
    return OperationStore(app.store)


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, list(args), catch_exceptions=False)


def fail(store: OperationStore, op_id: str, i: int, batch: str) -> None:
    item = store.failed_item(
        entity_id=i,
        entity_type="Project",
        entity_name=f"project {i}",
        entity_full_path=f"acme/project-{i}",
        error_message="Permission denied",
        error_code="service_error",
    )
    store.record_batch(op_id, batch, 0, [item])


def test_list_and_show(cli: CliRunner, store: OperationStore) -> None:
    assert "no bulk operations running" in run(cli, "ops", "list").output
    op_id = store.create_operation("attribute_update", 7, 10, {"mode": "ADD"})
    store.record_batch(op_id, "0", 3, [])
    fail(store, op_id, 4, "1")
    listed = run(cli, "ops", "list")
    assert listed.exit_code == 0
    assert op_id in listed.output and "4/10 (40%)" in listed.output
    assert "running" in listed.output
    as_json = json.loads(run(cli, "ops", "list", "--json").output)
    assert [(o["id"], o["successful_items"], o["failed_items"]) for o in as_json] == [(op_id, 3, 1)]

    shown = run(cli, "ops", "show", op_id[:6])  # a unique prefix is enough
    assert shown.exit_code == 0, shown.output
    for needle in ("attribute_update", "4/10 (40%)", "acme/project-4", "Permission denied"):
        assert needle in shown.output
    data = json.loads(run(cli, "ops", "show", op_id, "--json").output)
    assert data["failed"][0]["entity_full_path"] == "acme/project-4"
    assert data["expires_in"] > 71 * 3600


def test_show_a_finished_operation_and_unknown_ids(cli: CliRunner, store: OperationStore) -> None:
    op_id = store.create_operation("attribute_update", 7, 1, {})
    fail(store, op_id, 1, "0")
    store.finish_operation(op_id)
    shown = run(cli, "ops", "show", op_id)
    assert shown.exit_code == 0
    assert "finished" in shown.output and "1/1 (100%)" in shown.output
    missing = cli.invoke(main, ["ops", "show", "0" * 24])
    assert missing.exit_code == 1
    assert "no bulk operation '000000000000000000000000'" in missing.output
    assert "Traceback" not in missing.output


def test_watch_draws_progress_until_completion(
    cli: CliRunner, store: OperationStore, app: App
) -> None:
    op_id = store.create_operation("attribute_update", 7, 10, {})

    def work() -> None:
        for n in range(10):
            time.sleep(0.03)
            if n in (2, 7):
                fail(store, op_id, n, str(n))
            else:
                store.record_batch(op_id, str(n), 1, [])
        store.finish_operation(op_id)  # what the completion job does

    worker = threading.Thread(target=work)
    worker.start()
    result = run(cli, "ops", "watch", op_id, "--interval", "0.05", "--timeout", "20")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert "10/10" in result.output and "failed: 2" in result.output
    assert f"operation {op_id} finished: 8 succeeded, 2 failed of 10" in result.output


def test_watch_gives_up_after_its_timeout(cli: CliRunner, store: OperationStore) -> None:
    op_id = store.create_operation("attribute_update", 7, 10, {})
    result = cli.invoke(main, ["ops", "watch", op_id, "--interval", "0.05", "--timeout", "0.2"])
    assert result.exit_code == 1
    assert f"operation {op_id} still running after 0.2s (0/10)" in result.output


def test_watch_tells_the_truth_when_the_e_mail_is_not_delivered(
    cli: CliRunner, store: OperationStore
) -> None:
    """``ops watch`` used to say "still running" while the completion job retried a MailError
    (issue 19)."""
    op_id = store.create_operation("attribute_update", 7, 2, {})
    store.record_batch(op_id, "0", 1, [])
    fail(store, op_id, 2, "1")  # every item counted: completed, e-mail pending
    pending = cli.invoke(main, ["ops", "watch", op_id, "--interval", "0.05", "--timeout", "0.2"])
    assert pending.exit_code == 1
    assert "all 2/2 items processed; waiting for the completion job" in pending.output
    assert "still running" not in pending.output
    store.mark_notify_failed(op_id, "SMTP server mail.example.com:587 (starttls) failed")
    failed = cli.invoke(main, ["ops", "watch", op_id, "--interval", "0.05", "--timeout", "5"])
    assert failed.exit_code == 1
    assert "but its failure e-mail was not delivered: SMTP server mail.example.com" in (
        failed.output
    )
    shown = run(cli, "ops", "show", op_id)
    assert "notify_failed" in shown.output and "NOT DELIVERED" in shown.output
    assert f"conveyor ops resend {op_id}" in shown.output


def test_resend_and_dismiss_a_notify_failed_operation(
    cli: CliRunner, store: OperationStore, r: redis.Redis
) -> None:
    op_id = store.create_operation("attribute_update", 7, 1, {})
    fail(store, op_id, 1, "0")
    early = cli.invoke(main, ["ops", "dismiss", op_id])
    assert early.exit_code == 1 and "only one whose e-mail could not be delivered" in early.output
    store.mark_notify_failed(op_id, "no e-mail address was found for the operation's user")
    resent = run(cli, "ops", "resend", op_id[:8], "--queue", "ops")
    assert resent.exit_code == 0, resent.output
    [job] = [json.loads(raw) for raw in r.lrange("queue:ops", 0, -1)]
    assert (job["class"], job["args"]) == ("conveyor.BulkOperationCompletion", [op_id])
    dismissed = run(cli, "ops", "dismiss", op_id)
    assert dismissed.exit_code == 0 and f"operation {op_id} dismissed" in dismissed.output
    assert store.get_operation(op_id) is None and store.finished(op_id) is not None
