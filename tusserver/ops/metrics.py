"""Prometheus metrics: this module owns every metric the server exports at ``/metrics``.

One ``Metrics`` object per app, each with its own ``CollectorRegistry`` (never the global
default registry: several apps share one process in the tests, and a library should not
publish into a registry its host may already serve). Deep code (lockers, the upload service,
the S3 client's event hooks, the sweeper) is handed the object explicitly and only calls the
small recording methods of ``MetricsSink``; ``NO_METRICS``, a sink that ignores everything,
is the default wherever nobody passed one (metrics switched off, a locker built by a test).

With ``serve --workers N`` every worker counts into prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor before any worker imports the library),
and ``/metrics`` on any worker renders the sum over all of them, dead workers' counts
included, so totals never go back when a worker is replaced. Gauges say how they combine.

Labels are bounded on purpose: HTTP requests by normalised method and status (never the path,
which holds upload ids), S3 calls by operation name and error code.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusserver.models import UploadInfo

UploadEvent = Literal["created", "finished", "terminated"]
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"})

# A PATCH streams for minutes; the default buckets stop at 10 s.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Waits are bounded by TUS_LOCK_WAIT (3 s by default).
_LOCK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10)
# A part upload of 16 MiB or more takes seconds; a HEAD takes milliseconds.
_S3_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Where the before-call hook leaves its start time, in botocore's per-call context dict.
_S3_STARTED = "tus_metrics_started"


def normalise_method(method: str) -> str:
    # Anything else a client sends would add a label value per made-up verb.
    return method if method in KNOWN_METHODS else "OTHER"


class MetricsSink:
    """What instrumented code records. This base records nothing (``NO_METRICS``)."""

    def http_request(self, method: str, status: int, seconds: float) -> None:
        return None

    def protocol_request(self, protocol: str, method: str, status: int) -> None:
        return None

    def bytes_received(self, count: int) -> None:
        return None

    def upload_event(self, event: UploadEvent) -> None:
        return None

    def active_upload(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def lock_waited(self, seconds: float) -> None:
        return None

    def lock_release_requested(self) -> None:
        return None

    def s3_request(self, operation: str, seconds: float, error: str | None) -> None:
        return None

    def swept(self, *, expired: int, bytes_freed: int, skipped_busy: int, failed: int) -> None:
        return None

    def catalog_backlog(self, *, pending: int, recorded: int) -> None:
        return None


NO_METRICS = MetricsSink()


class Metrics(MetricsSink):
    """Every ``tus_*`` metric of one app, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._declare_http(self.registry)
        self._declare_uploads(self.registry)
        self._declare_locks(self.registry)
        self._declare_backends_and_sweeps(self.registry)

    def _declare_http(self, r: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "tus_http_requests_total",
            "HTTP requests answered, by method and status.",
            ["method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "tus_http_request_duration_seconds",
            "Time from a request's arrival until its response was sent, by method.",
            ["method"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.protocol_requests = Counter(
            "tus_protocol_requests_total",
            "Upload-protocol requests answered, by protocol (tus-1.0.0, ietf-<interop version>,"
            " ietf-current, ietf-unsupported), method and status.",
            ["protocol", "method", "status"],
            registry=r,
        )

    def _declare_uploads(self, r: CollectorRegistry) -> None:
        self.bytes = Counter(
            "tus_bytes_received_total",
            "Upload bytes stored by PATCH and creation-with-upload (not discarded chunks).",
            registry=r,
        )
        self.uploads: dict[UploadEvent, Counter] = {
            "created": Counter("tus_uploads_created_total", "Uploads created.", registry=r),
            "finished": Counter(
                "tus_uploads_finished_total", "Whole (non-partial) uploads finished.", registry=r
            ),
            "terminated": Counter(
                "tus_uploads_terminated_total", "Uploads removed by a client's DELETE.", registry=r
            ),
        }
        self.uploads_expired = Counter(
            "tus_uploads_expired_total", "Expired uploads removed by the sweeper.", registry=r
        )
        self.active = Gauge(
            "tus_active_uploads",
            "Requests writing an upload's bytes right now (holding its lock).",
            registry=r,
            # Summed over the workers alive (a dead worker's uploads are not active).
            multiprocess_mode="livesum",
        )

    def _declare_locks(self, r: CollectorRegistry) -> None:
        self.lock_waits = Counter(
            "tus_lock_waits_total",
            "Lock acquisitions that found the upload busy and waited (then got it or a 423).",
            registry=r,
        )
        self.lock_wait_seconds = Histogram(
            "tus_lock_wait_seconds",
            "Time spent waiting for a busy upload's lock.",
            buckets=_LOCK_BUCKETS,
            registry=r,
        )
        self.lock_release_requests = Counter(
            "tus_lock_release_requests_total",
            "Requests that asked a lock holder to let go (a client resuming a stalled PATCH).",
            registry=r,
        )

    def _declare_backends_and_sweeps(self, r: CollectorRegistry) -> None:
        self.s3_duration = Histogram(
            "tus_s3_request_duration_seconds",
            "S3 API calls, retries included, by operation.",
            ["operation"],
            buckets=_S3_BUCKETS,
            registry=r,
        )
        self.s3_errors = Counter(
            "tus_s3_errors_total",
            "S3 API calls that failed, by operation and error code (or exception class).",
            ["operation", "code"],
            registry=r,
        )
        self.sweeps = Counter("tus_sweeps_total", "Expiry sweeps run.", registry=r)
        self.sweep_bytes_freed = Counter(
            "tus_sweep_bytes_freed_total", "Bytes of expired uploads removed.", registry=r
        )
        self.sweep_skipped_busy = Counter(
            "tus_sweep_skipped_busy_total",
            "Expired uploads left for the next sweep because a request held them.",
            registry=r,
        )
        self.sweep_failures = Counter(
            "tus_sweep_failures_total", "Expired uploads the sweeper failed to remove.", registry=r
        )
        self.catalog_pending = Gauge(
            "tus_catalog_pending_records",
            "Finished uploads whose catalog record is not written yet, as of the last sweep.",
            registry=r,
            # One sweeper at a time counts them all: its latest count is the answer.
            multiprocess_mode="mostrecent",
        )
        self.catalog_recorded_late = Counter(
            "tus_catalog_records_recovered_total",
            "Catalog records the sweep wrote for uploads whose recording at finish failed.",
            registry=r,
        )

    def http_request(self, method: str, status: int, seconds: float) -> None:
        method = normalise_method(method)
        self.http_requests.labels(method, str(status)).inc()
        self.http_duration.labels(method).observe(seconds)

    def protocol_request(self, protocol: str, method: str, status: int) -> None:
        self.protocol_requests.labels(protocol, normalise_method(method), str(status)).inc()

    def bytes_received(self, count: int) -> None:
        if count > 0:
            self.bytes.inc(count)

    def upload_event(self, event: UploadEvent) -> None:
        self.uploads[event].inc()

    def active_upload(self) -> contextlib.AbstractContextManager[object]:
        return self.active.track_inprogress()

    def lock_waited(self, seconds: float) -> None:
        self.lock_waits.inc()
        self.lock_wait_seconds.observe(seconds)

    def lock_release_requested(self) -> None:
        self.lock_release_requests.inc()

    def s3_request(self, operation: str, seconds: float, error: str | None) -> None:
        self.s3_duration.labels(operation).observe(seconds)
        if error is not None:
            self.s3_errors.labels(operation, error).inc()

    def swept(self, *, expired: int, bytes_freed: int, skipped_busy: int, failed: int) -> None:
        self.sweeps.inc()
        self.uploads_expired.inc(expired)
        self.sweep_bytes_freed.inc(bytes_freed)
        self.sweep_skipped_busy.inc(skipped_busy)
        self.sweep_failures.inc(failed)

    def catalog_backlog(self, *, pending: int, recorded: int) -> None:
        self.catalog_pending.set(pending)
        self.catalog_recorded_late.inc(recorded)

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        # Every worker's files, this one's included (what this registry holds is in them).
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class MetricsListener:
    """Counts upload lifecycle events; one of the app's ``UploadListener``s."""

    def __init__(self, metrics: MetricsSink) -> None:
        self._metrics = metrics

    async def upload_created(self, info: UploadInfo) -> None:
        self._metrics.upload_event("created")

    async def upload_finished(self, info: UploadInfo) -> None:
        self._metrics.upload_event("finished")

    async def upload_terminated(self, info: UploadInfo, *, reason: str = "terminated") -> None:
        # Expiry has its own counter (from the sweeper); a purge follows a catalog delete.
        if reason == "terminated":
            self._metrics.upload_event("terminated")

    async def upload_progress(self, info: UploadInfo) -> None:
        # Bytes are counted on the write path, where discarded chunks are known.
        return None


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request (outermost, so refusals count too)."""

    def __init__(self, app: ASGIApp, *, metrics: MetricsSink) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        noted = StatusNotingSend(send)
        try:
            await self.app(scope, receive, noted)
        finally:
            self.metrics.http_request(scope["method"], noted.status, time.perf_counter() - started)


class StatusNotingSend:
    """An ASGI ``send`` that passes every message on and remembers the answer's status.

    500 until a response starts: if nothing answers before an exception escapes, that is what
    the server sends.
    """

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return Response(
            metrics.render(),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )

    return serve


class EventHooks(Protocol):
    """botocore's (and aiobotocore's) per-client event emitter, as far as we use it."""

    def register(self, event_name: str, handler: Callable[..., Any]) -> None: ...


def instrument_s3(events: EventHooks, metrics: MetricsSink) -> None:
    """Time every S3 API call of one client through its event hooks.

    aiobotocore emits ``before-call`` before the first attempt, ``after-call`` once the
    response is in (retries included, errors with a status included) and ``after-call-error``
    when no response came (connection failures). They share one ``context`` dict per call,
    which carries the start time. A streamed GET is timed until its headers arrive.
    """

    def before(context: dict[str, Any], **_: Any) -> None:
        context[_S3_STARTED] = time.perf_counter()
        # None: a non-None answer would stand in for the real response (emit_until_response).

    def after(
        event_name: str, context: dict[str, Any], http_response: Any, parsed: Any, **_: Any
    ) -> None:
        error: str | None = None
        if getattr(http_response, "status_code", 200) >= 300:
            found = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
            error = str(found or http_response.status_code)
        _observe(event_name, context, error)

    def after_error(
        event_name: str, context: dict[str, Any], exception: BaseException, **_: Any
    ) -> None:
        _observe(event_name, context, type(exception).__name__)

    def _observe(event_name: str, context: dict[str, Any], error: str | None) -> None:
        started = context.pop(_S3_STARTED, None)
        if started is None:
            return
        # "after-call.s3.PutObject" -> "PutObject": a closed set, fine as a label.
        operation = event_name.rsplit(".", 1)[-1]
        metrics.s3_request(operation, time.perf_counter() - started, error)

    events.register("before-call.s3", before)
    events.register("after-call.s3", after)
    events.register("after-call-error.s3", after_error)
