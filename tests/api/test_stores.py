"""The data API over several stores (two real redis-servers): an Api per store, the overview
summed across them, a store that cannot be read reported beside the others' sum."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support import free_port

from conveyor import App, Settings
from conveyor.api import Api, sum_stats
from conveyor.errors import ConfigurationError


@pytest.fixture
def app(settings: Settings, store_b_url: str, rb: redis.Redis) -> Iterator[App]:
    application = App(settings.replace(stores={"b": store_b_url}))
    yield application
    application.close()


def fill(r: redis.Redis, rb: redis.Redis) -> None:
    r.lpush("queue:default", *["{}"] * 3)
    r.sadd("queues", "default")
    rb.lpush("queue:default", *["{}"] * 2)
    rb.lpush("queue:heavy", "{}")
    rb.sadd("queues", "default", "heavy")
    r.set("stat:processed", 10)
    rb.set("stat:processed", 5)
    rb.zadd("dead", {"{}": 1.0})


def test_an_api_per_store_and_their_sum(app: App, r: redis.Redis, rb: redis.Redis) -> None:
    fill(r, rb)
    api = Api(app)
    assert api.store_name == "default" and api.store_names() == ("default", "b")
    b = api.for_store("b")
    assert b.store_name == "b" and api.for_store("b") is b and b.for_store("default") is not api
    assert (api.stats().enqueued, b.stats().enqueued) == (3, 3)
    overview = api.overview()
    assert [p.name for p in overview.stores] == ["default", "b"]
    total = overview.total
    assert (total.enqueued, total.processed, total.dead_size) == (6, 15, 1)
    assert total.queues == {"default": 5, "heavy": 1}
    assert sum_stats([]).enqueued == 0
    days = api.history_all(1)
    assert list(days.processed.values()) == [0]
    with pytest.raises(ConfigurationError, match="no store named 'c'"):
        api.for_store("c")


def test_an_unreachable_store_is_reported_and_the_rest_summed(
    settings: Settings, r: redis.Redis
) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = App(settings.replace(stores={"gone": dead_url}))
    r.lpush("queue:default", "{}")
    r.sadd("queues", "default")
    try:
        overview = Api(app).overview()
    finally:
        app.close()
    parts = {p.name: p for p in overview.stores}
    assert parts["gone"].stats is None and "ConnectionError" in (parts["gone"].error or "")
    assert overview.total.enqueued == 1
