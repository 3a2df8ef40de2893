"""``tusserver.embed``: the mount's extension points, driven in process through a Starlette
host (httpx over ASGI, the real app and its lifespan). The frameworks themselves, under real
uvicorn with real clients, are tests/e2e/test_embedding.py."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from tusserver.embed import (
    NewUpload,
    Principal,
    TusMount,
    UploadInfo,
    UploadRejected,
    create_mount,
)
from tusserver.security.auth import mint_token
from tusserver.settings import Settings

ORIGIN = "http://host.test"
ENDPOINT = f"{ORIGIN}/up/files/"
TUS = {"Tus-Resumable": "1.0.0"}


async def by_header(connection: HTTPConnection) -> Principal | None:
    user = connection.headers.get("x-user")
    return Principal(user_id=user) if user is not None else None


@contextlib.asynccontextmanager
async def hosted(tus: TusMount) -> AsyncIterator[httpx.AsyncClient]:
    host = Starlette(routes=[Mount("/up", app=tus)])
    transport = httpx.ASGITransport(app=host)
    async with tus.lifespan(), httpx.AsyncClient(transport=transport, headers=TUS) as http:
        yield http


def settings(tmp_path: Path, **more: Any) -> Settings:
    return Settings(data_dir=tmp_path, **more)


async def create(http: httpx.AsyncClient, user: str | None, **headers: str) -> httpx.Response:
    who = {"X-User": user} if user is not None else {}
    return await http.post(ENDPOINT, headers={"Upload-Length": "5", **who, **headers})


async def test_the_hosts_authenticator_decides(tmp_path: Path) -> None:
    secret = "s" * 40
    tus = create_mount(settings(tmp_path, jwt_secret=secret), authenticate=by_header)
    async with hosted(tus) as http:
        made = await create(http, "alice")
        assert made.status_code == 201
        assert made.headers["location"].startswith(ENDPOINT)
        # Nobody: 401, with no Bearer challenge (the scheme is the host's).
        refused = await create(http, None)
        assert refused.status_code == 401
        assert "www-authenticate" not in refused.headers
        # Our JWTs no longer open anything: the host's auth replaced them.
        token = {"Authorization": f"Bearer {mint_token(secret, 'alice')}"}
        assert (
            await http.post(ENDPOINT, headers={"Upload-Length": "5", **token})
        ).status_code == 401
        # A user id that could not be an owner is refused like a missing one, never a 500.
        for bad in ("", " alice", "a\tb", "x" * 256):
            answer = await create(http, bad)
            assert answer.status_code == 401, bad
        assert (
            await http.head(made.headers["location"], headers={"X-User": "bob"})
        ).status_code == 404


async def test_an_authenticator_returning_nonsense_is_a_401(tmp_path: Path) -> None:
    async def broken(connection: HTTPConnection) -> Principal | None:
        return "alice"  # type: ignore[return-value]

    async with hosted(create_mount(settings(tmp_path), authenticate=broken)) as http:
        assert (await create(http, "alice")).status_code == 401


async def test_pre_create_sees_the_upload_and_adds_metadata(tmp_path: Path) -> None:
    seen: list[NewUpload] = []

    async def gate(upload: NewUpload) -> Mapping[str, str]:
        seen.append(upload)
        return {"tenant": "acme"}

    tus = create_mount(settings(tmp_path), authenticate=by_header, pre_create=gate)
    async with hosted(tus) as http:
        name = base64.b64encode(b"a.txt").decode()
        made = await create(http, "alice", **{"Upload-Metadata": f"filename {name}"})
        assert made.status_code == 201
        head = await http.head(made.headers["location"], headers={"X-User": "alice"})
        assert f"tenant {base64.b64encode(b'acme').decode()}" in head.headers["upload-metadata"]
    assert seen == [NewUpload(owner="alice", length=5, metadata={"filename": "a.txt"})]


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (UploadRejected("over your quota", status=413), 413, "ERR_UPLOAD_REJECTED"),
        # Not a client status: refused all the same, as a 403.
        (UploadRejected("odd", status=500), 403, "ERR_UPLOAD_REJECTED"),
        # The host's function failed: the gate fails closed, retryable.
        (RuntimeError("database down"), 503, "ERR_HOOK_UNAVAILABLE"),
    ],
)
async def test_pre_create_refusals(
    tmp_path: Path, raised: Exception, status: int, code: str
) -> None:
    async def gate(upload: NewUpload) -> None:
        raise raised

    async with hosted(create_mount(settings(tmp_path), pre_create=gate)) as http:
        answer = await create(http, None)
        assert answer.status_code == status
        assert code in answer.text


@pytest.mark.parametrize("added", [{"bad key": "x"}, {"k": 1}, ["k"]])
async def test_pre_create_metadata_must_be_valid(tmp_path: Path, added: object) -> None:
    async def gate(upload: NewUpload) -> Any:
        return added

    async with hosted(create_mount(settings(tmp_path), pre_create=gate)) as http:
        answer = await create(http, None)
        assert answer.status_code == 503
        assert "ERR_HOOK_UNAVAILABLE" in answer.text


async def test_one_pre_create_hook_only(tmp_path: Path) -> None:
    async def gate(upload: NewUpload) -> None:
        return None

    both = settings(
        tmp_path, pre_create_hook_url="http://127.0.0.1:9/hook", webhook_secret="w" * 32
    )
    tus = create_mount(both, pre_create=gate)
    # Hooks are built when the lifespan opens the runtime.
    with pytest.raises(ValueError, match="not both"):
        await _enter(tus)


async def _enter(tus: TusMount) -> None:
    async with tus.lifespan():
        pass


async def test_post_finish_hears_completion_and_cannot_fail_it(tmp_path: Path) -> None:
    heard: list[UploadInfo] = []

    async def finished(info: UploadInfo) -> None:
        heard.append(info)
        raise RuntimeError("the host's bug")

    tus = create_mount(settings(tmp_path), authenticate=by_header, post_finish=finished)
    async with hosted(tus) as http:
        url = (await create(http, "alice")).headers["location"]
        patch = {
            "X-User": "alice",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        }
        assert (await http.patch(url, content=b"hello", headers=patch)).status_code == 204
    assert [(x.id, x.owner, x.offset) for x in heard] == [(url.rsplit("/", 1)[1], "alice", 5)]


async def test_lifespan_opens_and_closes_the_runtime(tmp_path: Path) -> None:
    tus = create_mount(settings(tmp_path))
    host = Starlette(routes=[Mount("/up", app=tus)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), headers=TUS) as http:
        # Before the host entered it: not ready, retry.
        assert (await http.post(ENDPOINT, headers={"Upload-Length": "1"})).status_code == 503
        async with tus.lifespan():
            assert tus.runtime is not None
            with pytest.raises(RuntimeError, match="already running"):
                async with tus.lifespan():
                    pass
            assert (await http.post(ENDPOINT, headers={"Upload-Length": "1"})).status_code == 201
        assert tus.runtime is None


def test_the_docs_show_the_examples_as_they_are() -> None:
    """Every Python block of docs/embedding.md is a piece of an example host, verbatim (so
    it runs), except the signature, whose parameters must be create_mount's."""
    import inspect
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "embedding.md").read_text()
    examples = "\n".join(p.read_text() for p in sorted((root / "examples").glob("*_host.py")))
    python = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    signature, pieces = python[0], python[1:]
    assert pieces
    for piece in pieces:
        assert piece in examples, piece
    shown = re.findall(r"^    (\w+)=", signature, re.M)
    assert shown == list(inspect.signature(create_mount).parameters)


async def test_a_lifespan_scope_that_reaches_the_mount_is_served(tmp_path: Path) -> None:
    """A host (or server) that does forward lifespan events opens and closes it too."""
    import asyncio

    tus = create_mount(settings(tmp_path))
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: list[str] = []

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: Mapping[str, Any]) -> None:
        outbox.append(message["type"])

    inbox.put_nowait({"type": "lifespan.startup"})
    running = asyncio.create_task(tus({"type": "lifespan", "state": {}}, receive, send))
    while not outbox:
        await asyncio.sleep(0.01)
    assert outbox == ["lifespan.startup.complete"]
    assert tus.runtime is not None
    inbox.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(running, 10)
    assert outbox == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert tus.runtime is None
