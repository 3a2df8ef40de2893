"""tus-js-client 4.3.1 (pinned in js/package.json) under Node against the real server.

Node and npm come from the OS (CI installs them); the client itself is installed once per
session into js/node_modules. Each upload is run by js/upload.mjs and checked with a GET.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import TusServer, download_sha256, sha256

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MiB = 1024 * 1024
JS_DIR = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tus-js-client installed next to upload.mjs."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.skip("node and npm are not installed (CI installs them: apt-get install nodejs npm)")
    if not (JS_DIR / "node_modules" / "tus-js-client" / "package.json").exists():
        # `npm ci` installs exactly the lockfile; fall back to `install` if it is missing.
        verb = "ci" if (JS_DIR / "package-lock.json").exists() else "install"
        done = subprocess.run(  # a few seconds; generous for a cold npm cache
            [npm_bin, verb, "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm {verb} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return node_bin


def js_upload(node: str, path: Path, **options: Any) -> dict[str, Any]:
    """Upload ``path`` with tus-js-client; returns {"url", "exchanges"}."""
    done = subprocess.run(
        [node, str(JS_DIR / "upload.mjs"), str(path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 0, f"upload.mjs failed:\n{done.stderr}\n{done.stdout}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def statuses(result: dict[str, Any], method: str) -> list[int]:
    return [x["status"] for x in result["exchanges"] if x["method"] == method]


def assert_clean(result: dict[str, Any]) -> None:
    # The client retries 409/423/5xx and network errors silently; a passing upload that
    # needed a retry still hides a server problem.
    bad = [x for x in result["exchanges"] if not 200 <= x["status"] < 300]
    assert not bad, f"non-2xx answers: {bad}"


def make_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path, data


def assert_stored(url: str, data: bytes) -> None:
    size, digest = download_sha256(url)
    assert size == len(data)
    assert digest == sha256(data)


def test_default_options(node: str, tus_server: TusServer, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 3 * MiB + 5)
    result = js_upload(
        node, path, endpoint=tus_server.base_url, metadata={"filename": "a.bin", "filetype": ""}
    )
    assert_clean(result)
    # Default chunkSize is Infinity: one POST, one PATCH with everything.
    assert statuses(result, "POST") == [201]
    assert statuses(result, "PATCH") == [204]
    assert result["url"].startswith(tus_server.base_url)
    assert_stored(result["url"], data)


def test_chunk_size_1mib(node: str, tus_server: TusServer, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 5 * MiB)
    result = js_upload(node, path, endpoint=tus_server.base_url, chunkSize=MiB)
    assert_clean(result)
    assert statuses(result, "PATCH") == [204] * 5
    assert_stored(result["url"], data)


def test_parallel_uploads_concatenate(node: str, tus_server: TusServer, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 5 * MiB + 3)
    result = js_upload(
        node,
        path,
        endpoint=tus_server.base_url,
        parallelUploads=3,
        metadata={"filename": "parallel.bin"},
    )
    assert_clean(result)
    # Three partial uploads, then the final one that concatenates them.
    posts = [x for x in result["exchanges"] if x["method"] == "POST"]
    assert [x["concat"] for x in posts[:3]] == ["partial"] * 3
    assert posts[3]["concat"].startswith("final;")
    assert [x["status"] for x in posts] == [201] * 4
    assert len(statuses(result, "PATCH")) == 3
    final_url = result["url"]
    partial_urls = {x["url"] for x in result["exchanges"] if x["method"] == "PATCH"}
    assert final_url not in partial_urls
    assert_stored(final_url, data)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(
            5 * MiB,
            id="multiple-of-chunk",
            # At an exact multiple of chunkSize the length would arrive on a final PATCH with
            # an empty body (the server side of that is pinned in tests/conformance).
            # tus-js-client 4.3.1's StreamSource never sends it: it answers every PATCH up to
            # 5 MiB with 204, then waits forever for data after the stream has ended. Strict,
            # so a client release that fixes it turns this red and the mark gets removed.
            marks=pytest.mark.xfail(
                reason="tus-js-client 4.3.1 StreamSource stalls at an exact chunk multiple",
                strict=True,
            ),
        ),
        pytest.param(5 * MiB + 123, id="ragged"),
    ],
)
def test_deferred_length_stream(
    node: str, tus_server: TusServer, tmp_path: Path, size: int
) -> None:
    path, data = make_file(tmp_path, size)
    result = js_upload(
        node,
        path,
        endpoint=tus_server.base_url,
        source="stream",
        uploadLengthDeferred=True,
        chunkSize=MiB,
    )
    assert_clean(result)
    post = next(x for x in result["exchanges"] if x["method"] == "POST")
    assert post["deferLength"] == "1"
    assert post["uploadLength"] is None
    patches = [x for x in result["exchanges"] if x["method"] == "PATCH"]
    # Only the PATCH that reached the end of the stream declares the length.
    assert [x["uploadLength"] for x in patches] == [None] * (len(patches) - 1) + [str(size)]
    assert patches[-1]["offset"] == str(size)
    assert_stored(result["url"], data)
