"""Worker process for the failover test: ``python tests/apps/failover_app.py`` with
CONVEYOR_REDIS_URL set to a ``redis+sentinel://`` URL and FAILOVER_RUNS to a directory.

Each ``Tally`` job takes 20 ms (so the producer builds a backlog) and appends
``<seq> <unix time> <port>`` to ``<FAILOVER_RUNS>/<pid>.log``: the job's sequence number,
when it ran, and the port of the primary its worker was connected to.
A file, not Redis, so a run is counted even when the primary that saw it dies before
replicating anything.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from conveyor import App, Job, Settings, Worker

app = App(Settings.load())
_lock = threading.Lock()
_out = (Path(os.environ["FAILOVER_RUNS"]) / f"{os.getpid()}.log").open("a", buffering=1)


@app.job(name="Tally")
class Tally(Job):
    def perform(self, seq: int) -> None:
        time.sleep(0.02)
        # The address the worker's pool last got from the Sentinels: no extra round trip.
        address = app.store.client.connection_pool.master_address
        port = address[1] if address else 0
        with _lock:
            _out.write(f"{seq} {time.time():.6f} {port}\n")


if __name__ == "__main__":
    Worker(app).run()
