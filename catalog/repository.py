"""Queries over the ``files`` table; the only module that writes SQL for the catalog.

Every read a user can trigger takes an ``owner``: ``None`` means "any owner" and is only ever
passed for admins and internal jobs, so scoping is decided by the caller once, not per query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    TextClause,
    asc,
    bindparam,
    delete,
    desc,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from catalog.models import FileRecord

# Rows per group insert: 32 rows of about 20 columns stay far below either database's limit
# on bound parameters (SQLite 32766, Postgres 65535).
_GROUP_MAX = 32

log = logging.getLogger("tusserver.catalog")

SortKey = Literal["created_at", "finished_at", "updated_at", "filename", "size"]
SORT_KEYS: tuple[SortKey, ...] = ("created_at", "finished_at", "updated_at", "filename", "size")
SortOrder = Literal["asc", "desc"]


@dataclass(frozen=True)
class ListQuery:
    page: int = 1
    page_size: int = 10
    search: str | None = None
    sort_by: SortKey = "created_at"
    sort_order: SortOrder = "desc"


@dataclass(frozen=True)
class Page:
    items: Sequence[FileRecord]
    total_count: int


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's own wildcards taken literally (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class FileRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name
        self._insert = _insert_unless_present()
        self._insert_many_cache: dict[int, TextClause] = {}
        self._group = _QmarkGroupInsert(engine.dialect) if self._dialect == "sqlite" else None
        # Every column of a row, absent ones NULL (or {}): the group insert binds them all.
        self._blank_row: dict[str, Any] = {
            column.name: {} if column.name == "metadata" else None
            for column in FileRecord.__table__.columns
        }
        # Rows waiting for the running group insert, and that insert's task (see ``add``).
        self._queued: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._committer: asyncio.Task[None] | None = None
        # SQLite has one writer at a time, and a second connection that finds the database
        # locked sleeps in SQLite's busy handler (up to 100 ms a turn): 16 uploads finishing
        # together had a p99 of 677 ms. Queueing writes here costs microseconds instead.
        self._write_lock = asyncio.Lock() if self._dialect == "sqlite" else None

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    def session(self) -> AsyncSession:
        return self._sessions()

    # -- writes --------------------------------------------------------------------------

    async def add(self, values: Mapping[str, Any]) -> bool:
        """Insert a record unless its id exists; True when this call inserted it.

        ``ON CONFLICT DO NOTHING`` on the primary key makes a retried finish (or two
        instances finishing the same upload) record it once, without a race window.

        Group commit: adds that arrive while an insert is running are inserted together, in
        one statement and one transaction, when it ends. Each caller still returns only once
        its row is committed. A burst of small uploads finishing together (the 16 KiB
        benchmark) paid a begin, an insert, a commit and a pool reset, each a thread hop
        into the database driver, per file.
        """
        # Keys are column names (``metadata``, not ``meta``); every column is a parameter
        # of the one statement: absent ones are NULL (or {}).
        row = dict(self._blank_row)
        row.update(("metadata" if key == "meta" else key, value) for key, value in values.items())
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((row, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_queued(), name="catalog-insert")
        return await future

    async def _commit_queued(self) -> None:
        try:
            while self._queued:
                batch = self._queued[:_GROUP_MAX]
                del self._queued[:_GROUP_MAX]
                try:
                    await self._commit_batch(batch)
                except BaseException as exc:
                    # Cancelled (shutdown) or a bug: no caller may wait for ever, neither in
                    # this batch nor queued behind it.
                    for _, future in [*batch, *self._queued]:
                        if not future.done():
                            future.set_exception(exc)
                    self._queued.clear()
                    raise
        finally:
            self._committer = None

    async def _commit_batch(
        self, batch: Sequence[tuple[dict[str, Any], asyncio.Future[bool]]]
    ) -> None:
        if len(batch) > 1:
            inserted: set[str] | None = None
            try:
                async with self._writing(), self.engine.begin() as connection:
                    inserted = await self._execute_group(connection, [row for row, _ in batch])
            except Exception as exc:
                # One bad row (a storage key taken, a value the column refuses) fails the
                # whole statement: redo them one by one, so each caller gets its own answer.
                log.debug("catalog.group_insert_split", extra={"error": type(exc).__name__})
            if inserted is not None:
                claimed: set[str] = set()
                for row, future in batch:
                    # The same id twice in one batch: the first row is the one inserted.
                    created = row["id"] in inserted and row["id"] not in claimed
                    claimed.add(row["id"])
                    if not future.done():
                        future.set_result(created)
                return
        for row, future in batch:
            try:
                created = await self._add_one(row)
            except Exception as exc:  # handed to its caller, raised there
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(created)

    async def _add_one(self, row: dict[str, Any]) -> bool:
        try:
            async with self._writing(), self.engine.begin() as connection:
                result = await connection.execute(self._insert, row)
        except IntegrityError:
            # Two inserts of the same id racing on Postgres: the loser can trip the unique
            # storage key before the id's conflict clause sees the winner. Same upload: done.
            if await self.get_any(row["id"]) is not None:
                return False
            raise
        return bool(getattr(result, "rowcount", 0))

    async def _execute_group(
        self, connection: AsyncConnection, rows: Sequence[dict[str, Any]]
    ) -> set[str]:
        """Insert ``rows`` in one statement; the ids it inserted."""
        if self._group is not None:
            statement, values = self._group.statement(rows)
            result = await connection.exec_driver_sql(statement, values)
        else:
            params = {
                f"{name}_{n}": value for n, row in enumerate(rows) for name, value in row.items()
            }
            result = await connection.execute(self._insert_many(len(rows)), params)
        return set(result.scalars().all())

    def _insert_many(self, count: int) -> TextClause:
        statement = self._insert_many_cache.get(count)
        if statement is None:
            statement = self._insert_many_cache[count] = _insert_many_unless_present(count)
        return statement

    async def update_fields(self, file_id: str, values: Mapping[str, Any]) -> None:
        async with self._writing(), self._sessions.begin() as session:
            await session.execute(
                update(FileRecord).where(FileRecord.id == file_id).values(**values)
            )

    async def edit(
        self, file_id: str, *, owner: str | None, values: Mapping[str, Any]
    ) -> FileRecord | None:
        """Change a live record's user-editable fields; None when not found for ``owner``."""
        async with self._writing(), self._sessions.begin() as session:
            record = await session.scalar(_live(owner).where(FileRecord.id == file_id))
            if record is None:
                return None
            for name, value in values.items():
                setattr(record, name, value)
        return record

    async def soft_delete(self, file_id: str, *, owner: str | None, now: datetime) -> bool:
        statement = (
            update(FileRecord)
            .where(FileRecord.id == file_id, FileRecord.deleted_at.is_(None))
            .values(deleted_at=now, updated_at=now)
        )
        if owner is not None:
            statement = statement.where(FileRecord.owner == owner)
        async with self._writing(), self._sessions.begin() as session:
            result = await session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def remove(self, file_id: str) -> None:
        """Delete the row itself (tests and the sweeper's last step for a vanished upload)."""
        async with self._writing(), self._sessions.begin() as session:
            await session.execute(delete(FileRecord).where(FileRecord.id == file_id))

    # -- reads ---------------------------------------------------------------------------

    async def get(self, file_id: str, *, owner: str | None) -> FileRecord | None:
        async with self._sessions() as session:
            record: FileRecord | None = await session.scalar(
                _live(owner).where(FileRecord.id == file_id)
            )
        return record

    async def get_any(self, file_id: str) -> FileRecord | None:
        """Deleted or not, any owner: for internal jobs only."""
        async with self._sessions() as session:
            return await session.get(FileRecord, file_id)

    async def get_by_key(self, key: str, *, owner: str | None) -> FileRecord | None:
        async with self._sessions() as session:
            record: FileRecord | None = await session.scalar(
                _live(owner).where(FileRecord.storage_key == key)
            )
        return record

    async def list_page(self, query: ListQuery, *, owner: str | None) -> Page:
        conditions = _live_conditions(owner)
        if query.search:
            pattern = like_pattern(query.search)
            conditions.append(
                or_(
                    FileRecord.filename.ilike(pattern, escape="\\"),
                    FileRecord.original_filename.ilike(pattern, escape="\\"),
                )
            )
        column = getattr(FileRecord, query.sort_by)
        direction = desc if query.sort_order == "desc" else asc
        # The id breaks ties, so paging is stable when many rows share a sort value.
        items_query = (
            select(FileRecord)
            .where(*conditions)
            .order_by(direction(column), direction(FileRecord.id))
            .offset((query.page - 1) * query.page_size)
            .limit(query.page_size)
        )
        # count(*) straight over the table (no subquery of every column), so the database
        # can answer it from the live-rows index alone.
        count_query = select(func.count()).select_from(FileRecord).where(*conditions)
        async with self._sessions() as session:
            total = int(await session.scalar(count_query) or 0)
            items = list(await session.scalars(items_query))
        return Page(items=items, total_count=total)

    async def recent(self, limit: int, *, owner: str | None) -> list[FileRecord]:
        query = _live(owner).order_by(desc(FileRecord.created_at), desc(FileRecord.id))
        async with self._sessions() as session:
            return list(await session.scalars(query.limit(limit)))

    async def unprocessed(self, *, finished_before: datetime, limit: int) -> list[FileRecord]:
        query = (
            select(FileRecord)
            .where(
                FileRecord.processed_at.is_(None),
                FileRecord.deleted_at.is_(None),
                FileRecord.finished_at < finished_before,
            )
            .order_by(FileRecord.finished_at)
            .limit(limit)
        )
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def due_for_purge(self, *, deleted_before: datetime, limit: int) -> list[FileRecord]:
        query = (
            select(FileRecord)
            .where(
                FileRecord.deleted_at.is_not(None),
                FileRecord.deleted_at < deleted_before,
                FileRecord.purged_at.is_(None),
            )
            .order_by(FileRecord.deleted_at)
            .limit(limit)
        )
        async with self._sessions() as session:
            return list(await session.scalars(query))


