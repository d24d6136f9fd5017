"""The wire format: one JSON object per job with Sidekiq's fields (SPEC CORE-1).

Payloads are plain dicts; unknown fields are carried along untouched on every re-push.
"""

from __future__ import annotations

import decimal
import json
import math
import os
import re
import secrets
from collections.abc import Sequence
from typing import Any

from conveyor.errors import PayloadError, SerializationError

Payload = dict[str, Any]

REQUIRED = ("class", "args")

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _unserializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder json.dumps builds on every call, built once: a third of the cost for small
# payloads. Same output as ``_encode`` (no circularity check: args are walked by check_args
# first, and a payload read back from Redis cannot be circular).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (
    _c_make_encoder(
        None, _unserializable, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if _c_make_encoder is not None
    else None
)


def _fast_encode(value: Any) -> str:
    if _c_encode is None:  # pragma: no cover - CPython without the C accelerator
        return _encode(value)
    return "".join(_c_encode(value, 0))


# Floats to rewrite travel through the C encoder as marked strings; the random token keeps a
# user's own string from ever looking like one.
_TOKEN = secrets.token_hex(6)
_MARK = f"\x00cvf{_TOKEN}:"
_MARKED = re.compile(r'"\\u0000cvf' + _TOKEN + r':([-+.0-9e]+)\\u0000"')


def dumps(job: Any) -> str:
    """Compact JSON with floats written exactly as Ruby writes them.

    Sidekiq's API re-serializes payloads in Ruby and looks them up by the exact bytes (e.g.
    ``SortedEntry#reschedule``), so a float must have the same text in both languages:

    >>> dumps({"at": 1e-05, "big": 1234567890123456.0, "n": 2.5})
    '{"at":1.0e-05,"big":1.234567890123456e+15,"n":2.5}'
    """
    text = _fast_encode(job)
    if not _maybe_unlike_ruby(text):
        return text
    marked = _encode(_mark_floats(job))
    return _MARKED.sub(lambda m: m.group(1), marked)


def _maybe_unlike_ruby(text: str) -> bool:
    """Whether the C encoder may have written a float differently from Ruby: with an exponent
    (Python always writes ``e+``/``e-``), or with 16 integer digits (Ruby switches to exponent
    form at 1e15, Python at 1e16). A string can match too; that only costs the slow path. Plain
    ``in``/``find`` checks: a regex here costs more than encoding the payload."""
    if "e+" in text or "e-" in text:
        return True
    dot = text.find(".")
    while dot != -1:
        if dot >= 16 and text[dot - 16 : dot].isdigit():
            return True
        dot = text.find(".", dot + 1)
    return False


def ruby_float(value: float) -> str:
    """``value`` as Ruby's ``Float#to_s`` writes it (shortest round-trip digits).

    Ruby writes plain digits while the decimal point falls -3 to 15 places in (16 when all 17
    digits are needed), and ``d.ddde±XX`` otherwise.

    >>> ruby_float(1e16), ruby_float(0.0001), ruby_float(-2.5e-07), ruby_float(1e15)
    ('1.0e+16', '0.0001', '-2.5e-07', '1.0e+15')
    """
    if value == 0 or 1e-4 <= abs(value) < 1e15:
        return repr(value)
    sign, digit_tuple, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # where the decimal point falls (Ruby's decpt)
    if point == 16 and len(digits) == 17:
        return repr(value)  # e.g. 2546642486638530.5: Ruby keeps it plain, as Python does
    mantissa = f"{'-' if sign else ''}{digits[0]}.{digits[1:] or '0'}"
    power = point - 1
    return f"{mantissa}e{'+' if power >= 0 else '-'}{abs(power):02d}"


def _mark_floats(value: Any) -> Any:
    if isinstance(value, float):
        return f"{_MARK}{ruby_float(value)}\x00"
    if isinstance(value, dict):
        return {k: _mark_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_floats(v) for v in value]
    return value


def new_jid() -> str:
    """A fresh job id: 24 lowercase hex characters, as Sidekiq makes them."""
    return secrets.token_hex(12)


def new_jids(count: int) -> list[str]:
    """``count`` fresh job ids from one read of the system's random source.

    >>> [len(j) for j in new_jids(2)]
    [24, 24]
    """
    text = os.urandom(12 * count).hex()
    return [text[i : i + 24] for i in range(0, 24 * count, 24)]


def check_args(args: Sequence[Any], class_name: str) -> list[Any]:
    """Return ``args`` as a list if every value is JSON-native, else raise naming the bad one."""
    if not isinstance(args, list | tuple):
        raise SerializationError(f"{class_name}: args must be a list, got {type(args).__name__}")
    if _PLAIN.issuperset(map(type, args)):  # the common case, without the walk
        return list(args)
    for i, value in enumerate(args):
        _check_value(value, f"args[{i}]", class_name)
    return list(args)


# Exact types only: a str or int subclass (an enum, say) still gets the full check.
_PLAIN = frozenset({str, int, bool, type(None)})


def encode_args(args: Sequence[Any], class_name: str) -> str:
    """``args`` checked (as :func:`check_args`) and encoded (as :func:`dumps`) in one step.

    >>> encode_args([1, "a", None], "Job")
    '[1,"a",null]'
    """
    if isinstance(args, list | tuple) and _PLAIN.issuperset(map(type, args)):
        return _fast_encode(args)  # no float, so nothing Ruby would write differently
    return dumps(check_args(args, class_name))


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
