"""examples/fastapi: the FastAPI app under a real uvicorn, enqueueing with the async API, and a
real ``conveyor worker`` process running the jobs, on a real Redis."""

from __future__ import annotations

import httpx2 as httpx
import pytest
import redis
from support import StartProcess, free_port, wait_for

pytestmark = pytest.mark.slow


def test_the_fastapi_example_enqueues_from_its_event_loop(
    redis_url: str, r: redis.Redis, processes: StartProcess
) -> None:
    port = free_port()
    env = {"CONVEYOR_REDIS_URL": redis_url, "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.2"}
    web = processes(
        "-m",
        "uvicorn",
        "examples.fastapi.app:api",
        "--port",
        str(port),
        "--log-level",
        "warning",
        **env,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert web.poll() is None, "uvicorn exited"
        try:
            return httpx.get(f"{base}/stats", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, interval=0.2)
    first = httpx.post(f"{base}/users/7/welcome", timeout=10).json()
    twin = httpx.post(f"{base}/users/7/welcome", timeout=10).json()
    assert first["queued"] and len(first["jid"]) == 24
    assert not twin["queued"] and twin["dropped"] == f"duplicate of {first['jid']}"
    assert httpx.get(f"{base}/stats", timeout=10).json()["queues"] == {"default": 1}
    refused = httpx.post(f"{base}/jobs/send_welcome", json=[], timeout=10)
    assert refused.status_code == 422
    assert "send_welcome(user_id) cannot run with 0 arguments" in refused.json()["detail"]

    processes("-m", "conveyor.cli", "worker", "-r", "examples.fastapi.app:jobs", **env)
    wait_for(lambda: r.smembers("example:welcomed") == {"7"}, timeout=60, interval=0.1)
    wait_for(lambda: httpx.get(f"{base}/stats", timeout=10).json()["processed"] == 1, timeout=30)
