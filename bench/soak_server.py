"""``tusserver serve`` for the soak, plus a probe: on SIGUSR1 the sizes of the server's
bounded in-memory tables are written as JSON to ``$SOAK_PROBE_FILE``.

Owns the probe and nothing else: the server is the CLI's own ``serve`` (same settings,
same uvicorn configuration). Its app is caught on the way out of ``create_app`` so the
probe can read its state; the probe runs on the event loop (``loop.add_signal_handler``),
between two steps of request handling, never in the middle of one. It calls
``gc.collect()`` first, so cyclic garbage not yet collected does not pass for a leak.

Usage: ``SOAK_PROBE_FILE=/tmp/probe.json python -m bench.soak_server serve --port ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

PROBE_ENV = "SOAK_PROBE_FILE"


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _middlewares(app: Any) -> Iterator[Any]:
    """The app's middleware chain, outermost first (each holds the next as ``.app``)."""
    current = getattr(app, "middleware_stack", None)
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "app", None)


# name -> where the table lives, from the app. A path that no longer resolves (the code
# moved on) is left out of the probe, not an error: the soak reports what it finds.
_TABLES = {
    "service.held_locks": "runtime.service._held",
    "service.progress_at": "runtime.service._progress_at",
    "digests.running": "runtime.service.digests._running",
    "digests.heads": "runtime.service.digests._heads",
    "locker.held": "runtime.service.ctx.locker._held",
    "locker.holders": "runtime.service.ctx.locker._holders",
    "locker.queues": "runtime.service.ctx.locker._queues",
    "locker.local": "runtime.service.ctx.locker._local",
    "idempotency.entries": "runtime.idempotency.store._entries",
    "catalog.queued": "runtime.catalog._queued",
    "catalog.processing": "runtime.catalog._processing",
    "catalog.insert_queue": "runtime.catalog.repo._queued",
    "delivery.quota_subjects": "runtime.delivery._quota._local._tat",
}


def _resolve(root: Any, path: str) -> Any:
    value = root
    for name in path.split("."):
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def _tables(app: Any) -> dict[str, Any]:
    """Every per-request, per-upload, per-caller table the audit found, by name."""
    from tusserver.core import fsutil

    tables = {name: _resolve(app, path) for name, path in _TABLES.items()}
    tables["fsutil.dir_syncs"] = getattr(fsutil, "_dir_syncs", None)
    # The rate limiter's in-process buckets (absent when they live in Redis).
    tables["ratelimit.counters"] = _resolve(app, "runtime.limiter.buckets._tat")
    return {name: table for name, table in tables.items() if table is not None}


_previous: list[tracemalloc.Snapshot] = []


def _grown() -> list[str]:
    """With ``PYTHONTRACEMALLOC`` set: the source lines whose memory grew the most since
    the last probe (a diagnosis aid; tracing makes the server several times slower)."""
    if not tracemalloc.is_tracing():
        return []
    current = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    previous = _previous[0] if _previous else None
    _previous[:] = [current]
    if previous is None:
        return []
    return [str(stat) for stat in current.compare_to(previous, "lineno")[:15]]


def snapshot(app: Any, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    gc.collect()
    sizes = {name: _length(table) for name, table in _tables(app).items()}
    stored = _resolve(app, "runtime.idempotency.store.bytes")
    if isinstance(stored, int):
        sizes["idempotency.bytes"] = stored
    return {
        "sizes": sizes,
        "tasks": len(asyncio.all_tasks(loop)),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "gc_objects": len(gc.get_objects()),
        "grown": _grown(),
    }


def _dump(app: Any, loop: asyncio.AbstractEventLoop, path: Path, seq: list[int]) -> None:
    seq[0] += 1
    try:
        data = {"seq": seq[0], **snapshot(app, loop)}
    except Exception as exc:  # the probe must never take the server down
        data = {"seq": seq[0], "error": f"{type(exc).__name__}: {exc}"}
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, sort_keys=True))
    os.replace(temp, path)


def _with_probe(app: Any, path: Path) -> Any:
    inner = app.router.lifespan_context
    seq = [0]

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, _dump, app, loop, path, seq)
            try:
                yield state
            finally:
                loop.remove_signal_handler(signal.SIGUSR1)

    app.router.lifespan_context = lifespan
    return app


def main(argv: list[str]) -> int:
    import tusserver.app
    from tusserver import cli

    path = Path(os.environ[PROBE_ENV])
    real: Callable[..., Any] = tusserver.app.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        return _with_probe(real(*args, **kwargs), path)

    # cli.serve imports create_app from the module when it runs, so it gets this one.
    tusserver.app.create_app = create_app  # type: ignore[assignment]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
