"""Termination (docs/protocol.md, "Termination")."""

from __future__ import annotations

import pytest

from tusserver import errors

from .tusclient_http import (
    ENDPOINT,
    TUS_VERSION,
    RecordingListener,
    TusHTTP,
    assert_error,
    assert_status,
    csv_items,
    upload_path,
)


def test_termination_advertised(tus: TusHTTP) -> None:
    """``termination`` is in Tus-Extension."""
    assert "termination" in csv_items(tus.options().headers["tus-extension"])


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
def test_delete_unfinished_then_gone(tus: TusHTTP, method: str) -> None:
    """204 with Tus-Resumable and no body; afterwards
    HEAD/PATCH/DELETE/GET -> 404."""
    url = tus.new(10)
    tus.append(url, 0, b"abc")
    response = tus.delete(url)
    assert response.status_code == 204
    assert response.headers.get("tus-resumable") == TUS_VERSION
    assert response.content == b""
    after = tus.patch(url, 3, b"def") if method == "PATCH" else tus.request(method, url)
    assert_error(after, 404, errors.NotFound.code)


def test_delete_completed_upload(tus: TusHTTP) -> None:
    """DELETE of a completed upload -> 204; then gone."""
    url = tus.upload(b"0123456789")
    assert tus.delete(url).status_code == 204
    assert tus.head(url).status_code == 404


def test_delete_unknown_404(tus: TusHTTP) -> None:
    """DELETE of an unknown id -> 404."""
    assert_error(tus.delete(f"{ENDPOINT}{'a' * 32}"), 404, errors.NotFound.code)


def test_delete_without_version_412(tus: TusHTTP) -> None:
    """DELETE without Tus-Resumable -> 412 + Tus-Version; the upload survives."""
    url = tus.new(10)
    response = tus.delete(url, version=None)
    assert_error(response, 412, errors.UnsupportedVersion.code)
    assert response.headers.get("tus-version") == TUS_VERSION
    assert_status(tus.head(url), 200)


def test_delete_final_keeps_partials(tus: TusHTTP) -> None:
    """DELETE of a final -> 204; its partials are untouched."""
    a = tus.upload(b"hello", concat="partial")
    b = tus.upload(b" world", concat="partial")
    final = tus.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert tus.delete(final).status_code == 204
    assert tus.head(final).status_code == 404
    assert tus.content(a) == b"hello"
    assert tus.content(b) == b" world"


def test_delete_used_partial_keeps_final(tus: TusHTTP) -> None:
    """DELETE of a partial a final already used -> 204; the final is unaffected."""
    a = tus.upload(b"hello", concat="partial")
    b = tus.upload(b" world", concat="partial")
    final = tus.new(concat=f"final;{upload_path(a)} {upload_path(b)}")
    assert tus.delete(a).status_code == 204
    assert tus.head(a).status_code == 404
    head = tus.head(final)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == "11"
    assert tus.content(final) == b"hello world"


def test_termination_hook(hooked: TusHTTP, events: RecordingListener) -> None:
    """Termination fires ``terminated``; a 412 or 404 DELETE fires nothing."""
    url = hooked.new(10)
    assert_status(hooked.delete(url, version=None), 412)
    assert events.of(url) == ["created"]
    assert hooked.delete(url).status_code == 204
    assert events.of(url) == ["created", "terminated"]
    assert hooked.delete(url).status_code == 404
    assert events.of(url) == ["created", "terminated"]
