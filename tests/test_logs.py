"""Event fields reach the log line; nothing else on the record does."""

from __future__ import annotations

import logging

from tusserver.logs import KeyValueFormatter


def test_extra_fields_are_rendered() -> None:
    record = logging.LogRecord(
        "tusserver.upload", logging.INFO, __file__, 1, "upload.created", None, None
    )
    record.upload_id = "abc"
    record.length = 5
    line = KeyValueFormatter("%(name)s %(message)s").format(record)
    assert line == "tusserver.upload upload.created length=5 upload_id='abc'"


async def test_each_upload_event_is_logged_once(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from tests.asgi_harness import call
    from tusserver.app import create_app
    from tusserver.settings import Settings

    app = create_app(Settings(data_dir=tmp_path))
    with caplog.at_level(logging.INFO, logger="tusserver"):
        reply = await call(app, "POST", "/files/", {"Tus-Resumable": "1.0.0", "Upload-Length": "0"})
    assert reply.status == 201
    events = [r.getMessage() for r in caplog.records]
    assert events.count("upload.created") == 1
    assert events.count("upload.finished") == 1
