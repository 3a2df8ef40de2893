"""The migrations on both databases: up, down, up again, and no drift from the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from catalog.db import open_engine
from catalog.migrate import SCHEMA_HEAD, current_revision, downgrade, head_revision, upgrade
from catalog.models import Base, UTCDateTime


def _render_item(kind: str, obj: object, _ctx: object) -> str | bool:
    return "sa.DateTime(timezone=True)" if isinstance(obj, UTCDateTime) else False


async def test_upgrade_reaches_head_and_creates_the_indexes(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()

    def shape(connection: Connection) -> tuple[set[str], set[str]]:
        inspector = inspect(connection)
        indexes = {i["name"] for i in inspector.get_indexes("files")}
        uniques = {u["name"] for u in inspector.get_unique_constraints("files")}
        return indexes, uniques

    async with engine.connect() as connection:
        indexes, uniques = await connection.run_sync(shape)
    assert {"ix_files_live_owner_created_at", "ix_files_live_owner_filename"} <= indexes
    # The unique storage key: a constraint on Postgres; SQLite reflects it the same way.
    assert "uq_files_storage_key" in uniques


async def test_models_and_migrations_do_not_drift(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "render_item": _render_item},
        )
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_downgrade_to_base_and_back(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        await upgrade(engine)
        await downgrade(engine, "base")
        assert await current_revision(engine) is None

        def tables(connection: Connection) -> list[str]:
            return inspect(connection).get_table_names()

        async with engine.connect() as connection:
            assert "files" not in await connection.run_sync(tables)
        await upgrade(engine)
        await upgrade(engine)  # a second upgrade is a no-op
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def test_the_schema_head_constant_is_the_scripts_head() -> None:
    # The server trusts SCHEMA_HEAD to skip loading Alembic; a new migration must bump it.
    assert head_revision() == SCHEMA_HEAD


async def test_current_revision_reads_what_alembic_reads(database_url: str) -> None:
    engine = open_engine(database_url)

    def alembic_says(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    try:
        assert await current_revision(engine) is None  # no alembic_version table yet
        for step in ("0001", "head", "base", "head"):
            if step == "base":
                await downgrade(engine, step)
            else:
                await upgrade(engine, step)
            async with engine.connect() as connection:
                expected = await connection.run_sync(alembic_says)
            assert await current_revision(engine) == expected
    finally:
        await engine.dispose()
