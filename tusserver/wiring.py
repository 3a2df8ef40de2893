"""The only module that names concrete backends: it builds them from settings."""

from __future__ import annotations

from dataclasses import dataclass

from tusserver.settings import Settings
from tusserver.state.base import Locker, StateStore
from tusserver.state.local import LocalStateStore
from tusserver.state.locks import InProcessLocker
from tusserver.storage.base import StoreComposer
from tusserver.storage.local import LocalStore


@dataclass(frozen=True)
class Components:
    composer: StoreComposer
    state: StateStore
    locker: Locker


def build_components(settings: Settings) -> Components:
    root = settings.data_dir
    store = LocalStore(
        root,
        write_buffer=settings.write_buffer,
        checkpoint_interval=settings.checkpoint_interval,
    )
    return Components(
        composer=StoreComposer.from_store(store),
        state=LocalStateStore(root),
        locker=InProcessLocker(),
    )
