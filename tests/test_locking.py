"""Locks, release requests and interrupted bodies, end to end through the ASGI app: what
happens when a client's connection dies mid-PATCH and it comes back.

See docs/protocol.md, "Busy uploads and the release request" and "Interrupted bodies".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.apphttp import opened
from tests.asgi_harness import call
from tests.services_redis import REDIS
from tusserver.app import create_app
from tusserver.compose import Components, build_components
from tusserver.ops.sweeper import sweep_once
from tusserver.runtime import runtime_of
from tusserver.settings import Settings
from tusserver.state.redis import RedisLocker, RedisStateStore

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream"}
PART = bytes(range(256)) * 256  # 64 KiB


@pytest.fixture(params=["local", "redis"])
async def app(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The same app with in-process locks and state, and with Redis ones (as N instances)."""
    settings = Settings(data_dir=tmp_path, lock_wait=1.0, read_timeout=5.0)
    if request.param == "local":
        async with opened(create_app(settings)) as app:
            yield app
        return
    client = Redis.from_url(REDIS.ensure_started())
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    locker = RedisLocker(client, prefix=prefix)
    local = build_components(settings)
    components = Components(
        composer=local.composer, state=RedisStateStore(client, prefix=prefix), locker=locker
    )
    async with opened(create_app(settings, components=components)) as app:
        yield app
    await locker.close()
    await client.aclose()


async def create(app, length: int = 10 * len(PART)) -> str:  # type: ignore[no-untyped-def]
    reply = await call(app, "POST", "/files/", {**TUS, "Upload-Length": str(length)})
    assert reply.status == 201, reply.body
    return reply.headers["location"].rsplit("/", 1)[1]


async def offset_of(app, upload_id: str) -> int:  # type: ignore[no-untyped-def]
    reply = await call(app, "HEAD", f"/files/{upload_id}", TUS)
    assert reply.status == 200, reply.body
    return int(reply.headers["upload-offset"])


def stalled_patch(app, upload_id: str, parts: list[bytes], drained: asyncio.Event):  # type: ignore[no-untyped-def]
    """A PATCH whose client sends ``parts`` and then goes silent without closing."""
    return asyncio.create_task(
        call(
            app,
            "PATCH",
            f"/files/{upload_id}",
            {**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(10 * len(PART))},
            parts,
            ending="hang",
            drained=drained,
        )
    )


async def test_head_releases_a_stalled_patch_and_sees_its_bytes(app) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    drained = asyncio.Event()
    patch = stalled_patch(app, upload_id, [PART, PART, PART], drained)
    await drained.wait()
    started = time.monotonic()
    head = await call(app, "HEAD", f"/files/{upload_id}", TUS)
    elapsed = time.monotonic() - started
    assert head.status == 200
    assert head.headers["upload-offset"] == str(3 * len(PART))
    assert elapsed < 1.0, "the holder must let go promptly"
    old = await asyncio.wait_for(patch, 2)
    assert old.status == 423
    assert old.body.startswith(b"ERR_UPLOAD_INTERRUPTED")
    # The offset HEAD reported is accepted by the very next PATCH.
    resumed = await call(
        app,
        "PATCH",
        f"/files/{upload_id}",
        {**PATCH_HEADERS, "Upload-Offset": str(3 * len(PART))},
        [PART],
    )
    assert resumed.status == 204
    assert resumed.headers["upload-offset"] == str(4 * len(PART))


async def test_disconnect_keeps_what_arrived(app) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    reply = await call(
        app,
        "PATCH",
        f"/files/{upload_id}",
        {**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(10 * len(PART))},
        [PART, PART],
        ending="disconnect",
    )
    assert reply.status >= 400
    assert await offset_of(app, upload_id) == 2 * len(PART)


async def test_disconnect_with_checksum_discards_the_chunk(app) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    await call(
        app,
        "PATCH",
        f"/files/{upload_id}",
        {
            **PATCH_HEADERS,
            "Upload-Offset": "0",
            "Content-Length": str(10 * len(PART)),
            "Upload-Checksum": "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
        },
        [PART, PART],
        ending="disconnect",
    )
    assert await offset_of(app, upload_id) == 0


async def test_read_timeout_keeps_bytes_and_answers_5xx(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, read_timeout=0.3))
    async with opened(app):
        upload_id = await create(app)
        reply = await asyncio.wait_for(
            call(
                app,
                "PATCH",
                f"/files/{upload_id}",
                {**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(10 * len(PART))},
                [PART],
                ending="hang",
            ),
            3,
        )
        assert reply.status == 500  # 5xx on purpose: clients retry it
        assert reply.body.startswith(b"ERR_READ_TIMEOUT")
        assert await offset_of(app, upload_id) == len(PART)


