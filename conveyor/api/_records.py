"""Jobs as the data API returns them: :class:`JobRecord`, decoded leniently from Redis."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from conveyor.core.payload import Payload
from conveyor.core.retry import decompress_backtrace

#: Epoch values above this are milliseconds (Sidekiq 7 writes integer milliseconds).
_MS_THRESHOLD = 100_000_000_000


def epoch(value: Any) -> float | None:
    """Epoch seconds from a payload field (seconds, or Sidekiq 7's milliseconds), else None.

    >>> epoch(1_700_000_000_500), epoch("x")
    (1700000000.5, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) / 1000 if value > _MS_THRESHOLD else float(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class JobRecord:
    """One job as stored in a queue or sorted set.

    ``payload`` is the decoded JSON object (``{}`` and ``valid=False`` when the stored text is
    not a JSON object); ``raw`` is the text exactly as stored.

    >>> rec = JobRecord.from_raw('{"class":"Hard","args":[1],"jid":"ab","queue":"q"}')
    >>> (rec.job_class, rec.args, rec.queue)
    ('Hard', [1], 'q')
    """

    jid: str
    job_class: str
    args: list[Any]
    queue: str
    raw: str
    payload: Payload
    valid: bool = True
    score: float | None = None
    created_at: float | None = None
    enqueued_at: float | None = None
    retry_count: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    failed_at: float | None = None
    retried_at: float | None = None

    @classmethod
    def from_raw(cls, raw: str, queue: str | None = None, score: float | None = None) -> JobRecord:
        """Decode a stored payload leniently (never raises).

        >>> JobRecord.from_raw("not json").valid
        False
        """
        try:
            item = json.loads(raw)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            return cls("", "", [raw], queue or "", raw, {}, valid=False, score=score)
        args = item.get("args")
        count = item.get("retry_count")
        return cls(
            jid=str(item.get("jid") or ""),
            job_class=str(item.get("class") or ""),
            args=args if isinstance(args, list) else [],
            queue=queue or str(item.get("queue") or "default"),
            raw=raw,
            payload=item,
            score=score,
            created_at=epoch(item.get("created_at")),
            enqueued_at=epoch(item.get("enqueued_at")),
            retry_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            error_class=_opt_str(item.get("error_class")),
            error_message=_opt_str(item.get("error_message")),
            failed_at=epoch(item.get("failed_at")),
            retried_at=epoch(item.get("retried_at")),
        )

    @property
    def at(self) -> dt.datetime | None:
        """The score as a UTC datetime (when it runs, failed or died), for sorted-set entries."""
        return None if self.score is None else dt.datetime.fromtimestamp(self.score, dt.UTC)

    def latency(self, now: float) -> float:
        """Seconds since the job was enqueued (or created), as Sidekiq's ``JobRecord#latency``."""
        since = self.enqueued_at or self.created_at
        return max(0.0, now - since) if since else 0.0

    def error_backtrace(self) -> list[str] | None:
        """The failure's backtrace lines, if the job recorded one (``backtrace`` option)."""
        value = self.payload.get("error_backtrace")
        if isinstance(value, list):
            return [str(line) for line in value]
        if isinstance(value, str):
            with contextlib.suppress(Exception):  # not our encoding: show nothing
                return decompress_backtrace(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the payload included, the raw text left out)."""
        return {
            "jid": self.jid,
            "class": self.job_class,
            "args": self.args,
            "queue": self.queue,
            "score": self.score,
            "created_at": self.created_at,
            "enqueued_at": self.enqueued_at,
            "retry_count": self.retry_count,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "failed_at": self.failed_at,
            "retried_at": self.retried_at,
            "valid": self.valid,
            "payload": self.payload,
        }
