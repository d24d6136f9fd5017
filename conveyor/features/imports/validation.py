"""Upload validation (SPEC IMP-1): an uploaded file is checked completely before any row is
written — its size, its real type (by content, not by name), and for archives every entry:
no absolute paths or ``..``, no links leaving the extraction root, no device files or FIFOs,
bounded entry count, total size and compression ratio (decompression bombs are caught while
the stream is read, before a header could lie about it).

>>> upload = validate_upload("export.tar.gz")                 # doctest: +SKIP
>>> extract(upload, "/tmp/import-42")                          # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, cast

from conveyor.errors import UploadRejected

Kind = Literal["tar.gz", "tar", "zip"]

MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be. Defaults suit a project export; tighten them per importer."""

    max_upload_bytes: int = 200 * MB
    #: Archive formats accepted (detected from content).
    allowed: tuple[Kind, ...] = ("tar.gz", "tar", "zip")
    max_entries: int = 50_000
    max_entry_bytes: int = 500 * MB
    max_total_bytes: int = 2_000 * MB
    #: Uncompressed size over compressed size, for the whole archive.
    max_ratio: float = 100.0


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    size: int
    is_dir: bool


@dataclass(frozen=True)
class ValidatedUpload:
    path: Path
    kind: Kind
    size: int
    entries: tuple[ArchiveEntry, ...]
    total_bytes: int


def detect_kind(path: Path) -> Kind | None:
    """The archive format by its first bytes, or None when it is none of them."""
    with path.open("rb") as f:
        head = f.read(262 + 8)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def validate_upload(
    path: str | os.PathLike[str], limits: UploadLimits | None = None
) -> ValidatedUpload:
    """Check an uploaded file; raise :class:`UploadRejected` saying what is wrong."""
    limits = limits or UploadLimits()
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise UploadRejected(f"cannot read the upload {file.name!r}: {exc.strerror}") from None
    if size > limits.max_upload_bytes:
        raise UploadRejected(
            f"the upload is {size:,} bytes, over the limit of {limits.max_upload_bytes:,}; "
            "split the export or raise UploadLimits.max_upload_bytes"
        )
    kind = detect_kind(file)
    if kind is None or kind not in limits.allowed:
        found = "not an archive" if kind is None else f"a {kind} archive"
        raise UploadRejected(
            f"the upload is {found}; accepted: {', '.join(limits.allowed)} "
            "(the type is read from the content, not the file name)"
        )
    entries = list(_zip_entries(file) if kind == "zip" else _tar_entries(file, kind, limits))
    total = _check_entries(entries, limits)
    if size and total / size > limits.max_ratio:
        raise UploadRejected(
            f"the archive expands {total / size:,.0f}x ({total:,} bytes from {size:,}), over "
            f"the limit of {limits.max_ratio:g}x: refused as a possible decompression bomb"
        )
    return ValidatedUpload(file, kind, size, tuple(entries), total)


def _check_entries(entries: list[ArchiveEntry], limits: UploadLimits) -> int:
    if len(entries) > limits.max_entries:
        raise UploadRejected(
            f"the archive has {len(entries):,} entries, over the limit of {limits.max_entries:,}"
        )
    total = 0
    for entry in entries:
        check_name(entry.name)
        if entry.size > limits.max_entry_bytes:
            raise UploadRejected(
                f"entry {entry.name!r} is {entry.size:,} bytes, over the limit of "
                f"{limits.max_entry_bytes:,}",
                entry.name,
            )
        total += entry.size
        if total > limits.max_total_bytes:
            raise UploadRejected(
                f"the archive holds over {limits.max_total_bytes:,} bytes uncompressed",
                entry.name,
            )
    return total


def check_name(name: str) -> None:
    """Refuse entry names that could land outside the extraction root."""
    if not name or "\x00" in name:
        raise UploadRejected(f"entry name {name!r} is empty or holds a NUL byte", name)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UploadRejected(f"entry {name!r} has an absolute path", name)
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise UploadRejected(f"entry {name!r} climbs out of the archive with '..'", name)


class _Capped(io.RawIOBase):
    """Reads a decompressing stream, failing once more than ``cap`` bytes came out: a bomb is
    stopped while it inflates, whatever its headers claim."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self.inner, self.cap, self.count = inner, cap, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.count += len(data)
        if self.count > self.cap:
            raise UploadRejected(
                f"the archive inflates past {self.cap:,} bytes: refused as a possible "
                "decompression bomb"
            )
        buffer[: len(data)] = data
        return len(data)


def _tar_entries(file: Path, kind: Kind, limits: UploadLimits) -> Iterator[ArchiveEntry]:
    # Every header is read through the capped stream, so a gzip bomb stops while it inflates.
    cap = limits.max_total_bytes + 1024 * 1024  # headers and padding on top of the contents
    with file.open("rb") as raw:
        inner = cast(IO[bytes], gzip.GzipFile(fileobj=raw) if kind == "tar.gz" else raw)
        stream = io.BufferedReader(_Capped(inner, cap))
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    _check_tar_member(member)
                    yield ArchiveEntry(
                        member.name, member.size if member.isfile() else 0, member.isdir()
                    )
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UploadRejected(f"the archive is damaged or not a tar archive: {exc}") from None


def _check_tar_member(member: tarfile.TarInfo) -> None:
    name = member.name
    check_name(name)
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise UploadRejected(f"entry {name!r} is a device file or FIFO", name)
    if member.issym() or member.islnk():
        _check_link(name, member.linkname, hard=member.islnk())
    elif not (member.isfile() or member.isdir()):
        raise UploadRejected(f"entry {name!r} has an unsupported type", name)


def _check_link(name: str, target: str, *, hard: bool) -> None:
    """A link may only point inside the archive root."""
    if target.startswith("/"):
        raise UploadRejected(f"entry {name!r} links to the absolute path {target!r}", name)
    base = PurePosixPath() if hard else PurePosixPath(name).parent
    depth = 0
    for part in (base / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise UploadRejected(f"entry {name!r} links outside the archive ({target!r})", name)


def _zip_entries(file: Path) -> Iterator[ArchiveEntry]:
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise UploadRejected(
                        f"entry {info.filename!r} is a symbolic link", info.filename
                    )
                # Zips made on Windows carry no file type bits; only a stated type counts.
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise UploadRejected(
                        f"entry {info.filename!r} is a device file or FIFO", info.filename
                    )
                yield ArchiveEntry(info.filename, info.file_size, info.is_dir())
    except zipfile.BadZipFile as exc:
        raise UploadRejected(f"the archive is damaged or not a zip archive: {exc}") from None


def extract(upload: ValidatedUpload, destination: str | os.PathLike[str]) -> Path:
    """Extract a validated upload; every entry is checked again against the real root."""
    root = Path(destination).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if upload.kind == "zip":
        with zipfile.ZipFile(upload.path) as archive:
            for info in archive.infolist():
                _inside(root, info.filename)
            archive.extractall(root)
    else:
        with tarfile.open(upload.path, "r:gz" if upload.kind == "tar.gz" else "r:") as tar:
            tar.extractall(root, filter="data")  # refuses links out, devices, absolute paths
    return root


def _inside(root: Path, name: str) -> None:
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise UploadRejected(f"entry {name!r} would be written outside {root}", name)
