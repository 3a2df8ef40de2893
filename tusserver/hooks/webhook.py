"""The webhook listener: upload events POSTed, signed, to ``TUS_WEBHOOK_URL``.

Owns the delivery queue and its one sender task. An upload only ever enqueues (never awaits a
receiver): when the bounded queue is full the event is dropped and logged, so a slow or dead
receiver costs events, never upload speed. The single sender delivers in order (a receiver
sees an upload's ``created`` before its ``finished``) and retries network errors, timeouts,
429 and 5xx with capped exponential backoff; other answers are final. Progress events are
coalesced: while one waits in the queue, a newer one for the same upload replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tusserver.core.listener import TerminationReason
from tusserver.core.tasks import stop_task
from tusserver.hooks.events import Event, build_event, stable_event_id, upload_view
from tusserver.hooks.signing import signed_headers
from tusserver.models import UploadInfo
from tusserver.settings import WEBHOOK_EVENTS, Settings

if TYPE_CHECKING:
    import httpx

# httpx is imported when the hook starts: a server without hooks never loads it.
log = logging.getLogger("tusserver.webhook")


@dataclass(frozen=True)
class _Attempt:
    status: int | None  # None: no answer (network error or timeout)
    error: str | None = None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class WebhookListener:
    """An UploadListener that delivers events to one URL; ``running()`` drives the sender."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        events: Iterable[str] = WEBHOOK_EVENTS,
        timeout: float = 10.0,
        max_attempts: int = 6,
        queue_size: int = 1000,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        drain_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = secret.encode()
        self._events = frozenset(events)
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._drain_timeout = drain_timeout
        self._clock = clock
        # Items are events, or an upload id whose latest progress waits in ``_progress``.
        self._queue: asyncio.Queue[Event | str] = asyncio.Queue(maxsize=queue_size)
        self._progress: dict[str, Event] = {}
        self._client: httpx.AsyncClient | None = None
        self._sender: asyncio.Task[None] | None = None
        self.dropped = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookListener:
        assert settings.webhook_url is not None
        assert settings.webhook_secret is not None
        return cls(
            settings.webhook_url,
            settings.webhook_secret.get_secret_value(),
            events=settings.webhook_events,
            timeout=settings.webhook_timeout,
            max_attempts=settings.webhook_max_attempts,
            queue_size=settings.webhook_queue_size,
        )

    # -- UploadListener: enqueue only, never await a receiver ------------------------------

    async def upload_created(self, info: UploadInfo) -> None:
        self._emit("created", info)

    async def upload_progress(self, info: UploadInfo) -> None:
        if "progress" not in self._events:
            return
        event = self._event("progress", info, stable=False)
        waiting = info.id in self._progress
        self._progress[info.id] = event
        if not waiting and not self._offer(info.id, event):
            del self._progress[info.id]

    async def upload_finished(self, info: UploadInfo) -> None:
        self._emit("finished", info)

    async def upload_terminated(
        self, info: UploadInfo, *, reason: TerminationReason = "terminated"
    ) -> None:
        # A purge (the catalog removing a deleted file's bytes) is a termination to receivers.
        self._emit("expired" if reason == "expired" else "terminated", info, reason=reason)

    def _emit(self, name: str, info: UploadInfo, *, reason: str | None = None) -> None:
        if name in self._events:
            event = self._event(name, info, stable=True, reason=reason)
            self._offer(event, event)

    def _event(
        self, name: str, info: UploadInfo, *, stable: bool, reason: str | None = None
    ) -> Event:
        event_type = f"upload.{name}"
        return build_event(
            event_type,
            upload_view(info),
            upload_id=info.id,
            now=self._clock(),
            event_id=stable_event_id(info.id, event_type) if stable else None,
            extra={"reason": reason} if reason is not None else None,
        )

    def _offer(self, item: Event | str, event: Event) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "webhook.dropped",
                extra={
                    "event_id": event.id,
                    "event_type": event.type,
                    "upload_id": event.upload_id,
                },
            )
            return False
        return True

    # -- lifecycle --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WebhookListener]:
        import httpx

        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._sender = asyncio.create_task(self._send_forever(), name="webhook-sender")
        try:
            yield self
        finally:
            await self._stop()

    async def _stop(self) -> None:
        """Give queued and in-flight deliveries a short, bounded time, then cancel."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_timeout):
                await self._queue.join()
        await stop_task(self._sender)
        self._sender = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._queue.qsize():
            log.warning("webhook.undelivered", extra={"count": self._queue.qsize()})

    # -- delivery ---------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                event = self._progress.pop(item, None) if isinstance(item, str) else item
                if event is not None:
                    await self._deliver(event)
            except Exception:  # a bug here must not stop every later delivery
                log.exception("webhook.failed")
            finally:
                self._queue.task_done()

    async def _deliver(self, event: Event) -> None:
        fields = {"event_id": event.id, "event_type": event.type, "upload_id": event.upload_id}
        for attempt in range(1, self._max_attempts + 1):
            result = await self._attempt(event)
            outcome = {**fields, "attempt": attempt, "status": result.status}
            if result.delivered:
                log.info("webhook.delivered", extra=outcome)
                return
            if not result.retryable:
                log.warning("webhook.rejected", extra=outcome)
                return
            if attempt == self._max_attempts:
                break
            delay = self._delay(attempt, result.retry_after)
            log.warning("webhook.retry", extra={**outcome, "error": result.error, "delay": delay})
            await asyncio.sleep(delay)
        log.error("webhook.failed", extra={**fields, "attempts": self._max_attempts})

    async def _attempt(self, event: Event) -> _Attempt:
        import httpx

        assert self._client is not None
        headers = signed_headers(self._secret, event.id, event.body, self._clock())
        try:
            # An overall deadline too: httpx's timeout is per read, and a receiver trickling
            # bytes would otherwise hold the sender for ever.
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", self._url, content=event.body, headers=headers) as r,
            ):
                # The body is never read: a receiver's answer is its status.
                return _Attempt(r.status_code, retry_after=_retry_after(r.headers, self._clock()))
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            # The class name only: messages may quote the URL, which can hold a token.
            return _Attempt(None, error=type(exc).__name__)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._backoff_cap)
        delay = min(self._backoff_base * 2.0 ** (attempt - 1), self._backoff_cap)
        # Jitter (half fixed, half random) spreads out retries from many instances.
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - not for security


def _retry_after(headers: httpx.Headers, now: float) -> float | None:
    """``Retry-After`` in seconds from now (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
