"""A dedicated redis-server a test can stop and restart on the same port (outage and chaos
tests), with the append-only file on so its data survives a restart."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from conveyor.redis.embedded import find_server_binary


class RedisServer:
    """``redis-server`` on ``port`` with its data in ``workdir``.

    >>> server = RedisServer(free_port(), tmp_path); server.start()   # doctest: +SKIP
    """

    def __init__(self, port: int, workdir: Path, *, appendfsync: str = "everysec") -> None:
        self.port = port
        self.workdir = workdir
        self.appendfsync = appendfsync
        self.binary = shutil.which("redis-server") or find_server_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM: the AOF is flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None
