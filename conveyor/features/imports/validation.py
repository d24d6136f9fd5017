"""Upload validation (SPEC IMP-1): an uploaded file is checked completely before any row is
written — its size, its real type (by content, not by name), and for archives every member as
its header is streamed: regular files and directories only (no link, device or FIFO), no
absolute paths or ``..``, bounded entry count, sizes and compression ratio (a decompression bomb
is stopped while it inflates, whatever its headers claim). The rules are in
:mod:`~conveyor.features.imports.archive`; :func:`extract` applies them again while it writes,
through code that never follows a link.

>>> upload = validate_upload("export.tar.gz")                 # doctest: +SKIP
>>> extract(upload, "/tmp/import-42")                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from conveyor.errors import UploadRejected
from conveyor.features.imports import tarstream, zipstream
from conveyor.features.imports.archive import (
    ArchiveEntry,
    Kind,
    Tree,
    UploadLimits,
    check_name,
    name_parts,
)


@dataclass(frozen=True)
class ValidatedUpload:
    """An upload that passed :func:`validate_upload`, with the limits it passed under."""

    path: Path
    kind: Kind
    size: int
    entries: tuple[ArchiveEntry, ...]
    total_bytes: int
    limits: UploadLimits = field(default_factory=UploadLimits)


class _Member(Protocol):
    @property
    def entry(self) -> ArchiveEntry: ...

    def chunks(self) -> Iterator[bytes]: ...


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
        info = file.stat()
    except OSError as exc:
        raise UploadRejected(f"cannot read the upload {file.name!r}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UploadRejected(f"the upload {file.name!r} is not a regular file; name an archive")
    size = info.st_size
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
    entries: list[ArchiveEntry] = []
    total = 0
    for member in _members(file, kind, limits):
        entries.append(member.entry)
        total += member.entry.size
    return ValidatedUpload(file, kind, size, tuple(entries), total, limits)


def _members(file: Path, kind: Kind, limits: UploadLimits) -> Iterator[_Member]:
    if kind == "zip":
        return zipstream.members(file, limits)
    return tarstream.members(file, kind, limits)


def extract(upload: ValidatedUpload, destination: str | os.PathLike[str]) -> Path:
    """Extract a validated upload into ``destination``, a new or empty directory. Every member
    is checked again as it is read (the file may have changed since it was validated) and
    written without following any link: files 0600, directories 0700. On a refusal the
    partial tree is left for the caller to remove (it never reaches outside ``destination``).

    >>> extract(validate_upload("export.tar.gz"), "/tmp/import-42")   # doctest: +SKIP
    PosixPath('/tmp/import-42')
    """
    root = Path(destination).absolute()
    with Tree(root) as tree:
        for member in _members(upload.path, upload.kind, upload.limits):
            entry = member.entry
            parts = name_parts(entry.name, upload.limits)
            if entry.is_dir:
                tree.mkdir(entry.name, parts)
            else:
                tree.write(entry.name, parts, member.chunks(), entry.size)
    return root


__all__ = [
    "ArchiveEntry",
    "Kind",
    "UploadLimits",
    "UploadRejected",
    "ValidatedUpload",
    "check_name",
    "detect_kind",
    "extract",
    "validate_upload",
]
