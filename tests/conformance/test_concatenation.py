"""Concatenation and concatenation-unfinished (which we implement).

See docs/protocol.md, "Concatenation".
"""

from __future__ import annotations

import os

import pytest

from tusserver import errors

from .tusclient_http import (
    OFFSET_OCTET,
    MakeClient,
    RecordingListener,
    TusHTTP,
    assert_error,
    assert_status,
    csv_items,
    metadata_header,
    upload_id,
    upload_path,
)


def two_partials(tus: TusHTTP) -> tuple[str, str]:
    return tus.upload(b"hello", concat="partial"), tus.upload(b" world", concat="partial")


def test_concatenation_advertised(tus: TusHTTP) -> None:
    """``concatenation`` and ``concatenation-unfinished`` are advertised."""
    extensions = csv_items(tus.options().headers["tus-extension"])
    assert "concatenation" in extensions
    assert "concatenation-unfinished" in extensions


def test_partial_creation_and_head(tus: TusHTTP) -> None:
    """Partial -> 201 + Location; HEAD has Upload-Concat: partial, offset
    and length."""
    response = tus.create(5, concat="partial")
    assert_status(response, 201)
    url = response.headers["location"]
    upload_id(url)
    tus.append(url, 0, b"he")
    head = tus.head(url)
    assert head.headers.get("upload-concat") == "partial"
    assert head.headers.get("upload-offset") == "2"
    assert head.headers.get("upload-length") == "5"


def test_partial_patch_like_any_upload(tus: TusHTTP) -> None:
    """Offsets, 409 and completion work on a partial as on any upload."""
    url = tus.new(5, concat="partial")
    tus.append(url, 0, b"he")
    assert_error(tus.patch(url, 0, b"llo"), 409, errors.MismatchedOffset.code)
    tus.append(url, 2, b"llo")
    assert tus.content(url) == b"hello"


FINAL_FORMS = {
    # id -> template; {a}/{b} are upload ids
    "relative-paths": "final;/files/{a} /files/{b}",
    "absolute-urls": "final;http://testserver/files/{a} http://testserver/files/{b}",
    "other-host-and-scheme": (
        "final;https://uploads.example.com/files/{a} https://uploads.example.com/files/{b}"
    ),
    "space-and-trailing-slash": "final; /files/{a} /files/{b}/",
}


@pytest.mark.parametrize("template", FINAL_FORMS.values(), ids=FINAL_FORMS.keys())
def test_final_concatenation(tus: TusHTTP, template: str) -> None:
    """Final over two complete
    partials -> 201; complete when the POST returns; HEAD echoes Upload-Concat as received."""
    a, b = two_partials(tus)
    header = template.format(a=upload_id(a), b=upload_id(b))
    response = tus.create(concat=header)
    assert_status(response, 201)
    final = response.headers["location"]
    upload_id(final)
    head = tus.head(final)
    assert_status(head, 200)
    assert head.headers.get("upload-concat") == header
    assert head.headers.get("upload-length") == "11"
    assert head.headers.get("upload-offset") == "11"
    assert tus.content(final) == b"hello world"


def test_order_is_kept(tus: TusHTTP) -> None:
    """``final;b a`` -> `` worldhello``."""
    a, b = two_partials(tus)
    final = tus.new(concat=f"final;{upload_path(b)} {upload_path(a)}")
    assert tus.content(final) == b" worldhello"


def test_partials_are_reusable_but_not_listed_twice(tus: TusHTTP) -> None:
    """One partial used by two finals: the partials are copied, never consumed.
    A partial listed twice in one final is a 400 (a changed decision: repeating one
    small partial a thousand times multiplied what the server wrote a thousandfold)."""
    a, b = two_partials(tus)
    response = tus.create(concat=f"final;{upload_path(a)} {upload_path(a)}")
    assert_error(response, 400, errors.InvalidConcat.code)
    first = tus.new(concat=f"final;{upload_path(b)} {upload_path(a)}")
    other = tus.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert tus.content(first) == b" worldhello"
    assert tus.content(other) == b"hello world"
    assert tus.content(a) == b"hello"


@pytest.mark.parametrize(
    ("offset", "body"), [(11, b""), (0, b"x"), (11, b"x")], ids=["end-empty", "zero", "end"]
)
def test_patch_on_final_403(tus: TusHTTP, offset: int, body: bytes) -> None:
    """PATCH to a final -> 403 ERR_MODIFY_FINAL (checked before the
    offset); the final and its partials are unchanged."""
    a, b = two_partials(tus)
    final = tus.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    before = tus.snapshot()
    response = tus.patch(final, offset, body)
    assert_error(response, 403, errors.ModifyFinal.code)
    assert tus.snapshot() == before
    assert tus.content(final) == b"hello world"
    assert tus.content(a) == b"hello"


