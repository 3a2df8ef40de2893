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
