"""The CLI over two stores (two real redis-servers): ``--store`` before or after the command,
``stats`` summed across stores with a row per store, an unknown store refused."""

from __future__ import annotations

import json

import redis
from click.testing import CliRunner

from conveyor import Settings
from conveyor.cli import main


def env(settings: Settings, store_b_url: str) -> dict[str, str]:
    return {
        "CONVEYOR_REDIS_URL": settings.redis_url or "",
        "CONVEYOR_STORES": json.dumps({"b": store_b_url}),
        "CONVEYOR_ROUTING_RULES": json.dumps([["class=Heavy", "heavy", "b"]]),
    }


def test_store_option_and_summed_stats(
    settings: Settings, store_b_url: str, r: redis.Redis, rb: redis.Redis
) -> None:
    runner = CliRunner()
    e = env(settings, store_b_url)
    assert runner.invoke(main, ["enqueue", "Heavy", "1"], env=e).exit_code == 0
    assert runner.invoke(main, ["enqueue", "Light", "2"], env=e).exit_code == 0
    assert rb.llen("queue:heavy") == 1 and r.llen("queue:default") == 1
    for args in (["--store", "b", "queues", "--json"], ["queues", "--store", "b", "--json"]):
        result = runner.invoke(main, args, env=e)
        assert result.exit_code == 0, result.output
        assert [q["name"] for q in json.loads(result.output)] == ["heavy"]
    summed = runner.invoke(main, ["stats", "--json", "--days", "1"], env=e)
    assert summed.exit_code == 0, summed.output
    data = json.loads(summed.output)
    assert data["enqueued"] == 2 and [s["name"] for s in data["stores"]] == ["default", "b"]
    one = json.loads(runner.invoke(main, ["stats", "--store", "b", "--json"], env=e).output)
    assert one["enqueued"] == 1 and "stores" not in one
    table = runner.invoke(main, ["stats", "--days", "1"], env={**e, "COLUMNS": "200"})
    assert "Stores" in table.output and "all stores" in table.output
    bad = runner.invoke(main, ["--store", "c", "queues"], env=e)
    assert bad.exit_code == 1 and "store 'c' is not configured" in bad.output
