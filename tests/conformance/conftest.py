"""Fixtures: ``make_client(**settings_overrides)`` builds an app on a fresh data dir."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from .tusclient_http import FakeClock, MakeClient, RecordingListener, TusHTTP


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """Factory: ``make_client(clock=None, listener=None, **settings_overrides) -> TusHTTP``.

    Each call gets its own data dir. The in-process sweeper is parked (one hour between
    sweeps) unless a test overrides ``sweep_interval``, so request-time behaviour is what
    is observed.
    """
    from tusserver.app import create_app
    from tusserver.settings import Settings

    counter = itertools.count()
    with ExitStack() as stack:

        def factory(
            *,
            clock: FakeClock | None = None,
            listener: RecordingListener | None = None,
            **overrides: Any,
        ) -> TusHTTP:
            data_dir = tmp_path / f"data{next(counter)}"
            data_dir.mkdir()
            options: dict[str, Any] = {"data_dir": data_dir, "sweep_interval": 3600.0}
            options.update(overrides)
            settings = Settings(**options)
            app_kwargs: dict[str, Any] = {}
            if clock is not None:
                app_kwargs["clock"] = clock
            if listener is not None:
                app_kwargs["listener"] = listener
            app = create_app(settings, **app_kwargs)
            client = stack.enter_context(
                TestClient(app, base_url="http://testserver", follow_redirects=False)
            )
            return TusHTTP(client, data_dir=data_dir, settings=settings, clock=clock)

        yield factory


@pytest.fixture
def tus(make_client: MakeClient) -> TusHTTP:
    """The default server: no size limit, expiration on (86400 s), every extension."""
    return make_client()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(int(time.time())))


@pytest.fixture
def events() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def hooked(make_client: MakeClient, events: RecordingListener) -> TusHTTP:
    """The default server with a listener that records lifecycle events."""
    return make_client(listener=events)
