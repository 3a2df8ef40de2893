"""Catalog fixtures: every repository and migration test runs on SQLite and on Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from catalog.db import open_engine
from catalog.migrate import upgrade
from tests.services_postgres import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
        return
    url = create_database("catalog")
    yield url
    drop_database(url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database upgraded to head by the real migrations."""
    engine = open_engine(database_url)
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()
