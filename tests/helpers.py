"""Small helpers shared by tests: bounded waits and in-process workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from conveyor import App, Worker


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


def run_burst(app: App, timeout: float = 30.0) -> Worker:
    """Run a burst worker in this process until the queues are empty."""
    worker = Worker(app, burst=True)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"burst worker still running after {timeout}s"
    return worker


@contextmanager
def running_worker(app: App) -> Iterator[Worker]:
    """A worker running in a thread for the duration of the block; stopped gracefully after."""
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop within 30s"
