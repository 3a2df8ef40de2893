"""``open_runtime``: builds and opens everything a server (or ``tusserver sweep``) runs.

Order matters only where one part needs another: backends, then the hooks, the catalog (it
needs the store and the outbox), the listeners (the catalog's among them), the upload
service, then what builds on the service (delivery, direct uploads, the sweep job).
Closing the context closes them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from catalog.backlog import record_backlog
from catalog.service import Catalog, CatalogListener
from catalog.setup import CatalogStartupError, open_catalog
from delivery.service import Delivery
from delivery.signing import UrlSigner
from tusserver import errors
from tusserver.api.direct_backend import DirectBackend
from tusserver.api.direct_local import LocalDirectBackend
from tusserver.api.direct_service import DirectUploads
from tusserver.api.part_tokens import PartSigner
from tusserver.compose.backends import Components, open_components
from tusserver.compose.local_state import LocalState
from tusserver.compose.shared import SharedState, StartupError
from tusserver.core.context import TusContext
from tusserver.core.digests import ContentDigests
from tusserver.core.listener import FanOut, NullListener, UploadListener
from tusserver.core.uploads import UploadService
from tusserver.hooks import Hooks
from tusserver.hooks.callables import PreCreateFn
from tusserver.models import UploadInfo
from tusserver.ops.metrics import NO_METRICS, Metrics, MetricsListener
from tusserver.ops.sweep_job import SweepJob
from tusserver.ops.sweeper import SweepPass
from tusserver.runtime import Runtime
from tusserver.security.idempotency import Idempotency
from tusserver.security.keyring import signing_keys
from tusserver.security.ratelimit import RateLimiter
from tusserver.settings import Settings
from tusserver.state.outbox import CatalogOutbox
from tusserver.storage.base import StoreComposer
from tusserver.storage.local import LocalStore

log = logging.getLogger("tusserver")


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    listener: UploadListener | None = None,
    metrics: Metrics | None = None,
    components: Components | None = None,
    pre_create: PreCreateFn | None = None,
) -> AsyncIterator[Runtime]:
    """The runtime for ``settings``, open until the context exits.

    ``components``: backends the caller opened (and closes) itself; ``listener`` hears every
    upload's lifecycle beside the catalog, metrics and webhook; ``metrics`` is counted into;
    ``pre_create``: a Python gate on new uploads in place of the pre-create URL hook.
    """
    sink = metrics if metrics is not None else NO_METRICS
    async with contextlib.AsyncExitStack() as stack:
        try:
            parts = components or await open_components(settings, stack, metrics=sink)
        except StartupError as exc:
            log.error("startup.failed: %s", exc)
            raise
        shared: SharedState = parts.shared or LocalState(settings, metrics=sink)
        hooks = Hooks.from_settings(settings, pre_create=pre_create)
        await stack.enter_async_context(hooks.running())
        outbox = shared.outbox() if settings.catalog else None
        # The running sha256 costs about 1 s of CPU per GiB (in a worker thread); only the
        # catalog uses it.
        digests = ContentDigests(enabled=settings.catalog)
        catalog = await _catalog(settings, parts, stack, clock, digests, outbox)
        # Direct uploads announce to all but the catalog, which records them itself (awaited).
        others = _listeners(listener, metrics, hooks)
        everyone = [*([CatalogListener(catalog)] if catalog is not None else []), *others]
        service = UploadService(
            TusContext(
                settings=settings,
                composer=parts.composer,
                state=parts.state,
                locker=parts.locker,
                listener=_fan_out(everyone),
                clock=clock,
                metrics=sink,
                outbox=outbox,
            ),
            digests=digests,
        )
        delivery = _delivery(settings, shared, parts.composer, catalog, clock)
        direct = _direct_uploads(settings, shared, service, catalog, _fan_out(others))
        yield Runtime(
            settings=settings,
            components=parts,
            service=service,
            idempotency=Idempotency(shared.idempotency(clock), ttl=settings.idempotency_ttl),
            limiter=RateLimiter(shared.rate_buckets(), clock=clock),
            hooks=hooks,
            catalog=catalog,
            delivery=delivery,
            direct=direct,
            sweep_job=_sweep_job(settings, shared, parts, service, catalog, delivery, direct),
            loop=asyncio.get_running_loop(),
        )


async def _catalog(
    settings: Settings,
    parts: Components,
    stack: contextlib.AsyncExitStack,
    clock: Callable[[], float],
    digests: ContentDigests,
    outbox: CatalogOutbox | None,
) -> Catalog | None:
    """The catalog, open for the stack's life, when ``TUS_CATALOG`` is on."""
    if not settings.catalog:
        return None
    try:
        return await open_catalog(
            settings,
            parts.composer,
            stack,
            clock=clock,
            head_cache=digests.take_head,
            outbox=outbox,
        )
    except CatalogStartupError as exc:
        log.error("startup.failed: %s", exc)
        raise


