"""The composition root: the only code that names concrete backends and builds the runtime.

What it builds: a ``tusserver.runtime.Runtime``, the typed object holding the opened
backends (store composer, upload state, locker, sweeper lease), the upload service, the
catalog, delivery, direct uploads, the request guards (idempotency records, rate-limit
buckets), the hooks and listeners, and the sweep job.

Who builds it: ``open_runtime(settings, ...)`` (``compose.runtime``), an async context
manager that opens every client and closes them on exit. The app's lifespan
(``tusserver.app``) and ``tusserver sweep`` (``tusserver.ops.sweep_runner``) both use it, so the
server's sweep and the sweep process run the same job with the same listeners.

How it is laid out:

- ``backends``: the byte store (``TUS_STORAGE``: local disk or S3) and, in ``STATE_BACKENDS``,
  the state backend (``TUS_STATE``);
- ``shared``: ``SharedState``, what a state backend provides: every table the instances must
  agree on (upload state, locks, lease, catalog outbox, idempotency records, rate-limit
  buckets, one-time tokens, download quotas, direct-upload records);
- ``local_state``, ``redis_state``: the two state backends;
- ``runtime``: ``open_runtime``, wiring the parts together.

Adding a state backend: one module implementing ``SharedState`` (its classes for each
table), its line in ``backends.STATE_BACKENDS``, and its name in ``Settings.state``.
"""

from tusserver.compose.backends import Components, build_components, is_local, open_components
from tusserver.compose.runtime import open_runtime
from tusserver.compose.shared import StartupError

__all__ = [
    "Components",
    "StartupError",
    "build_components",
    "is_local",
    "open_components",
    "open_runtime",
]