def test_final_checked_before_content_type(tus: TusHTTP) -> None:
    """403 (final) comes before 415 (content type) and 409 (offset)."""
    a, b = two_partials(tus)
    final = tus.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    response = tus.patch(final, 5, b"x", content_type="text/plain")
    assert_error(response, 403, errors.ModifyFinal.code)


def test_final_post_with_body_403(tus: TusHTTP) -> None:
    """A final POST carrying a body -> 403; nothing created."""
    a, b = two_partials(tus)
    before = tus.snapshot()
    response = tus.create(concat=f"final;{upload_path(a)} {upload_path(b)}", body=b"hello world")
    assert_error(response, 403, errors.ModifyFinal.code)
    assert "location" not in response.headers
    assert tus.snapshot() == before


def test_final_upload_length_ignored(tus: TusHTTP) -> None:
    """Upload-Length on a final is ignored; the length is the sum."""
    a, b = two_partials(tus)
    final = tus.new(999, concat=f"final;{upload_path(a)} {upload_path(b)}")
    head = tus.head(final)
    assert head.headers["upload-length"] == head.headers["upload-offset"] == "11"


@pytest.mark.parametrize("kind", ["unknown", "non-partial", "final", "unknown-absolute"])
def test_invalid_partial_references_400(tus: TusHTTP, kind: str) -> None:
    """Unknown ids, non-partial uploads and finals
    cannot be concatenated -> 400 ERR_INVALID_CONCAT; nothing created."""
    a, b = two_partials(tus)
    if kind == "unknown":
        bad = f"/files/{'f' * 32}"
    elif kind == "unknown-absolute":
        bad = f"http://testserver/files/{'e' * 32}"
    elif kind == "non-partial":
        bad = upload_path(tus.upload(b"plain"))
    else:
        bad = upload_path(tus.new(concat=f"final;{upload_path(a)} {upload_path(b)}"))
    before = tus.snapshot()
    response = tus.create(concat=f"final;{upload_path(a)} {bad}")
    assert_error(response, 400, errors.InvalidConcat.code)
    assert "location" not in response.headers
    assert tus.snapshot() == before


