"""``TUS_MAX_METADATA_SIZE``: metadata is bounded by the app itself, on every route that
creates uploads, so the bound holds under any ASGI server (the HTTP layer's header limit
exists only under ``tusserver serve``). Driven through the ASGI app, as another server would.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from tests.api.support import API, FILES, created_count, init_body
from tests.apphttp import serving
from tusserver.settings import Settings

LIMIT = 4096


def many_keys(count: int) -> str:
    """``count`` pairs such as ``k17 djE3``: thousands of keys in a few tens of KiB."""
    return ",".join(f"k{i} {base64.b64encode(f'v{i}'.encode()).decode()}" for i in range(count))


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "catalog" not in p.name)


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert "ERR_METADATA_TOO_LARGE" in response.text


async def test_tus_creation_refuses_metadata_over_the_limit(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, max_metadata_size=LIMIT)) as http:
        before = await created_count(http)
        files_before = stored_files(tmp_path)
        for value in (many_keys(1000), "big " + "QUFB" * 2_000_000):  # 1000 keys; 8 MB
            response = await http.post(
                FILES, headers={"Upload-Length": "4", "Upload-Metadata": value}
            )
            assert_too_large(response)
        # ...and concatenation's final upload, which carries metadata too.
        partial = await http.post(FILES, headers={"Upload-Length": "4", "Upload-Concat": "partial"})
        assert partial.status_code == 201
        final = await http.post(
            FILES,
            headers={
                "Upload-Concat": f"final;{partial.headers['location']}",
                "Upload-Metadata": many_keys(1000),
            },
        )
        assert_too_large(final)
        assert await created_count(http) == before + 1  # the partial only
        assert len(stored_files(tmp_path)) > len(files_before)  # the partial's files...
        # ...but no file of a refused upload is anywhere near the refused header's size.
        assert max(p.stat().st_size for p in stored_files(tmp_path)) < 2 * LIMIT


async def test_metadata_within_the_limit_is_kept_and_echoed(tmp_path: Path) -> None:
    # The default (32 KiB) takes thousands of small keys.
    async with serving(Settings(data_dir=tmp_path)) as http:
        value = many_keys(2000)
        assert len(value) > 20_000
        created = await http.post(FILES, headers={"Upload-Length": "4", "Upload-Metadata": value})
        assert created.status_code == 201, created.text
        head = await http.head(created.headers["location"])
        assert head.headers["upload-metadata"] == value


async def test_the_json_api_refuses_metadata_over_the_limit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_metadata_size=LIMIT, media_probe=False)
    async with serving(settings) as http:
        body = init_body(10, metadata={f"k{i}": "x" * 1000 for i in range(8)})
        response = await http.post(f"{API}/init", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "ERR_METADATA_TOO_LARGE"
        fits = await http.post(f"{API}/init", json=init_body(10, metadata={"k": "x" * 1000}))
        assert fits.status_code == 201, fits.text
