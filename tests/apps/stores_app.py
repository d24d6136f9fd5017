"""Two job classes for the stores system test (tests/system/test_stores.py); settings come
from ``CONVEYOR_*`` (stores and routing rules included), as a user's would. Each run records
its jid in the Redis of the store it ran in (``ran:<class>``), so the test sees where every
job was executed, not only that a counter moved."""

from __future__ import annotations

from conveyor import App, Job

app = App()


@app.job(name="Heavy")
class Heavy(Job):
    def perform(self, n: int) -> None:
        app.store.client.sadd("ran:Heavy", self.jid)


@app.job(name="Plain")
class Plain(Job):
    def perform(self, n: int) -> None:
        app.store.client.sadd("ran:Plain", self.jid)
