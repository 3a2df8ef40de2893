"""Startup against unusable backends fails with a message that says what to fix, and never
repeats a secret."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from tests.services_s3 import MOTO
from tusserver.compose import StartupError, open_components
from tusserver.settings import Settings


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket closes


async def test_unreachable_redis_is_named_without_its_password(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, state="redis", redis_url=f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    )
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(StartupError) as caught:
            await open_components(settings, stack)
    assert "Redis is unreachable" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_missing_bucket_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(
        data_dir=tmp_path,
        storage="s3",
        s3_bucket="no-such-bucket",
        s3_endpoint_url=MOTO.ensure_started(),
        max_size=1 << 30,
    )
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(StartupError, match="no-such-bucket"):
            await open_components(settings, stack)


async def test_an_unusable_spool_dir_is_named(tmp_path: Path) -> None:
    # A file where the S3 part spool should be: refused at startup, not on the first part.
    blocker = tmp_path / "spool"
    blocker.write_text("not a directory")
    settings = Settings(
        data_dir=tmp_path,
        storage="s3",
        s3_bucket="any-bucket",
        s3_spool_dir=blocker,
        max_size=1 << 30,
    )
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(StartupError, match="TUS_S3_SPOOL_DIR"):
            await open_components(settings, stack)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"storage": "s3"}, "s3_bucket"),
        ({"storage": "s3", "s3_bucket": "b"}, "max_size"),
        ({"cors_allow_credentials": True}, "cors_origins"),
    ],
)
def test_incomplete_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("state", ["local", "redis"])
async def test_the_state_backend_holds_every_shared_table(tmp_path: Path, state: str) -> None:
    """One ``TUS_STATE`` choice reaches every table the instances share, in serve and sweep
    alike (both open this runtime)."""
    from tests.services_redis import REDIS
    from tusserver.compose import open_runtime

    overrides = {"state": "redis", "redis_url": REDIS.ensure_started()} if state == "redis" else {}
    settings = Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    async with open_runtime(settings) as runtime:
        direct = runtime.direct
        assert direct is not None
        tables = [
            runtime.service.ctx.state,
            runtime.service.ctx.locker,
            runtime.sweep_job.lease,
            runtime.service.ctx.outbox,
            runtime.idempotency.store,
            runtime.limiter.buckets,
            direct.records,
        ]
        prefixes = {"local": ("Local", "InProcess", "File"), "redis": ("Redis",)}[state]
        names = [type(table).__name__ for table in tables]
        assert all(name.startswith(prefixes) for name in names), names
