"""The project export format (documented in docs/imports.md): a tar.gz holding

- ``project.json``: ``{"format": "conveyor.project-export", "version": 1, "id", "path",
  "name", "description", "owner": {"username", "email"}}``
- ``labels.jsonl``: one label a line: ``{"id", "name", "color": "#rrggbb", "description"}``
- ``issues.jsonl``: ``{"id", "iid", "title", "description", "state": "opened"|"closed",
  "author": {"username", "email"}, "labels": [names], "created_at": ISO 8601}``
- ``comments.jsonl``: ``{"id", "issue_id", "body", "author", "created_at"}``

Parsing a record checks every field and raises :class:`RecordError` naming the record id and
the field (never a value: values may be personal data).

>>> write_export("export.tar.gz", project, labels, issues, comments)   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import RecordError, UploadRejected

FORMAT = "conveyor.project-export"
VERSION = 1
PROJECT_FILE = "project.json"
FILES = {"labels": "labels.jsonl", "issues": "issues.jsonl", "comments": "comments.jsonl"}
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
STATES = ("opened", "closed")
#: The largest id: a signed 64-bit integer, what SQLite and PostgreSQL's ``bigint`` hold.
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Author:
    username: str
    email: str


@dataclass(frozen=True)
class ProjectData:
    id: int
    path: str
    name: str
    description: str
    owner: Author | None


@dataclass(frozen=True)
class LabelData:
    id: int
    name: str
    color: str
    description: str


@dataclass(frozen=True)
class IssueData:
    id: int
    iid: int
    title: str
    description: str
    state: str
    author: Author | None
    labels: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class CommentData:
    id: int
    issue_id: int
    body: str
    author: Author | None
    created_at: str


class _Fields:
    """Typed access to one record's fields; errors name the record and the field only."""

    def __init__(self, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise RecordError(f"{kind} record is not a JSON object")
        self.kind, self.data = kind, data
        self.id = self.integer("id")

    def where(self) -> str:
        ident = self.data.get("id")
        return f"{self.kind} {ident}" if isinstance(ident, int) else self.kind

    def integer(self, name: str) -> int:
        value = self.data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
            raise RecordError(f"{self.where()}: {name!r} must be a whole number from 1 to {MAX_ID}")
        return value

    def text(self, name: str, *, required: bool = True, limit: int = 255) -> str:
        value = self.data.get(name, None if required else "")
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
            need = "a non-empty string" if required else "a string"
            raise RecordError(f"{self.where()}: {name!r} must be {need} of at most {limit} chars")
        self.storable(name, value)
        return value

    def storable(self, name: str, value: str) -> None:
        """Text every database can store: PostgreSQL refuses NUL characters, and no database
        takes a lone UTF-16 surrogate (which JSON's ``\\ud800`` escapes can produce)."""
        if "\x00" in value:
            raise RecordError(f"{self.where()}: {name!r} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(f"{self.where()}: {name!r} is not valid Unicode text") from None

    def timestamp(self, name: str) -> str:
        value = self.text(name, limit=40)
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise RecordError(f"{self.where()}: {name!r} is not an ISO 8601 time") from None
        return value

    def author(self) -> Author | None:
        value = self.data.get("author") or self.data.get("owner")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise RecordError(f"{self.where()}: 'author' must be an object")
        username = value.get("username")
        email = value.get("email", "")
        if not isinstance(username, str) or not username or len(username) > 255:
            raise RecordError(f"{self.where()}: the author's 'username' must be a non-empty string")
        if not isinstance(email, str) or len(email) > 255:
            raise RecordError(f"{self.where()}: the author's 'email' must be a string")
        self.storable("author.username", username)
        self.storable("author.email", email)
        return Author(username, email)


def parse_project(data: Any) -> ProjectData:
    """Check ``project.json``; a bad one refuses the whole upload (:class:`UploadRejected`)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UploadRejected(f"{PROJECT_FILE} is not a {FORMAT} file (its 'format' differs)")
    if data.get("version") != VERSION:
        raise UploadRejected(
            f"{PROJECT_FILE} has version {data.get('version')!r}; this importer reads {VERSION}"
        )
    try:
        f = _Fields("project", data)
        return ProjectData(
            f.id,
            f.text("path"),
            f.text("name"),
            f.text("description", required=False, limit=100_000),
            f.author(),
        )
    except RecordError as exc:
        raise UploadRejected(f"{PROJECT_FILE}: {exc}") from None


def parse_label(data: Any) -> LabelData:
    """Check one label record (:class:`RecordError` names the field)."""
    f = _Fields("label", data)
    color = f.text("color", limit=7)
    if not COLOR.match(color):
        raise RecordError(f"{f.where()}: 'color' must look like #1f75cb")
    return LabelData(f.id, f.text("name"), color, f.text("description", required=False))


def parse_issue(data: Any) -> IssueData:
    """Check one issue record (:class:`RecordError` names the field)."""
    f = _Fields("issue", data)
    state = f.text("state", limit=16)
    if state not in STATES:
        raise RecordError(f"{f.where()}: 'state' must be one of {', '.join(STATES)}")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise RecordError(f"{f.where()}: 'labels' must be a list of label names")
    for name in labels:
        f.storable("labels", name)
    return IssueData(
        f.id,
        f.integer("iid"),
        f.text("title"),
        f.text("description", required=False, limit=1_000_000),
        state,
        f.author(),
        tuple(labels),
        f.timestamp("created_at"),
    )


def parse_comment(data: Any) -> CommentData:
    """Check one comment record (:class:`RecordError` names the field)."""
    f = _Fields("comment", data)
    return CommentData(
        f.id,
        f.integer("issue_id"),
        f.text("body", limit=1_000_000),
        f.author(),
        f.timestamp("created_at"),
    )


# -- reading the extracted files ---------------------------------------------------------------
def read_project(root: Path) -> ProjectData:
    """Read and check ``project.json`` of an extracted export."""
    path = root / PROJECT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UploadRejected(f"the export has no {PROJECT_FILE}") from None
    except ValueError as exc:
        raise UploadRejected(f"{PROJECT_FILE} is not valid JSON: {exc.args[0]}") from None
    return parse_project(data)


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a ``.jsonl`` file: where it starts, where the next starts, its id."""

    offset: int
    next_offset: int
    record_id: int | None
    data: Any


def lines(path: Path, start: int = 0) -> Iterator[Line]:
    """The non-blank lines of ``path`` from byte ``start``; ``data`` is ``None`` for a line
    that is not JSON, ``record_id`` ``None`` when it has no integer ``id``."""
    if not path.exists():
        return
    with path.open("rb") as f:
        f.seek(start)
        offset = start
        for raw in f:
            nxt = offset + len(raw)
            if raw.strip():
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                ident = data.get("id") if isinstance(data, dict) else None
                ok = isinstance(ident, int) and not isinstance(ident, bool)
                yield Line(offset, nxt, ident if ok else None, data)
            offset = nxt


def read_line(path: Path, offset: int) -> Any:
    """The JSON record starting at byte ``offset`` (what a record job's locator points at)."""
    with path.open("rb") as f:
        f.seek(offset)
        raw = f.readline()
    try:
        return json.loads(raw)
    except ValueError:
        raise RecordError(f"the line at byte {offset} is not valid JSON") from None


# -- writing an export -------------------------------------------------------------------------
def write_export(
    path: str | os.PathLike[str],
    project: Mapping[str, Any],
    *,
    labels: Sequence[Mapping[str, Any] | str] = (),
    issues: Sequence[Mapping[str, Any] | str] = (),
    comments: Sequence[Mapping[str, Any] | str] = (),
) -> Path:
    """Write an export archive. ``project`` gets ``format``/``version`` added; a record given
    as a string is written as is (to build exports with broken lines for tests)."""
    out = Path(path)
    header = {"format": FORMAT, "version": VERSION, **project}
    files = {
        PROJECT_FILE: json.dumps(header, indent=2).encode(),
        FILES["labels"]: _jsonl(labels),
        FILES["issues"]: _jsonl(issues),
        FILES["comments"]: _jsonl(comments),
    }
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


def _jsonl(records: Sequence[Mapping[str, Any] | str]) -> bytes:
    rows = [r if isinstance(r, str) else json.dumps(dict(r)) for r in records]
    return "".join(f"{row}\n" for row in rows).encode()
