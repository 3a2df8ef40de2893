"""GET download of a finished upload: ranges, validators and safe headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tusserver.core.context import TusContext
from tusserver.edge.download import stream as _stream
from tusserver.edge.responses import error_response
from tusserver.errors import NotFound, TusError
from tusserver.models import UploadInfo
from tusserver.settings import Settings
from tusserver.storage.base import StoreComposer
from tusserver.tus.handlers.get import handle_get

DATA = b"0123456789"


class DictReader:
    """Serves bytes from a dict in small chunks, and records what was asked."""

    def __init__(self, blobs: dict[str, bytes], chunk: int = 3) -> None:
        self.blobs = blobs
        self.chunk = chunk
        self.calls: list[tuple[str, int, int]] = []
        self.closed = 0

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        self.calls.append((info.id, start, end))
        try:
            data = self.blobs[info.id]
            for pos in range(start, end, self.chunk):
                yield data[pos : min(pos + self.chunk, end)]
        finally:
            self.closed += 1


class Unused:
    """Stands in for the state store, locker, listener and core store: GET touches none."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"handle_get must not use {name}")


def make_context(reader: DictReader | None) -> TusContext:
    unused = cast(Any, Unused())
    return TusContext(
        settings=Settings(),
        composer=StoreComposer(core=unused, reader=reader),
        state=unused,
        locker=unused,
        listener=unused,
    )


def upload(
    upload_id: str = "abc",
    *,
    data: bytes = DATA,
    offset: int | None = None,
    length: int | None = -1,
    **metadata: str | None,
) -> UploadInfo:
    size = len(data) if length == -1 else length
    stored = len(data) if offset is None else offset
    return UploadInfo(
        id=upload_id,
        length=size,
        offset=stored,
        metadata=metadata,
        # A complete upload has been finished (its object exists), as the service makes it.
        finished_at=1.0 if size is not None and stored >= size else None,
    )


class Server:
    """A minimal caller: looks the upload up (404 is the caller's job) and renders errors."""

    def __init__(self, *infos: UploadInfo, reader: bool = True, data: bytes = DATA) -> None:
        self.infos = {info.id: info for info in infos}
        self.reader = DictReader({info.id: data for info in infos}) if reader else None
        self.ctx = make_context(self.reader)
        self.app = Starlette(routes=[Route("/files/{id}", self.endpoint, methods=["GET"])])

    async def endpoint(self, request: Request) -> Response:
        try:
            info = self.infos.get(request.path_params["id"])
            if info is None:
                raise NotFound()
            return await handle_get(request, self.ctx, info)
        except TusError as error:
            return error_response(error, method=request.method)

    async def get(self, upload_id: str = "abc", **headers: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(
                f"/files/{upload_id}", headers={k.replace("_", "-"): v for k, v in headers.items()}
            )


def single(response: httpx.Response, name: str) -> str:
    values = response.headers.get_list(name)
    assert len(values) == 1, (name, values)
    return values[0]


# -- whole body ---------------------------------------------------------------------------


async def test_full_download() -> None:
    server = Server(upload(filetype="image/png", filename="cat.png"))
    r = await server.get()
    assert r.status_code == 200
    assert r.content == DATA
    assert single(r, "content-length") == "10"
    assert single(r, "etag") == '"abc-10"'
    assert single(r, "accept-ranges") == "bytes"
    assert single(r, "content-type") == "image/png"
    assert single(r, "content-disposition") == 'inline; filename="cat.png"'
    assert single(r, "x-content-type-options") == "nosniff"
    assert single(r, "cache-control") == "private, no-cache"
    assert single(r, "content-security-policy") == "default-src 'none'; sandbox"
    assert "content-range" not in r.headers
    assert server.reader is not None
    assert server.reader.calls == [("abc", 0, 10)]


async def test_large_body_is_streamed_in_chunks() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    server = Server(upload(data=data), data=data)
    assert server.reader is not None
    server.reader.chunk = 64 * 1024
    r = await server.get()
    assert r.status_code == 200
    assert r.content == data
    assert single(r, "content-length") == str(len(data))


async def test_zero_length_upload_is_an_empty_200() -> None:
    server = Server(upload(data=b""), data=b"")
    r = await server.get()
    assert r.status_code == 200
    assert r.content == b""
    assert single(r, "content-length") == "0"
    assert single(r, "etag") == '"abc-0"'
    assert server.reader is not None
    assert server.reader.calls == []


# -- not downloadable ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "info",
    [
        upload(offset=4),  # bytes still missing
        upload(offset=0),
        upload(length=None, offset=10),  # deferred length: never finished
        # every byte stored, but finishing failed (S3's CompleteMultipartUpload): no object
        upload().replace(finished_at=None),
    ],
)
async def test_unfinished_upload_is_409(info: UploadInfo) -> None:
    server = Server(info)
    r = await server.get()
    assert r.status_code == 409
    assert r.text.startswith("ERR_UPLOAD_NOT_FINISHED:")
    assert server.reader is not None
    assert server.reader.calls == []


async def test_store_without_reader_is_405() -> None:
    r = await Server(upload(), reader=False).get()
    assert r.status_code == 405
    assert r.text.startswith("ERR_METHOD_NOT_ALLOWED:")


