"""The wire format: one JSON object per job with Sidekiq's fields (SPEC CORE-1).

Payloads are plain dicts; unknown fields are carried along untouched on every re-push.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Sequence
from typing import Any

from conveyor.errors import PayloadError, SerializationError

Payload = dict[str, Any]

REQUIRED = ("class", "args")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
dumps = _encoder.encode


def new_jid() -> str:
    """A fresh job id: 24 lowercase hex characters, as Sidekiq makes them."""
    return secrets.token_hex(12)


def check_args(args: Sequence[Any], class_name: str) -> list[Any]:
    """Return ``args`` as a list if every value is JSON-native, else raise naming the bad one."""
    if not isinstance(args, list | tuple):
        raise SerializationError(f"{class_name}: args must be a list, got {type(args).__name__}")
    for i, value in enumerate(args):
        _check_value(value, f"args[{i}]", class_name)
    return list(args)


def _check_value(value: Any, path: str, class_name: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(
                f"{class_name}: {path} is {value!r}, which JSON cannot carry; pass a finite number"
            )
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", class_name)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(
                    f"{class_name}: {path} has the non-string key {key!r}; JSON objects only "
                    "have string keys, so convert it with str()"
                )
            _check_value(item, f"{path}[{key!r}]", class_name)
        return
    raise SerializationError(
        f"{class_name}: {path} is a {type(value).__module__}.{type(value).__qualname__} "
        f"({_short_repr(value)}), which is not JSON-native; pass str, int, float, bool, None, "
        "or lists/dicts of them (e.g. an id instead of an object, an ISO string instead of "
        "a datetime)"
    )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(raw: str | bytes) -> Payload:
    """Decode a payload fetched from Redis, raising :class:`PayloadError` if it is not a job."""
    try:
        job = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not valid JSON ({exc}): {_short_repr(raw)}") from None
    if not isinstance(job, dict):
        raise PayloadError(
            f"payload is a JSON {type(job).__name__}, not an object: {_short_repr(raw)}"
        )
    missing = [f for f in REQUIRED if f not in job]
    if missing:
        raise PayloadError(
            f"payload lacks required field(s) {', '.join(missing)}: {_short_repr(raw)}"
        )
    if not isinstance(job["class"], str) or not job["class"]:
        raise PayloadError(f"payload 'class' must be a non-empty string, got {job['class']!r}")
    if not isinstance(job["args"], list):
        raise PayloadError(f"payload 'args' must be a list, got {type(job['args']).__name__}")
    return job


def queue_of(job: Payload, default: str = "default") -> str:
    queue = job.get("queue")
    return queue if isinstance(queue, str) and queue else default


def malformed_record(raw: str, queue: str, error: str, now: float) -> Payload:
    """What goes to the dead set for a payload that is not a valid job: the original object when
    it was one (fields kept), else a wrapper holding the raw text."""
    try:
        original = json.loads(raw)
    except ValueError:
        original = None
    record: Payload = (
        original
        if isinstance(original, dict)
        else {"class": "Conveyor::MalformedPayload", "args": [raw], "jid": new_jid()}
    )
    record.setdefault("queue", queue)
    record.setdefault("jid", new_jid())
    record.update(
        error_class="conveyor.errors.PayloadError",
        error_message=error[:10_000],
        failed_at=now,
        retry=False,
    )
    return record
