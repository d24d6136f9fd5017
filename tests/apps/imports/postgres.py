"""A throwaway PostgreSQL server for the importer's PostgreSQL tests.

``initdb`` into a temporary directory, then ``postgres`` on a free port (TCP on 127.0.0.1 and
its socket in the same directory), with fsync off: the data is thrown away at the end anyway.
initdb refuses to run as root, so as root every server command runs as the ``postgres``
system user (the ``postgresql`` package creates it) and the directory is chown'ed to it.

The binaries are found in ``/usr/lib/postgresql/<version>/bin`` (where Debian's ``postgresql``
package puts them, off the PATH) or on the PATH. :func:`unavailable` says why a server cannot
run here (no binaries, no psycopg, root without a ``postgres`` user), or ``None``.

The server's own log (``server.out`` in its directory) is kept outside pytest's base temp
directory: it is the database's log, not Conveyor's, like the test redis-server's output.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "postgres"


def bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: the newest Debian versioned one,
    else the PATH's."""

    def version(path: Path) -> int:
        match = re.fullmatch(r"\d+", path.parent.name)
        return int(match.group()) if match else 0

    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    for path in sorted(found, key=version, reverse=True):
        if (path / "postgres").exists():
            return path
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def _run_as() -> str | None:
    """The user to run the server as: ``postgres`` when we are root, else ourselves."""
    return SUPERUSER if os.geteuid() == 0 else None


def unavailable() -> str | None:
    """Why no PostgreSQL server can be started here, or ``None`` when one can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]>=3.1', the imports extra)"
    if bin_dir() is None:
        return (
            "no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or "
            "on the PATH (apt-get install postgresql; .ci/run installs it)"
        )
    user = _run_as()
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"running as root, but there is no {user!r} system user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server in a temporary directory. ``start()``, ``create_database(name)`` (a URL for
    SQLAlchemy), ``drop_database(name)``, ``stop()`` (which removes the directory)."""

    def __init__(self) -> None:
        bindir = bin_dir()
        if bindir is None:
            raise RuntimeError(unavailable() or "no PostgreSQL binaries")
        self.bindir = bindir
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-test-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def _popen_args(self) -> dict[str, object]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        args: dict[str, object] = {"cwd": self.dir, "env": env}
        if self.user is not None:
            args.update(user=self.user, group=pwd.getpwnam(self.user).pw_gid, extra_groups=[])
        return args

    def start(self, timeout: float = 60.0) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        initdb = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]
        done = subprocess.run(initdb, capture_output=True, check=False, **self._popen_args())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "16MB",
            "dynamic_shared_memory_type": "mmap",
        }
        command = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        with (self.dir / "server.out").open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, **self._popen_args()
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not accept connections in {timeout:g} s: {self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        try:
            return (self.dir / "server.out").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def dsn(self, database: str) -> str:
        """A libpq connection string (for psycopg)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
