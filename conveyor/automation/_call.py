"""The child side of a ``python:module:function`` step, started by
:mod:`conveyor.automation.runner`.

``python -m conveyor.automation._call MODULE:FUNCTION RESULT_PATH [--path DIR]``: reads the
variables as a JSON object on stdin, calls ``FUNCTION(variables)`` and writes
``{"facts": {...}}`` (its return value, a JSON object or ``None``) or
``{"error": {"type": ..., "message": ...}}`` to ``RESULT_PATH``. Exits 0 on success, 1 on an
exception (its traceback goes to stderr, which the runner keeps as output).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """Run one call; the exit status is the step's."""
    parser = argparse.ArgumentParser(prog="python -m conveyor.automation._call")
    parser.add_argument("target", help="module:function")
    parser.add_argument("result_path")
    parser.add_argument("--path", default=None, help="put this directory first on sys.path")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.path or os.getcwd())
    try:
        variables = json.load(sys.stdin)
        if not isinstance(variables, dict):
            raise TypeError("the step's variables must be a JSON object")
        function = _resolve(args.target)
        value = function(variables)
        if value is not None and not isinstance(value, dict):
            raise TypeError(
                f"{args.target} returned {type(value).__name__}; return a dict of facts or None"
            )
        text = json.dumps({"facts": value or {}})
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        error = {"type": type(exc).__name__, "message": str(exc)}
        _write(args.result_path, json.dumps({"error": error}))
        return 1
    _write(args.result_path, text)
    return 0


def _resolve(target: str) -> Callable[[dict[str, Any]], Any]:
    module_name, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