def _live_conditions(owner: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [FileRecord.deleted_at.is_(None)]
    if owner is not None:
        conditions.append(FileRecord.owner == owner)
    return conditions


def _live(owner: str | None) -> Select[tuple[FileRecord]]:
    return select(FileRecord).where(*_live_conditions(owner))


def _insert_unless_present() -> TextClause:
    """``INSERT ... ON CONFLICT (id) DO NOTHING`` as one cacheable statement.

    The dialects' own ``insert().on_conflict_do_nothing()`` constructs carry no cache key, so
    SQLAlchemy would compile them again for every finished upload; a text clause with typed
    bind parameters (JSON, UTC datetimes) compiles once. SQLite and Postgres share the syntax.
    """
    columns = list(FileRecord.__table__.columns)
    names = ", ".join(column.name for column in columns)
    values = ", ".join(f":{column.name}" for column in columns)
    statement = text(f"INSERT INTO files ({names}) VALUES ({values}) ON CONFLICT (id) DO NOTHING")  # noqa: S608
    return statement.bindparams(*(bindparam(c.name, type_=c.type) for c in columns))


class _QmarkGroupInsert:
    """The group insert as driver SQL with ``?`` parameters, for SQLite.

    Building a ``text()`` clause of ``count`` rows costs time quadratic in its parameters
    (57 ms for 32 rows of 20 columns, once per row count and process), and executing one
    makes SQLAlchemy derive a cache key over every parameter: a third of the event loop's
    CPU in a burst of 16 KiB uploads. Here each column's bind processor (JSON, UTC datetimes)
    is looked up once, and a statement is a string repeated ``count`` times.
    """

    def __init__(self, dialect: Dialect) -> None:
        columns = list(FileRecord.__table__.columns)
        self._columns = [
            (column.name, column.type.dialect_impl(dialect).bind_processor(dialect))
            for column in columns
        ]
        names = ", ".join(column.name for column in columns)
        self._head = f"INSERT INTO files ({names}) VALUES "  # noqa: S608
        self._row = "(" + ", ".join("?" * len(columns)) + ")"
        self._sql: dict[int, str] = {}

    def statement(self, rows: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[Any, ...]]:
        count = len(rows)
        sql = self._sql.get(count)
        if sql is None:
            values = ", ".join([self._row] * count)
            sql = self._sql[count] = (
                f"{self._head}{values} ON CONFLICT (id) DO NOTHING RETURNING id"
            )
        params = tuple(
            row[name] if process is None else process(row[name])
            for row in rows
            for name, process in self._columns
        )
        return sql, params


def _insert_many_unless_present(count: int) -> TextClause:
    """``count`` rows in one ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id``: the ids
    returned are the rows inserted (SQLite 3.35+ and Postgres). Parameters are named
    ``<column>_<row>``; compiled once per row count."""
    columns = list(FileRecord.__table__.columns)
    names = ", ".join(column.name for column in columns)
    rows = ", ".join(
        "(" + ", ".join(f":{column.name}_{n}" for column in columns) + ")" for n in range(count)
    )
    statement = text(
        f"INSERT INTO files ({names}) VALUES {rows} ON CONFLICT (id) DO NOTHING RETURNING id"  # noqa: S608
    )
    return statement.bindparams(
        *(bindparam(f"{c.name}_{n}", type_=c.type) for n in range(count) for c in columns)
    )
