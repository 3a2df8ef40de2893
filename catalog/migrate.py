"""Schema upgrades: run Alembic to ``head`` on an engine the caller already opened.

The server (on SQLite, at startup) and ``tusserver migrate`` both come through here, inside
their running event loop, so the Alembic environment is handed an open connection instead of
starting a loop of its own.

Alembic (with Mako and Pygments, about 11 MiB of memory for the life of the process) is
imported only to change the schema or to read the scripts. A server whose schema is current
learns that from ``SCHEMA_HEAD`` and one query; a test keeps the constant equal to the
scripts' head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = Path(migrations.__file__).parent
# The newest revision in migrations/versions (tests/catalog/test_migrations.py checks it).
SCHEMA_HEAD = "0002"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def run(connection: Connection) -> None:
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(connection: Connection) -> None:
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        # What Alembic's MigrationContext.get_current_revision reads, without loading Alembic.
        if not inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        if len(versions) > 1:
            raise RuntimeError("the catalog schema has several heads; run `tusserver migrate`")
        return str(versions[0][0]) if versions else None

    async with engine.connect() as connection:
        return await connection.run_sync(read)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
