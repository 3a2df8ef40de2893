"""Every length a client states fits a signed 64-bit integer (what every store, tusd and
the clients represent), even with no ``TUS_MAX_SIZE``: through tus headers, the sum of an
``Upload-Concat`` final's partials, the REST init and the direct-upload sizes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.support import ORIGIN, SECRET, bearer
from tests.apphttp import serving
from tusserver.settings import Settings

MAX_INT = 2**63 - 1
FILES = f"{ORIGIN}/files/"
API = f"{ORIGIN}/api/v1/uploads"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, media_probe=False, jwt_secret=SECRET, max_size=0)
    async with serving(settings) as client:
        client.headers.update(bearer("alice"))
        yield client


async def partial(http: httpx.AsyncClient, length: int) -> str:
    created = await http.post(
        FILES, headers={"Upload-Length": str(length), "Upload-Concat": "partial"}
    )
    assert created.status_code == 201, created.text
    return str(created.headers["Location"]).removeprefix(ORIGIN)


async def test_a_final_whose_partials_sum_past_int64_is_413(http: httpx.AsyncClient) -> None:
    big, small = await partial(http, MAX_INT), await partial(http, 1)
    final = await http.post(FILES, headers={"Upload-Concat": f"final;{big} {small}"})
    assert final.status_code == 413, final.text
    assert final.text.startswith("ERR_UPLOAD_SIZE_EXCEEDED")
    fits = await http.post(FILES, headers={"Upload-Concat": f"final;{big}"})
    assert fits.status_code == 201, fits.text


async def test_tus_lengths_past_int64_are_400(http: httpx.AsyncClient) -> None:
    response = await http.post(FILES, headers={"Upload-Length": str(MAX_INT + 1)})
    assert response.status_code == 400
    assert response.text.startswith("ERR_INVALID_UPLOAD_LENGTH")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/init", {"filename": "a.bin", "content_type": "video/mp4", "file_size": MAX_INT + 1}),
        ("/presigned", {"filename": "a.txt", "content_type": "text/plain", "file_size": 2**64}),
        ("/multipart", {"filename": "a.mp4", "content_type": "video/mp4", "file_size": 2**63}),
        (
            "/multipart",
            {
                "filename": "a.mp4",
                "content_type": "video/mp4",
                "file_size": 10,
                "part_size": 2**63,
            },
        ),
    ],
)
async def test_rest_sizes_past_int64_are_422(
    http: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    response = await http.post(API + path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


async def test_a_part_number_past_the_s3_limit_is_422(http: httpx.AsyncClient) -> None:
    body = {"filename": "a.mp4", "content_type": "video/mp4", "file_size": 10}
    upload_id = (await http.post(f"{API}/multipart", json=body)).json()["upload_id"]
    parts = {"parts": [{"part_number": 2**64, "etag": "x"}]}
    response = await http.post(f"{API}/multipart/{upload_id}/complete", json=parts)
    assert response.status_code == 422, response.text


async def test_a_final_over_deferred_partials_never_takes_a_length_past_int64(
    http: httpx.AsyncClient,
) -> None:
    deferred = await http.post(
        FILES, headers={"Upload-Defer-Length": "1", "Upload-Concat": "partial"}
    )
    assert deferred.status_code == 201, deferred.text
    late = str(deferred.headers["Location"]).removeprefix(ORIGIN)
    small = await partial(http, 1)
    final = await http.post(FILES, headers={"Upload-Concat": f"final;{late} {small}"})
    assert final.status_code == 201, final.text
    declared = await http.patch(
        ORIGIN + late,
        content=b"",
        headers={
            "Upload-Offset": "0",
            "Upload-Length": str(MAX_INT),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert declared.status_code == 204, declared.text
    head = await http.head(final.headers["Location"])
    assert head.status_code == 200
    assert int(head.headers.get("Upload-Length", "0")) <= MAX_INT
