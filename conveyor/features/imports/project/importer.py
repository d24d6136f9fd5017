"""The project-export importer: a real importer built on the toolkit.

Stages: ``validate`` (upload validation, then extraction) -> ``project`` -> ``labels`` (bulk
inserts in batches, cursor after each) -> ``issues`` and ``comments`` (one record job per
record) -> ``finish`` (the counters the skipped per-row hooks would have kept).

Options of an import: ``source`` (path of the archive), ``db`` (SQLAlchemy URL), optionally
``workdir`` (where archives are extracted; default the system temp directory).

>>> imports = Imports(app); imports.register(ProjectImporter())       # doctest: +SKIP
>>> start_project_import(imports, "export.tar.gz", "sqlite:///projects.db")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from conveyor.errors import ImportPipelineError, RecordError, UploadRejected
from conveyor.features.imports.base import Importer, StageRun
from conveyor.features.imports.cache import key_of
from conveyor.features.imports.model import ImportState, RecordRef
from conveyor.features.imports.pipeline import Imports
from conveyor.features.imports.project import format as fmt
from conveyor.features.imports.project.schema import (
    Comment,
    Issue,
    IssueLabel,
    Label,
    Project,
    User,
    engine_for,
    recount_project,
    write_rows,
)
from conveyor.features.imports.validation import (
    UploadLimits,
    ValidatedUpload,
    extract,
    validate_upload,
)

NAME = "project_export"
#: Labels inserted per statement (the labels stage saves its cursor after each batch).
LABEL_BATCH = 50
_COMPLETE = ".complete"


def default_db_url() -> str:
    """SQLite file ``conveyor-imports.db`` in the current directory, as an absolute URL."""
    return f"sqlite:///{Path('conveyor-imports.db').resolve()}"


def start_project_import(
    imports: Imports,
    source: str | os.PathLike[str],
    db: str | None = None,
    *,
    limits: UploadLimits | None = None,
    workdir: str | None = None,
) -> str:
    """Validate the upload (raising :class:`UploadRejected`, with nothing written anywhere)
    and start its import; returns the import id."""
    path = Path(source).resolve()
    require_project_file(validate_upload(path, limits))
    options: dict[str, Any] = {"source": str(path), "db": db or default_db_url()}
    if workdir:
        options["workdir"] = str(Path(workdir).resolve())
    return imports.start(NAME, options)


def require_project_file(upload: ValidatedUpload) -> ValidatedUpload:
    """Refuse an export without ``project.json`` before an import is created (the importer
    could only fail it later, after creating it).

    >>> require_project_file(validate_upload("notes.tar.gz"))     # doctest: +SKIP
    Traceback (most recent call last):
    conveyor.errors.UploadRejected: the archive has no project.json ...
    """
    for entry in upload.entries:
        name = entry.name
        while name.startswith("./"):
            name = name[2:]
        if name == fmt.PROJECT_FILE and not entry.is_dir:
            return upload
    raise UploadRejected(
        f"the archive has no {fmt.PROJECT_FILE} at its top level, so it is not a project "
        "export; nothing was imported (export the project again, or check the file)"
    )


class ProjectImporter(Importer):
    """Imports a project export archive into the relational schema of
    :mod:`conveyor.features.imports.project.schema`. Every write is keyed by the export's ids."""

    name = NAME
    stages = ("validate", "project", "labels", "issues", "comments", "finish")
    record_stages = frozenset({"issues", "comments"})

    def __init__(
        self, *, limits: UploadLimits | None = None, label_batch: int = LABEL_BATCH, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.label_batch = label_batch
        self.bulk_hooks.add("labels", self._labels_inserted)

    # -- plumbing -------------------------------------------------------------------------------
    def precheck(self, options: Mapping[str, Any]) -> None:
        """Validate the upload named by ``source`` (:class:`UploadRejected` when refused)."""
        validate_upload(options["source"], self.limits)

    def engine(self, run: StageRun) -> Engine:
        """The engine of the import's ``db`` option."""
        url = run.options.get("db")
        if not isinstance(url, str) or not url:
            raise ImportPipelineError(f"import {run.import_id} has no 'db' option")
        return engine_for(url)

    def root(self, run: StageRun) -> Path:
        """The extracted export. Extracted again from the source when it is gone (a worker on
        another host, a cleaned temp directory): the refetch fallback for files."""
        base = Path(run.options.get("workdir") or tempfile.gettempdir())
        root = base / f"conveyor-import-{run.import_id}"
        if not (root / _COMPLETE).exists():
            self._extract(run, root)
        return root

    def _extract(self, run: StageRun, root: Path) -> None:
        upload = validate_upload(run.options["source"], self.limits)
        # Extract next to the final place, then rename: a crash mid-way leaves no half tree.
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            extract(upload, staging)
            fmt.read_project(staging)
            (staging / _COMPLETE).touch()
            shutil.rmtree(root, ignore_errors=True)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def project_id(self, run: StageRun) -> int:
        """The database id of the import's project (cached, refetched on a miss)."""
        export_id = fmt.read_project(self.root(run)).id

        def refetch() -> str | None:
            with self.engine(run).connect() as conn:
                found = conn.scalar(select(Project.id).where(Project.export_id == export_id))
            return None if found is None else str(found)

        value = run.cache.fetch("project", refetch)
        if value is None:
            raise RecordError(f"project {export_id} is not in the database", retryable=True)
        return int(value)

    def user_id(self, run: StageRun, author: fmt.Author | None) -> int | None:
        """The user row of an author, created if absent (never overwritten); cached under a
        digest so no username appears in a Redis key."""
        if author is None:
            return None

        def refetch() -> str:
            with self.engine(run).begin() as conn:
                row = {"username": author.username, "email": author.email}
                write_rows(conn, User.__table__, [row], keys=["username"])
                found = conn.scalar(select(User.id).where(User.username == author.username))
            return str(found)

        return int(run.cache.fetch(key_of("user", author.username), refetch) or 0) or None

    def record_type(self, stage: str) -> str:
        return {"issues": "issue", "comments": "comment", "labels": "label"}.get(stage, stage)

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, OperationalError | PoolTimeout):
            return True  # a locked or unreachable database: running again can succeed
        return super().retryable(exc)

    # -- stages ---------------------------------------------------------------------------------
    def run_stage(self, run: StageRun) -> None:
        getattr(self, f"stage_{run.stage}")(run)

    def stage_validate(self, run: StageRun) -> None:
        """Validate the upload again (it may have changed since it was started) and extract
        it; a refused upload fails the import before any row is written."""
        base = Path(run.options.get("workdir") or tempfile.gettempdir())
        root = base / f"conveyor-import-{run.import_id}"
        try:
            with run.keep_alive():  # a large archive takes long to check and extract
                self._extract(run, root)
        except UploadRejected as exc:
            run.imports.fail(run.import_id, f"upload refused: {exc}")
            return
        self.checkpoint(run, "extracted")

    def stage_project(self, run: StageRun) -> None:
        """Upsert the project row (insert only, in ``missing`` mode)."""
        data = fmt.read_project(self.root(run))
        owner = self.user_id(run, data.owner)
        row = {
            "export_id": data.id,
            "path": data.path,
            "name": data.name,
            "description": data.description,
            "owner_id": owner,
        }
        update = () if run.mode == "missing" else ("path", "name", "description", "owner_id")
        with self.engine(run).begin() as conn:
            write_rows(conn, Project.__table__, [row], keys=["export_id"], update_columns=update)
        self.project_id(run)  # warm the cache for the record jobs
        self.checkpoint(run, "saved")

    def stage_labels(self, run: StageRun) -> None:
        """Bulk insert the labels in batches, saving the cursor and running the bulk hooks
        after each batch."""
        project_id = self.project_id(run)
        path = self.root(run) / fmt.FILES["labels"]
        start = int(run.cursor() or 0)
        update = () if run.mode == "missing" else ("name", "color", "description")
        batch: list[dict[str, Any]] = []
        batches = 0
        end = start
        for line in fmt.lines(path, start):
            end = line.next_offset
            try:
                label = fmt.parse_label(line.data)
            except RecordError as exc:
                self._fail_line(run, line, exc)
                continue
            batch.append(
                {
                    "project_id": project_id,
                    "export_id": label.id,
                    "name": label.name,
                    "color": label.color,
                    "description": label.description,
                }
            )
            if len(batch) >= self.label_batch:
                batches += 1
                self._write_labels(run, batch, update, end, batches)
                batch = []
        batches += 1
        self._write_labels(run, batch, update, end, batches)

    def _write_labels(
        self,
        run: StageRun,
        rows: list[dict[str, Any]],
        update: tuple[str, ...],
        cursor: int,
        number: int,
    ) -> None:
        with self.engine(run).begin() as conn:
            keys = ["project_id", "export_id"]
            write_rows(conn, Label.__table__, rows, keys=keys, update_columns=update)
        # Bulk inserts bypass the per-row hooks: run the application's hooks explicitly.
        self.bulk_hooks.run("labels", [row["export_id"] for row in rows])
        # ... and the per-record lines and counts a record job would have given each label.
        run.record_bulk([str(row["export_id"]) for row in rows])
        run.save_cursor(str(cursor))
        self.checkpoint(run, f"batch:{number}")

    def _labels_inserted(self, table: str, export_ids: Any) -> None:
        """Default bulk hook: nothing per row; the project's label count is kept by
        :func:`recount_project` at the end of the import."""

    def stage_finish(self, run: StageRun) -> None:
        """Recount the project's counters, since per-row hooks were skipped while importing."""
        project_id = self.project_id(run)
        with self.engine(run).begin() as conn:
            recount_project(conn, project_id)
        self.checkpoint(run, "recounted")

    def finished(self, state: ImportState) -> None:
        """Remove the extracted files (a retry extracts the source again)."""
        base = Path(state.options.get("workdir") or tempfile.gettempdir())
        shutil.rmtree(base / f"conveyor-import-{state.id}", ignore_errors=True)

    def failed(self, state: ImportState) -> None:
        """Remove the extracted files of a failed import too."""
        self.finished(state)

    def _fail_line(self, run: StageRun, line: fmt.Line, exc: RecordError) -> None:
        record_id = str(line.record_id) if line.record_id is not None else f"@{line.offset}"
        run.fail_record(record_id, exc)

    # -- record stages --------------------------------------------------------------------------
    def records(self, run: StageRun) -> Iterator[tuple[RecordRef, str]]:
        """Issues or comments from the cursor on; lines without an id are recorded as
        failures here; in ``missing`` mode records already in the database are skipped."""
        path = self.root(run) / fmt.FILES[run.stage]
        existing = self._existing(run) if run.mode == "missing" else set()
        for line in fmt.lines(path, int(run.cursor() or 0)):
            if line.record_id is None:
                reason = "is not valid JSON" if line.data is None else "has no integer 'id'"
                self._fail_line(run, line, RecordError(f"the line at byte {line.offset} {reason}"))
                continue
            if line.record_id in existing:
                continue
            yield RecordRef(str(line.record_id), str(line.offset)), str(line.next_offset)

    def _existing(self, run: StageRun) -> set[int]:
        model = Issue if run.stage == "issues" else Comment
        project_id = self.project_id(run)
        with self.engine(run).connect() as conn:
            found = conn.scalars(select(model.export_id).where(model.project_id == project_id))
            return set(found)

    def import_record(self, run: StageRun, ref: RecordRef) -> None:
        """Import one issue or comment, found by its byte offset."""
        data = fmt.read_line(self.root(run) / fmt.FILES[run.stage], int(ref.locator))
        if run.stage == "issues":
            self._import_issue(run, fmt.parse_issue(data))
        else:
            self._import_comment(run, fmt.parse_comment(data))
        self.checkpoint(run, f"record:{ref.record_id}")

    def _import_issue(self, run: StageRun, issue: fmt.IssueData) -> None:
        project_id = self.project_id(run)
        author = self.user_id(run, issue.author)
        label_ids = [i for name in issue.labels if (i := self._label_id(run, project_id, name))]
        with Session(self.engine(run)) as session:
            row = session.scalar(
                select(Issue).where(Issue.project_id == project_id, Issue.export_id == issue.id)
            )
            if row is not None and run.mode == "missing":
                return  # a partial retry never changes what exists
            if row is None:
                row = Issue(project_id=project_id, export_id=issue.id)
                row.importing = True
                session.add(row)
            row.iid, row.title, row.description = issue.iid, issue.title, issue.description
            row.state, row.author_id, row.created_at = issue.state, author, issue.created_at
            try:
                session.flush()
            except IntegrityError:
                # Another delivery of this record saved it first: run again as an update.
                raise RecordError(
                    f"issue {issue.id} was saved concurrently", retryable=True
                ) from None
            links = [{"issue_id": row.id, "label_id": i} for i in label_ids]
            write_rows(
                session.connection(), IssueLabel.__table__, links, keys=["issue_id", "label_id"]
            )
            issue_db_id = row.id
            session.commit()
        run.cache.set(f"issue:{issue.id}", str(issue_db_id))

    def _label_id(self, run: StageRun, project_id: int, name: str) -> int | None:
        """A label's id by name; names the export does not define are left out."""

        def refetch() -> str | None:
            with self.engine(run).connect() as conn:
                found = conn.scalar(
                    select(Label.id).where(Label.project_id == project_id, Label.name == name)
                )
            return None if found is None else str(found)

        value = run.cache.fetch(key_of("label", name), refetch)
        return int(value) if value else None

    def _import_comment(self, run: StageRun, comment: fmt.CommentData) -> None:
        project_id = self.project_id(run)

        def refetch() -> str | None:
            with self.engine(run).connect() as conn:
                found = conn.scalar(
                    select(Issue.id).where(
                        Issue.project_id == project_id, Issue.export_id == comment.issue_id
                    )
                )
            return None if found is None else str(found)

        issue_db_id = run.cache.fetch(f"issue:{comment.issue_id}", refetch)
        if issue_db_id is None:
            raise RecordError(
                f"comment {comment.id}: its issue {comment.issue_id} is not in the database "
                "(the issue failed or is missing from the export)"
            )
        author = self.user_id(run, comment.author)
        row = {
            "project_id": project_id,
            "export_id": comment.id,
            "issue_id": int(issue_db_id),
            "body": comment.body,
            "author_id": author,
            "created_at": comment.created_at,
        }
        update = () if run.mode == "missing" else ("issue_id", "body", "author_id", "created_at")
        with self.engine(run).begin() as conn:
            write_rows(
                conn,
                Comment.__table__,
                [row],
                keys=["project_id", "export_id"],
                update_columns=update,
            )
