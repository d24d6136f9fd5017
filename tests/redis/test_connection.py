"""The connection factory (conveyor/redis/connection.py): the embedded server's fsync option,
URLs shown without their password."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import App, Settings
from conveyor.errors import EmbeddedRedisError
from conveyor.redis.connection import connect, display_url
from conveyor.redis.embedded import ensure_server, stop_server


@pytest.fixture
def state_dir() -> Iterator[str]:
    # Unix socket paths are limited to ~100 bytes: keep the directory short.
    directory = tempfile.mkdtemp(prefix="cv-")
    yield directory
    stop_server(directory)


def appendfsync(settings: Settings) -> str:
    client = connect(settings.replace(embedded_fsync="everysec"))
    try:
        return str(client.config_get("appendfsync")["appendfsync"])
    finally:
        client.close()


def test_embedded_fsync_always_when_it_starts_the_server(state_dir: str) -> None:
    settings = Settings(state_dir=state_dir, embedded_fsync="always")
    app = App(settings)
    assert app.enqueue("Anything", 1)
    assert appendfsync(settings) == "always"
    config = (Path(state_dir) / "redis.conf").read_text()
    assert "appendfsync always" in config.splitlines()
    app.close()


def test_embedded_fsync_always_raises_a_running_server_and_nothing_lowers_it(
    state_dir: str,
) -> None:
    plain = App(Settings(state_dir=state_dir))
    assert plain.enqueue("Anything", 1)
    assert appendfsync(plain.settings) == "everysec"
    durable = App(Settings(state_dir=state_dir, embedded_fsync="always"))
    assert durable.enqueue("Anything", 2)  # its first connection raises the setting
    assert appendfsync(plain.settings) == "always"
    again = App(Settings(state_dir=state_dir))  # a process without the option comes later
    assert again.enqueue("Anything", 3)
    assert appendfsync(plain.settings) == "always"
    for app in (plain, durable, again):
        app.close()


def test_the_fsync_value_cannot_smuggle_a_config_line(state_dir: str) -> None:
    with pytest.raises(EmbeddedRedisError, match="appendfsync must be everysec or always"):
        ensure_server(state_dir, fsync="always\nrequirepass stolen")
    assert not (Path(state_dir) / "redis.conf").exists()


def test_display_url_never_shows_the_password(redis_url: str) -> None:
    with_password = redis_url.replace("redis://", "redis://app:hunter2@")
    shown = display_url(Settings(redis_url=with_password))
    assert "hunter2" not in shown and "app" not in shown
    assert shown == redis_url
