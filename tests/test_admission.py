"""Creation policy on the tus POST and on init: the content-type allowlist (415) and the
per-role maximum size (413), checked before anything is created."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from tests.api.support import FILES, OFFSET_OCTET, SECRET, bearer, created_count, init, metadata
from tests.apphttp import serving
from tusserver.settings import VIDEO_TYPES, Settings


def test_the_video_preset_expands_and_lists_are_normalised() -> None:
    settings = Settings(allowed_content_types="Video, image/PNG ,video/mp4")  # type: ignore[arg-type]
    assert settings.allowed_content_types == (*VIDEO_TYPES, "image/png")
    assert Settings().allowed_content_types == ()


def test_a_role_maximum_above_the_global_one_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_size_user"):
        Settings(max_size=100, max_size_user=101)
    Settings(max_size=0, max_size_admin=10**12)  # no global maximum: anything goes


async def test_allowlist_on_tus_creation(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, allowed_content_types=("video",))) as http:

        async def create(**headers: str) -> int:
            response = await http.post(FILES, headers={"Upload-Length": "4", **headers})
            if response.status_code == 415:
                assert response.text.startswith("ERR_CONTENT_TYPE_NOT_ALLOWED: ")
                assert response.headers["tus-resumable"] == "1.0.0"
            return response.status_code

        assert await create(**{"Upload-Metadata": metadata(filetype="video/webm")}) == 201
        assert await create(**{"Upload-Metadata": metadata(type="video/quicktime")}) == 201
        assert await create(**{"Upload-Metadata": metadata(filetype="Video/MP4; codecs=x")}) == 201
        assert await create(**{"Upload-Metadata": metadata(filetype="image/png")}) == 415
        assert await create(**{"Upload-Metadata": metadata(filename="a.mp4")}) == 415
        assert await create() == 415
        # A partial is not a file; its final upload declares the type and is checked.
        assert await create(**{"Upload-Concat": "partial"}) == 201
        before = await created_count(http)
        # Refused before anything exists, body or not.
        refused = await http.post(
            FILES,
            content=b"data",
            headers={
                "Upload-Length": "4",
                "Upload-Metadata": metadata(filetype="text/html"),
                "Content-Type": OFFSET_OCTET,
            },
        )
        assert refused.status_code == 415
        assert await created_count(http) == before


async def test_allowlist_on_init(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, allowed_content_types=("video",))) as http:
        refused = await init(http, 10, content_type="text/plain")
        assert refused.status_code == 415
        assert refused.json()["error"]["code"] == "ERR_CONTENT_TYPE_NOT_ALLOWED"
        assert "video/mp4" in refused.json()["error"]["message"]
        assert (await init(http, 10, content_type="video/webm")).status_code == 201


async def test_maximum_size_per_role(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        jwt_secret=SECRET,
        max_size=10_000,
        max_size_user=100,
        max_size_admin=1000,
    )
    user, admin = bearer("alice"), bearer("root", admin=True)
    async with serving(settings) as http:

        async def post(length: int, who: dict[str, str], **headers: str) -> int:
            response = await http.post(
                FILES, headers={"Upload-Length": str(length), **who, **headers}
            )
            if response.status_code == 413:
                assert response.text.startswith("ERR_UPLOAD_SIZE_EXCEEDED: ")
            return response.status_code

        assert await post(100, user) == 201
        assert await post(101, user) == 413
        assert await post(1000, admin) == 201
        assert await post(1001, admin) == 413
        # Tus-Max-Size stays the global maximum (the same discovery for everyone).
        options = await http.options(FILES)
        assert options.headers["tus-max-size"] == "10000"

        assert (await init(http, 101, headers=user)).status_code == 413
        assert (await init(http, 101, headers=admin)).status_code == 201

        # A deferred length could outgrow the limit: not offered under one.
        deferred = await http.post(FILES, headers={"Upload-Defer-Length": "1", **user})
        assert deferred.status_code == 400
        assert deferred.text.startswith("ERR_DEFER_LENGTH_UNSUPPORTED")
        # A final upload is as long as its partials together.
        partials = []
        for _ in range(2):
            made = await http.post(
                FILES, headers={"Upload-Length": "60", "Upload-Concat": "partial", **user}
            )
            assert made.status_code == 201
            partials.append(made.headers["location"])
        final = await http.post(
            FILES, headers={"Upload-Concat": "final;" + " ".join(partials), **user}
        )
        assert final.status_code == 413
        one = await http.post(FILES, headers={"Upload-Concat": f"final;{partials[0]}", **user})
        assert one.status_code == 201
