"""Opening the configured backends: the byte store (``TUS_STORAGE``) and the state backend
(``TUS_STATE``), with the checks that refuse to start with a clear message.

Local backends need no connections and are built at once (``build_components``). S3 and
Redis own network clients, so ``open_components`` opens them inside an exit stack owned by
the runtime, checks that they answer, and refuses to start with a clear message if not.
``STATE_BACKENDS`` is the one place that maps a ``TUS_STATE`` value to its backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tusserver.compose.local_state import LocalState
from tusserver.compose.redis_state import RedisState
from tusserver.compose.shared import SharedState, StartupError
from tusserver.core.fsutil import check_writable_dir
from tusserver.ops.metrics import NO_METRICS, MetricsSink, instrument_s3
from tusserver.settings import Settings
from tusserver.state.base import Locker, StateStore
from tusserver.state.lease import Lease
from tusserver.storage.base import DataStore, StoreComposer
from tusserver.storage.local import LocalStore


@dataclass(frozen=True)
class Components:
    composer: StoreComposer
    state: StateStore
    locker: Locker
    # What is healthy to report; the names appear in startup errors and readiness checks.
    backends: tuple[str, ...] = field(default=("local",))
    # Lets one sweeper work at a time (None: the shared state's lease).
    lease: Lease | None = None
    # The other shared tables (idempotency, rate limits, delivery, direct uploads, outbox);
    # None: the local ones (components a test assembles from parts).
    shared: SharedState | None = None


async def _open_local(
    settings: Settings, stack: AsyncExitStack, metrics: MetricsSink
) -> SharedState:
    return LocalState(settings, metrics=metrics)


# ``TUS_STATE`` -> how to open that backend. A new state backend is one module implementing
# ``SharedState`` plus its line here (and its name in ``Settings.state``).
STATE_BACKENDS: dict[
    str, Callable[[Settings, AsyncExitStack, MetricsSink], Awaitable[SharedState]]
] = {
    "local": _open_local,
    "redis": RedisState.open,
}


def is_local(settings: Settings) -> bool:
    return settings.storage == "local" and settings.state == "local"


def build_components(settings: Settings, *, metrics: MetricsSink = NO_METRICS) -> Components:
    """The embedded default: bytes and state on local disk, locks in this process."""
    if not is_local(settings):
        raise StartupError("build_components only builds local backends; use open_components")
    shared = LocalState(settings, metrics=metrics)
    return _assemble(settings, StoreComposer.from_store(_local_store(settings)), shared)


def _assemble(settings: Settings, composer: StoreComposer, shared: SharedState) -> Components:
    return Components(
        composer=composer,
        state=shared.state(),
        locker=shared.locker(),
        backends=(settings.storage, settings.state) if not is_local(settings) else ("local",),
        lease=shared.lease(),
        shared=shared,
    )


def _local_store(settings: Settings) -> LocalStore:
    return LocalStore(
        settings.data_dir,
        write_buffer=settings.write_buffer,
        checkpoint_interval=settings.checkpoint_interval,
    )


async def open_components(
    settings: Settings, stack: AsyncExitStack, *, metrics: MetricsSink = NO_METRICS
) -> Components:
    """Open every configured backend; closing ``stack`` closes them."""
    if is_local(settings):
        return build_components(settings, metrics=metrics)
    store: DataStore = (
        await _open_s3(settings, stack, metrics)
        if settings.storage == "s3"
        else _local_store(settings)
    )
    shared = await STATE_BACKENDS[settings.state](settings, stack, metrics)
    return _assemble(settings, StoreComposer.from_store(store), shared)


async def _open_s3(settings: Settings, stack: AsyncExitStack, metrics: MetricsSink) -> DataStore:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from tusserver.storage.s3 import S3Config, S3Store

    spool_dir = settings.s3_spool_dir
    if spool_dir is not None:
        _check_spool_dir(spool_dir)
    session = get_session()
    config = AioConfig(
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": 5, "mode": "standard"},
        # Default checksums make botocore hash (and buffer) every part once more;
        # S3 already verifies each part's Content-MD5/ETag on completion.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max(10, settings.s3_max_parts_in_flight + 4),
    )

    async def client_for(endpoint_url: str | None) -> Any:
        made = session.create_client(
            "s3", region_name=settings.s3_region, endpoint_url=endpoint_url, config=config
        )
        return await stack.enter_async_context(made)

    client = await client_for(settings.s3_endpoint_url)
    # URLs for clients are signed for the address they reach S3 at; signing makes no
    # request, so this client never connects.
    presigner = None
    if settings.s3_public_endpoint_url:
        presigner = await client_for(settings.s3_public_endpoint_url)
    # Times every S3 call of this client, this startup check included.
    instrument_s3(client.meta.events, metrics)
    bucket = settings.s3_bucket
    assert bucket is not None  # enforced by Settings
    await _check_bucket(client, bucket, settings.s3_endpoint_url)
    layout = S3Config(
        bucket=bucket,
        prefix=settings.s3_prefix,
        preferred_part_size=settings.s3_part_size,
        fixed_part_size=settings.s3_fixed_part_size,
        max_size=settings.max_size or None,
        concurrency=settings.s3_concurrency,
        parts_in_flight=asyncio.Semaphore(settings.s3_max_parts_in_flight),
        sse=settings.s3_sse,
        kms_key_id=settings.s3_kms_key_id,
        spool_dir=spool_dir,
        spool_memory=settings.s3_spool_memory,
    )
    return S3Store(client, layout, presigner=presigner)


def _check_spool_dir(spool_dir: Path) -> None:
    """Checked at startup: a bad spool directory would otherwise fail every upload's first
    part."""
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        check_writable_dir(spool_dir)
    except OSError as exc:
        raise StartupError(
            f"TUS_S3_SPOOL_DIR {str(spool_dir)!r} is not a writable directory: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None


async def _check_bucket(client: Any, bucket: str, endpoint_url: str | None) -> None:
    """The bucket answers: a wrong name, credentials or endpoint fails startup, not uploads."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        await asyncio.wait_for(client.head_bucket(Bucket=bucket), 15)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise StartupError(
            f"S3 bucket {bucket!r} is not usable (error {code}): create it or fix "
            "TUS_S3_BUCKET and the credentials"
        ) from None
    except (BotoCoreError, OSError, TimeoutError) as exc:
        raise StartupError(
            f"S3 endpoint {endpoint_url or 'AWS'} is unreachable: {type(exc).__name__}"
        ) from None
