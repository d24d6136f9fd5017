"""Conveyor: the peer workloads as Conveyor jobs; bulk enqueue with ``bulk_perform_async``.
Settings come from ``CONVEYOR_*`` (e.g. ``CONVEYOR_CONCURRENCY``, ``CONVEYOR_WORKER_MODE``), and
``conveyor worker -r conveyor_jobs:app`` runs this app as a user would. ``async_app`` holds only
the ``async def`` jobs: the default ``worker_mode=auto`` runs it in asyncio mode."""

from __future__ import annotations

import os

import peer_common

from conveyor import App, Job, Settings
from conveyor.core.modes import create_worker

app = App(Settings.load(redis_url=peer_common.url()))
#: ``BENCH_JOB_CLIENT=own``: the ``async def`` INCR job calls through ``app.aredis()``.
OWN_CLIENT = os.environ.get("BENCH_JOB_CLIENT") == "own"


@app.job(name="PeerNoop")
class PeerNoop(Job):
    def perform(self, index: int) -> None:
        peer_common.noop(index)


@app.job(name="PeerNoopAsync")
class PeerNoopAsync(Job):
    async def perform(self, index: int) -> None:
        await peer_common.anoop(index)


@app.job(name="PeerSleep")
class PeerSleep(Job):
    def perform(self, total: int) -> None:
        peer_common.sleep(total)


@app.job(name="PeerIncr")
class PeerIncr(Job):
    def perform(self, total: int) -> None:
        peer_common.incr(total)


@app.job(name="PeerIncrAsync")
class PeerIncrAsync(Job):
    async def perform(self, total: int) -> None:
        if OWN_CLIENT:  # the asyncio slot's own connection
            await type(self).app.aredis().incr("bench:done")
        else:
            await peer_common.aincr(total)


async_app = App(Settings.load(redis_url=peer_common.url()))
async_app.job(name="PeerNoopAsync")(PeerNoopAsync)
async_app.job(name="PeerIncrAsync")(PeerIncrAsync)


@app.job(name="PeerLatency")
class PeerLatency(Job):
    def perform(self, sent: float) -> None:
        peer_common.latency(sent)


def enqueue(kind: str, jobs: int) -> float:
    app.store.client.ping()
    if kind == "latency":
        latency = app.registry["PeerLatency"]
        return peer_common.timed(lambda args: [latency.perform_async(a) for a in args], kind, jobs)
    names = {"sleep": "PeerSleep", "incr": "PeerIncr", "aincr": "PeerIncrAsync"}
    job = app.registry[names.get(kind, "PeerNoop")]
    return peer_common.timed(
        lambda args: job.bulk_perform_async([[a] for a in args], batch_size=peer_common.BATCH),
        kind,
        jobs,
    )


def work(*_: str) -> None:
    # Default settings (concurrency 10, threads), as `conveyor worker` would run them.
    create_worker(app).run(install_signals=True)
