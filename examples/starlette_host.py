"""A Starlette application with tusserver mounted under ``/uploads`` (docs/embedding.md).

    uvicorn examples.starlette_host:app

The tus endpoint is ``/uploads/files/``; the demo page ``/uploads/``. The host authenticates
with Starlette's ``AuthenticationMiddleware`` (an API key in ``X-Api-Key``;
``EXAMPLE_API_KEYS="key:user,..."``, demo keys otherwise); ``authenticate`` hands the user it
put in the scope to tusserver. Settings come from ``TUS_*`` (``TUS_DATA_DIR``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from tusserver.embed import NewUpload, Principal, UploadInfo, UploadRejected, create_mount

API_KEYS = dict(
    pair.split(":", 1)
    for pair in os.environ.get("EXAMPLE_API_KEYS", "alice-key:alice,bob-key:bob").split(",")
)
FINISHED: dict[str, list[str]] = {}


class ApiKeyBackend(AuthenticationBackend):
    """The host's auth: every request, mounted apps included, passes through it."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = API_KEYS.get(conn.headers.get("x-api-key", ""))
        if user is None:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


async def authenticate(connection: HTTPConnection) -> Principal | None:
    """The user the host's middleware found, as tusserver's principal."""
    user = connection.scope.get("user")
    if not isinstance(user, BaseUser) or not user.is_authenticated:
        return None
    return Principal(user_id=user.display_name)


async def pre_create(upload: NewUpload) -> dict[str, str]:
    if (upload.metadata.get("filename") or "").endswith(".exe"):
        raise UploadRejected("executables are not accepted", status=415)
    return {"host": "starlette"}


async def post_finish(info: UploadInfo) -> None:
    finished = FINISHED.setdefault(info.owner or "", [])
    if info.id not in finished:  # may be called twice for one upload after a crash
        finished.append(info.id)


tus = create_mount(authenticate=authenticate, pre_create=pre_create, post_finish=post_finish)


@requires("authenticated")
async def my_finished_uploads(request: Request) -> JSONResponse:
    user = request.user.display_name
    return JSONResponse({"user": user, "uploads": FINISHED.get(user, [])})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Mounted apps get no lifespan events of their own: the host runs tusserver's.
    async with tus.lifespan():
        yield


app = Starlette(
    routes=[
        Route("/me/finished", my_finished_uploads),
        Mount("/uploads", app=tus),
    ],
    middleware=[Middleware(AuthenticationMiddleware, backend=ApiKeyBackend())],
    lifespan=lifespan,
)
