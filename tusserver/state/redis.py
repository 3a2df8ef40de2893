"""Upload state and per-upload locks in Redis, shared by every server instance.

State: one JSON record per upload, a sorted set of unfinished uploads by expiry (so the
sweeper never scans every key), and a set of waiting finals per partial.

Locks are short leases: ``SET NX PX`` with a random token per acquisition (``ttl``, 3 s by
default), renewed every ``ttl / 3`` while held, released and renewed only by a Lua
compare-and-act on that token, so a holder can never free or extend someone else's lock.
A request that finds the lock taken publishes on the upload's release channel; the holder,
subscribed through one shared pub/sub connection per process, stops its PATCH, persists what
arrived and lets go, whichever instance it runs on.

Why short: an instance that dies (SIGKILL, OOM, lost host) cannot release its locks, and
until they lapse every request for its uploads on the other instances waits or answers 423.
tus clients give up after about 9 s of retries (tus-js-client: 0, 1, 3, 5 s), so the lease
must lapse in a few seconds; a waiter polls and takes it the moment it does.

Why safe: a holder that is paused past its lease (a stalled event loop, a partition from
Redis) must not write on while another instance holds the upload. Each acquisition carries
a ``Fence`` (``tusserver.state.fence``): renewal that fails or finds the lock gone, or a
lease that lapses on this process's clock, cancels the holder's request (423
``ERR_UPLOAD_LOCK_LOST``); every state write of a locked upload is a Lua script that
refuses unless the lock still holds the writer's token, so only the current holder can move
the offset; and storage checks the fence before each part or tail object it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from tusserver import errors
from tusserver.core.tasks import stop_task
from tusserver.models import UploadInfo, checked_upload_id, is_valid_upload_id
from tusserver.ops.metrics import NO_METRICS, MetricsSink
from tusserver.state.base import AlreadyExists
from tusserver.state.fence import Fence, current, holding
from tusserver.state.locks import ReleasableHandle

log = logging.getLogger("tusserver.state")


# Create the record only if absent and index its expiry in the same step: a crash between
# the two would leave an upload the sweeper can never find.
_CREATE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  if ARGV[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# State writes of an upload whose lock the writer holds carry the lock's key and token, and
# are refused unless the lock still holds that token (see tusserver.state.fence). An empty
# token (no lock held: the embedded paths that need none) writes unconditionally.
_UPDATE = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '' then redis.call('ZREM', KEYS[2], ARGV[3])
else redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""
_DELETE = """
if ARGV[2] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


def _fenced(upload_id: str) -> tuple[str, str]:
    """The lock key and token a write of ``upload_id`` must match ('' , '' if no lock is
    held in this context). A lease this process already knows is lost fails at once."""
    fence = current(upload_id)
    if fence is None:
        return "", ""
    fence.check()
    return fence.key, fence.token


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStateStore:
    def __init__(self, client: Redis, *, prefix: str = "tus:") -> None:
        self._redis = client
        self._prefix = prefix
        self._expiry = f"{prefix}expiry"

    async def ping(self) -> None:
        await self._redis.ping()

    def _key(self, upload_id: str) -> str:
        return f"{self._prefix}upload:{checked_upload_id(upload_id)}"

    def _waiters_key(self, upload_id: str) -> str:
        return f"{self._prefix}waiters:{checked_upload_id(upload_id)}"

    @staticmethod
    def _expiry_score(info: UploadInfo) -> float | None:
        if info.is_complete or info.expires_at is None:
            return None
        return info.expires_at

    async def create(self, info: UploadInfo) -> None:
        score = self._expiry_score(info)
        created = await self._redis.eval(
            _CREATE,
            2,
            self._key(info.id),
            self._expiry,
            json.dumps(info.to_dict()),
            "" if score is None else repr(score),
            info.id,
        )
        if not created:
            raise AlreadyExists(info.id)

    async def get(self, upload_id: str) -> UploadInfo | None:
        raw = await self._redis.get(self._key(upload_id))
        if raw is None:
            return None
        try:
            return UploadInfo.from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError):
            log.error("state.corrupt", extra={"upload_id": upload_id})
            return None

    async def update(self, info: UploadInfo) -> None:
        score = self._expiry_score(info)
        key, token = _fenced(info.id)
        written = await self._redis.eval(
            _UPDATE,
            3,
            self._key(info.id),
            self._expiry,
            key,
            json.dumps(info.to_dict()),
            "" if score is None else repr(score),
            info.id,
            token,
        )
        if not written:
            raise errors.LockLost()

    async def delete(self, upload_id: str) -> None:
        key, token = _fenced(upload_id)
        deleted = await self._redis.eval(
            _DELETE,
            4,
            self._key(upload_id),
            self._waiters_key(upload_id),
            self._expiry,
            key,
            upload_id,
            token,
        )
        if not deleted:
            raise errors.LockLost()

    async def expired(self, now: float) -> AsyncIterator[UploadInfo]:
        start, batch = 0, 500
        while True:
            ids = await self._redis.zrangebyscore(
                self._expiry, "-inf", f"({now!r}", start=start, num=batch
            )
            for raw_id in ids:
                upload_id = _text(raw_id)  # type: ignore[arg-type]
                if not is_valid_upload_id(upload_id):
                    continue
                info = await self.get(upload_id)
                if info is None:
                    # The record vanished without its index entry: tidy up.
                    await self._redis.zrem(self._expiry, upload_id)
                    continue
                score = self._expiry_score(info)
                if score is not None and score < now:
                    yield info
            if len(ids) < batch:
                return
            start += batch

    async def add_waiter(self, partial_id: str, final_id: str) -> None:
        await self._redis.sadd(self._waiters_key(partial_id), checked_upload_id(final_id))

    async def waiters(self, partial_id: str) -> list[str]:
        members = await self._redis.smembers(self._waiters_key(partial_id))
        return sorted(_text(m) for m in members)


