"""Opening the catalog for a running server: engine, schema check or upgrade, workers.

The embedded default (SQLite) upgrades its schema at startup; elsewhere the schema must
already be at head (``tusserver migrate``), and the server refuses to start if it is not,
rather than failing on the first finished upload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from catalog.db import open_engine
from catalog.media import MediaProber
from catalog.migrate import SCHEMA_HEAD, current_revision, upgrade
from catalog.repository import FileRepository
from catalog.service import Catalog, CatalogConfig
from tusserver.settings import Settings
from tusserver.state.outbox import CatalogOutbox
from tusserver.storage.base import StoreComposer

log = logging.getLogger("tusserver.catalog")


class CatalogStartupError(RuntimeError):
    """The database is unreachable or its schema is not current; the message says which."""


def migrates_on_startup(settings: Settings) -> bool:
    if settings.database_migrate is not None:
        return settings.database_migrate
    return make_url(settings.catalog_url()).get_backend_name() == "sqlite"


async def open_catalog(
    settings: Settings,
    composer: StoreComposer,
    stack: AsyncExitStack,
    *,
    clock: Callable[[], float],
    head_cache: Callable[[str], bytes | None] | None = None,
    outbox: CatalogOutbox | None = None,
) -> Catalog:
    engine = open_engine(settings.catalog_url())
    stack.push_async_callback(engine.dispose)
    try:
        current = await asyncio.wait_for(current_revision(engine), 30)
        if current != SCHEMA_HEAD and migrates_on_startup(settings):
            await asyncio.wait_for(upgrade(engine), 60)
            current = await asyncio.wait_for(current_revision(engine), 30)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        # The class only: the driver's message may quote the URL, password included.
        raise CatalogStartupError(
            f"the catalog database is unreachable (TUS_DATABASE_URL): {type(exc).__name__}"
        ) from None
    head = SCHEMA_HEAD
    if current != head:
        raise CatalogStartupError(
            f"the catalog schema is at {current or 'nothing'}, the code needs {head}: "
            "run `tusserver migrate`"
        )
    prober = MediaProber(
        timeout=settings.media_probe_timeout, thumbnail_width=settings.thumbnail_width
    )
    if settings.media_probe and not prober.available:
        log.info("catalog.probe_unavailable: ffprobe is not installed; media fields stay empty")
    catalog = Catalog(
        FileRepository(engine),
        reader=composer.reader,
        locator=composer.locator,
        sidecars=composer.sidecars,
        prober=prober,
        config=CatalogConfig(
            anonymous_owner=settings.anonymous_owner,
            media_probe=settings.media_probe,
            deleted_grace=settings.deleted_grace,
        ),
        clock=clock,
        head_cache=head_cache,
    )
    catalog.outbox = outbox
    catalog.start()
    stack.push_async_callback(catalog.stop)
    return catalog
