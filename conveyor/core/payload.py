"""The wire format: one JSON object per job with Sidekiq's fields (SPEC CORE-1).

Payloads are plain dicts; unknown fields are carried along untouched on every re-push.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import os
import re
import secrets
from collections.abc import Sequence
from typing import Any

from conveyor.errors import PayloadError, SerializationError
from conveyor.redis.store import decode_raw, encode_raw

Payload = dict[str, Any]

REQUIRED = ("class", "args")

#: Deepest nesting of arrays and objects a payload may have: Ruby's ``JSON.parse`` default
#: (``max_nesting``), so every payload Conveyor runs, Sidekiq can read too.
MAX_DEPTH = 100
#: Largest payload a worker runs (characters); a bigger one is quarantined, not decoded.
MAX_PAYLOAD = 16 * 1024 * 1024

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
    if _maybe_unlike_ruby(text):
        text = _MARKED.sub(lambda m: m.group(1), _encode(_mark_floats(job)))
    if not text.isascii() and not _is_utf8(text):
        # A lone surrogate (e.g. from os.fsdecode of a bad file name) cannot go to Redis as
        # UTF-8: write every non-ASCII character as a JSON escape instead, same data.
        text = _ascii_encode(_mark_floats(job))
        text = _MARKED.sub(lambda m: m.group(1), text)
    return text


_ascii_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _check_value(value: Any, path: str, class_name: str, level: int = 1) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if level > MAX_DEPTH - 1:  # the payload object itself is one level
        raise SerializationError(
            f"{class_name}: {path} nests lists/dicts more than {MAX_DEPTH} levels deep, which "
            "workers refuse (Ruby's JSON limit); flatten it"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(
                f"{class_name}: {path} is {value!r}, which JSON cannot carry; pass a finite number"
            )
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", class_name, level + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(
                    f"{class_name}: {path} has the non-string key {key!r}; JSON objects only "
                    "have string keys, so convert it with str()"
                )
            _check_value(item, f"{path}[{key!r}]", class_name, level + 1)
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON can carry")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} overflows a 64-bit float")
    return value


# NaN, Infinity and 1e999 parse in Python but cannot be written back (nor read by Ruby).
_decode = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant).decode
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse(raw: str | bytes) -> Payload:
    """Decode a payload fetched from Redis, raising :class:`PayloadError` if it is not a job:
    not UTF-8, not JSON, too big, nested deeper than :data:`MAX_DEPTH`, holding a number or
    string that cannot be written back, or lacking ``class``/``args``.

    >>> parse('{"class": "HardWorker", "args": [1]}')["class"]
    'HardWorker'
    """
    if isinstance(raw, bytes):
        raw = decode_raw(raw)
    if len(raw) > MAX_PAYLOAD:
        raise PayloadError(
            f"payload is {len(raw)} characters, more than the {MAX_PAYLOAD} a job may have; "
            "pass a reference (an id, a path) instead of the data"
        )
    if not raw.isascii() and not _is_utf8(raw):
        raise PayloadError(f"payload is not valid UTF-8: {_short_repr(raw)}")
    try:
        job = _decode(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not valid JSON ({exc}): {_short_repr(raw)}") from None
    except RecursionError:
        raise PayloadError(
            f"payload is nested more than {MAX_DEPTH} levels deep: {_short_repr(raw)}"
        ) from None
    if not isinstance(job, dict):
        raise PayloadError(
            f"payload is a JSON {type(job).__name__}, not an object: {_short_repr(raw)}"
        )
    _check_parsed(job, raw)
    return job


def _check_parsed(job: Payload, raw: str) -> None:
    missing = [f for f in REQUIRED if f not in job]
    if missing:
        raise PayloadError(
            f"payload lacks required field(s) {', '.join(missing)}: {_short_repr(raw)}"
        )
    if not isinstance(job["class"], str) or not job["class"]:
        raise PayloadError(f"payload 'class' must be a non-empty string, got {job['class']!r}")
    if not isinstance(job["args"], list):
        raise PayloadError(f"payload 'args' must be a list, got {type(job['args']).__name__}")
    # Cheap screens first: only a payload with many brackets can be too deep, and only one
    # with a \uD8xx-\uDFxx escape can hold a lone surrogate.
    if (
        len(raw) > 2 * MAX_DEPTH
        and raw.count("[") + raw.count("{") > MAX_DEPTH
        and depth(job) > MAX_DEPTH
    ):
        raise PayloadError(
            f"payload is nested more than {MAX_DEPTH} levels deep: {_short_repr(raw)}"
        )
    if "\\u" in raw and _SURROGATE_ESCAPE.search(raw) and not _is_utf8(_fast_encode(job)):
        raise PayloadError(f"payload holds a lone UTF-16 surrogate: {_short_repr(raw)}")


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (without recursion).

    >>> depth([1, {"a": [2]}]), depth(3)
    (3, 0)
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in item if isinstance(child, list | dict))
    return deepest


def queue_of(job: Payload, default: str = "default") -> str:
    queue = job.get("queue")
    return queue if isinstance(queue, str) and queue else default


def malformed_record(raw: str, queue: str, error: str, now: float) -> Payload:
    """What goes to the dead set for a payload that is not a valid job: the original object when
    it was one (fields kept), else a wrapper holding the raw text, or its bytes in base64 when
    they are not UTF-8 (``raw_base64``).

    >>> malformed_record("{oops", "default", "bad", 0.0)["args"]
    ['{oops']
    """
    original = _original_object(raw)
    if original is not None:
        record: Payload = original
    elif _is_utf8(raw):
        record = {"class": "Conveyor::MalformedPayload", "args": [raw], "jid": new_jid()}
    else:
        record = {
            "class": "Conveyor::MalformedPayload",
            "args": [],
            "jid": new_jid(),
            "raw_base64": base64.b64encode(encode_raw(raw)).decode("ascii"),
        }
    if not isinstance(record.get("queue"), str):
        record["queue"] = queue
    if not isinstance(record.get("jid"), str):
        record["jid"] = new_jid()
    record.update(
        error_class="conveyor.errors.PayloadError",
        error_message=error[:10_000],
        failed_at=now,
        retry=False,
    )
    return record


def _original_object(raw: str) -> Payload | None:
    """The payload's own JSON object, when it is one that can be written back as it is."""
    if len(raw) > MAX_PAYLOAD or not _is_utf8(raw):
        return None
    try:
        original = _decode(raw)
        if isinstance(original, dict) and depth(original) <= MAX_DEPTH:
            dumps(original)
            return original
    except (ValueError, RecursionError, TypeError):
        pass
    return None


def quarantine(raw: str, queue: str, error: str, now: float) -> str:
    """The dead-set entry (JSON) for a payload that cannot run, always writable to Redis.

    >>> '"retry":false' in quarantine("{oops", "default", "bad", 0.0)
    True
    """
    return dumps(malformed_record(raw, queue, error, now))
