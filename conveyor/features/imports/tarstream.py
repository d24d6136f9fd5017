"""Tar and tar.gz archives read as a stream, one header at a time (SPEC IMP-1).

Members are never collected: ``tarfile`` is driven with ``next()`` and its member list emptied
after each header, and every byte comes through :class:`Meter`, which stops the stream as soon
as it inflates past the size or ratio cap, or as soon as the headers between two members
outgrow :data:`~conveyor.features.imports.archive.HEADER_ALLOWANCE` (a pax record or GNU long
name that ``tarfile`` would otherwise buffer whole). Each header passes the
:class:`~conveyor.features.imports.archive.Ledger` before the next is read.

>>> for member in members(Path("export.tar.gz"), "tar.gz", UploadLimits()):  # doctest: +SKIP
...     print(member.entry.name)
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from conveyor.errors import UploadRejected
from conveyor.features.imports.archive import (
    CHUNK,
    HEADER_ALLOWANCE,
    READ_AHEAD,
    ArchiveEntry,
    Kind,
    Ledger,
    MemberType,
    UploadLimits,
    refuse_type,
)

_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


class Meter(io.RawIOBase):
    """Counts the bytes read out of a (decompressing) stream and fails as soon as they pass
    ``cap``, or the budget :meth:`allow` set for what may come before the next header."""

    def __init__(self, inner: IO[bytes], cap: int, ratio_cap: int | None) -> None:
        self.inner, self.cap, self.ratio_cap = inner, cap, ratio_cap
        self.count = 0
        self.budget = HEADER_ALLOWANCE
        self.current = "its start"

    def readable(self) -> bool:
        return True

    def allow(self, more: int, current: str) -> None:
        """From now on, ``more`` bytes may be read before the next member is admitted."""
        self.budget = self.count + more + HEADER_ALLOWANCE
        self.current = current

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.count += len(data)
        if self.ratio_cap is not None and self.count > self.ratio_cap:
            raise UploadRejected(
                f"the archive inflates past {self.ratio_cap:,} bytes, over the expansion "
                "ratio limit: refused as a possible decompression bomb"
            )
        if self.count > self.cap:
            raise UploadRejected(
                f"the archive inflates past {self.cap:,} bytes: refused as a possible "
                "decompression bomb"
            )
        if self.count > self.budget:
            raise UploadRejected(
                f"the archive's headers after {self.current} take over {HEADER_ALLOWANCE:,} "
                "bytes; refused (oversized pax or long-name records)"
            )
        buffer[: len(data)] = data
        return len(data)


@dataclass
class Member:
    """A member that passed the rules; ``chunks()`` reads its data (files only), valid until
    the next member is read."""

    entry: ArchiveEntry
    tar: tarfile.TarFile
    info: tarfile.TarInfo

    def chunks(self) -> Iterator[bytes]:
        """The member's bytes, in pieces of at most 64 KiB."""
        reader = self.tar.extractfile(self.info)
        if reader is None:
            return
        with reader:
            while chunk := reader.read(CHUNK):
                yield chunk


def members(file: Path, kind: Kind, limits: UploadLimits) -> Iterator[Member]:
    """Every member of a tar or tar.gz archive, each checked as its header is read; raises
    :class:`UploadRejected` at the first that breaks a rule."""
    size = os.stat(file).st_size
    ratio_cap = int(limits.max_ratio * size) if kind == "tar.gz" else None
    # Headers and padding come on top of the members' contents.
    cap = limits.max_total_bytes + (limits.max_entries + 1) * 1024 + HEADER_ALLOWANCE
    ledger = Ledger(limits)
    with file.open("rb") as raw:
        inner = cast(IO[bytes], gzip.GzipFile(fileobj=raw) if kind == "tar.gz" else raw)
        meter = Meter(inner, cap, ratio_cap)
        stream = io.BufferedReader(meter, buffer_size=READ_AHEAD)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                while (info := _next(tar)) is not None:
                    entry = ledger.admit(info.name, _kind(info), info.size)
                    meter.allow(_padded(entry.size), f"member {info.name!r}")
                    yield Member(entry, tar, info)
        except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError) as exc:
            raise UploadRejected(
                f"the archive is damaged or not a tar archive: {exc}; export it again"
            ) from None


def _next(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    info = tar.next()
    # tarfile keeps every header it read; an archive of 200,000 members would keep them all.
    tar.members.clear()  # type: ignore[attr-defined]  # real attribute, not in typeshed
    return info


def _kind(info: tarfile.TarInfo) -> MemberType:
    # A sparse file (GNU type, or a pax regular file with a sparse map) expands on disk far
    # past its compressed size: out of reach of the ratio cap.
    if info.type in _FILE_TYPES and info.sparse is None:
        return "file"
    if info.type == tarfile.DIRTYPE:
        return "dir"
    what = "a sparse file" if info.sparse is not None else _TYPE_NAMES.get(info.type, "")
    what = what or f"of tar type {info.type!r}"
    if info.issym() or info.islnk():
        what += f" to {info.linkname!r}"
    raise refuse_type(info.name, what)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


__all__ = ["Member", "Meter", "members"]
