"""The async data API (conveyor.api.aio) answers as the sync one does, on redis.asyncio."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import redis
from support import run_burst

from conveyor import App
from conveyor.api import Api
from conveyor.api.aio import AsyncApi


def test_stats_sizes_and_find_job_match_the_sync_api(app: App, r: redis.Redis) -> None:
    @app.job()
    def boom(n: int) -> None:
        raise RuntimeError("no")

    @app.job(queue="mail")
    def mail(n: int) -> None: ...

    failing = boom.perform_async(1)
    run_burst(app)  # one retry, one processed, one failed
    queued = [mail.perform_async(i) for i in range(3)]
    later = mail.perform_in(3600, 9)

    async def main() -> tuple[Any, ...]:
        api = AsyncApi(app)
        try:
            return (
                await api.stats(),
                await api.queue_sizes(),
                await api.queue_size("mail"),
                await api.find_job(failing.jid),
                await api.find_job(queued[1].jid),
                await api.find_job(later.jid),
                await api.find_job("0" * 24),
            )
        finally:
            await app.aclose()

    stats, sizes, mail_size, retrying, waiting, scheduled, missing = asyncio.run(main())
    expected = Api(app).stats()
    assert dataclasses.replace(stats, default_queue_latency=0.0) == dataclasses.replace(
        expected, default_queue_latency=0.0
    )
    assert (stats.retry_size, stats.scheduled_size, stats.enqueued) == (1, 1, 3)
    assert sizes == {"mail": 3, "default": 0} and mail_size == 3
    assert retrying.place == "retry" and retrying.job.jid == failing.jid
    assert (waiting.place, waiting.queue, waiting.job.args) == ("queue", "mail", [1])
    assert scheduled.place == "schedule" and missing is None
