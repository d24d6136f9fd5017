"""Worker processes and what they run: :class:`ProcessSet` and :class:`WorkSet`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.api._records import JobRecord, epoch
from conveyor.api._source import Source
from conveyor.errors import NotFoundError


@dataclass(frozen=True)
class ProcessInfo:
    """One worker process as its last heartbeat described it.

    >>> [p.identity for p in api.processes.list()]            # doctest: +SKIP
    ['web-1:4242:9f2c01ab33de']
    """

    identity: str
    hostname: str
    pid: int | None
    tag: str
    labels: list[str]
    queues: list[str]
    concurrency: int
    started_at: float | None
    busy: int
    beat: float | None
    quiet: bool
    rss_kb: int
    rtt_us: int
    version: str
    info: dict[str, Any]
    #: Health of the process's loops (fetch, finish, heartbeat, housekeeping, periodic), as its
    #: last heartbeat reported it: ``{"fetch": {"ok": True, "errors": 0, "last_error": "",
    #: "idle": 0.2, "running": True}, ...}``; empty for Sidekiq or older Conveyor processes.
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """False when any loop reported a failure or no progress (see :attr:`health`)."""
        return not self.failing_loops

    @property
    def failing_loops(self) -> list[str]:
        """The loops whose last report was a failure or no progress, e.g. ``["fetch"]``."""
        return sorted(
            name
            for name, v in self.health.items()
            if not isinstance(v, dict) or not v.get("ok", True)
        )

    def loop_errors(self) -> dict[str, int]:
        """Errors each loop met since the process started (survived: it carried on)."""
        out: dict[str, int] = {}
        for name, v in self.health.items():
            errors = v.get("errors") if isinstance(v, dict) else None
            out[name] = errors if isinstance(errors, int) and not isinstance(errors, bool) else 0
        return out

    @classmethod
    def from_state(cls, identity: str, state: Sequence[str | None]) -> ProcessInfo | None:
        """Build from the process hash fields (``None`` when the hash expired)."""
        info_raw, busy, beat, quiet, rss, rtt, *rest = state
        if info_raw is None:
            return None
        try:
            info = json.loads(info_raw)
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        pid = info.get("pid")
        return cls(
            identity=identity,
            hostname=str(info.get("hostname") or ""),
            pid=pid if isinstance(pid, int) else None,
            tag=str(info.get("tag") or ""),
            labels=[str(x) for x in info.get("labels") or []],
            queues=[str(x) for x in info.get("queues") or []],
            concurrency=int(info.get("concurrency") or 0),
            started_at=epoch(info.get("started_at")),
            busy=int(busy or 0),
            beat=float(beat) if beat else None,
            quiet=quiet == "true",
            rss_kb=int(rss or 0),
            rtt_us=int(rtt or 0),
            version=str(info.get("version") or ""),
            info=info,
            health=_health(rest[0] if rest else None),
        )


def _health(raw: str | None) -> dict[str, Any]:
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class ProcessSet:
    """Live worker processes (the ``processes`` set and one hash per process).

    >>> api.processes.quiet_all()                              # doctest: +SKIP
    2
    """

    def __init__(self, api: Source) -> None:
        self.api = api

    def cleanup(self) -> int:
        """Forget processes whose heartbeat expired (they died); returns how many."""
        return self.api.admin.prune_processes()

    def list(self, *, cleanup: bool = True) -> list[ProcessInfo]:
        """Every live process, sorted by identity. Example: ``api.processes.list()``."""
        if cleanup:
            self.cleanup()
        identities = self.api.admin.process_identities()
        states = self.api.admin.process_states(identities)
        found = (ProcessInfo.from_state(i, s) for i, s in zip(identities, states, strict=True))
        return [p for p in found if p is not None]

    def size(self) -> int:
        """Processes registered (including any not yet cleaned up)."""
        return len(self.api.admin.process_identities())

    def get(self, identity: str) -> ProcessInfo:
        """The process named ``identity``; raises :class:`NotFoundError` if it is not live."""
        for process in self.list():
            if process.identity == identity:
                return process
        raise NotFoundError(f"no live process with identity {identity!r}")

    def quiet(self, identity: str) -> None:
        """Ask a process to stop fetching jobs (TSTP). Example: ``api.processes.quiet(ident)``."""
        self.api.admin.signal(self.get(identity).identity, "TSTP")

    def stop(self, identity: str) -> None:
        """Ask a process to shut down gracefully (TERM). Example: ``api.processes.stop(ident)``."""
        self.api.admin.signal(self.get(identity).identity, "TERM")

    def quiet_all(self) -> int:
        """Quiet every live process; returns how many were signalled."""
        return self._signal_all("TSTP")

    def stop_all(self) -> int:
        """Stop every live process; returns how many were signalled."""
        return self._signal_all("TERM")

    def _signal_all(self, sig: Literal["TSTP", "TERM"]) -> int:
        processes = self.list()
        for process in processes:
            self.api.admin.signal(process.identity, sig)
        return len(processes)


@dataclass(frozen=True)
class Work:
    """One job running on one thread of one process."""

    identity: str
    thread_id: str
    queue: str
    run_at: float | None
    job: JobRecord


class WorkSet:
    """What every live process is running right now, oldest first.

    >>> [(w.identity, w.job.job_class) for w in api.work.list()]   # doctest: +SKIP
    [('web-1:4242:9f2c01ab33de', 'HardWorker')]
    """

    def __init__(self, api: Source) -> None:
        self.api = api

    def list(self) -> list[Work]:
        """Every running job, longest running first."""
        identities = self.api.admin.process_identities()
        out: list[Work] = []
        for identity, work in zip(identities, self.api.admin.process_work(identities), strict=True):
            for tid, doc in work.items():
                item = _work_item(identity, tid, doc)
                if item is not None:
                    out.append(item)
        return sorted(out, key=lambda w: w.run_at or 0.0)

    def size(self) -> int:
        """Busy threads over all processes (from their heartbeats)."""
        identities = self.api.admin.process_identities()
        states = self.api.admin.process_states(identities)
        return sum(int(state[1] or 0) for state in states)


def _work_item(identity: str, tid: str, doc: str) -> Work | None:
    try:
        data = json.loads(doc)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    payload = data.get("payload")
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    queue = str(data.get("queue") or "")
    return Work(identity, tid, queue, epoch(data.get("run_at")), JobRecord.from_raw(raw, queue))
