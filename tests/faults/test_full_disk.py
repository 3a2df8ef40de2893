"""A really full disk: the data directory is a small tmpfs, filled with a filler file.

Every path that writes to local disk must answer ``507 ERR_INSUFFICIENT_STORAGE`` (a status
tus clients retry) instead of a 500, keep every byte it acknowledged, and leave no file of a
failed creation behind; once the filler is gone, the same client carries on.

Mounting needs root (or CAP_SYS_ADMIN); elsewhere these tests skip, saying why.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.api.support import API, FILES, ORIGIN, SECRET, bearer
from tests.apphttp import serving
from tests.e2e.conftest import TusServer
from tests.e2e.test_tus_js_client import JS_DIR, assert_stored
from tests.e2e.test_tus_js_client import node as node
from tests.netutil import free_port
from tests.services_s3 import CREDENTIALS, REGION
from tusserver.runtime import runtime_of
from tusserver.settings import Settings

pytestmark = pytest.mark.fault

KiB = 1024
MiB = 1024 * KiB
DISK_SIZE = 8 * MiB
FILLER = "zz-filler"
OCTET = "application/offset+octet-stream"


class Disk:
    """A tmpfs of its own; ``fill`` takes its free space, ``free`` gives it back."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def available(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all the free space but about ``leave`` bytes (whole pages)."""
        todo = max(0, self.available() - leave)
        piece = b"\0" * MiB
        with open(self.root / FILLER, "ab") as filler:
            while todo > 0:
                try:
                    todo -= filler.write(piece[: min(todo, MiB)])
                    filler.flush()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        assert self.available() <= leave + 4 * KiB

    def free(self) -> None:
        (self.root / FILLER).unlink(missing_ok=True)

    def files(self) -> set[str]:
        """Every file under the root (the filler aside), as relative paths."""
        found = set()
        for directory, _, names in os.walk(self.root):
            for name in names:
                path = Path(directory, name).relative_to(self.root)
                if str(path) != FILLER:
                    found.add(str(path))
        return found


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    root = tmp_path / "disk"
    root.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount(8) on this machine: a full disk cannot be made")
    if mounted.returncode != 0:
        pytest.skip(
            "mounting a tmpfs needs root (or CAP_SYS_ADMIN): "
            f"a full disk cannot be made here ({mounted.stderr.strip()})"
        )
    try:
        yield Disk(root)
    finally:
        if subprocess.run(["umount", str(root)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
async def http(disk: Disk) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=disk.root, media_probe=False, jwt_secret=SECRET, sweep_interval=3600
    )
    async with serving(settings) as client:
        client.headers.update(bearer("alice"))
        yield client


def assert_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["retry-after"]
    if response.headers["content-type"].startswith("application/json"):
        assert response.json()["error"]["code"] == "ERR_INSUFFICIENT_STORAGE"
    else:
        assert response.text.startswith("ERR_INSUFFICIENT_STORAGE")


async def create(
    http: httpx.AsyncClient, length: int, body: bytes = b"", **headers: str
) -> httpx.Response:
    sent = {"Upload-Length": str(length), **headers}
    if body:
        sent["Content-Type"] = OCTET
    return await http.post(FILES, content=body, headers=sent)


async def patch(http: httpx.AsyncClient, url: str, offset: int, data: bytes) -> httpx.Response:
    headers = {"Upload-Offset": str(offset), "Content-Type": OCTET}
    return await http.patch(url, content=data, headers=headers)


async def offset_of(http: httpx.AsyncClient, url: str) -> int:
    head = await http.head(url)
    assert head.status_code == 200, head.status_code
    return int(head.headers["upload-offset"])


async def download(
    http: httpx.AsyncClient, upload_id: str, headers: dict[str, str] | None = None
) -> bytes:
    response = await http.get(f"{FILES}{upload_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


# -- tus creation -------------------------------------------------------------------------------


async def test_creation_on_a_full_disk_is_507_and_leaves_nothing(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    before = disk.files()
    disk.fill()
    for headers in ({"Upload-Length": "1000"}, {"Upload-Defer-Length": "1"}):
        response = await http.post(FILES, headers=headers)
        assert_full(response)
        assert "location" not in response.headers
        assert disk.files() == before, headers
    disk.free()
    created = await create(http, 3)
    assert created.status_code == 201
    done = await patch(http, created.headers["location"], 0, b"abc")
    assert done.status_code == 204
    assert await download(http, upload_id(created.headers["location"])) == b"abc"


async def test_creation_with_upload_that_runs_out_mid_body_leaves_nothing(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    data = os.urandom(600 * KiB)
    before = disk.files()
    disk.fill(leave=96 * KiB)
    assert_full(await create(http, len(data), data))
    assert disk.files() == before
    disk.free()
    created = await create(http, len(data), data)
    assert created.status_code == 201, created.text
    assert created.headers["upload-offset"] == str(len(data))
    assert await download(http, upload_id(created.headers["location"])) == data


async def test_rest_init_on_a_full_disk_is_507_and_leaves_nothing(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    before = disk.files()
    disk.fill()
    body = {"filename": "clip.mp4", "file_size": 1000, "content_type": "video/mp4"}
    assert_full(await http.post(f"{API}/init", json=body))
    assert disk.files() == before
    disk.free()
    assert (await http.post(f"{API}/init", json=body)).status_code == 201


# -- PATCH ----------------------------------------------------------------------------------------


async def test_patch_that_runs_out_keeps_what_fitted_and_resumes(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    data = os.urandom(3 * MiB)
    created = await create(http, len(data))
    url = created.headers["location"]
    path = disk.root / f"{upload_id(url)}.bin"
    first = 100 * KiB
    assert (await patch(http, url, 0, data[:first])).status_code == 204

    disk.fill(leave=300 * KiB)
    assert_full(await patch(http, url, first, data[first:]))
    # What fitted before the disk filled is durable and acknowledged: the client resumes
    # after it, and never past what the file holds.
    offset = await offset_of(http, url)
    assert first < offset < len(data)
    held = path.read_bytes()
    assert len(held) >= offset
    assert held[:offset] == data[:offset]

    # Still full: the retry fails the same way, and loses nothing.
    assert_full(await patch(http, url, offset, data[offset:]))
    offset = await offset_of(http, url)
    assert path.read_bytes()[:offset] == data[:offset]

    disk.free()
    assert (await patch(http, url, offset, data[offset:])).status_code == 204
    assert await offset_of(http, url) == len(data)
    assert await download(http, upload_id(url)) == data


async def test_patch_with_checksum_that_runs_out_is_all_or_nothing(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    data = os.urandom(MiB)
    created = await create(http, len(data))
    url = created.headers["location"]
    disk.fill(leave=200 * KiB)
    digest = base64.b64encode(hashlib.sha1(data).digest()).decode()
    response = await http.patch(
        url,
        content=data,
        headers={
            "Upload-Offset": "0",
            "Content-Type": OCTET,
            "Upload-Checksum": f"sha1 {digest}",
        },
    )
    assert_full(response)
    assert await offset_of(http, url) == 0
    disk.free()
    assert (await patch(http, url, 0, data)).status_code == 204
    assert await download(http, upload_id(url)) == data


# -- concatenation ------------------------------------------------------------------------------


async def test_concat_final_on_a_full_disk_is_507_and_leaves_no_final(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    pieces = [os.urandom(MiB), os.urandom(MiB + 7)]
    urls = []
    for piece in pieces:
        created = await create(http, len(piece), piece, **{"Upload-Concat": "partial"})
        assert created.status_code == 201, created.text
        urls.append(created.headers["location"])
    final_header = "final;" + " ".join(url.removeprefix(ORIGIN) for url in urls)
    before = disk.files()

    disk.fill(leave=512 * KiB)
    assert_full(await http.post(FILES, headers={"Upload-Concat": final_header}))
    # The final is gone (the partials' waiter lists may name it; a missing final is skipped).
    left = {name for name in disk.files() - before if not name.endswith(".waiters")}
    assert left == set()
    for url, piece in zip(urls, pieces, strict=True):
        assert await offset_of(http, url) == len(piece)

    disk.free()
    final = await http.post(FILES, headers={"Upload-Concat": final_header})
    assert final.status_code == 201, final.text
    assert await download(http, upload_id(final.headers["location"])) == b"".join(pieces)


# -- direct uploads on local disk ---------------------------------------------------------------


async def test_direct_small_upload_on_a_full_disk_is_507_and_leaves_nothing(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    data = os.urandom(MiB)
    admin = bearer("root", admin=True)
    url = f"{API}/direct?filename=a.bin"
    before = disk.files()
    disk.fill(leave=256 * KiB)
    assert_full(await http.post(url, content=data, headers=admin))
    assert disk.files() == before
    disk.free()
    stored = await http.post(url, content=data, headers=admin)
    assert stored.status_code == 201, stored.text
    assert await download(http, stored.json()["id"], admin) == data


async def test_direct_part_put_on_a_full_disk_is_507_then_completes(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    data = os.urandom(MiB)
    body = {"filename": "a.bin", "content_type": "application/octet-stream"}
    created = await http.post(f"{API}/presigned", json=body)
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    put_url, put_headers = answer["upload_url"], answer["headers"]
    before = disk.files()
    disk.fill(leave=256 * KiB)
    # The signed URL is the credential: no bearer token, as a browser would send it.
    async with httpx.AsyncClient(transport=http._transport) as anon:
        assert_full(await anon.put(put_url, content=data, headers=put_headers))
        assert disk.files() == before
        disk.free()
        assert (await anon.put(put_url, content=data, headers=put_headers)).status_code == 200
    done = await http.post(f"{API}/presigned/{answer['upload_id']}/complete")
    assert done.status_code == 200, done.text
    assert await download(http, answer["upload_id"]) == data


# -- delivery ------------------------------------------------------------------------------------


async def test_one_time_token_on_a_full_disk_is_507_and_leaves_no_temp_file(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    created = await create(http, 3, b"abc")
    file_id = upload_id(created.headers["location"])
    await runtime_of(http.app).catalog.drain()  # type: ignore[attr-defined]
    before = disk.files()
    disk.fill()
    assert_full(await http.post(f"{ORIGIN}/api/v1/delivery/tokens", json={"file_id": file_id}))
    assert disk.files() == before
    disk.free()
    minted = await http.post(f"{ORIGIN}/api/v1/delivery/tokens", json={"file_id": file_id})
    assert minted.status_code == 201, minted.text


# -- the S3 backend's part spool -----------------------------------------------------------------


def s3_settings(moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Settings:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    bucket = f"full-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=moto_s3_endpoint, region_name=REGION, **CREDENTIALS
    ).create_bucket(Bucket=bucket)
    return Settings(
        media_probe=False,
        sweep_interval=3600,
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_s3_endpoint,
        max_size=64 * MiB,
        **extra,
    )


async def test_s3_spool_on_a_full_disk_is_507_then_resumes(
    disk: Disk, tmp_path: Path, moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = s3_settings(
        moto_s3_endpoint,
        monkeypatch,
        data_dir=tmp_path / "data",
        # Every part fills on the small disk: nothing is held in memory.
        s3_spool_dir=disk.root,
        s3_spool_memory=0,
    )
    data = os.urandom(2 * MiB)
    async with serving(settings) as http:
        url = (await create(http, len(data))).headers["location"]
        disk.fill(leave=256 * KiB)
        assert_full(await patch(http, url, 0, data))
        offset = await offset_of(http, url)
        assert 0 <= offset < len(data)
        disk.free()
        assert (await patch(http, url, offset, data[offset:])).status_code == 204
        assert await download(http, upload_id(url)) == data


async def test_s3_checksum_spool_on_a_full_disk_is_507_and_stores_nothing(
    disk: Disk, moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checksummed chunk for S3 waits on local disk (under the data dir) until it
    verifies: when that disk is full, nothing of the chunk is stored or acknowledged."""
    settings = s3_settings(moto_s3_endpoint, monkeypatch, data_dir=disk.root)
    data = os.urandom(MiB)
    digest = base64.b64encode(hashlib.sha1(data).digest()).decode()
    headers = {"Upload-Offset": "0", "Content-Type": OCTET, "Upload-Checksum": f"sha1 {digest}"}
    async with serving(settings) as http:
        url = (await create(http, len(data))).headers["location"]
        before = disk.files()
        disk.fill(leave=256 * KiB)
        assert_full(await http.patch(url, content=data, headers=headers))
        assert await offset_of(http, url) == 0
        assert disk.files() == before
        disk.free()
        assert (await http.patch(url, content=data, headers=headers)).status_code == 204
        assert await download(http, upload_id(url)) == data


# -- the SQLite catalog --------------------------------------------------------------------------


async def test_catalog_write_on_a_full_disk_is_507(disk: Disk, http: httpx.AsyncClient) -> None:
    created = await create(http, 3, b"abc")
    file_id = upload_id(created.headers["location"])
    await runtime_of(http.app).catalog.drain()  # type: ignore[attr-defined]
    url = f"{ORIGIN}/api/v1/files/{file_id}"
    # Edits until SQLite needs a page the disk no longer has (its log may still hold a few).
    disk.fill()
    for _ in range(50):
        edited = await http.patch(url, json={"metadata": {"note": os.urandom(1500).hex()}})
        if edited.status_code != 200:
            break
    assert_full(edited)
    disk.free()
    edited = await http.patch(url, json={"metadata": {"note": "room again"}})
    assert edited.status_code == 200, edited.text
    assert edited.json()["metadata"]["note"] == "room again"


async def test_direct_complete_that_cannot_record_finishes_on_retry(
    disk: Disk, http: httpx.AsyncClient
) -> None:
    data = os.urandom(64 * KiB)
    body = {"filename": "a.bin", "content_type": "application/octet-stream"}
    answer = (await http.post(f"{API}/presigned", json=body)).json()
    async with httpx.AsyncClient(transport=http._transport) as anon:
        put = await anon.put(answer["upload_url"], content=data, headers=answer["headers"])
        assert put.status_code == 200
    complete = f"{API}/presigned/{answer['upload_id']}/complete"
    # The object moves into place (a rename needs no room), then its record cannot be written.
    disk.fill()
    assert_full(await http.post(complete))
    disk.free()
    done = await http.post(complete)
    assert done.status_code == 200, done.text
    assert await download(http, answer["upload_id"]) == data


# -- a quota ---------------------------------------------------------------------------------------


async def test_a_full_quota_is_treated_like_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EDQUOT cannot be had on every tmpfs: here the upload's file takes 64 KiB more, then
    its writes fail as over quota, exactly as the kernel reports it (a short write, then
    the error); the same promises hold."""
    real = os.pwritev
    room = {"left": 64 * KiB}

    def quota(fd: int, buffers: Any, position: int) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(".bin"):
            return real(fd, buffers, position)
        if room["left"] == 0:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        whole = b"".join(bytes(b) for b in buffers)[: room["left"]]
        written = real(fd, [whole], position)
        room["left"] -= written
        return written

    data = os.urandom(200 * KiB)
    settings = Settings(data_dir=tmp_path, media_probe=False, sweep_interval=3600)
    async with serving(settings) as http:
        url = (await create(http, len(data))).headers["location"]
        monkeypatch.setattr(os, "pwritev", quota)
        assert_full(await patch(http, url, 0, data))
        offset = await offset_of(http, url)
        assert offset == 64 * KiB
        monkeypatch.undo()
        assert (await patch(http, url, offset, data[offset:])).status_code == 204
        assert await download(http, upload_id(url)) == data


# -- tus-js-client against the real server ------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_tus_js_client_retries_a_507_and_finishes_once_there_is_room(
    disk: Disk, node: str, tmp_path: Path
) -> None:
    """The reason for 507: tus-js-client retries it (any status outside 4xx), resuming from
    HEAD, so an upload that meets a full disk finishes by itself once room is freed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    server = TusServer(free_port(), disk.root, tmp_path / "server.log", env)
    server.start()
    try:
        path = tmp_path / "upload.bin"
        data = os.urandom(3 * MiB)
        path.write_bytes(data)
        disk.fill(leave=512 * KiB)
        options = {"endpoint": server.base_url, "chunkSize": MiB, "retryDelays": [250] * 40}
        client = subprocess.Popen(
            [node, str(JS_DIR / "upload.mjs"), str(path), json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while "storage.disk_full" not in server.logs():
                assert client.poll() is None, client.communicate()
                assert time.monotonic() < deadline, "the upload never met the full disk"
                time.sleep(0.05)
            disk.free()
            out, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0, f"upload.mjs failed:\n{err}\n{out}"
        result = json.loads(out)
        assert 507 in [x["status"] for x in result["exchanges"] if x["method"] == "PATCH"]
        assert_stored(result["url"], data)
    finally:
        server.stop()