def test_sum_over_max_size_413(make_client: MakeClient) -> None:
    """Sum of partial lengths > Tus-Max-Size -> 413; nothing created."""
    tus = make_client(max_size=10)
    a = tus.upload(b"123456", concat="partial")
    b = tus.upload(b"abcdef", concat="partial")
    before = tus.snapshot()
    response = tus.create(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert_error(response, 413, errors.SizeExceeded.code)
    assert tus.snapshot() == before


def test_unfinished_sum_over_max_size_413(make_client: MakeClient) -> None:
    """With concatenation-unfinished: known lengths already exceed the limit."""
    tus = make_client(max_size=10)
    a = tus.new(6, concat="partial")
    b = tus.new(6, concat="partial")
    response = tus.create(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert_error(response, 413, errors.SizeExceeded.code)


@pytest.mark.parametrize(
    "value",
    ["final;", "final; ", "final", "foo", "partial;x", "partial;/files/x", "final;/other/abc"],
)
def test_malformed_upload_concat_400(tus: TusHTTP, value: str) -> None:
    """Malformed Upload-Concat -> 400 ERR_INVALID_CONCAT; nothing created."""
    before = tus.snapshot()
    response = tus.create(5, concat=value)
    assert_error(response, 400, errors.InvalidConcat.code)
    assert tus.snapshot() == before


def test_final_metadata_from_own_post_only(tus: TusHTTP) -> None:
    """Partial metadata is not inherited; the final's comes from its own POST."""
    partial_meta = metadata_header([("part", "yes")])
    a = tus.upload(b"hello", concat="partial", metadata=partial_meta)
    b = tus.upload(b" world", concat="partial", metadata=partial_meta)
    concat = f"final;{upload_path(a)} {upload_path(b)}"
    bare = tus.new(concat=concat)
    assert "upload-metadata" not in tus.head(bare).headers
    final_meta = metadata_header([("filename", "hw.txt")])
    named = tus.new(concat=concat, metadata=final_meta)
    assert tus.head(named).headers.get("upload-metadata") == final_meta
    assert tus.head(a).headers.get("upload-metadata") == partial_meta


def test_final_over_unfinished_partials(tus: TusHTTP) -> None:
    """Final over an unfinished partial -> 201; HEAD has Upload-Concat,
    Upload-Length (all lengths known) and no Upload-Offset; PATCH on the final is 403 and
    on the partial allowed; once the last partial completes the final is assembled."""
    a = tus.new(5, concat="partial")
    tus.append(a, 0, b"he")
    b = tus.upload(b" world", concat="partial")
    concat = f"final;{upload_path(a)} {upload_path(b)}"
    response = tus.create(concat=concat)
    assert_status(response, 201)
    final = response.headers["location"]

    head = tus.head(final)
    assert_status(head, 200)
    assert head.headers.get("upload-concat") == concat
    assert head.headers.get("upload-length") == "11"
    assert "upload-offset" not in head.headers
    assert "upload-defer-length" not in head.headers
    assert_error(tus.patch(final, 0, b"x"), 403, errors.ModifyFinal.code)
    assert_error(tus.get(final), 409, errors.NotFinished.code)

    tus.append(a, 2, b"llo")
    head = tus.head(final)
    assert head.headers.get("upload-offset") == head.headers.get("upload-length") == "11"
    assert head.headers.get("upload-concat") == concat
    assert tus.content(final) == b"hello world"
    assert_error(tus.patch(final, 11, b""), 403, errors.ModifyFinal.code)


def test_final_over_deferred_partial(tus: TusHTTP) -> None:
    """(superseded by concatenation-unfinished): a partial with
    a deferred length -> the final's HEAD has ``Upload-Defer-Length: 1`` and no length or
    offset until the partial declares its length and completes."""
    a = tus.upload(b"hello", concat="partial")
    b = tus.new(concat="partial", defer=True)
    tus.append(b, 0, b" wor")
    concat = f"final;{upload_path(a)} {upload_path(b)}"
    final = tus.new(concat=concat)

    head = tus.head(final)
    assert head.headers.get("upload-concat") == concat
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers
    assert "upload-offset" not in head.headers

    tus.append(b, 4, b"ld", headers={"Upload-Length": "6"})
    head = tus.head(final)
    assert head.headers.get("upload-offset") == head.headers.get("upload-length") == "11"
    assert "upload-defer-length" not in head.headers
    assert tus.content(final) == b"hello world"


def test_many_absolute_partials_over_8k(tus: TusHTTP) -> None:
    """An Upload-Concat of ~100 absolute URLs (> 8 KiB) is accepted."""
    host = "https://uploads.a-rather-long-proxy-hostname.example.com"
    parts = []
    expected = bytearray()
    for i in range(100):
        byte = bytes([i])
        url = tus.upload(byte, concat="partial")
        parts.append(f"{host}/files/{upload_id(url)}")
        expected += byte
    concat = "final;" + " ".join(parts)
    assert len(concat) > 8 * 1024
    final = tus.new(concat=concat)
    assert tus.head(final).headers.get("upload-concat") == concat
    assert tus.content(final) == bytes(expected)


def test_parallel_uploads_flow(tus: TusHTTP) -> None:
    """Tus-js-client ``parallelUploads: 3`` with
    ``uploadDataDuringCreation``: three partial POSTs (with a body), PATCHes, then the final
    with absolute URLs and the file's metadata."""
    data = os.urandom(30_001)
    size = len(data) // 3 + 1
    slices = [data[i : i + size] for i in range(0, len(data), size)]
    assert len(slices) == 3
    partial_meta = metadata_header([("partial", "1")])
    urls = []
    for piece in slices:
        first = piece[:1000]
        response = tus.create(len(piece), concat="partial", body=first, metadata=partial_meta)
        assert_status(response, 201)
        assert response.headers.get("upload-offset") == str(len(first))
        url = response.headers["location"]
        tus.append(url, len(first), piece[len(first) :])
        urls.append(url)
    metadata = metadata_header([("filename", "big.bin"), ("filetype", "application/x")])
    response = tus.create(concat="final;" + " ".join(urls), metadata=metadata)
    assert_status(response, 201)
    final = response.headers["location"]
    assert tus.content(final) == data
    assert tus.head(final).headers.get("upload-metadata") == metadata


def test_partial_creation_with_body_content_type(tus: TusHTTP) -> None:
    """A partial POST with body and the tus content type (sanity for the parallel upload flow)."""
    response = tus.create(5, concat="partial", body=b"hello", content_type=OFFSET_OCTET)
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "5"
    assert tus.head(response.headers["location"]).headers.get("upload-concat") == "partial"


# =============================================================================================
# lifecycle hooks


def test_partials_never_finish_final_does(hooked: TusHTTP, events: RecordingListener) -> None:
    """A completed partial is not an application-level finished file; the
    final fires ``finished`` inside its POST."""
    a = hooked.upload(b"hello", concat="partial")
    b = hooked.upload(b" world", concat="partial")
    assert "finished" not in events.of(a)
    assert "finished" not in events.of(b)
    final = hooked.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert events.of(final) == ["created", "finished"]


def test_unfinished_final_fires_finished_on_assembly(
    hooked: TusHTTP, events: RecordingListener
) -> None:
    """With unfinished partials the final's completion hook fires when the last
    partial completes, once."""
    a = hooked.new(5, concat="partial")
    b = hooked.new(6, concat="partial")
    final = hooked.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert events.of(final) == ["created"]
    hooked.append(a, 0, b"hello")
    assert events.of(final) == ["created"]
    hooked.append(b, 0, b" world")
    assert events.of(final) == ["created", "finished"]
    assert "finished" not in events.of(a) + events.of(b)
    assert hooked.content(final) == b"hello world"
