"""Zip archives read one central-directory record at a time (SPEC IMP-1).

``zipfile.ZipFile`` parses the whole central directory into memory when it opens an archive,
before any entry could be refused, so a zip of 200,000 tiny entries would cost hundreds of MB.
This reader walks the directory as a stream instead, admitting each record through the
:class:`~conveyor.features.imports.archive.Ledger` before reading the next, and inflates a
member's data with ``zlib`` itself, never past its declared size. It accepts what exports use:
stored and deflated entries, zip64 sizes; it refuses encryption, other compression methods,
split archives, data before the archive and entries whose data overlap (a zip bomb built by
pointing many entries at one compressed block).

>>> for member in members(Path("export.zip"), UploadLimits()):     # doctest: +SKIP
...     print(member.entry.name)
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conveyor.errors import UploadRejected
from conveyor.features.imports.archive import (
    CHUNK,
    ArchiveEntry,
    Ledger,
    MemberType,
    UploadLimits,
    refuse_type,
)

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory
_LOCATOR64 = struct.Struct("<4sIQI")  # zip64 end of central directory locator
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header
_STORED, _DEFLATED = 0, 8
_UTF8_FLAG, _ENCRYPTED_FLAG = 0x800, 0x1
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF
_TYPE_NAMES = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def _damaged(why: str) -> UploadRejected:
    """The error for a zip whose structure is broken."""
    return UploadRejected(f"the archive is damaged or not a zip archive: {why}; export it again")


@dataclass(frozen=True)
class _Record:
    name: str
    kind: MemberType
    method: int
    crc: int
    compressed: int
    size: int
    offset: int


@dataclass
class Member:
    """A member that passed the rules; ``chunks()`` inflates its data (files only)."""

    entry: ArchiveEntry
    file: IO[bytes]
    record: _Record

    def chunks(self) -> Iterator[bytes]:
        """The member's bytes, in pieces of at most 64 KiB, checked against its CRC."""
        return _inflate(self.file, self.record)


def members(file: Path, limits: UploadLimits) -> Iterator[Member]:
    """Every member of a zip archive, each checked as its directory record is read; raises
    :class:`UploadRejected` at the first that breaks a rule."""
    size = os.stat(file).st_size
    ledger = Ledger(limits)
    spans: list[tuple[int, int, str]] = []
    with file.open("rb") as data, file.open("rb") as directory:
        count, start, length = _directory_span(directory, size)
        directory.seek(start)
        stream = io.BufferedReader(_Window(directory, length), buffer_size=CHUNK)
        seen = 0
        while record := _read_record(stream):
            seen += 1
            entry = ledger.admit(record.name, record.kind, record.size)
            if record.kind == "file":
                spans.append((record.offset, record.offset + 30 + record.compressed, record.name))
            if ledger.total > limits.max_ratio * max(size, 1):
                raise UploadRejected(
                    f"the archive declares {ledger.total:,} bytes from {size:,}, over the "
                    f"expansion ratio limit of {limits.max_ratio:g}x: refused as a possible "
                    "decompression bomb",
                    record.name,
                )
            yield Member(entry, data, record)
        if seen != count:
            raise _damaged(f"its end record counts {count} entries, the directory holds {seen}")
    _check_overlaps(spans, start)


class _Window(io.RawIOBase):
    """Reads at most ``length`` bytes of ``inner`` from where it stands."""

    def __init__(self, inner: IO[bytes], length: int) -> None:
        self.inner, self.left = inner, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(min(len(buffer), self.left))
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def _directory_span(f: IO[bytes], size: int) -> tuple[int, int, int]:
    """(entry count, start, length) of the central directory, from the end records."""
    tail_start = max(0, size - _EOCD.size - _FULL16)
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    # The real end record is the last one whose comment runs exactly to the end of the file.
    while at >= 0 and at + _EOCD.size + _comment_length(tail, at) != len(tail):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise _damaged("no end of central directory record")
    _, disk, cd_disk, _, count, length, start, _ = _EOCD.unpack_from(tail, at)
    end = tail_start + at
    if disk or cd_disk:
        raise _damaged("it is split across several disks")
    if _FULL16 in (count,) or _FULL32 in (length, start):
        count, start, length, end = _zip64_span(f, end)
    if start + length != end:
        raise _damaged(
            "its central directory is not where the end record says (data before the archive?)"
        )
    return count, start, length


def _comment_length(tail: bytes, at: int) -> int:
    if at + _EOCD.size > len(tail):
        return 1 << 20  # a truncated record can never match
    return int(_EOCD.unpack_from(tail, at)[-1])


