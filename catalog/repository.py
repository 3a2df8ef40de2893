"""Queries over the ``files`` table; the only module that writes SQL for the catalog.

Every read a user can trigger takes an ``owner``: ``None`` means "any owner" and is only ever
passed for admins and internal jobs, so scoping is decided by the caller once, not per query.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from catalog.models import FileRecord

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
        """
        # Core insert built once and fed parameters: compiled once per process, not per
        # upload (on the final PATCH's path). Keys are column names: ``metadata``, not ``meta``.
        row = {("metadata" if key == "meta" else key): value for key, value in values.items()}
        # Every column is a parameter of the one statement: absent ones are NULL (or {}).
        for column in FileRecord.__table__.columns:
            row.setdefault(column.name, {} if column.name == "metadata" else None)
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