@contextlib.contextmanager
def _stopped_if_lost(fence: Fence) -> Iterator[None]:
    """Run the lock's body as ``fence.holder``; once the lease is lost the locker cancels
    it, and that cancellation surfaces as ``LockLost`` (423): the request stops at whatever
    it awaited (a part upload, a state write) instead of writing on without the lock. A
    cancellation from elsewhere (client gone, shutdown) stays a cancellation."""
    task = asyncio.current_task()
    assert task is not None
    fence.holder = task
    try:
        yield
    except BaseException as exc:
        if not fence.cancelled_holder:
            raise
        if task.uncancel() > 0 and isinstance(exc, asyncio.CancelledError):
            raise  # also cancelled from elsewhere
        raise errors.LockLost() from None
    else:
        if fence.cancelled_holder:  # the body swallowed the cancellation
            task.uncancel()
            raise errors.LockLost()
    finally:
        fence.holder = None


class RedisLocker:
    """Locks shared by every instance; see the module docstring."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "tus:",
        ttl: float = 3.0,
        refresh_every: float | None = None,
        poll: float = 0.05,
        republish_every: float = 0.25,
        metrics: MetricsSink = NO_METRICS,
    ) -> None:
        self._redis = client
        self._metrics = metrics
        self._prefix = prefix
        self._ttl = ttl
        self._ttl_ms = int(ttl * 1000)
        self._refresh_every = refresh_every if refresh_every is not None else ttl / 3
        self._poll = poll
        self._republish_every = republish_every
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._holders: dict[str, ReleasableHandle] = {}
        # This process's waiters for one upload queue here in arrival order (asyncio.Lock is
        # FIFO) and only the first polls Redis. Polling alone is unfair: a client answered
        # 423 that comes straight back would win over requests that waited all along.
        self._queues: dict[str, tuple[asyncio.Lock, int]] = {}
        # upload id -> the handle of this process's holder: a waiter here asks it directly
        # and takes the lock the moment it is released, not a poll later.
        self._local: dict[str, ReleasableHandle] = {}

    def _names(self, upload_id: str) -> tuple[str, str]:
        checked_upload_id(upload_id)
        return f"{self._prefix}lock:{upload_id}", f"{self._prefix}release:{upload_id}"

    @contextlib.asynccontextmanager
    async def lock(
        self, upload_id: str, *, wait: float, request_release: bool = True
    ) -> AsyncIterator[ReleasableHandle]:
        key, channel = self._names(upload_id)
        token = secrets.token_hex(16)
        sent = await self._acquire(upload_id, (key, channel, token), wait, request_release)
        fence = Fence(key, token, sent + self._ttl)
        handle = ReleasableHandle()
        self._local[upload_id] = handle
        refresher: asyncio.Task[None] | None = None
        try:
            await self._subscribe(channel, handle)
            refresher = asyncio.create_task(self._keep_alive(fence, handle))
            with holding(upload_id, fence), _stopped_if_lost(fence):
                yield handle
        finally:
            try:
                await stop_task(refresher)
                await self._unsubscribe(channel)
                # Shielded: a cancelled request must still hand its lock back, not leave it
                # to expire after the TTL.
                await asyncio.shield(self._redis.eval(_RELEASE, 1, key, token))
                handle.released.set()
            finally:
                if self._local.get(upload_id) is handle:
                    del self._local[upload_id]

    async def _acquire(
        self, upload_id: str, names: tuple[str, str, str], wait: float, request_release: bool
    ) -> float:
        """Take the lock (``names``: key, release channel, token), this process's waiters
        in arrival order. Returns when the winning ``SET`` was sent: the lease lapses no
        sooner than ``ttl`` after that. Raises ``Locked`` after ``wait`` seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = False
        queue, users = self._queues.get(upload_id, (asyncio.Lock(), 0))
        self._queues[upload_id] = (queue, users + 1)
        queued = False
        try:
            waited = queue.locked() and wait > 0
            try:
                async with asyncio.timeout(wait if queue.locked() else None):
                    queued = await queue.acquire()
            except TimeoutError:
                raise errors.Locked() from None
            sent, contended = await self._poll_for(
                upload_id, names, started + wait, request_release
            )
            waited = waited or (contended and wait > 0)  # the sweeper's 0 probe is no wait
            if sent is None:
                raise errors.Locked()
            return sent
        finally:
            if queued:
                queue.release()
            users = self._queues[upload_id][1]
            if users > 1:
                self._queues[upload_id] = (queue, users - 1)
            else:
                del self._queues[upload_id]
            # Counted whether the wait ended with the lock or with a 423.
            if waited:
                self._metrics.lock_waited(loop.time() - started)

    async def _poll_for(
        self, upload_id: str, names: tuple[str, str, str], deadline: float, request_release: bool
    ) -> tuple[float | None, bool]:
        """Try ``SET NX`` until it succeeds or ``deadline``: (when the winning try was sent,
        or None; whether any try failed).

        A lock whose holder died lapses by itself within the TTL, and trying every ``poll``
        seconds takes it over at once: a HEAD waiting on another instance for a crashed
        holder's upload answers 200 as soon as the lease lapses, not 423.
        """
        key, channel, token = names
        loop = asyncio.get_running_loop()
        published_at = float("-inf")
        contended = False
        while True:
            sent = loop.time()
            if await self._redis.set(key, token, nx=True, px=self._ttl_ms):
                return sent, contended
            contended = True
            now = loop.time()
            holder = self._local.get(upload_id)
            if request_release and now - published_at >= self._republish_every:
                if published_at == float("-inf"):  # counted once, however often repeated
                    self._metrics.lock_release_requested()
                # Repeated: the holder may have taken the lock a moment ago and not yet be
                # listening on its channel.
                await self._redis.publish(channel, "release")
                published_at = now
            if request_release and holder is not None:
                holder.request_release()
            if now >= deadline:
                return None, contended
            pause = min(self._poll, max(deadline - now, 0.001))
            if holder is None:
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await holder.released.wait()

    async def _keep_alive(self, fence: Fence, handle: ReleasableHandle) -> None:
        """Renew the lease every ``refresh_every`` seconds while it is held.

        A renewal that fails (Redis slow or unreachable) is retried until the lease would
        lapse; a renewal that finds the lock gone or another's, or a lease that lapses
        meanwhile, means someone else may hold the upload now: the holder is stopped.
        """
        loop = asyncio.get_running_loop()
        while True:
            left = fence.valid_until - loop.time()
            await asyncio.sleep(max(min(self._refresh_every, left), 0))
            if not fence.valid():
                break
            sent = loop.time()
            try:
                async with asyncio.timeout(max(fence.valid_until - sent, 0.001)):
                    kept = await self._redis.eval(_REFRESH, 1, fence.key, fence.token, self._ttl_ms)
            except Exception as exc:  # a timeout, Redis down: try again while still valid
                log.warning("lock.refresh_failed", extra={"error": type(exc).__name__})
                continue
            if not kept:
                break
            fence.valid_until = sent + self._ttl
        fence.lost = True
        # Someone else may hold it now: stop writing at once (see _stopped_if_lost).
        log.warning("lock.lost", extra={"lock": fence.key})
        handle.request_release()
        if fence.holder is not None:
            fence.cancelled_holder = True
            fence.holder.cancel()

    async def _subscribe(self, channel: str, handle: ReleasableHandle) -> None:
        self._holders[channel] = handle
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(channel)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(self._pubsub))

    async def _unsubscribe(self, channel: str) -> None:
        self._holders.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(channel)

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            try:
                message: dict[str, Any] | None = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lock.listener_failed")
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            handle = self._holders.get(_text(message["channel"]))
            if handle is not None:
                handle.request_release()

    async def close(self) -> None:
        await stop_task(self._listener)
        self._listener = None
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