def _zip64_span(f: IO[bytes], eocd_at: int) -> tuple[int, int, int, int]:
    if eocd_at < _LOCATOR64.size:
        raise _damaged("zip64 sizes without a zip64 locator")
    f.seek(eocd_at - _LOCATOR64.size)
    sig, _, record_at, _ = _LOCATOR64.unpack(f.read(_LOCATOR64.size))
    if sig != b"PK\x06\x07":
        raise _damaged("zip64 sizes without a zip64 locator")
    f.seek(record_at)
    raw = f.read(_EOCD64.size)
    if len(raw) != _EOCD64.size or raw[:4] != b"PK\x06\x06":
        raise _damaged("the zip64 end record is missing")
    fields = _EOCD64.unpack(raw)
    if fields[4] or fields[5]:
        raise _damaged("it is split across several disks")
    count, length, start = fields[7], fields[8], fields[9]
    return count, start, length, record_at


def _read_record(stream: IO[bytes]) -> _Record | None:
    head = stream.read(_CENTRAL.size)
    if not head:
        return None
    if len(head) != _CENTRAL.size or head[:4] != b"PK\x01\x02":
        raise _damaged("a central directory record is truncated or has a bad signature")
    fields = _CENTRAL.unpack(head)
    flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
    nlen, elen, clen, attrs, offset = fields[10], fields[11], fields[12], fields[15], fields[16]
    raw_name, extra = stream.read(nlen), stream.read(elen)
    stream.read(clen)
    name = raw_name.decode("utf-8" if flags & _UTF8_FLAG else "cp437", errors="surrogateescape")
    if flags & _ENCRYPTED_FLAG:
        raise UploadRejected(f"entry {name!r} is encrypted; export without a password", name)
    usize, csize, offset = _zip64_fields(name, extra, usize, csize, offset)
    kind = _kind(name, attrs >> 16)
    if kind == "file" and method not in (_STORED, _DEFLATED):
        raise UploadRejected(
            f"entry {name!r} uses compression method {method}; exports use stored or deflate",
            name,
        )
    return _Record(name, kind, method, crc, csize, usize, offset)


def _zip64_fields(name: str, extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, ...]:
    wanted = [v == _FULL32 for v in (usize, csize, offset)]
    if not any(wanted):
        return usize, csize, offset
    values = [usize, csize, offset]
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 1:
            field = at + 4
            for i, need in enumerate(wanted):
                if need:
                    if field + 8 > at + 4 + length:
                        break
                    values[i] = struct.unpack_from("<Q", extra, field)[0]
                    field += 8
            else:
                return tuple(values)
        at += 4 + length
    raise _damaged(f"entry {name!r} has zip64 sizes without a zip64 extra field")


def _kind(name: str, mode: int) -> MemberType:
    # Zips made on Windows carry no type bits; only a stated type counts.
    kind = stat.S_IFMT(mode)
    if kind in _TYPE_NAMES:
        raise refuse_type(name, _TYPE_NAMES[kind])
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise refuse_type(name, f"of file type {kind:#o}")
    is_dir = name.endswith("/")
    if (kind == stat.S_IFDIR) != is_dir and kind != 0:
        raise refuse_type(name, "both a file and a directory (its name and mode disagree)")
    return "dir" if is_dir else "file"


def _check_overlaps(spans: list[tuple[int, int, str]], directory_start: int) -> None:
    spans.sort()
    previous_end, previous = 0, ""
    for start, end, name in spans:
        if start < previous_end:
            raise UploadRejected(
                f"entries {previous!r} and {name!r} share data in the file (a zip bomb "
                "construction); refused",
                name,
            )
        if end > directory_start:
            raise _damaged(f"entry {name!r} runs into the central directory")
        previous_end, previous = end, name


def _inflate(f: IO[bytes], record: _Record) -> Iterator[bytes]:
    f.seek(record.offset)
    head = f.read(_LOCAL.size)
    if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
        raise _damaged(f"entry {record.name!r} has no local header where the directory says")
    nlen, elen = _LOCAL.unpack(head)[-2:]
    f.seek(record.offset + _LOCAL.size + nlen + elen)
    out, crc = record.size, 0
    for chunk in _decoded(f, record):
        out -= len(chunk)
        if out < 0:
            raise UploadRejected(
                f"entry {record.name!r} inflates past its declared {record.size:,} bytes; "
                "refused as a possible decompression bomb",
                record.name,
            )
        crc = zlib.crc32(chunk, crc)
        yield chunk
    if out or crc != record.crc:
        raise _damaged(f"entry {record.name!r} does not match its size or checksum")


def _decoded(f: IO[bytes], record: _Record) -> Iterator[bytes]:
    """The member's data, decompressed at most 64 KiB at a time whatever its ratio."""
    left = record.compressed
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if record.method == _DEFLATED else None
    pending = b""
    while left or pending:
        if not pending:
            pending = f.read(min(CHUNK, left))
            if not pending:
                raise _damaged(f"entry {record.name!r} is truncated")
            left -= len(pending)
        if inflater is None:
            yield pending
            pending = b""
            continue
        yield inflater.decompress(pending, CHUNK)
        pending = inflater.unconsumed_tail
    if inflater is not None:
        yield inflater.flush(CHUNK)


__all__ = ["Member", "members"]
