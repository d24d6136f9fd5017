"""The rules every archive member must pass, and the writer that extracts members without ever
following a link (SPEC IMP-1, issue #15).

An export holds regular files and directories only. A :class:`Ledger` sees each member's header
as the archive is streamed (:mod:`~conveyor.features.imports.tarstream`,
:mod:`~conveyor.features.imports.zipstream`) and refuses, as soon as it is read: a link, device,
FIFO or any other type; a name that is absolute, climbs with ``..``, holds a NUL, control or
backslash character, or is too long or deep; a member listed twice or one that would turn a file
into a directory; the entry cap; the per-entry and total size caps. Nothing waits for the whole
listing, so a hostile archive costs bounded memory and time.

:class:`Tree` writes under a fresh directory through directory file descriptors: each directory
is made with ``mkdir`` relative to its parent's descriptor and opened with ``O_NOFOLLOW``; each
file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so an existing name (a link planted by
anyone) is an error, never a path to follow. This does not depend on the Python patch level's
``tarfile`` filters (CVE-2025-4517).

>>> ledger = Ledger(UploadLimits())
>>> ledger.admit("data/issues.jsonl", "file", 12)
ArchiveEntry(name='data/issues.jsonl', size=12, is_dir=False)
>>> ledger.admit("data/../../x", "file", 1)
Traceback (most recent call last):
conveyor.errors.UploadRejected: entry 'data/../../x' climbs out of the archive with '..'; refused
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from conveyor.errors import UploadRejected

Kind = Literal["tar.gz", "tar", "zip"]

MB = 1024 * 1024
#: Header bytes a tar stream may carry between two members (pax/GNU long-name records); a
#: header past this is refused before tarfile buffers it whole.
HEADER_ALLOWANCE = 1 * MB
#: What the next read may buffer ahead of the member being checked (tarfile and gzip buffers).
READ_AHEAD = 64 * 1024
#: Bytes copied per write while extracting.
CHUNK = 64 * 1024

#: Control characters (a NUL is caught first, with its own message) and backslashes, which
#: Windows tools read as separators ("..\\..\\x").
_BAD_CHARACTER = re.compile(r"[\x01-\x1f\x7f\\]")

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be. Defaults suit a project export; tighten them per importer.

    >>> UploadLimits(max_entries=1_000).max_entries
    1000
    """

    max_upload_bytes: int = 200 * MB
    #: Archive formats accepted (detected from content).
    allowed: tuple[Kind, ...] = ("tar.gz", "tar", "zip")
    #: Members plus the directories their paths imply.
    max_entries: int = 50_000
    max_entry_bytes: int = 500 * MB
    max_total_bytes: int = 2_000 * MB
    #: Uncompressed size over compressed size, for the whole archive.
    max_ratio: float = 100.0
    #: Directories a member name may go down.
    max_depth: int = 32
    #: UTF-8 bytes of a member name.
    max_name_bytes: int = 1024


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One member that passed the rules: its name as written in the archive."""

    name: str
    size: int
    is_dir: bool


MemberType = Literal["file", "dir"]


def name_parts(name: str, limits: UploadLimits | None = None) -> tuple[str, ...]:
    """The path components of a member name, refusing any name that could land outside the
    extraction root or that a file system would treat specially.

    >>> name_parts("./data//issues.jsonl")
    ('data', 'issues.jsonl')
    """
    limits = limits or UploadLimits()
    if not name or "\x00" in name:
        raise UploadRejected(
            f"entry name {name!r} is empty or holds a NUL byte; name every member", name
        )
    bad = _BAD_CHARACTER.search(name)
    if bad is not None:
        raise UploadRejected(
            f"entry {name!r} holds the character {bad[0]!r}; member names may not hold "
            "control characters or backslashes",
            name,
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadRejected(f"entry {name!r} has an absolute path; use relative names", name)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UploadRejected(f"entry {name!r} climbs out of the archive with '..'; refused", name)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UploadRejected(f"entry {name!r} is not valid UTF-8; rename it", name) from None
    if size > limits.max_name_bytes or any(len(p.encode()) > 255 for p in parts):
        raise UploadRejected(
            f"entry {name[:80]!r}... has a name of {size:,} bytes; the limit is "
            f"{limits.max_name_bytes:,} (255 per component)",
            name,
        )
    if len(parts) > limits.max_depth:
        raise UploadRejected(
            f"entry {name[:80]!r}... is {len(parts)} directories deep, over the limit of "
            f"{limits.max_depth}",
            name,
        )
    return parts


def check_name(name: str) -> None:
    """Refuse entry names that could land outside the extraction root (see :func:`name_parts`).

    >>> check_name("/etc/passwd")
    Traceback (most recent call last):
    conveyor.errors.UploadRejected: entry '/etc/passwd' has an absolute path; use relative names
    """
    name_parts(name)


def refuse_type(name: str, what: str) -> UploadRejected:
    """The error for a member that is not a regular file or directory.

    >>> str(refuse_type("ln", "a symbolic link to '..'"))
    "entry 'ln' is a symbolic link to '..'; an export holds only regular files and directories"
    """
    return UploadRejected(
        f"entry {name!r} is {what}; an export holds only regular files and directories", name
    )


class Ledger:
    """Admits members one at a time as their headers are read, enforcing every rule that
    spans members (count, totals, duplicates). Memory: one small integer per path."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.count = 0
        self.total = 0
        # hash() of each normalised path: a collision can only refuse a good archive (odds
        # ~1e-10 at the entry cap), never admit a bad one, and costs no name storage.
        self._files: set[int] = set()
        self._dirs: set[int] = set()

    def admit(self, name: str, kind: MemberType, size: int) -> ArchiveEntry:
        """Check one member; returns its entry or raises :class:`UploadRejected`."""
        parts = name_parts(name, self.limits)
        if not parts:
            if kind == "dir":  # "./": the root itself
                return ArchiveEntry(name, 0, True)
            raise UploadRejected(f"entry {name!r} names the archive root as a file", name)
        self._count(name)
        size = size if kind == "file" else 0
        self._check_size(name, size)
        self._check_place(name, parts, kind)
        return ArchiveEntry(name, size, kind == "dir")

    def _count(self, name: str, implied: int = 1) -> None:
        self.count += implied
        if self.count > self.limits.max_entries:
            raise UploadRejected(
                f"the archive has over {self.limits.max_entries:,} entries (counting the "
                f"directories their paths imply), reached at {name[:80]!r}; split the export or "
                "raise UploadLimits.max_entries",
                name,
            )

    def _check_size(self, name: str, size: int) -> None:
        if size < 0 or size > self.limits.max_entry_bytes:
            raise UploadRejected(
                f"entry {name!r} is {size:,} bytes, over the limit of "
                f"{self.limits.max_entry_bytes:,}",
                name,
            )
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise UploadRejected(
                f"the archive holds over {self.limits.max_total_bytes:,} bytes uncompressed, "
                f"reached at entry {name!r}",
                name,
            )

    def _check_place(self, name: str, parts: tuple[str, ...], kind: MemberType) -> None:
        key = hash("/".join(parts))
        if key in self._files or (kind == "file" and key in self._dirs):
            raise UploadRejected(
                f"entry {name!r} is listed twice (or as both a file and a directory); a later "
                "member may not replace an earlier one",
                name,
            )
        for depth in range(len(parts) - 1, 0, -1):
            parent = hash("/".join(parts[:depth]))
            if parent in self._files:
                raise UploadRejected(
                    f"entry {name!r} goes through {'/'.join(parts[:depth])!r}, which the archive "
                    "made a file",
                    name,
                )
            if parent in self._dirs:
                break  # its own parents were added with it
            self._dirs.add(parent)
            self._count(name)
        (self._dirs if kind == "dir" else self._files).add(key)


