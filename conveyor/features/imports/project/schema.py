"""The relational schema a project export is imported into (SQLAlchemy 2.0; SQLite by default,
any SQLAlchemy URL such as ``postgresql+psycopg://...``).

Every imported row keeps the export's id (``export_id``, 64-bit: other systems' ids outgrow
PostgreSQL's 32-bit ``integer``) under a unique constraint, so a redelivered job finds its row
instead of adding a second one. ``Issue`` and ``Label`` carry
the application's own hooks (counters on the project); they skip their work while importing
(:func:`conveyor.features.imports.flag.is_importing`) and the importer recounts once at the end.

>>> engine = engine_for("sqlite:///projects.db")           # doctest: +SKIP
>>> with Session(engine) as session: session.scalar(select(func.count(Issue.id)))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from conveyor.features.imports.flag import Importable, is_importing


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(255), default="")


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    export_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    path: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    issues_count: Mapped[int] = mapped_column(Integer, default=0)
    labels_count: Mapped[int] = mapped_column(Integer, default=0)


class Label(Importable, Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("project_id", "export_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    export_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    color: Mapped[str] = mapped_column(String(7))
    description: Mapped[str] = mapped_column(Text, default="")


class Issue(Importable, Base):
    __tablename__ = "issues"
    __table_args__ = (UniqueConstraint("project_id", "export_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    export_id: Mapped[int] = mapped_column(BigInteger)
    iid: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))


class IssueLabel(Base):
    __tablename__ = "issue_labels"
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id"), primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True)


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (UniqueConstraint("project_id", "export_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    export_id: Mapped[int] = mapped_column(BigInteger)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id"))
    body: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))


# -- the application's hooks (what an app does when one of its records is saved) --------------
def _count_up(column: str, project_id: int, connection: Connection) -> None:
    counter = getattr(Project, column)
    connection.execute(
        update(Project).where(Project.id == project_id).values({counter: counter + 1})
    )


@event.listens_for(Issue, "after_insert")
def _issue_created(mapper: Mapper[Any], connection: Connection, target: Issue) -> None:
    if is_importing(target):
        return  # the importer recounts once at the end (recount_project)
    _count_up("issues_count", target.project_id, connection)


@event.listens_for(Label, "after_insert")
def _label_created(mapper: Mapper[Any], connection: Connection, target: Label) -> None:
    if is_importing(target):
        return
    _count_up("labels_count", target.project_id, connection)


def recount_project(connection: Connection, project_id: int) -> None:
    """What the per-row hooks would have done, for rows saved while importing or in bulk."""
    issues = select(func.count()).where(Issue.project_id == project_id).scalar_subquery()
    labels = select(func.count()).where(Label.project_id == project_id).scalar_subquery()
    connection.execute(
        update(Project)
        .where(Project.id == project_id)
        .values(issues_count=issues, labels_count=labels)
    )


# -- engines and dialect-aware writes ----------------------------------------------------------
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process, with the schema created on first use. SQLite runs in
    WAL mode with a generous busy timeout, since record jobs write from several threads."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            create_schema(engine)
            _engines[url] = engine
        return engine


#: Key of the PostgreSQL advisory lock held while the schema is created.
SCHEMA_LOCK = 0x636F6E76  # "conv"


def create_schema(engine: Engine) -> None:
    """Create the tables that do not exist yet. On PostgreSQL under an advisory lock: worker
    processes that take their first job at the same moment would otherwise race between
    checking for a table and creating it, and all but one fail on PostgreSQL's catalog."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
        Base.metadata.create_all(conn)


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def dispose_engines() -> None:
    """Close every engine of this process (tests, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def upsert_statement(
    dialect: str,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    update_columns: Sequence[str] = (),
) -> Any | None:
    """One ``INSERT ... ON CONFLICT (keys) DO UPDATE/DO NOTHING`` statement for SQLite and
    PostgreSQL; ``None`` for other dialects (:func:`write_rows` goes row by row there)."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    rows = unique_rows(rows, keys, keep_last=bool(update_columns))
    statement: Any = (sqlite_insert if dialect == "sqlite" else pg_insert)(table).values(list(rows))
    if update_columns:
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: statement.excluded[c] for c in update_columns},
        )
    return statement.on_conflict_do_nothing(index_elements=list(keys))


def unique_rows(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], *, keep_last: bool
) -> list[Mapping[str, Any]]:
    """One row per key, in order: the last of a key when rows update (what SQLite does with
    the same key twice in one ``INSERT ... ON CONFLICT DO UPDATE``; PostgreSQL refuses to
    update a row twice in one statement), else the first (``DO NOTHING`` keeps the first).

    >>> unique_rows([{"k": 1, "v": "a"}, {"k": 1, "v": "b"}], ["k"], keep_last=True)
    [{'k': 1, 'v': 'b'}]
    """
    chosen: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        if keep_last or key not in chosen:
            chosen.pop(key, None)  # re-inserted below: a kept-last row takes its later place
            chosen[key] = row
    return list(chosen.values())


def write_rows(
    connection: Connection,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    update_columns: Sequence[str] = (),
) -> None:
    """Insert rows keyed by ``keys``; a row that exists is updated (``update_columns``) or,
    with none, left untouched. One statement on SQLite and PostgreSQL (``ON CONFLICT``);
    other databases insert row by row and skip conflicts."""
    if not rows:
        return
    statement = upsert_statement(
        connection.dialect.name, table, rows, keys=keys, update_columns=update_columns
    )
    if statement is not None:
        connection.execute(statement)
        return
    for row in rows:
        try:
            with connection.begin_nested():
                connection.execute(insert(table).values(dict(row)))
        except IntegrityError:
            if update_columns:
                where = [table.c[k] == row[k] for k in keys]
                connection.execute(
                    update(table).where(*where).values({c: row[c] for c in update_columns})
                )
