"""A FastAPI application with tusserver mounted under ``/uploads`` (docs/embedding.md).

    uvicorn examples.fastapi_host:app

The tus endpoint is ``/uploads/files/``; the demo page ``/uploads/``. The host's own auth is
an API key in ``X-Api-Key`` (``EXAMPLE_API_KEYS="key:user,..."``; demo keys otherwise), used by
its routes as a FastAPI dependency and by the mounted tusserver through ``authenticate``.
Settings come from ``TUS_*`` (``TUS_DATA_DIR`` for where the bytes go).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from starlette.requests import HTTPConnection

from tusserver.embed import NewUpload, Principal, UploadInfo, UploadRejected, create_mount

API_KEYS = dict(
    pair.split(":", 1)
    for pair in os.environ.get("EXAMPLE_API_KEYS", "alice-key:alice,bob-key:bob").split(",")
)
# What post_finish heard, per user (a real host would write to its database).
FINISHED: dict[str, list[str]] = {}


def user_for(api_key: str | None) -> str | None:
    return API_KEYS.get(api_key or "")


async def current_user(x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The host's dependency for its own routes."""
    user = user_for(x_api_key)
    if user is None:
        raise HTTPException(401, "an API key is required")
    return user


async def authenticate(connection: HTTPConnection) -> Principal | None:
    """Dependencies do not run for a mounted app: the same lookup, as tusserver's principal."""
    user = user_for(connection.headers.get("x-api-key"))
    return Principal(user_id=user) if user is not None else None


async def pre_create(upload: NewUpload) -> dict[str, str]:
    """Refuse executables; tag everything else with where it came from."""
    if (upload.metadata.get("filename") or "").endswith(".exe"):
        raise UploadRejected("executables are not accepted", status=415)
    return {"host": "fastapi"}


async def post_finish(info: UploadInfo) -> None:
    finished = FINISHED.setdefault(info.owner or "", [])
    if info.id not in finished:  # may be called twice for one upload after a crash
        finished.append(info.id)


tus = create_mount(authenticate=authenticate, pre_create=pre_create, post_finish=post_finish)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Mounted apps get no lifespan events of their own: the host runs tusserver's.
    async with tus.lifespan():
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/uploads", tus)


@app.get("/me/finished")
async def my_finished_uploads(user: Annotated[str, Depends(current_user)]) -> dict[str, object]:
    return {"user": user, "uploads": FINISHED.get(user, [])}
