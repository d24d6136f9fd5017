"""The OPS-1 store (conveyor.redis.operations) against a real Redis: GitLab's API, key names,
fields, 72 h TTL, and the once-only counting and completion of the op_*.lua scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from conveyor import App, FakeClock, Settings
from conveyor.errors import OperationError
from conveyor.redis.operations import OPERATION_TTL, CompletionPush, OperationStore

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def ops(app: App, clock: FakeClock) -> OperationStore:
    return OperationStore(app.store, now=clock.time)


@pytest.fixture
def prefixed(settings: Settings, clock: FakeClock) -> Iterator[OperationStore]:
    other = App(settings.replace(key_prefix="myapp"))
    yield OperationStore(other.store, now=clock.time)
    other.close()


def failed(ops: OperationStore, entity_id: int, message: str = "Permission denied") -> str:
    return ops.failed_item(
        entity_id=entity_id,
        entity_type="Project",
        entity_name=f"p{entity_id}",
        entity_full_path=f"acme/p{entity_id}",
        error_message=message,
        error_code="service_error",
    )


def test_create_writes_the_seed_hash_with_a_72_hour_ttl(
    ops: OperationStore, r: redis.Redis
) -> None:
    op_id = ops.create_operation("attribute_update", 7, 3, {"attribute_ids": [1, 2], "mode": "ADD"})
    assert len(op_id) == 24 and int(op_id, 16) >= 0, "ids are 24 hex characters"
    assert r.hgetall(f"background_operation:{op_id}") == {
        "id": op_id,
        "operation_type": "attribute_update",
        "user_id": "7",
        "user_id_type": "int",
        "parameters": '{"attribute_ids":[1,2],"mode":"ADD"}',
        "status": "pending",
        "total_items": "3",
        "successful_items": "0",
        "failed_items": "0",
        "created_at": repr(T0),
    }
    assert OPERATION_TTL == 72 * 3600
    assert OPERATION_TTL - 5 <= r.ttl(f"background_operation:{op_id}") <= OPERATION_TTL
    op = ops.get_operation(op_id)
    assert op is not None
    assert (op.operation_type, op.user_id, op.status, op.total_items) == (
        "attribute_update",
        "7",
        "pending",
        3,
    )
    assert op.parameters == {"attribute_ids": [1, 2], "mode": "ADD"}
    assert op.created_at == T0 and not op.completed


def test_failed_items_list_has_the_seed_fields_and_the_same_expiry(
    ops: OperationStore, r: redis.Redis, clock: FakeClock
) -> None:
    op_id = ops.create_operation("attribute_update", 7, 5, {})
    clock.advance(12)
    ops.increment_successful(op_id, 2)
    counted = ops.add_failed_item(
        op_id,
        entity_id=12,
        entity_type="Group",
        entity_name="Platform",
        entity_full_path="acme/platform",
        error_message="Permission denied",
        error_code="service_error",
    )
    assert (counted.outcome, counted.successful_items, counted.failed_items) == ("counted", 2, 1)
    key = f"background_operation:{op_id}:failed_items"
    assert r.type(key) == "list"
    assert json.loads(r.lindex(key, 0) or "") == {
        "entity_id": 12,
        "entity_type": "Group",
        "entity_name": "Platform",
        "entity_full_path": "acme/platform",
        "error_message": "Permission denied",
        "error_code": "service_error",
        "created_at": T0 + 12,
    }
    assert ops.get_failed_items(op_id)[0]["entity_full_path"] == "acme/platform"
    assert abs(r.pttl(key) - r.pttl(f"background_operation:{op_id}")) < 1000
    op = ops.get_operation(op_id)
    assert op is not None and op.status == "running"
    assert (op.successful_items, op.failed_items) == (2, 1)


def test_keys_live_under_the_optional_prefix(prefixed: OperationStore, r: redis.Redis) -> None:
    op_id = prefixed.create_operation("attribute_update", 1, 1, {})
    prefixed.add_failed_item(
        op_id,
        entity_id=1,
        entity_type="Project",
        entity_name="a",
        entity_full_path="x/a",
        error_message="boom",
        error_code="unexpected_error",
    )
    assert r.exists(f"myapp:background_operation:{op_id}")
    assert r.exists(f"myapp:background_operation:{op_id}:failed_items")
    assert not r.exists(f"background_operation:{op_id}")


def test_exactly_one_call_completes_and_it_pushes_the_completion_job(
    ops: OperationStore, r: redis.Redis
) -> None:
    op_id = ops.create_operation("attribute_update", 7, 4, {})
    push = CompletionPush("ops", '{"class":"Done","args":[],"jid":"j1","queue":"ops"}')
    results = [
        ops.increment_successful(op_id, 1, completion=push).outcome,
        ops.record_batch(op_id, "b1", 1, [failed(ops, 2)], completion=push).outcome,
        ops.increment_successful(op_id, 1, completion=push).outcome,
        ops.increment_successful(op_id, 1, completion=push).outcome,  # over-count: no 2nd win
    ]
    assert results == ["counted", "counted", "completed", "counted"]
    assert r.lrange("queue:ops", 0, -1) == [push.payload]
    assert "ops" in r.smembers("queues")
    op = ops.get_operation(op_id)
    assert op is not None and op.completed_at is not None


def test_a_batch_is_counted_once(ops: OperationStore, r: redis.Redis) -> None:
    op_id = ops.create_operation("attribute_update", 7, 10, {})
    first = ops.record_batch(op_id, "0", 4, [failed(ops, 5)])
    again = ops.record_batch(op_id, "0", 4, [failed(ops, 5)])
    assert first.outcome == "counted" and again.outcome == "duplicate"
    assert (again.successful_items, again.failed_items) == (4, 1)
    assert r.llen(f"background_operation:{op_id}:failed_items") == 1
    assert ops.counted_batches(op_id) == {"0"}
    assert r.ttl(f"background_operation:{op_id}:batches") > OPERATION_TTL - 5


def test_counting_a_missing_operation_writes_nothing(ops: OperationStore, r: redis.Redis) -> None:
    push = CompletionPush("default", "{}")
    assert ops.record_batch("0" * 24, "0", 3, [failed(ops, 1)], completion=push).outcome == (
        "missing"
    )
    assert ops.increment_successful("0" * 24).outcome == "missing"
    assert r.dbsize() == 0, "no key without a TTL is left behind"


def test_delete_removes_both_keys(ops: OperationStore, r: redis.Redis) -> None:
    op_id = ops.create_operation("attribute_update", 7, 2, {})
    ops.record_batch(op_id, "0", 0, [failed(ops, 1)])
    assert ops.delete_operation(op_id)
    assert ops.get_operation(op_id) is None and ops.get_failed_items(op_id) == []
    assert r.dbsize() == 0
    assert not ops.delete_operation(op_id)


def test_finish_keeps_final_totals_and_blocks_a_second_start(
    ops: OperationStore, r: redis.Redis, clock: FakeClock
) -> None:
    op_id = "a" * 24
    assert ops.open_operation(op_id, "attribute_update", 7, 2, {}) == "created"
    assert ops.open_operation(op_id, "attribute_update", 7, 99, {}) == "exists"
    assert ops.get_operation(op_id).total_items == 2  # type: ignore[union-attr]
    ops.record_batch(op_id, "0", 1, [failed(ops, 2)])
    clock.advance(30)
    assert ops.finish_operation(op_id)
    assert ops.get_operation(op_id) is None
    summary = ops.finished(op_id)
    assert summary is not None
    assert (summary["total_items"], summary["successful_items"], summary["failed_items"]) == (
        "2",
        "1",
        "1",
    )
    assert float(summary["finished_at"]) == T0 + 30
    assert ops.open_operation(op_id, "attribute_update", 7, 2, {}) == "finished"
    assert not r.exists(f"background_operation:{op_id}")


def test_listing_prunes_operations_that_expired(
    ops: OperationStore, r: redis.Redis, clock: FakeClock
) -> None:
    ids = []
    for _ in range(3):
        ids.append(ops.create_operation("attribute_update", 7, 1, {}))
        clock.advance(1)
    r.delete(f"background_operation:{ids[1]}")  # what the 72 h expiry does
    assert ops.operation_ids() == [ids[0], ids[2]]
    assert r.zcard("conveyor:background-operations") == 2
    assert [o.id for o in ops.get_many(ids)] == [ids[0], ids[2]]


def test_notified_is_set_once(ops: OperationStore) -> None:
    op_id = ops.create_operation("attribute_update", 7, 1, {})
    assert ops.mark_notified(op_id)
    assert not ops.mark_notified(op_id)
    ops.delete_operation(op_id)
    assert not ops.mark_notified(op_id)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda o: o.create_operation("t", 1, 0, {}), "total_items must be a whole number >= 1"),
        (lambda o: o.create_operation("", 1, 1, {}), "operation_type must be a non-empty"),
        (lambda o: o.create_operation("t", 1, 1, {"when": object()}), "JSON-native"),
        (lambda o: o.get_operation("../etc"), "operation id '../etc' is not valid"),
        (lambda o: o.increment_successful("a" * 24, -1), "n must be a whole number >= 0"),
        (lambda o: o.record_batch("a" * 24, "", 1, []), "non-empty batch id"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(ops: OperationStore, call, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OperationError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        call(ops)
