"""Event fields reach the log line; nothing else on the record does."""

from __future__ import annotations

import logging

from tusserver.ops.logs import KeyValueFormatter


def test_extra_fields_are_rendered() -> None:
    record = logging.LogRecord(
        "tusserver.upload", logging.INFO, __file__, 1, "upload.created", None, None
    )
    record.upload_id = "abc"
    record.length = 5
    line = KeyValueFormatter("%(name)s %(message)s").format(record)
    assert line == "tusserver.upload upload.created length=5 upload_id='abc'"


async def test_each_upload_event_is_logged_once(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from tests.apphttp import opened
    from tests.asgi_harness import call
    from tusserver.app import create_app
    from tusserver.settings import Settings

    app = create_app(Settings(data_dir=tmp_path))
    async with opened(app):
        with caplog.at_level(logging.INFO, logger="tusserver"):
            reply = await call(
                app, "POST", "/files/", {"Tus-Resumable": "1.0.0", "Upload-Length": "0"}
            )
        assert reply.status == 201
        events = [r.getMessage() for r in caplog.records]
        assert events.count("upload.created") == 1
        assert events.count("upload.finished") == 1


def _record(message: str = "upload.created", **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("tusserver.upload", logging.INFO, __file__, 1, message, None, None)
    for key, value in fields.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_event_and_its_fields() -> None:
    import json

    from tusserver.ops.logs import JsonFormatter

    entry = json.loads(JsonFormatter().format(_record(upload_id="abc", length=5)))
    assert entry["event"] == "upload.created"
    assert entry["level"] == "info"
    assert entry["logger"] == "tusserver.upload"
    assert (entry["upload_id"], entry["length"]) == ("abc", 5)
    assert entry["time"].endswith("+00:00")


def test_fields_named_like_secrets_are_masked_in_both_formats() -> None:
    import json

    from tusserver.ops.logs import REDACTED, JsonFormatter

    record = _record(webhook_secret="s3cr3t", authorization="Bearer x", api_token="t")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["webhook_secret"] == entry["authorization"] == entry["api_token"] == REDACTED
    line = KeyValueFormatter("%(message)s").format(record)
    assert "s3cr3t" not in line
    assert "Bearer" not in line


async def test_records_made_while_serving_a_request_carry_its_id(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from tests.apphttp import opened
    from tests.asgi_harness import call
    from tusserver.app import create_app
    from tusserver.ops.logs import RequestIdFilter
    from tusserver.settings import Settings

    app = create_app(Settings(data_dir=tmp_path, catalog=False))
    async with opened(app):
        caplog.handler.addFilter(RequestIdFilter())
        with caplog.at_level(logging.INFO, logger="tusserver"):
            reply = await call(
                app,
                "POST",
                "/files/",
                {"Tus-Resumable": "1.0.0", "Upload-Length": "0", "X-Request-ID": "req-12345678"},
            )
        assert reply.status == 201
        created = next(r for r in caplog.records if r.getMessage() == "upload.created")
        assert created.request_id == "req-12345678"  # type: ignore[attr-defined]
