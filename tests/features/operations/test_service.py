"""The bulk-operation flow (conveyor.features.operations.service) with real workers, a real Redis
and a real SMTP server (aiosmtpd): service -> scheduler -> batches -> one completion -> e-mail ->
delete; the feature flag; duplicated batches and redelivered schedulers and completions."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import redis
from support import run_burst
from support.mail import Received, smtp_server

from conveyor import App, Settings
from conveyor.api import Api
from conveyor.core.payload import dumps, parse
from conveyor.errors import ConfigurationError, MailError, OperationError
from conveyor.features.flags import Flags
from conveyor.features.operations import (
    BulkOperation,
    BulkOperations,
    Entity,
    MailSettings,
    OperationsSettings,
    ServiceResult,
)

RECIPIENT = "ada@example.com"
FLAG = "security_bulk_operations_notifications"


class Relabel(BulkOperation):
    """Entities 1..n; ids in ``deny`` fail with a service error, ids in ``crash`` raise."""

    operation_type = "attribute_update"
    title = "Security attribute update"

    def __init__(self, n: int = 10, deny: Iterable[int] = (), crash: Iterable[int] = ()) -> None:
        self.n = n
        self.deny = set(deny)
        self.crash = set(crash)
        self.calls: list[int] = []
        self.users: list[int | str] = []

    def collect(self, parameters: dict[str, Any], user_id: int | str) -> Iterable[Entity]:
        self.users.append(user_id)
        for i in range(1, self.n + 1):
            yield Entity(i, "Project", f"project {i}", f"acme/project-{i}")

    def process(self, entity: Entity, parameters: dict[str, Any]) -> ServiceResult | None:
        assert isinstance(entity.id, int)
        self.calls.append(entity.id)
        if entity.id in self.crash:
            raise RuntimeError(f"database went away while updating {entity.id}")
        if entity.id in self.deny:
            return ServiceResult.error("Permission denied")
        return None


@pytest.fixture
def smtp() -> Iterator[tuple[Received, int]]:
    with smtp_server() as server:
        yield server


def make(
    app: App, port: int, definition: Relabel, *, flag: bool = True, batch_size: int = 3
) -> BulkOperations:
    settings = OperationsSettings(
        base_url="https://gitlab.example.com",
        batch_size=batch_size,
        mail=MailSettings(host="127.0.0.1", port=port, sender="noreply@example.com"),
    )
    # Keyed by int, as an application's user table is: the lookup gets 7, not '7' (issue 19).
    users: dict[int | str, str] = {7: RECIPIENT}
    ops = BulkOperations(app, settings, recipient=users.get)
    ops.register(definition)
    if flag:
        Flags(app, cache_ttl=0).enable(FLAG)
    return ops


def only_message(received: Received) -> EmailMessage:
    assert received.count() == 1, f"expected one e-mail, got {received.count()}"
    sender, rcpts, message = received.messages[0]
    assert (sender, rcpts) == ("noreply@example.com", [RECIPIENT])
    return message


def op_keys(r: redis.Redis) -> list[str]:
    return sorted(k for k in r.scan_iter("*background_operation*"))


def test_failures_send_one_email_with_totals_items_links_and_both_parts(
    app: App, r: redis.Redis, smtp: tuple[Received, int], caplog: pytest.LogCaptureFixture
) -> None:
    received, port = smtp
    definition = Relabel(10, deny=[2, 9], crash=[5])
    ops = make(app, port, definition)
    result = ops.start("attribute_update", 7, {"attribute_ids": [1, 2], "mode": "ADD"})
    with caplog.at_level(logging.ERROR, logger="conveyor.operations"):
        run_burst(app)
    assert definition.users == [7], "hooks get the user id in its own type"

    assert sorted(definition.calls) == list(range(1, 11))
    message = only_message(received)
    assert message["Subject"] == "Security attribute update: 3 of 10 items failed"
    assert message["Message-ID"] == f"<bulk-operation.{result.jid}@example.com>"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None, "a text part and an HTML part"
    body, markup = text.get_content(), html.get_content()
    for needle in ("Total:     10", "Succeeded: 7", "Failed:    3"):
        assert needle in body
    assert "<td>10</td><td>7</td><td>3</td>" in markup
    for i, error, code in (
        (2, "Permission denied", "service_error"),
        (9, "Permission denied", "service_error"),
        (5, "An unexpected error occurred.", "unexpected_error"),
    ):
        link = f"https://gitlab.example.com/acme/project-{i}"
        assert link in body and f'href="{link}"' in markup
        assert f"Error: {error} [{code}]" in body
        assert f"<code>{code}</code>" in markup
    assert "project-3" not in body, "only failed items are listed"
    assert "database went away" not in body + markup, "generic text for unexpected errors"
    assert "database went away while updating 5" in caplog.text, "the details are in the log"
    for private in ("attribute_ids", "user", RECIPIENT):
        assert private not in body and private not in markup, "no other personal data"

    assert op_keys(r) == [], "the operation is deleted after the e-mail"
    finished = ops.store.finished(result.jid)
    assert finished is not None and finished["failed_items"] == "3"


def test_full_success_sends_no_email_and_deletes(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    ops = make(app, port, Relabel(7))
    result = ops.start("attribute_update", 7)
    run_burst(app)
    assert received.count() == 0
    assert op_keys(r) == []
    finished = ops.store.finished(result.jid)
    assert finished is not None and finished["successful_items"] == "7"


def test_flag_off_takes_the_legacy_path_without_tracking_or_email(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    definition = Relabel(8, deny=[1, 2])
    ops = make(app, port, definition, flag=False)
    jobs: list[str] = []
    original = ops.legacy_batch_job.perform

    def spy(self: Any, *args: Any) -> None:
        jobs.append(self.job["class"])
        original(self, *args)

    ops.legacy_batch_job.perform = spy  # type: ignore[method-assign]
    ops.start("attribute_update", 7)
    run_burst(app)
    assert sorted(definition.calls) == list(range(1, 9)), "the work is still done"
    assert jobs == ["conveyor.BulkOperationLegacyBatch"] * 3
    assert received.count() == 0
    assert op_keys(r) == [] and r.zcard("conveyor:background-operations") == 0


def test_flag_is_per_user_when_set_to_a_percentage(app: App, smtp: tuple[Received, int]) -> None:
    ops = make(app, smtp[1], Relabel(1), flag=False)
    flags = Flags.of(app)
    flags.set_percentage(FLAG, 50)
    flags._forget(FLAG)
    on = [u for u in range(200) if ops.tracking_enabled(u)]
    assert 60 < len(on) < 140
    assert ops.tracking_enabled(on[0]) and not ops.tracking_enabled(
        next(u for u in range(200) if u not in on)
    )


def test_a_duplicated_batch_is_counted_once_and_mails_once(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    definition = Relabel(6, deny=[6])
    ops = make(app, port, definition, batch_size=3)
    with app.testing.fake():
        ops.start("attribute_update", 7)
        scheduler = app.testing.jobs()[0]
    ops.schedule(scheduler["jid"], *scheduler["args"])
    batches = [parse(raw) for raw in r.lrange("queue:default", 0, -1)]
    assert len(batches) == 2
    # The same batch delivered twice (a retry, a redelivery): push copies of both.
    r.lpush("queue:default", *(dumps(b) for b in batches))
    run_burst(app)
    assert len(definition.calls) == 12, "every copy ran"
    message = only_message(received)
    assert message["Subject"] == "Security attribute update: 1 of 6 items failed"
    assert "Succeeded: 5" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert op_keys(r) == []


def test_a_redelivered_scheduler_does_not_start_a_second_operation(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    definition = Relabel(6, deny=[1])
    ops = make(app, port, definition, batch_size=2)
    jid = "f" * 24
    assert ops.schedule(jid, "attribute_update", 7, {}) == jid
    first_batch = r.rpop("queue:default")
    assert first_batch is not None
    ops.run_batch(*parse(first_batch)["args"])
    r.delete("queue:default")  # the rest were lost with the crash...
    assert ops.schedule(jid, "attribute_update", 7, {}) == jid  # ...and the scheduler reruns
    assert r.llen("queue:default") == 2, "only the batches not counted yet are enqueued again"
    run_burst(app)
    assert received.count() == 1
    assert ops.schedule(jid, "attribute_update", 7, {}) == jid  # after it finished
    assert r.llen("queue:default") == 0 and op_keys(r) == []
    assert received.count() == 1


def test_a_redelivered_completion_does_not_mail_twice(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    ops = make(app, port, Relabel(2, deny=[2]))
    op_id = ops.store.create_operation("attribute_update", 7, 2, {})
    store = ops.store
    store.increment_successful(op_id)
    store.add_failed_item(
        op_id,
        entity_id=2,
        entity_type="Project",
        entity_name="project 2",
        entity_full_path="acme/project-2",
        error_message="Permission denied",
        error_code="service_error",
    )
    ops._notify(store.get_operation(op_id))  # type: ignore[arg-type]
    store.mark_notified(op_id)  # ...and the worker died before deleting
    assert ops.complete(op_id)
    assert received.count() == 1 and op_keys(r) == []
    assert not ops.complete(op_id), "a second delivery finds it finished"


def test_smtp_down_keeps_the_operation_visible_as_notify_failed_for_the_retry(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    closed = OperationsSettings(mail=MailSettings(host="127.0.0.1", port=1, timeout=2))
    ops = BulkOperations(app, closed, recipient={7: RECIPIENT}.get)
    ops.register(Relabel(1))
    op_id = ops.store.create_operation("attribute_update", 7, 1, {})
    ops.store.record_batch(op_id, "0", 0, [_item(ops)])
    with pytest.raises(MailError, match=r"127\.0\.0\.1:1") as info:
        ops.complete(op_id)
    assert RECIPIENT not in str(info.value)
    record = Api(app).operations.get(op_id)
    assert record.status == "notify_failed" and "127.0.0.1:1" in record.notify_error
    assert RECIPIENT not in record.notify_error
    assert r.ttl(f"background_operation:{op_id}") == -1, "kept until delivered or dismissed"
    ops._settings = OperationsSettings(mail=MailSettings(host="127.0.0.1", port=port))
    assert ops.complete(op_id)
    assert received.count() == 1 and op_keys(r) == []


def test_no_address_keeps_the_report_visible_until_dismissed(
    app: App, r: redis.Redis, caplog: pytest.LogCaptureFixture, smtp: tuple[Received, int]
) -> None:
    """The failure report used to be deleted when the recipient lookup found nothing (issue
    19: the lookup got '7' for a table keyed by 7)."""
    received, port = smtp
    definition = Relabel(3, deny=[3])
    ops = make(app, port, definition)
    ops.recipient = {}.get
    with caplog.at_level(logging.INFO, logger="conveyor.operations"):
        result = ops.start("attribute_update", 8)
        run_burst(app)
    assert received.count() == 0
    record = Api(app).operations.get(result.jid)
    assert record.status == "notify_failed" and record.failed_items == 1
    assert "no e-mail address was found" in record.notify_error
    assert "no e-mail address was found" in caplog.text
    assert RECIPIENT not in caplog.text and "ada" not in caplog.text
    assert all(r.ttl(k) == -1 for k in op_keys(r)), "the report no longer expires"
    with pytest.raises(OperationError, match="only one whose e-mail could not be delivered"):
        Api(app).operations.dismiss(ops.store.create_operation("attribute_update", 8, 1, {}))
    assert Api(app).operations.dismiss(result.jid)
    assert ops.store.get_operation(result.jid) is None
    assert ops.store.finished(result.jid) is not None, "its totals are kept, as a delivered one's"


class Idioms(Relabel):
    """process() in the shapes people write: bool, ServiceResult, None, and a mistake."""

    def process(self, entity: Entity, parameters: dict[str, Any]) -> Any:
        assert isinstance(entity.id, int), "ids reach process in their original type"
        self.calls.append(entity.id)
        return {1: True, 2: False, 3: ServiceResult.success(), 4: None, 5: "ok"}[entity.id]


def test_process_returning_bool_is_per_item_and_anything_else_is_unexpected(
    app: App, r: redis.Redis, smtp: tuple[Received, int], caplog: pytest.LogCaptureFixture
) -> None:
    """``return False`` used to raise AttributeError outside the per-item handling, failing
    the whole batch and re-running its done items on retry (issue 19)."""
    received, port = smtp
    definition = Idioms(5)
    ops = make(app, port, definition, batch_size=5)
    result = ops.start("attribute_update", 7)
    with caplog.at_level(logging.ERROR, logger="conveyor.operations"):
        run_burst(app)
    assert definition.calls == [1, 2, 3, 4, 5], "one batch, each item once, no retry"
    assert r.zcard("retry") == 0
    message = only_message(received)
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "2 of 5 items failed" in str(message["Subject"])
    assert "Error: the service reported a failure [service_error]" in text
    assert "Error: An unexpected error occurred. [unexpected_error]" in text
    assert "process() returned a str" in caplog.text
    assert ops.store.finished(result.jid) is not None


def test_a_batch_that_gives_up_counts_its_items_as_failed(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    ops = make(app, port, Relabel(2))
    op_id = ops.store.create_operation("attribute_update", 7, 2, {})
    entities = [
        Entity(1, "Project", "a", "acme/a").to_json(),
        Entity(2, "Group", "b", "b").to_json(),
    ]
    ops.give_up_batch([op_id, "attribute_update", 0, entities, {}], TimeoutError())
    items = ops.store.get_failed_items(op_id)
    assert [(i["entity_id"], i["error_code"]) for i in items] == [
        (1, "unexpected_error"),
        (2, "unexpected_error"),
    ]
    assert "gave up after its retries (TimeoutError)" in items[0]["error_message"]
    run_burst(app)  # the completion job the counting script pushed
    assert received.count() == 1


def test_inline_testing_mode_runs_the_whole_flow(
    app: App, r: redis.Redis, smtp: tuple[Received, int]
) -> None:
    received, port = smtp
    ops = make(app, port, Relabel(4, deny=[4]))
    with app.testing.inline():
        ops.start("attribute_update", 7)
    assert received.count() == 1 and op_keys(r) == []


def test_declaration_errors_are_clear(app: App, settings: Settings) -> None:
    ops = BulkOperations(app, OperationsSettings())
    with pytest.raises(ConfigurationError, match="already has BulkOperations"):
        BulkOperations(app)
    assert BulkOperations.of(app) is ops
    with pytest.raises(ConfigurationError, match="no bulk operation 'nope' is registered"):
        ops.start("nope", 7)

    class Nameless(BulkOperation):
        pass

    with pytest.raises(ConfigurationError, match="has no operation_type"):
        ops.register(Nameless())
    ops.register(Relabel())
    with pytest.raises(ConfigurationError, match="user_id must be"):
        ops.start("attribute_update", True)


def _item(ops: BulkOperations) -> str:
    return ops.store.failed_item(
        entity_id=1,
        entity_type="Project",
        entity_name="a",
        entity_full_path="acme/a",
        error_message="Permission denied",
        error_code="service_error",
    )
