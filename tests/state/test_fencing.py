"""Short Redis leases and fencing against a real redis-server.

A dead holder's lock lapses within the TTL and a waiter takes it over at once; a holder that
outlived its lease (paused, partitioned) is stopped and can no longer write the upload's
state, while renewal keeps a live holder's lock for as long as it needs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from tusserver.errors import LockLost
from tusserver.models import UploadInfo
from tusserver.state.redis import RedisLocker, RedisStateStore

from ..services_redis import REDIS

UPLOAD = "0123456789abcdef0123456789abcdef"


class Instance:
    """A locker and a state store on their own client and event loop: another server."""

    def __init__(self, prefix: str, **options: float) -> None:
        self.prefix = prefix
        self.client = Redis.from_url(REDIS.ensure_started())
        self.locker = RedisLocker(self.client, prefix=prefix, **options)
        self.store = RedisStateStore(self.client, prefix=prefix)

    async def close(self) -> None:
        await self.locker.close()
        await self.client.aclose()


async def make_instance(prefix: str, **options: float) -> Instance:
    return Instance(prefix, **options)  # made inside the loop it will run on


class ThreadInstance:
    """An instance on its own thread, so it keeps running while the test's loop is blocked
    (the test's "process" paused, like a long GC pause or a frozen VM)."""

    def __init__(self, prefix: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.instance: Instance = self.run(make_instance(prefix))
        self._leave = threading.Event()
        self._holding: asyncio.Future[None] | None = None

    def run(self, coro):  # type: ignore[no-untyped-def]
        """Run ``coro`` there, blocking the calling thread until it is done."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def take(self, upload_id: str, offset: int) -> None:
        """Take the upload's lock (waiting for it), write ``offset`` and keep holding."""
        held = threading.Event()

        async def hold() -> None:
            instance = self.instance
            async with instance.locker.lock(upload_id, wait=10, request_release=False):
                info = await instance.store.get(upload_id)
                assert info is not None
                await instance.store.update(info.replace(offset=offset))
                held.set()
                while not self._leave.is_set():
                    await asyncio.sleep(0.01)

        self._holding = asyncio.run_coroutine_threadsafe(hold(), self._loop)  # type: ignore[assignment]
        assert held.wait(10), "the other instance did not get the lock"

    def stop(self) -> None:
        self._leave.set()
        if self._holding is not None:
            self._holding.result(10)  # type: ignore[union-attr]
        self.run(self.instance.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def here(prefix: str) -> AsyncIterator[Instance]:
    instance = Instance(prefix, ttl=0.6, refresh_every=0.2)
    yield instance
    await instance.close()


@pytest.fixture
def elsewhere(prefix: str) -> Iterator[ThreadInstance]:
    other = ThreadInstance(prefix)
    yield other
    other.stop()


async def new_upload(store: RedisStateStore) -> UploadInfo:
    info = UploadInfo(id=UPLOAD, length=1000, offset=0)
    await store.create(info)
    return info


async def test_renewal_keeps_a_long_hold(here: Instance) -> None:
    info = await new_upload(here.store)
    async with here.locker.lock(UPLOAD, wait=1) as handle:
        await asyncio.sleep(2.0)  # more than three TTLs
        await here.store.update(info.replace(offset=7))
        assert not handle.release_requested
    stored = await here.store.get(UPLOAD)
    assert stored is not None
    assert stored.offset == 7


async def test_paused_holder_cannot_write_after_takeover(
    here: Instance, elsewhere: ThreadInstance
) -> None:
    info = await new_upload(here.store)

    async def stale_writer() -> None:
        async with here.locker.lock(UPLOAD, wait=1):
            await here.store.update(info.replace(offset=100))
            # This whole process stops (the call blocks the event loop) while the other
            # instance waits out the lease, takes the upload over and moves it on.
            elsewhere.take(UPLOAD, 300)
            await here.store.update(info.replace(offset=200))

    with pytest.raises(LockLost):
        await stale_writer()
    stored = await here.store.get(UPLOAD)
    assert stored is not None
    assert stored.offset == 300
    # The stale holder's release did not free the new holder's lock either.
    async with asyncio.timeout(2):
        with pytest.raises(Exception, match="in use"):
            async with here.locker.lock(UPLOAD, wait=0, request_release=False):
                pass


async def test_state_write_refused_once_the_lock_is_anothers(prefix: str) -> None:
    # A long lease, so this holder's own clock still trusts it: only the check in Redis,
    # atomic with the write, can tell that the lock changed hands.
    here = Instance(prefix, ttl=30, refresh_every=30)
    try:
        info = await new_upload(here.store)
        async with here.locker.lock(UPLOAD, wait=1):
            await here.client.set(f"{prefix}lock:{UPLOAD}", "another-holder")
            with pytest.raises(LockLost):
                await here.store.update(info.replace(offset=500))
            with pytest.raises(LockLost):
                await here.store.delete(UPLOAD)
        stored = await here.store.get(UPLOAD)
        assert stored is not None
        assert stored.offset == 0
        # Without a lock held, writes are unconditional (creation, the embedded paths).
        await here.store.update(info.replace(offset=1))
    finally:
        await here.close()


async def test_renewal_that_finds_the_lock_gone_stops_the_holder(here: Instance) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    asked = asyncio.Event()

    async def long_patch() -> None:
        async with here.locker.lock(UPLOAD, wait=1) as handle:
            handle.on_release_request(asked.set)
            await here.client.set(f"{here.prefix}lock:{UPLOAD}", "another-holder")
            await asyncio.sleep(10)  # stands for a long PATCH: cancelled, not finished

    with pytest.raises(LockLost):
        await long_patch()
    assert asked.is_set()
    assert loop.time() - started < 1.0


async def test_lapsed_lease_stops_the_holder_without_a_word_from_redis(prefix: str) -> None:
    # Renewal never gets to run in time (Redis unreachable, say): the holder's own clock
    # stops it when the lease lapses, before anyone else can have taken the lock.
    here = Instance(prefix, ttl=0.5, refresh_every=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:

        async def long_patch() -> None:
            async with here.locker.lock(UPLOAD, wait=1):
                await asyncio.sleep(10)

        with pytest.raises(LockLost):
            await long_patch()
        assert 0.4 < loop.time() - started < 1.0
    finally:
        await here.close()


async def test_outside_cancellation_stays_a_cancellation(here: Instance) -> None:
    locker = here.locker

    async def holder() -> None:
        async with locker.lock(UPLOAD, wait=1):
            await asyncio.sleep(10)

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


_DYING_HOLDER = """
import asyncio, sys
from redis.asyncio import Redis
from tusserver.state.redis import RedisLocker

async def main():
    locker = RedisLocker(Redis.from_url(sys.argv[1]), prefix=sys.argv[2])
    async with locker.lock(sys.argv[3], wait=1):
        print("held", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_dead_holders_lock_lapses_for_a_waiting_request(prefix: str) -> None:
    """SIGKILL a process holding the lock (default lease): a request waiting the default
    TUS_LOCK_WAIT on another instance gets the upload, no 423."""
    url = REDIS.ensure_started()
    proc = subprocess.Popen(
        [sys.executable, "-c", _DYING_HOLDER, url, prefix, UPLOAD], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"held\n"
        await asyncio.sleep(1.5)  # a renewal or so has happened
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    killed = time.monotonic()
    here = Instance(prefix)  # the defaults: lease 3 s
    try:
        async with here.locker.lock(UPLOAD, wait=3.0, request_release=True):
            took = time.monotonic() - killed
    finally:
        await here.close()
    assert took <= 3.5, f"took {took:.2f} s to take over"