async def test_delete_stops_an_inflight_patch(app) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    drained = asyncio.Event()
    patch = stalled_patch(app, upload_id, [PART], drained)
    await drained.wait()
    deleted = await call(app, "DELETE", f"/files/{upload_id}", TUS)
    assert deleted.status == 204
    assert (await asyncio.wait_for(patch, 2)).status == 423
    assert (await call(app, "HEAD", f"/files/{upload_id}", TUS)).status == 404
    assert not list(Path(runtime_of(app).service.settings.data_dir).glob(f"{upload_id}*"))


async def test_second_patch_at_same_offset_never_interleaves(app) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    drained = asyncio.Event()
    first = stalled_patch(app, upload_id, [PART], drained)
    await drained.wait()
    second = await call(
        app, "PATCH", f"/files/{upload_id}", {**PATCH_HEADERS, "Upload-Offset": "0"}, [b"x" * 10]
    )
    assert second.status == 409  # the first PATCH's bytes were persisted first
    assert (await asyncio.wait_for(first, 2)).status == 423
    data = (Path(runtime_of(app).service.settings.data_dir) / f"{upload_id}.bin").read_bytes()
    assert data == PART


async def test_busy_holder_that_never_lets_go_gets_423_not_5xx(app) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    service = runtime_of(app).service
    async with service.locked(upload_id):  # a holder deaf to release requests
        started = time.monotonic()
        head = await call(app, "HEAD", f"/files/{upload_id}", TUS)
        assert head.status == 423
        assert 0.9 <= time.monotonic() - started < 2.0


async def test_sweeper_skips_busy_and_removes_expired(tmp_path: Path) -> None:
    now = [1_000_000.0]
    app = create_app(Settings(data_dir=tmp_path, expiration=60), clock=lambda: now[0])
    async with opened(app):
        busy = await create(app)
        idle = await create(app)
        done = await create(app, length=0)
        now[0] += 61
        service = runtime_of(app).service
        async with service.locked(busy, request_release=False):
            report = await sweep_once(service)
        assert (report.expired, report.skipped_busy) == (1, 1)
        assert (await call(app, "HEAD", f"/files/{idle}", TUS)).status == 404
        assert (await call(app, "HEAD", f"/files/{done}", TUS)).status == 200  # never expires
        assert not list(tmp_path.glob(f"{idle}*"))


async def test_creation_body_cut_off_keeps_the_upload_and_its_bytes(tmp_path: Path) -> None:
    """The client never saw Location, but what arrived is stored (expiry collects it)."""
    app = create_app(Settings(data_dir=tmp_path))
    async with opened(app):
        service = runtime_of(app).service
        before = {p.name for p in Path(service.settings.data_dir).glob("*.json")}
        reply = await call(
            app,
            "POST",
            "/files/",
            {
                **PATCH_HEADERS,
                "Upload-Length": str(10 * len(PART)),
                "Content-Length": str(10 * len(PART)),
            },
            [PART, PART],
            ending="disconnect",
        )
        assert reply.status >= 400  # nobody is listening any more
        created = {p.name for p in Path(service.settings.data_dir).glob("*.json")} - before
        assert len(created) == 1
        info = await service.ctx.state.get(created.pop().removesuffix(".json"))
        assert info.offset == 2 * len(PART)
        assert info.expires_at is not None


async def test_patch_whose_lock_was_taken_over_stops_without_moving_the_offset(
    tmp_path: Path,
) -> None:
    """Another instance took the upload over (this one's lease lapsed unnoticed, say): the
    PATCH still streaming here stops with 423 and its later bytes never count."""
    settings = Settings(data_dir=tmp_path, lock_wait=1.0, read_timeout=5.0)
    client = Redis.from_url(REDIS.ensure_started())
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    locker = RedisLocker(client, prefix=prefix, ttl=30, refresh_every=0.1)
    state = RedisStateStore(client, prefix=prefix)
    app = create_app(
        settings,
        components=Components(
            composer=build_components(settings).composer, state=state, locker=locker
        ),
    )
    try:
        async with opened(app):
            upload_id = await create(app, length=1000 * len(PART))
            sent = asyncio.Event()
            patch = asyncio.create_task(
                call(
                    app,
                    "PATCH",
                    f"/files/{upload_id}",
                    {
                        **PATCH_HEADERS,
                        "Upload-Offset": "0",
                        "Content-Length": str(len(PART) * 1000),
                    },
                    [PART] * 20,
                    ending="hang",
                    drained=sent,
                )
            )
            await sent.wait()
            before = await state.get(upload_id)
            assert before is not None
            await client.set(f"{prefix}lock:{upload_id}", "another-instance")
            reply = await asyncio.wait_for(patch, 2)
            assert reply.status == 423
            assert reply.body.startswith(b"ERR_UPLOAD_LOCK_LOST")
            after = await state.get(upload_id)
            assert after is not None
            assert after.offset == before.offset  # the drained bytes were not recorded
    finally:
        await locker.close()
        await client.aclose()
