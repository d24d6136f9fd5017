"""Capture what conveyor.logs writes, in this process, as JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from conveyor import Settings, logs
from conveyor.logs import scrub


class Captured:
    """What a configured pipeline wrote, as text and as parsed JSON lines."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@contextmanager
def log_pipeline() -> Iterator[Callable[..., Captured]]:
    """``configure(fmt="json", **settings)`` sets conveyor.logs up onto a buffer; everything
    it changed (root handler and level, structlog, environment, process context, hash key) is
    put back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    environment = logs.set_environment(None)
    logs.set_environment(environment)
    hash_key = scrub.default_scrubber().hash_key

    def configure(fmt: str = "json", **changes: Any) -> Captured:
        stream = io.StringIO()
        logs.configure(Settings(log_format=fmt, log_level="DEBUG", **changes), stream=stream)
        return Captured(stream)

    try:
        yield configure
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        if was_configured:
            structlog.configure(**config)
        else:
            structlog.reset_defaults()
        logs.set_environment(environment)
        logs.unbind_process("worker", "role")
        scrub.default_scrubber().hash_key = hash_key
