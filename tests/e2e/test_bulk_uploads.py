"""A thousand small files from one user, as fast as tus-js-client sends them, against the real
server with its SHIPPED settings: every upload succeeds, with no refused or retried request.

The client is the one a browser page runs (tus-js-client 4.3.1, its default retries, which
never retry a 429), twenty uploads at a time as Uppy's tus plugin does by default. Runs on the
embedded default (local state), with authentication on (one user's JWT), and with the
rate-limit buckets in Redis (distributed mode). Each upload is then read back and compared.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tusserver.security.auth import mint_token

from .conftest import TusServer
from .test_tus_js_client import JS_DIR, node  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FILES = 1000
SIZE = 1024
LIMIT = 20  # Uppy's tus plugin uploads 20 files at a time by default
SECRET = "bulk-" + "s" * 40


def write_files(directory: Path) -> dict[str, bytes]:
    directory.mkdir()
    files = {f"{n:04d}.bin": os.urandom(SIZE) for n in range(FILES)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


def bulk_upload(node: str, directory: Path, **options: Any) -> dict[str, Any]:  # noqa: F811
    done = subprocess.run(
        [node, str(JS_DIR / "bulk.mjs"), str(directory), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.stdout, f"bulk.mjs printed nothing ({done.returncode}):\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    assert not result["failures"], result["failures"][:5]
    assert done.returncode == 0, done.stderr
    return result


def assert_all_stored(
    result: dict[str, Any], files: dict[str, bytes], headers: dict[str, str]
) -> None:
    # Only 2xx answers: no request was refused and then saved by a retry.
    refused = {k: n for k, n in result["answers"].items() if not k.split()[1].startswith("2")}
    assert not refused, refused
    assert result["answers"].get("POST 201") == FILES
    uploads = {u["file"]: u["url"] for u in result["uploads"]}
    assert sorted(uploads) == sorted(files)
    assert len(set(uploads.values())) == FILES
    # One kept-alive connection reads them all back.
    origin = urlsplit(next(iter(uploads.values())))
    conn = http.client.HTTPConnection(origin.hostname or "127.0.0.1", origin.port, timeout=30)
    try:
        for name, url in uploads.items():
            assert url.startswith(f"{origin.scheme}://{origin.netloc}/"), url
            conn.request("GET", urlsplit(url).path, headers={"Tus-Resumable": "1.0.0", **headers})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, files[name]), name
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["embedded", "jwt", "redis"])
def test_a_thousand_small_uploads_all_succeed_with_the_shipped_limits(
    node: str,  # noqa: F811
    server_factory: Callable[..., TusServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    mode: str,
) -> None:
    headers: dict[str, str] = {}
    settings: dict[str, str] = {}  # nothing about rate limits: the shipped defaults
    if mode == "jwt":
        settings["TUS_JWT_SECRET"] = SECRET
        headers["Authorization"] = f"Bearer {mint_token(SECRET, 'alice')}"
    elif mode == "redis":
        settings["TUS_STATE"] = "redis"
        settings["TUS_REDIS_URL"] = request.getfixturevalue("redis_url")
        settings["TUS_REDIS_PREFIX"] = f"bulk-{uuid.uuid4().hex[:12]}:"
    server = server_factory(**settings)
    files = write_files(tmp_path / "folder")
    result = bulk_upload(
        node, tmp_path / "folder", endpoint=server.base_url, limit=LIMIT, headers=headers
    )
    assert_all_stored(result, files, headers)