def _listeners(
    listener: UploadListener | None, metrics: Metrics | None, hooks: Hooks
) -> list[UploadListener]:
    """Every listener but the catalog's: the caller's, metrics and the webhook."""
    candidates = (
        listener,
        MetricsListener(metrics) if metrics is not None else None,
        hooks.webhook,
    )
    return [x for x in candidates if x is not None]


def _fan_out(listeners: list[UploadListener]) -> UploadListener:
    # FanOut even for one listener: a failing listener (the catalog's database is down) is
    # logged and never fails the upload whose bytes are already safe.
    return FanOut(listeners) if listeners else NullListener()


def _delivery(
    settings: Settings,
    shared: SharedState,
    composer: StoreComposer,
    catalog: Catalog | None,
    clock: Callable[[], float],
) -> Delivery | None:
    """Signed download URLs (they serve catalog files, so only with the catalog)."""
    if catalog is None:
        return None
    return Delivery(
        catalog=catalog,
        composer=composer,
        signer=UrlSigner("download v1", signing_keys(settings)),
        onetime=shared.onetime_tokens(clock),
        quota=shared.quota(settings.delivery_daily_quota_per_ip, clock),
        settings=settings,
        clock=clock,
    )


def _direct_uploads(
    settings: Settings,
    shared: SharedState,
    service: UploadService,
    catalog: Catalog | None,
    events: UploadListener,
) -> DirectUploads | None:
    """Direct uploads for the configured store, or None if it cannot hand out URLs.
    ``events`` hears their lifecycle: the listeners other than the catalog's."""
    clock = service.ctx.clock
    backend = _direct_backend(settings, service.ctx.composer.core, clock)
    if backend is None:
        return None
    return DirectUploads(
        settings=settings,
        uploads=service,
        records=shared.direct_records(clock),
        backend=backend,
        catalog=catalog,
        clock=clock,
        events=events,
    )


def _direct_backend(
    settings: Settings, core: Any, clock: Callable[[], float]
) -> DirectBackend | None:
    if isinstance(core, LocalStore):
        return LocalDirectBackend(core, PartSigner(signing_keys(settings)))
    if settings.storage == "s3":
        # Imported only here: the S3 client libraries are an optional extra.
        from tusserver.api.direct_s3 import S3DirectBackend
        from tusserver.storage.s3 import S3Store

        if isinstance(core, S3Store):
            return S3DirectBackend(core, clock=clock)
    return None


def _sweep_job(
    settings: Settings,
    shared: SharedState,
    parts: Components,
    service: UploadService,
    catalog: Catalog | None,
    delivery: Delivery | None,
    direct: DirectUploads | None,
) -> SweepJob:
    """The sweep the server runs periodically and ``tusserver sweep`` runs on its own."""
    passes: list[tuple[str, SweepPass]] = []
    outbox = service.ctx.outbox
    if catalog is not None and outbox is not None:
        recorder = catalog

        async def outbox_pass() -> object:
            return await record_backlog(service, recorder, outbox)

        passes.append(("catalog_outbox", outbox_pass))
    if catalog is not None:
        found = catalog

        async def catalog_pass() -> object:
            return await found.sweep(lambda upload_id: _purge_upload(service, upload_id))

        passes.append(("catalog", catalog_pass))
    if delivery is not None:
        passes.append(("onetime_tokens_dropped", delivery.drop_expired_tokens))
    is_known = service.exists
    if direct is not None:
        passes.append(("direct", direct.sweep))
        records = direct.records

        async def known_anywhere(upload_id: str) -> bool:
            # A direct upload in progress owns an S3 multipart upload (or parts on disk) that
            # no tus state knows: never an orphan while its record lives.
            return await service.exists(upload_id) or await records.get(upload_id) is not None

        is_known = known_anywhere
    return SweepJob(
        service,
        parts.lease or shared.lease(),
        orphan_grace=settings.orphan_grace,
        passes=passes,
        is_known=is_known,
    )


async def _purge_upload(service: UploadService, upload_id: str) -> None:
    """Remove a deleted catalog file's bytes (and its upload state) for good."""
    try:
        async with service.locked(upload_id, request_release=False, wait=0):
            info = await service.ctx.state.get(upload_id)
            if info is None:
                info = UploadInfo(id=upload_id, length=None)
                terminater = service.ctx.composer.terminater
                if terminater is not None:
                    await terminater.terminate(info)
                return
            # Announced with reason "purged" (webhooks hear it); the catalog, which is the
            # one asking, ignores that reason.
            await service.terminate(info, event="upload.purged")
    except errors.Locked:
        raise RuntimeError("upload is busy; retried on the next sweep") from None