# -- ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=2-5", 2, 5),
        ("bytes=0-0", 0, 0),
        ("bytes=7-", 7, 9),
        ("bytes=-3", 7, 9),
        ("bytes=4-999", 4, 9),
        ("bytes=0-9", 0, 9),
    ],
)
async def test_range_is_206(header: str, start: int, end: int) -> None:
    server = Server(upload())
    r = await server.get(range=header)
    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert single(r, "content-range") == f"bytes {start}-{end}/10"
    assert single(r, "content-length") == str(end - start + 1)
    assert single(r, "etag") == '"abc-10"'
    assert server.reader is not None
    assert server.reader.calls == [("abc", start, end + 1)]


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "bytes=5-2", "lines=1-2", "bytes=x"])
async def test_ignored_range_serves_everything(header: str) -> None:
    r = await Server(upload()).get(range=header)
    assert r.status_code == 200
    assert r.content == DATA


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=50-60", "bytes=-0"])
async def test_unsatisfiable_range_is_416(header: str) -> None:
    server = Server(upload())
    r = await server.get(range=header)
    assert r.status_code == 416
    assert r.text.startswith("ERR_RANGE_NOT_SATISFIABLE:")
    assert single(r, "content-range") == "bytes */10"
    assert server.reader is not None
    assert server.reader.calls == []


async def test_range_on_zero_length_upload_is_416() -> None:
    r = await Server(upload(data=b""), data=b"").get(range="bytes=0-")
    assert r.status_code == 416
    assert single(r, "content-range") == "bytes */0"


# -- validators ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "if_none_match", ['"abc-10"', "*", 'W/"abc-10"', '"other", "abc-10"', ' "x" ,W/"abc-10" ']
)
async def test_if_none_match_is_304(if_none_match: str) -> None:
    server = Server(upload(filetype="image/png"))
    r = await server.get(if_none_match=if_none_match, range="bytes=0-1")
    assert r.status_code == 304
    assert r.content == b""
    assert single(r, "etag") == '"abc-10"'
    assert single(r, "cache-control") == "private, no-cache"
    assert "content-length" not in r.headers
    assert server.reader is not None
    assert server.reader.calls == []


@pytest.mark.parametrize("if_none_match", ['"abc-11"', '"abc"', "abc-10", '"xyz-10"'])
async def test_if_none_match_mismatch_serves_the_body(if_none_match: str) -> None:
    r = await Server(upload()).get(if_none_match=if_none_match)
    assert r.status_code == 200
    assert r.content == DATA


async def test_etag_changes_with_length() -> None:
    r = await Server(upload(data=b"abc"), data=b"abc").get()
    assert single(r, "etag") == '"abc-3"'


async def test_if_range_match_serves_the_range() -> None:
    r = await Server(upload()).get(range="bytes=2-3", if_range='"abc-10"')
    assert r.status_code == 206
    assert r.content == b"23"


@pytest.mark.parametrize(
    "if_range", ['"abc-9"', 'W/"abc-10"', "Wed, 21 Oct 2015 07:28:00 GMT", "", '"abc-10", "x"']
)
async def test_if_range_mismatch_serves_everything(if_range: str) -> None:
    r = await Server(upload()).get(range="bytes=2-3", if_range=if_range)
    assert r.status_code == 200
    assert r.content == DATA
    assert "content-range" not in r.headers


async def test_if_range_mismatch_wins_over_an_unsatisfiable_range() -> None:
    # The range is ignored entirely, so it cannot produce a 416 either.
    r = await Server(upload()).get(range="bytes=50-", if_range='"stale-10"')
    assert r.status_code == 200
    assert r.content == DATA


# -- type and disposition ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filetype", "content_type", "inline"),
    [
        ("image/png", "image/png", True),
        ("video/mp4", "video/mp4", True),
        ("audio/mpeg", "audio/mpeg", True),
        ("text/plain", "text/plain", True),
        ("TEXT/PLAIN; charset=utf-8", "text/plain", True),
        ("text/html", "text/html", False),
        ("image/svg+xml", "image/svg+xml", False),
        ("application/pdf", "application/pdf", False),
        ("application/javascript", "application/javascript", False),
        (None, "application/octet-stream", False),
        ("", "application/octet-stream", False),
        ("not a type", "application/octet-stream", False),
        ("text/html\u2028x/y", "application/octet-stream", False),
    ],
)
async def test_content_type_and_disposition(
    filetype: str | None, content_type: str, inline: bool
) -> None:
    r = await Server(upload(filetype=filetype, filename="f.bin")).get()
    assert r.status_code == 200
    # Exactly the sanitised type: Starlette must not append a charset we cannot vouch for.
    assert single(r, "content-type") == content_type
    disposition = single(r, "content-disposition")
    assert disposition == f'{"inline" if inline else "attachment"}; filename="f.bin"'
    assert single(r, "content-security-policy") == "default-src 'none'; sandbox"
    assert single(r, "x-content-type-options") == "nosniff"


async def test_missing_filename_falls_back() -> None:
    r = await Server(upload()).get()
    assert single(r, "content-disposition") == 'attachment; filename="download"'


async def test_hostile_filename_is_sanitised() -> None:
    r = await Server(upload(filename='../../etc/pa"ss\r\nwd', filetype="text/plain")).get()
    assert single(r, "content-disposition") == (
        """inline; filename="_.._etc_pa_sswd"; filename*=UTF-8''_.._etc_pa%22sswd"""
    )


async def test_unicode_filename_uses_the_extended_form() -> None:
    r = await Server(upload(filename="Überweisung.pdf", filetype="application/pdf")).get()
    assert single(r, "content-disposition") == (
        "attachment; filename=\"_berweisung.pdf\"; filename*=UTF-8''%C3%9Cberweisung.pdf"
    )


# -- streaming -----------------------------------------------------------------------------


async def test_stream_closes_the_store_iterator_when_abandoned() -> None:
    reader = DictReader({"abc": DATA}, chunk=2)
    stream = _stream(reader, upload(), 0, 10)
    assert await anext(stream) == b"01"
    await stream.aclose()  # what happens when the client goes away mid-download
    assert reader.closed == 1
