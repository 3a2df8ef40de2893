"""Everything a request handler needs, built once by ``tusserver.compose``, shared by all."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tusserver.core.listener import UploadListener
from tusserver.ops.metrics import NO_METRICS, MetricsSink
from tusserver.settings import Settings
from tusserver.state.base import Locker, StateStore
from tusserver.state.outbox import CatalogOutbox
from tusserver.storage.base import StoreComposer


@dataclass
class TusContext:
    settings: Settings
    composer: StoreComposer
    state: StateStore
    locker: Locker
    listener: UploadListener
    clock: Callable[[], float] = field(default=time.time)
    metrics: MetricsSink = field(default=NO_METRICS)
    # Finished uploads waiting for their catalog record (None: no catalog to wait for).
    outbox: CatalogOutbox | None = None
