"""The throwaway PostgreSQL cluster of ``tests/services_postgres.py`` works with SQLAlchemy."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.services_postgres import (  # noqa: F401  (fixtures)
    create_database,
    drop_database,
    fresh_postgres_url,
    postgres_url,
)


async def test_sqlalchemy_engine_connects(postgres_url: str) -> None:  # noqa: F811
    assert postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
            assert version.split(".")[0].isdigit()
            durable = (await conn.execute(text("SHOW fsync"))).scalar_one()
            assert durable == "off"
    finally:
        await engine.dispose()


async def test_fresh_databases_are_isolated(
    fresh_postgres_url: str,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> None:
    assert fresh_postgres_url != postgres_url
    other_url = create_database()  # from inside the running loop: must not need asyncio.run
    assert other_url != fresh_postgres_url
    first = create_async_engine(fresh_postgres_url)
    second = create_async_engine(other_url)
    try:
        async with first.begin() as conn:
            await conn.execute(text("CREATE TABLE uploads (id text PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO uploads VALUES ('a')"))
        async with first.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM uploads"))).scalar_one()
            assert count == 1
        async with second.connect() as conn:
            exists = (await conn.execute(text("SELECT to_regclass('uploads')"))).scalar_one()
            assert exists is None
    finally:
        await first.dispose()
        await second.dispose()
        drop_database(other_url)
