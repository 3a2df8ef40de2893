"""tus-js-client 4.3.1 in its draft modes (``ietf-draft-03`` speaks interop version 5,
``ietf-draft-05`` version 6) under Node, against the real server on local storage and on
S3 + Redis: one request, chunked, and resumed from an upload another client interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import TusServer
from tests.e2e.test_tus_js_client import MiB, assert_stored, js_upload, make_file, node, statuses
from tests.ietf import client
from tests.ietf.wire import send

__all__ = ["node"]  # the fixture, imported so pytest finds it here

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROTOCOLS = {"ietf-draft-03": 5, "ietf-draft-05": 6}


def assert_draft_exchanges(result: dict[str, object]) -> None:
    exchanges = result["exchanges"]
    assert isinstance(exchanges, list)
    bad = [x for x in exchanges if not 200 <= x["status"] < 300]
    assert not bad, f"non-2xx answers: {bad}"


MODES = {
    # mode: (options, PATCHes of a 3 MiB + 7 upload)
    "one-request": ({}, 1),
    "chunked": ({"chunkSize": MiB}, 4),
    # The first chunk rides on the POST (the draft's creation with content).
    "data-in-creation": ({"chunkSize": MiB, "uploadDataDuringCreation": True}, 3),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_upload(
    node: str,
    backend_server: TusServer,
    tmp_path: Path,
    protocol: str,
    mode: str,
) -> None:
    path, data = make_file(tmp_path, 3 * MiB + 7)
    extra, patches = MODES[mode]
    result = js_upload(
        node,
        path,
        endpoint=backend_server.base_url,
        protocol=protocol,
        metadata={"filename": "a.bin"},
        **extra,
    )
    assert_draft_exchanges(result)
    assert statuses(result, "POST") == [201]
    assert statuses(result, "PATCH") == [204] * patches
    url = result["url"]
    assert isinstance(url, str)
    assert url.startswith(backend_server.base_url)
    assert_stored(url, data)
    version = PROTOCOLS[protocol]
    head = send(url, "HEAD", client.interop(version))
    assert client.says_complete(version, head.headers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_resume_an_interrupted_upload(
    node: str,
    backend_server: TusServer,
    tmp_path: Path,
    protocol: str,
) -> None:
    """Another client created the upload and stopped part-way; tus-js-client, given its URL,
    asks for the offset (HEAD) and sends the rest."""
    version = PROTOCOLS[protocol]
    path, data = make_file(tmp_path, 2 * MiB + 11)
    created = send(
        backend_server.base_url,
        "POST",
        client.creation(version, False, len(data)),
        data[: 700 * 1024],
    )
    assert created.status == 201
    url = created.headers["location"]
    result = js_upload(
        node, path, endpoint=backend_server.base_url, uploadUrl=url, protocol=protocol
    )
    assert_draft_exchanges(result)
    assert statuses(result, "HEAD") == [204]
    assert statuses(result, "POST") == []
    patches = [x for x in result["exchanges"] if x["method"] == "PATCH"]
    assert patches[-1]["offset"] == str(len(data))
    assert result["url"] == url
    assert_stored(url, data)
