"""The field checks behind :mod:`conveyor.automation.settings`: each one records a problem
(JSON path, what was wrong, the offending value) and returns ``None`` instead of raising, so a
single pass finds every problem."""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from croniter import croniter

SECTION = "functions.backend.automation"

JsonObject = dict[str, Any]

#: Workflow names and the keyword: one URL path segment and a file name, no escaping needed.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def effective_reactive(deactive: float, reactive: float) -> float:
    """AUTO-6: a ``reactive`` above ``deactive`` or outside 0-100 becomes 2/3 of ``deactive``.
    ``0`` counts as out of use too: an average never falls *below* 0, so a throttled node would
    never resume.

    >>> effective_reactive(60, 40), effective_reactive(60, 70), effective_reactive(90, 0)
    (40, 40.0, 60.0)
    """
    if reactive > deactive or not 0 <= reactive <= 100 or (reactive == 0 and deactive > 0):
        return deactive * 2.0 / 3.0
    return reactive


def parse_playbook(raw: str) -> str | None:
    """What is wrong with a step's ``playbook`` string, or ``None`` if it is well formed."""
    if raw.startswith("python:"):
        parts = raw.split(":")
        if len(parts) != 3 or not _DOTTED.match(parts[1]) or not _DOTTED.match(parts[2]):
            return (
                "must be python:module:function with a dotted module and attribute, "
                "e.g. python:jobs.files:move"
            )
        return None
    if not raw.strip() or "\x00" in raw:
        return "must be a playbook path or python:module:function"
    return None


def or_default(obj: JsonObject, key: str, default: Any) -> Any:
    """``obj[key]``, or ``default`` when it is absent or ``null`` (the seed writes ``null`` for
    "not set")."""
    value = obj.get(key)
    return default if value is None else value


def shown(value: Any) -> str:
    """A value as it appears in JSON (strings quoted), shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class Checker:
    """Collects problems and warnings while the settings are walked."""

    def __init__(
        self, document: Any = None, base_dir: str | os.PathLike[str] | None = None
    ) -> None:
        #: The whole settings document (``authEndpoint`` is resolved against it).
        self.document = document
        #: Where relative playbook paths live; ``None``: do not look for the files.
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, path: str, message: str, *value: Any) -> None:
        got = f", got {shown(value[0])}" if value else ""
        self.problems.append(f"{path}: {message}{got}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def only(self, path: str, obj: JsonObject, known: Iterable[str]) -> None:
        """Refuse fields outside ``known``, suggesting a close known name."""
        known = tuple(known)
        for key in obj:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f'; did you mean "{close[0]}"?' if close else f"; known: {', '.join(known)}"
            self.problems.append(f"{path}.{key}: unknown field{hint}")

    def obj(
        self, path: str, raw: Any, known: Iterable[str], *, required: bool = False
    ) -> JsonObject | None:
        """``raw`` as a JSON object with only ``known`` fields; ``null``/absent is ``None``."""
        if raw is None:
            if required:
                self.problem(path, "missing; must be a JSON object")
            return None
        if not isinstance(raw, dict):
            self.problem(path, "must be a JSON object", raw)
            return None
        self.only(path, raw, known)
        return raw

    def name(self, path: str, raw: Any) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not NAME_RE.match(raw):
            self.problem(
                path,
                "must be a name of letters, digits, '_', '.' and '-' (starting with a letter "
                "or digit)",
                raw,
            )
            return None
        return raw

    def boolean(self, path: str, raw: Any) -> bool:
        if not isinstance(raw, bool):
            self.problem(path, "must be true or false", raw)
            return False
        return raw

    def number(self, path: str, raw: Any) -> float | None:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            self.problem(path, "must be a number", raw)
            return None
        return float(raw)

    def count(self, path: str, raw: Any) -> int | None:
        """A whole number of at least 1."""
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            self.problem(path, "must be a whole number of at least 1", raw)
            return None
        return raw

    def positive(self, path: str, raw: Any) -> float | None:
        ok = not isinstance(raw, bool) and isinstance(raw, int | float)
        if not ok or not math.isfinite(raw) or raw <= 0:
            self.problem(path, "must be a positive number", raw)
            return None
        return float(raw)

    def vars(self, path: str, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(path, "must be a JSON object of variables or null", raw)
            return {}
        for key in raw:
            if not key:
                self.problem(path, "variable names must not be empty")
        return dict(raw)

    def schedule(self, path: str, raw: Any) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not croniter.is_valid(raw):
            self.problem(path, 'must be a cron expression such as "0 1 * * *"', raw)
            return None
        return raw

    def playbook(self, path: str, raw: Any) -> str | None:
        if raw is None:
            self.problem(path, "missing; name a playbook file or python:module:function")
            return None
        if not isinstance(raw, str):
            self.problem(path, "must be a string", raw)
            return None
        problem = parse_playbook(raw)
        if problem:
            self.problem(path, problem, raw)
            return None
        if self.base_dir is not None and not raw.startswith("python:"):
            file = Path(self.base_dir, raw)
            if not file.is_file():
                self.warn(path, f"playbook file {str(file)!r} not found on this machine")
        return raw

    def endpoint(self, path: str, raw: Any) -> tuple[str, str, JsonObject] | None:
        """Resolve ``{endpoint}@{function}`` against ``functions.backend.{function}.endpoints``
        (a list of objects with a ``name``, or an object keyed by name)."""
        if raw is None:
            return None
        if not isinstance(raw, str) or raw.count("@") != 1 or not all(raw.split("@")):
            self.problem(path, 'must be "{endpoint}@{function}", e.g. "mystorage@aws_s3"', raw)
            return None
        endpoint, function = raw.split("@")
        where = f"functions.backend.{function}.endpoints"
        found = _find_endpoint(_endpoints(self.document, function), endpoint)
        if found is None:
            self.problem(path, f'names endpoint "{endpoint}" but {where} has no such endpoint')
            return None
        return endpoint, function, found


def _endpoints(document: Any, function: str) -> Any:
    node = document
    for key in ("functions", "backend", function, "endpoints"):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _find_endpoint(endpoints: Any, name: str) -> JsonObject | None:
    if isinstance(endpoints, dict):
        found = endpoints.get(name)
        return found if isinstance(found, dict) else None
    if isinstance(endpoints, list):
        for item in endpoints:
            if isinstance(item, dict) and item.get("name") == name:
                return item
    return None
