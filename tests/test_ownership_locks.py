"""A refused caller never touches the lock of an upload it may not see.

Taking an upload's lock asks its holder (a running PATCH) to store what arrived and stop: that
is how a client resuming after a dead connection gets its upload back at once. So ownership is
checked before any lock is taken. Here Alice's PATCH streams slowly while Bob sends every
request that could take or signal her upload's lock (tus HEAD, PATCH, GET, DELETE and a
concatenation naming it; the REST status, complete and abort; the direct-upload complete,
abort and status): each is refused as if the upload did not exist, promptly, and her PATCH
runs to its end. Both with the in-process locker and with Redis's (a real redis-server).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apphttp import serving
from tusserver.security.auth import mint_token
from tusserver.settings import Settings

SECRET = "o" * 40
ORIGIN = "http://t"
PART = bytes(range(256)) * 256  # 64 KiB
LENGTH = 4 * len(PART)
OFFSET_OCTET = "application/offset+octet-stream"
LOCK_WAIT = 1.0


def bearer(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, admin=admin)}"}


@pytest.fixture(params=["local", "redis"])
async def http(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    options: dict[str, Any] = {}
    if request.param == "redis":
        from tests.services_redis import REDIS

        options = {
            "state": "redis",
            "redis_url": REDIS.ensure_started(),
            "redis_prefix": f"o-{uuid.uuid4().hex[:12]}:",
        }
    settings = Settings(
        data_dir=tmp_path,
        jwt_secret=SECRET,
        media_probe=False,
        lock_wait=LOCK_WAIT,
        read_timeout=30.0,
        **options,
    )
    async with serving(settings) as client:
        yield client


class SlowPatch:
    """Alice's PATCH: one part, then nothing until ``finish`` lets the other three through."""

    def __init__(self, http: httpx.AsyncClient, upload_id: str) -> None:
        self.streaming = asyncio.Event()  # the server took the first part and asks for more
        self._go = asyncio.Event()
        self.task = asyncio.create_task(
            http.patch(
                f"{ORIGIN}/files/{upload_id}",
                content=self._body(),
                headers={
                    **bearer("alice"),
                    "Upload-Offset": "0",
                    "Content-Type": OFFSET_OCTET,
                    "Content-Length": str(LENGTH),
                },
            )
        )

    async def _body(self) -> AsyncIterator[bytes]:
        yield PART
        self.streaming.set()
        await self._go.wait()
        for _ in range(3):
            yield PART

    async def finish(self) -> httpx.Response:
        self._go.set()
        return await asyncio.wait_for(self.task, 10)


async def create_partial(http: httpx.AsyncClient) -> str:
    created = await http.post(
        f"{ORIGIN}/files/",
        headers={**bearer("alice"), "Upload-Length": str(LENGTH), "Upload-Concat": "partial"},
    )
    assert created.status_code == 201, created.text
    return created.headers["Location"].rsplit("/", 1)[1]


def bobs_request(http: httpx.AsyncClient, name: str, upload_id: str) -> Any:
    """Bob's request ``name`` naming Alice's upload (an awaitable response)."""
    bob = bearer("bob")
    tus = f"{ORIGIN}/files/{upload_id}"
    api = f"{ORIGIN}/api/v1/uploads"
    patch_headers = {**bob, "Upload-Offset": str(len(PART)), "Content-Type": OFFSET_OCTET}
    requests: dict[str, Any] = {
        "tus HEAD": lambda: http.head(tus, headers=bob),
        "tus PATCH": lambda: http.patch(tus, content=b"x", headers=patch_headers),
        "tus GET": lambda: http.get(tus, headers=bob),
        "tus DELETE": lambda: http.delete(tus, headers=bob),
        "concat final": lambda: http.post(
            f"{ORIGIN}/files/", headers={**bob, "Upload-Concat": f"final;/files/{upload_id}"}
        ),
        "REST status": lambda: http.get(f"{api}/{upload_id}/status", headers=bob),
        "REST complete": lambda: http.post(
            f"{api}/complete", json={"upload_id": upload_id}, headers=bob
        ),
        "REST abort": lambda: http.delete(f"{api}/{upload_id}", headers=bob),
        "direct status": lambda: http.get(f"{api}/presigned/{upload_id}", headers=bob),
        "direct complete": lambda: http.post(f"{api}/presigned/{upload_id}/complete", headers=bob),
        "direct abort": lambda: http.post(f"{api}/multipart/{upload_id}/abort", headers=bob),
        "direct parts complete": lambda: http.post(
            f"{api}/multipart/{upload_id}/complete",
            json={"parts": [{"part_number": 1, "etag": "0" * 32}]},
            headers=bob,
        ),
    }
    return requests[name]()


BOBS_REQUESTS = [
    "tus HEAD",
    "tus PATCH",
    "tus GET",
    "tus DELETE",
    "concat final",
    "REST status",
    "REST complete",
    "REST abort",
    "direct status",
    "direct complete",
    "direct abort",
    "direct parts complete",
]


@pytest.mark.parametrize("name", BOBS_REQUESTS)
async def test_another_user_cannot_interrupt_a_running_patch(
    http: httpx.AsyncClient, name: str
) -> None:
    upload_id = await create_partial(http)
    alice = SlowPatch(http, upload_id)
    await asyncio.wait_for(alice.streaming.wait(), 10)

    started = time.monotonic()
    refused = await asyncio.wait_for(bobs_request(http, name, upload_id), 10)
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.1)  # time for a release request to reach Alice's PATCH

    # A concatenation is refused as for a missing partial (400, as tus says); all else 404.
    assert refused.status_code == (400 if name == "concat final" else 404), refused.text
    # Refused without waiting on the lock: a 423 after the lock wait would say "it exists".
    assert elapsed < LOCK_WAIT / 2
    assert not alice.task.done(), "Alice's PATCH was cut off"
    done = await alice.finish()
    assert done.status_code == 204, done.text
    assert done.headers["Upload-Offset"] == str(LENGTH)
    head = await http.head(f"{ORIGIN}/files/{upload_id}", headers=bearer("alice"))
    assert head.headers["Upload-Offset"] == str(LENGTH)


async def test_an_admin_still_takes_over_a_running_patch(http: httpx.AsyncClient) -> None:
    """Admins may act on every upload (unchanged): their HEAD asks the PATCH to let go."""
    upload_id = await create_partial(http)
    alice = SlowPatch(http, upload_id)
    await asyncio.wait_for(alice.streaming.wait(), 10)

    head = await http.head(f"{ORIGIN}/files/{upload_id}", headers=bearer("root", admin=True))

    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == str(len(PART))
    interrupted = await alice.finish()
    assert interrupted.status_code == 423