class Tree:
    """Extraction into a fresh directory that never follows a link: every step is relative to
    a directory descriptor opened with ``O_NOFOLLOW``, every file created with ``O_EXCL``.

    >>> with Tree("/tmp/import-42") as tree:              # doctest: +SKIP
    ...     tree.write("data/a.json", [b"{}"], 2)
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        with contextlib.suppress(FileExistsError):
            self.root.mkdir(mode=_DIR_MODE, parents=True)
        try:
            self._fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise UploadRejected(
                f"the extraction directory {self.root} cannot be opened ({exc.strerror}); name "
                "a real directory, not a link"
            ) from None
        if os.listdir(self._fd):
            os.close(self._fd)
            raise UploadRejected(
                f"the extraction directory {self.root} is not empty; extract into a fresh one"
            )
        self._open: dict[tuple[str, ...], int] = {}

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every directory descriptor."""
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        os.close(self._fd)

    def mkdir(self, name: str, parts: tuple[str, ...]) -> None:
        """Make the directory ``parts`` (and its parents) under the root."""
        if parts:
            self._directory(name, parts)

    def write(self, name: str, parts: tuple[str, ...], chunks: Iterable[bytes], size: int) -> None:
        """Create the new file ``parts`` and write ``chunks`` to it: exactly ``size`` bytes."""
        parent = self._directory(name, parts[:-1])
        try:
            fd = os.open(parts[-1], _NEW_FILE_FLAGS, _FILE_MODE, dir_fd=parent)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if written > size:
                    raise UploadRejected(
                        f"entry {name!r} inflates past its declared {size:,} bytes; refused",
                        name,
                    )
                out.write(chunk)
        if written != size:
            raise UploadRejected(
                f"entry {name!r} holds {written:,} bytes, not the {size:,} it declares", name
            )

    def _directory(self, name: str, parts: tuple[str, ...]) -> int:
        """Descriptor of directory ``parts``, made (without following links) when missing."""
        if not parts:
            return self._fd
        found = self._open.get(parts)
        if found is not None:
            return found
        parent = self._directory(name, parts[:-1])
        try:
            os.mkdir(parts[-1], _DIR_MODE, dir_fd=parent)  # mkdirat: never follows a link
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._refusal(name, exc) from None
        try:
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        if len(self._open) >= 64:  # members come grouped by directory: keep the recent ones
            for stale in list(self._open)[:32]:
                if stale != parts[: len(stale)]:
                    os.close(self._open.pop(stale))
        self._open[parts] = fd
        return fd

    def _refusal(self, name: str, exc: OSError) -> UploadRejected:
        reason = {
            errno.EEXIST: "would replace something already extracted",
            errno.ELOOP: "goes through a symbolic link",
            errno.ENOTDIR: "goes through something that is not a directory (a file or a link)",
        }.get(exc.errno or 0, f"cannot be written ({exc.strerror})")
        return UploadRejected(f"entry {name!r} {reason}; refused", name)


__all__ = [
    "ArchiveEntry",
    "Kind",
    "Ledger",
    "MemberType",
    "Tree",
    "UploadLimits",
    "check_name",
    "name_parts",
    "refuse_type",
]
