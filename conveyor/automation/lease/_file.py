"""The ``file`` lease: a JSON record in a file on a path every node shares (NFS in production,
a local directory on one machine).

Three files per lease, side by side:

- ``<path>`` — the record ``{"holder", "fence", "expires_at", "renewed", "released"}``. The first
  term creates it with ``O_CREAT|O_EXCL``; every later write goes to a temporary file that is
  fsynced and renamed over it, so a reader never sees half a record.
- ``<path>.lock`` — never rewritten; every read-decide-write happens while holding an exclusive
  POSIX lock (``fcntl.lockf``) on it, which NFSv4 (and NFSv3 with lockd) carry to the server.
- ``<path>.fence`` — the highest fence handed out, written before the record, so deleting the
  record (or a record left empty by a crash) never makes a fence repeat.

POSIX locks belong to a process, not to a file descriptor, so two threads of one process would
both "get" the lock; a per-path thread lock in this module closes that gap.

Expiry is judged with the acting node's wall clock (``clock.time()``): node clocks must agree
to well within the :class:`~conveyor.automation.lease.Leadership` margin (run NTP).

>>> lease = FileLease("/mnt/shared/leases/migrate.txt")           # doctest: +SKIP
>>> term = lease.acquire("node-a", 300)                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator

from conveyor.automation.lease._base import (
    LeaseRecord,
    Term,
    check_holder,
    check_ttl,
    plan_acquire,
    plan_release,
    plan_renew,
)
from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.errors import LeaseError

#: How long to wait for another process's lock before giving up (the section it guards is a
#: read and one small write, so a longer wait means a hung file system).
LOCK_TIMEOUT = 10.0

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.Lock())


class FileLease:
    """A lease held in a file (see the module docstring for the layout and the locking).

    The directory must exist: a missing directory usually means the shared storage is not
    mounted, and a lease created on a local disk instead would elect one master per node.
    ``create_dir=True`` creates it (for the single-machine default under the state dir).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK, create_dir: bool = False
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.description = f"file:{self.path}"
        self.clock = clock
        self._lock_path = self.path + ".lock"
        self._fence_path = self.path + ".fence"
        directory = os.path.dirname(self.path)
        if create_dir:
            os.makedirs(directory, exist_ok=True)
        if not os.path.isdir(directory):
            raise LeaseError(
                f"lease directory {directory!r} does not exist: mount the shared storage there "
                "or create the directory (a lease on a node's local disk would not be shared)"
            )

    def __repr__(self) -> str:
        return f"FileLease({self.path!r})"

    # -- the Lease protocol ---------------------------------------------------------------------
    def acquire(self, holder: str, ttl: float) -> Term | None:
        """A new term if the file is free, released or expired; a renewal if ``holder`` holds
        it; ``None`` if another live holder has it."""
        check_holder(holder)
        ttl = check_ttl(ttl)
        with self._locked():
            record, exists, high_water = self._load()
            new = plan_acquire(record, high_water, holder, self.clock.time(), ttl)
            if new is None:
                return None
            if not self._store(new, high_water, create=not exists):
                return None
            return new.term()

    def renew(self, term: Term, ttl: float) -> Term | None:
        """Extend ``term`` (same fence); ``None`` if it was taken over, released or expired."""
        ttl = check_ttl(ttl)
        with self._locked():
            record, exists, high_water = self._load()
            new = plan_renew(record, term, self.clock.time(), ttl)
            if new is None or not self._store(new, high_water, create=not exists):
                return None
            return new.term()

    def release(self, term: Term) -> None:
        """Mark ``term`` released if it is still the current term (idempotent)."""
        with self._locked():
            record, exists, high_water = self._load()
            new = plan_release(record, term, self.clock.time())
            if new is not None:
                self._store(new, high_water, create=not exists)

    def peek(self) -> Term | None:
        """The current or last term, expired or not; ``None`` if never held (or unreadable)."""
        with self._locked():
            record, _, _ = self._load()
        return None if record is None else record.term()

    # -- internals ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = _thread_lock(self._lock_path)
        # Real time, not the injected clock: this waits for another process's file lock.
        if not lock.acquire(timeout=LOCK_TIMEOUT):
            raise LeaseError(f"{self.description}: lock busy in this process for {LOCK_TIMEOUT}s")
        try:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise LeaseError(f"{self.description}: cannot open the lock file: {exc}") from exc
            try:
                self._lock_fd(fd)
                yield
            finally:
                os.close(fd)  # closing the descriptor drops the POSIX lock
        finally:
            lock.release()

    def _lock_fd(self, fd: int) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = 0.001
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except (BlockingIOError, PermissionError):
                if time.monotonic() >= deadline:
                    raise LeaseError(
                        f"{self.description}: {self._lock_path} stayed locked by another process "
                        f"for {LOCK_TIMEOUT}s (hung file system or stuck process?)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except OSError as exc:
                raise LeaseError(
                    f"{self.description}: cannot lock {self._lock_path}: {exc} (a file lease "
                    "needs POSIX locks: NFSv4, or NFSv3 with lockd; not a 'nolock' mount)"
                ) from exc

    def _load(self) -> tuple[LeaseRecord | None, bool, int]:
        """(record or None, whether the record file exists, highest fence ever handed out)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            record, exists = None, False
        except OSError as exc:
            raise LeaseError(f"{self.description}: cannot read the lease file: {exc}") from exc
        else:
            # An empty or foreign file (a crash right after the exclusive create, an operator's
            # edit) counts as free; the fence sidecar still knows the high-water mark.
            record, exists = LeaseRecord.loads(text), True
        return record, exists, max(self._read_fence(), record.fence if record else 0)

    def _read_fence(self) -> int:
        try:
            with open(self._fence_path, "rb") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LeaseError(f"{self.description}: cannot read {self._fence_path}: {exc}") from exc
        return int(text) if text.isdigit() else 0

    def _store(self, record: LeaseRecord, high_water: int, *, create: bool) -> bool:
        """Write ``record``; False if an exclusive create found the file already there."""
        try:
            if record.fence > high_water:
                self._replace(self._fence_path, str(record.fence).encode())
            data = record.dumps().encode()
            if not create:
                self._replace(self.path, data)
                return True
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                # Only possible when the lock is not honoured (e.g. a 'nolock' NFS mount).
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._sync_dir()
            return True
        except OSError as exc:
            raise LeaseError(f"{self.description}: cannot write the lease: {exc}") from exc

    def _replace(self, target: str, data: bytes) -> None:
        tmp = f"{target}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_dir()

    def _sync_dir(self) -> None:
        # The rename is only durable once the directory is; best effort (not every file
        # system lets a directory be opened for fsync).
        with contextlib.suppress(OSError):
            fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
