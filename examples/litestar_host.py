"""A Litestar application with tusserver mounted under ``/uploads`` (docs/embedding.md).

    uvicorn examples.litestar_host:app

The tus endpoint is ``/uploads/files/``; the demo page ``/uploads/``. The host's own auth is
an API key in ``X-Api-Key`` (``EXAMPLE_API_KEYS="key:user,..."``, demo keys otherwise),
which its routes check and the mounted tusserver applies through ``authenticate``. Settings
come from ``TUS_*`` (``TUS_DATA_DIR``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from litestar import Litestar, Request, asgi, get
from litestar.exceptions import NotAuthorizedException
from litestar.types import Receive, Scope, Send
from starlette.requests import HTTPConnection

from tusserver.embed import NewUpload, Principal, UploadInfo, UploadRejected, create_mount

API_KEYS = dict(
    pair.split(":", 1)
    for pair in os.environ.get("EXAMPLE_API_KEYS", "alice-key:alice,bob-key:bob").split(",")
)
FINISHED: dict[str, list[str]] = {}


def user_for(api_key: str | None) -> str | None:
    return API_KEYS.get(api_key or "")


async def authenticate(connection: HTTPConnection) -> Principal | None:
    user = user_for(connection.headers.get("x-api-key"))
    return Principal(user_id=user) if user is not None else None


async def pre_create(upload: NewUpload) -> dict[str, str]:
    if (upload.metadata.get("filename") or "").endswith(".exe"):
        raise UploadRejected("executables are not accepted", status=415)
    return {"host": "litestar"}


async def post_finish(info: UploadInfo) -> None:
    finished = FINISHED.setdefault(info.owner or "", [])
    if info.id not in finished:  # may be called twice for one upload after a crash
        finished.append(info.id)


tus = create_mount(authenticate=authenticate, pre_create=pre_create, post_finish=post_finish)


# copy_scope: tusserver reads the scope as Litestar left it, and Litestar's stays untouched.
@asgi("/uploads", is_mount=True, copy_scope=True)
async def uploads(scope: Scope, receive: Receive, send: Send) -> None:
    await tus(scope, receive, send)  # type: ignore[arg-type]


@get("/me/finished")
async def my_finished_uploads(request: Request) -> dict[str, object]:  # type: ignore[type-arg]
    user = user_for(request.headers.get("x-api-key"))
    if user is None:
        raise NotAuthorizedException("an API key is required")
    return {"user": user, "uploads": FINISHED.get(user, [])}


@contextlib.asynccontextmanager
async def tus_lifespan(app: Litestar) -> AsyncIterator[None]:
    # Mounted apps get no lifespan events of their own: the host runs tusserver's.
    async with tus.lifespan():
        yield


app = Litestar(route_handlers=[uploads, my_finished_uploads], lifespan=[tus_lifespan])
