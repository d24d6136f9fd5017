"""Conveyor: the two peer workloads as Conveyor jobs; bulk enqueue with ``bulk_perform_async``."""

from __future__ import annotations

import peer_common

from conveyor import App, Job, Settings, Worker

app = App(Settings(redis_url=peer_common.url()))


@app.job(name="PeerNoop")
class PeerNoop(Job):
    def perform(self, index: int) -> None:
        peer_common.noop(index)


@app.job(name="PeerSleep")
class PeerSleep(Job):
    def perform(self, total: int) -> None:
        peer_common.sleep(total)


@app.job(name="PeerLatency")
class PeerLatency(Job):
    def perform(self, sent: float) -> None:
        peer_common.latency(sent)


def enqueue(kind: str, jobs: int) -> float:
    app.store.client.ping()
    if kind == "latency":
        latency = app.registry["PeerLatency"]
        return peer_common.timed(lambda args: [latency.perform_async(a) for a in args], kind, jobs)
    job = app.registry["PeerSleep" if kind == "sleep" else "PeerNoop"]
    return peer_common.timed(
        lambda args: job.bulk_perform_async([[a] for a in args], batch_size=peer_common.BATCH),
        kind,
        jobs,
    )


def work(*_: str) -> None:
    # Default settings (concurrency 10), as `conveyor worker` would run them.
    Worker(app).run(install_signals=True)
