"""Values of the import toolkit: settings, the state of an import as read back, failures,
record references and the health-signal hook."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.errors import ConfigurationError

STATUSES = ("running", "finished", "failed")
#: Error messages kept per failed record.
MAX_MESSAGE = 500


def error_message(exc: BaseException) -> str:
    """What a failure records of an exception: its message, cut to ``MAX_MESSAGE``. For a
    database driver error wrapped by SQLAlchemy only the driver's message is kept: the wrapper
    adds the SQL parameters, which may be personal data.

    >>> error_message(ValueError("bad title"))
    'bad title'
    """
    orig = getattr(exc, "orig", None)
    text = str(orig) if isinstance(orig, BaseException) and hasattr(exc, "statement") else str(exc)
    # PostgreSQL's DETAIL line quotes the offending values ("Key (username)=(ada) ...").
    text = "\n".join(line for line in text.splitlines() if not line.startswith("DETAIL:"))
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class ImportSettings:
    """How imports run. Defaults suit production; tests shorten the intervals."""

    #: Queue of the stage and record jobs (their own, so a worker started for imports takes
    #: nothing else:
    #: ``conveyor worker -r conveyor.features.imports.project.worker:app -q imports``).
    queue: str = "imports"
    #: Retries of a stage job: with the default backoff (``count**4 + 15 + rand``) six retries
    #: span about 20 minutes; more would make a failing import take too long to report.
    stage_retry: int = 6
    #: Retries of a record job whose error is retryable (a locked database...).
    record_retry: int = 3
    #: At most this many record jobs run at once in the whole cluster (concurrency limit;
    #: jobs over it wait in Redis and resume as slots free, never holding a thread).
    record_concurrency: int = 5
    #: Record jobs are spread: at most ``spread_per_interval`` start per ``spread_interval`` s.
    spread_per_interval: int = 1000
    spread_interval: float = 1.0
    #: Record tokens registered (and jobs enqueued) per step; the cursor is saved after each.
    chunk_size: int = 200
    #: An import whose progress has not moved for this long is failed by the stuck detector.
    stuck_after: float = 3600.0
    #: Cron expression of the stuck detector.
    stuck_schedule: str = "*/5 * * * *"
    #: Seconds a write-heavy job waits before running again while the health signal is raised.
    defer_delay: float = 30.0

    def __post_init__(self) -> None:
        for name in ("record_concurrency", "spread_per_interval", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"ImportSettings.{name} must be an int >= 1, got {value!r}"
                )
        for name in ("spread_interval", "stuck_after", "defer_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(
                    f"ImportSettings.{name} must be > 0 seconds, got {value!r}"
                )


@dataclass(frozen=True, slots=True)
class RecordRef:
    """One record a record stage will import: its id in the source (what failures and logs
    name) and an opaque locator the importer uses to read it again (a byte offset...)."""

    record_id: str
    locator: str = ""


@dataclass(frozen=True, slots=True)
class Failure:
    """One record that could not be imported (SPEC IMP-3)."""

    stage: str
    record_id: str
    error_class: str
    message: str
    retryable: bool
    at: float

    def to_json(self) -> str:
        """The failure as stored in Redis."""
        return json.dumps(
            {
                "stage": self.stage,
                "record_id": self.record_id,
                "error_class": self.error_class,
                "message": self.message,
                "retryable": self.retryable,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> Failure:
        """A failure read back from Redis."""
        data = json.loads(raw)
        return cls(
            str(data["stage"]),
            str(data["record_id"]),
            str(data["error_class"]),
            str(data["message"]),
            bool(data["retryable"]),
            float(data["at"]),
        )


@dataclass(frozen=True, slots=True)
class StageProgress:
    name: str
    total: int = 0
    done: int = 0
    failed: int = 0
    advanced_at: float | None = None


@dataclass(frozen=True)
class ImportState:
    """An import as stored in Redis."""

    id: str
    importer: str
    status: str
    stage: str
    mode: str
    options: dict[str, Any]
    created_at: float
    progressed_at: float
    finished_at: float | None = None
    error: str = ""
    parent: str = ""
    deferred: int = 0
    stages: tuple[StageProgress, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        """Records registered in all stages."""
        return sum(s.total for s in self.stages)

    @property
    def done(self) -> int:
        """Records finished (imported or failed) in all stages."""
        return sum(s.done for s in self.stages)

    @property
    def failed(self) -> int:
        """Records that failed in all stages."""
        return sum(s.failed for s in self.stages)

    @property
    def active(self) -> bool:
        """True while the import runs."""
        return self.status == "running"

    @classmethod
    def from_hash(cls, data: Mapping[str, str], stage_names: tuple[str, ...]) -> ImportState:
        """Decode the import hash (``stage_names`` in order)."""

        def num(name: str) -> int:
            return int(data.get(name) or 0)

        stages = tuple(
            StageProgress(
                s,
                num(f"total:{s}"),
                num(f"done:{s}"),
                num(f"failed:{s}"),
                float(data[f"advanced:{s}"]) if f"advanced:{s}" in data else None,
            )
            for s in stage_names
        )
        finished = data.get("finished_at")
        return cls(
            id=data["id"],
            importer=data.get("importer", ""),
            status=data.get("status", ""),
            stage=data.get("stage", ""),
            mode=data.get("mode", "import"),
            options=json.loads(data.get("options") or "{}"),
            created_at=float(data.get("created_at") or 0),
            progressed_at=float(data.get("progressed_at") or 0),
            finished_at=float(finished) if finished else None,
            error=data.get("error", ""),
            parent=data.get("parent", ""),
            deferred=num("deferred"),
            stages=stages,
        )


class HealthSignal(Protocol):
    """Tells write-heavy import jobs to back off (SPEC IMP-6): while ``saturated()`` is true
    they put themselves back on the queue with a delay instead of writing."""

    def saturated(self) -> bool:
        """True while writes should wait."""
        ...
