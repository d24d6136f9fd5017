"""Where jobs run (conveyor.core.execution): the event loop chosen by ``event_loop``, and a
clear error when the one asked for is missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from conveyor import ConfigurationError, Settings
from conveyor.core.execution import AsyncRunner, loop_factory


def test_auto_takes_uvloop_when_installed_and_async_jobs_run_on_it() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("auto") is uvloop.new_event_loop
    runner = AsyncRunner("auto")
    try:

        async def kind() -> str:
            return type(asyncio.get_running_loop()).__module__

        assert runner.run(kind(), timeout=5).startswith("uvloop")
    finally:
        runner.close()
    assert loop_factory("asyncio") is asyncio.new_event_loop


def test_a_missing_uvloop_falls_back_under_auto_and_is_named_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(ConfigurationError, match="uvloop is not installed: pip install uvloop"):
        loop_factory("uvloop")


def test_an_unknown_event_loop_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="event_loop must be auto, asyncio or uvloop"):
        Settings(event_loop="trio")
