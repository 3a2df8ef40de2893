"""Engines for the catalog database: one per process, tuned per dialect.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the sweeper, the
post-processing workers and requests can share one file; Postgres gets a checked pool.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession


def open_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def unavailable_errors() -> tuple[type[Exception], ...]:
    """What a catalog call raises when the database cannot serve it (an outage: 503, not 500).

    SQLAlchemy's errors, and asyncpg's own: a connection the server refuses (the database not
    accepting connections, too many clients, a shutdown in progress) reaches the caller
    unwrapped. asyncpg is only imported by a Postgres catalog, and raised nothing before.
    """
    found: list[type[Exception]] = [SQLAlchemyError]
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is not None:
        found += [asyncpg.PostgresError, asyncpg.InterfaceError]
    return tuple(found)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer. NORMAL sync in WAL mode survives a process
    # crash; only an OS crash or power loss can lose the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: records are read after commit to build responses.
    return async_sessionmaker(engine, expire_on_commit=False)
