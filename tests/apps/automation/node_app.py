"""A node process for tests: ``python -m apps.automation.node_app SETTINGS NODE_ID TERM``.

Environment switches (test-only):

- ``BURNER_PIDFILE``: the CPU source is the CPU use (percent of one core) of the processes
  whose pids are listed in this file, measured with psutil — the real load of a real busy
  loop, not the machine's, which other test runs on the same machine also load.
- ``NAIVE_MASTER=1``: the node keeps trusting its last term forever (a broken master that
  ignores its local deadline), so the Redis-side fencing is what stops its writes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import psutil

from conveyor.automation.lease import Leadership, Term, open_lease
from conveyor.automation.process import serve
from conveyor.automation.settings import LeaderElection, Workflow


def burner_source(pidfile: str) -> Any:
    seen: dict[int, psutil.Process] = {}

    def sample() -> float:
        try:
            with open(pidfile) as f:
                pids = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            pids = []
        total = 0.0
        for pid in pids:
            try:
                proc = seen.get(pid)
                if proc is None:
                    proc = seen[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)  # baseline
                    continue
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                total += proc.cpu_percent(None)
            except psutil.Error:
                continue
        return min(total, 100.0)

    return sample


class NaiveLeadership:
    """Trusts the last term it ever got, past its deadline and after losing it."""

    def __init__(self, inner: Leadership) -> None:
        self.inner = inner
        self.last: Term | None = None

    def tick(self) -> Term | None:
        term = self.inner.tick()
        if term is not None:
            self.last = term
        return self.current()

    def current(self) -> Term | None:
        return self.last


def main() -> None:
    settings_file, node_id, term = sys.argv[1], sys.argv[2], float(sys.argv[3])
    redis_url = os.environ["CONVEYOR_REDIS_URL"]
    source = burner_source(os.environ["BURNER_PIDFILE"]) if "BURNER_PIDFILE" in os.environ else None
    leadership = None
    if os.environ.get("NAIVE_MASTER") == "1":

        def leadership(workflow: Workflow) -> NaiveLeadership:
            prepare = workflow.steps.prepare
            election = prepare.leader_election if prepare else LeaderElection()
            lease = open_lease(election, workflow.name)
            return NaiveLeadership(Leadership(lease, node_id, term=term))

    serve(
        settings_file,
        redis_url=redis_url,
        threads=int(os.environ.get("NODE_THREADS", "2")),
        term=term,
        node=node_id,
        cpu_source=source,
        leadership=leadership,
    )


if __name__ == "__main__":
    main()
