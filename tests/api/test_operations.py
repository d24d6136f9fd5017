"""The data API of bulk operations (conveyor.api._operations) against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import conveyor.api
from conveyor import FakeClock, Settings
from conveyor.api import Api, FinishedOperationRecord, OperationRecord, OperationsApi
from conveyor.errors import NotFoundError
from conveyor.redis.operations import OperationStore


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with Api.from_settings(settings) as data_api:
        yield data_api


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def store(api: Api, clock: FakeClock) -> OperationStore:
    return OperationStore(api.app.store, now=clock.time)


def add_failures(store: OperationStore, op_id: str, n: int) -> None:
    items = [
        store.failed_item(
            entity_id=i,
            entity_type="Group",
            entity_name=f"g{i}",
            entity_full_path=f"g{i}",
            error_message=f"error {i}",
            error_code="unexpected_error",
        )
        for i in range(n)
    ]
    store.record_batch(op_id, "failures", 0, items)


def test_list_get_and_failed_item_pages(api: Api, store: OperationStore, clock: FakeClock) -> None:
    first = store.create_operation("attribute_update", 7, 300, {"mode": "ADD"})
    clock.advance(1)
    second = store.create_operation("archive", "u-9", 2, {})
    add_failures(store, first, 250)
    store.record_batch(first, "ok", 50, [])
    ops = OperationsApi.of(api)
    records = ops.list()
    assert [r.id for r in records] == [first, second]
    record = ops.get(first)
    assert isinstance(record, OperationRecord)
    assert (record.processed_items, record.percent, record.status) == (300, 100.0, "completed")
    assert record.parameters == {"mode": "ADD"} and record.user_id == "7"
    assert ops.get(second).percent == 0.0 and ops.get(second).status == "pending"
    page = ops.failed_items(first, 200, 100)
    assert [f.entity_id for f in page] == list(range(200, 250))
    assert page[0].error_code == "unexpected_error" and page[0].created_at == 1_700_000_001.0
    with pytest.raises(ValueError, match="count >= 1"):
        ops.failed_items(first, 0, 0)


def test_status_after_finish_and_resolving_ids(api: Api, store: OperationStore) -> None:
    ops = OperationsApi.of(api)
    op_id = store.create_operation("attribute_update", 7, 1, {})
    store.record_batch(op_id, "0", 1, [])
    store.finish_operation(op_id)
    with pytest.raises(NotFoundError, match="no running bulk operation"):
        ops.get(op_id)
    done = ops.status(op_id)
    assert isinstance(done, FinishedOperationRecord)
    assert (done.successful_items, done.total_items, done.finished) == (1, 1, True)
    assert ops.resolve(op_id) == op_id
    a = store.create_operation("x", 1, 1, {})
    assert ops.resolve(a[:10]) == a
    with pytest.raises(NotFoundError, match="no bulk operation 'zzz'"):
        ops.resolve("zzz")
    for _ in range(40):  # two ids sharing a first hex digit are certain among 40
        store.create_operation("x", 1, 1, {})
    shared = {}
    for i in store.operation_ids():
        shared.setdefault(i[0], []).append(i)
    digit = next(d for d, ids in shared.items() if len(ids) > 1)
    with pytest.raises(NotFoundError, match="matches"):
        ops.resolve(digit)


def test_the_data_api_exposes_operations_publicly(api: Api, store: OperationStore) -> None:
    op_id = store.create_operation("archive", 7, 2, {})
    add_failures(store, op_id, 1)
    assert api.operations is api.operations, "created once, on first use"
    assert isinstance(api.operations, OperationsApi)
    assert [r.id for r in api.operations.list()] == [op_id]
    assert api.operations.failed_items(op_id)[0].error_code == "unexpected_error"
    for name in ("OperationsApi", "OperationRecord", "FinishedOperationRecord", "FailedItemRecord"):
        assert name in conveyor.api.__all__
