"""Hooks through the real app and a real receiver on loopback: webhook events (signed, retried,
never slowing an upload) and the pre-create hook (refuse, add metadata, fail closed)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from tests.apphttp import serving
from tests.conformance.tusclient_http import FakeClock
from tests.netutil import free_port
from tests.webhook_receiver import Delivery, Receiver, Reply
from tusserver.hooks.precreate import merge_metadata
from tusserver.ops.logs import KeyValueFormatter
from tusserver.runtime import runtime_of
from tusserver.settings import Settings
from tusserver.tus.protocol import encode_metadata, parse_metadata

SECRET = "hook-secret-for-tests-0123456789"
FILES = "http://test/files/"
OFFSET_TYPE = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


def settings(tmp_path: Path, receiver: Receiver | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "catalog": False,
        "metrics": False,
        "webhook_secret": SECRET,
    }
    if receiver is not None:
        values["webhook_url"] = receiver.url("/events")
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def tus(config: Settings, clock: FakeClock | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, lifespan included, behind an httpx client."""
    async with serving(config, clock=clock or time.time) as http:
        yield http


async def create(http: httpx.AsyncClient, length: int, metadata: str | None = None) -> str:
    headers = {"Upload-Length": str(length)}
    if metadata is not None:
        headers["Upload-Metadata"] = metadata
    response = await http.post(FILES, headers=headers)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


async def patch(http: httpx.AsyncClient, url: str, offset: int, data: bytes) -> None:
    response = await http.patch(
        url, content=data, headers={**OFFSET_TYPE, "Upload-Offset": str(offset)}
    )
    assert response.status_code == 204, response.text


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def verify(delivery: Delivery) -> None:
    """What a receiver does: recompute the HMAC over "<t>.<body>" and check the time."""
    fields = dict(part.split("=", 1) for part in delivery.headers["x-tus-signature"].split(","))
    assert fields["t"] == delivery.headers["x-tus-timestamp"]
    expected = hmac.new(
        SECRET.encode(), fields["t"].encode() + b"." + delivery.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert abs(time.time() - int(fields["t"])) < 30
    assert delivery.headers["content-type"] == "application/json"


def events_for(receiver: Receiver, url: str) -> list[Delivery]:
    wanted = upload_id(url)
    return [d for d in receiver.deliveries if d.json["upload"]["id"] == wanted]


# -- webhook events ------------------------------------------------------------------------


async def test_lifecycle_events_arrive_signed_with_the_upload(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock(time.time())
    async with tus(settings(tmp_path, receiver, expiration=60), clock) as http:
        url = await create(http, 40, encode_metadata({"filename": "a.txt"}))
        await patch(http, url, 0, b"x" * 10)
        await receiver.wait_count(2)
        await patch(http, url, 10, b"x" * 10)  # within the second: no progress event
        clock.advance(1.5)
        await patch(http, url, 20, b"x" * 10)
        await receiver.wait_count(3)
        await patch(http, url, 30, b"x" * 10)
        await receiver.wait_count(4)

        gone = await create(http, 5)
        assert (await http.delete(gone)).status_code == 204
        await receiver.wait_count(6)
        stale = await create(http, 5)
        clock.advance(120)
        assert (await http.head(stale)).status_code == 404  # expired at request time
        await receiver.wait_count(8)

    finished = events_for(receiver, url)
    assert [d.type for d in finished] == [
        "upload.created",
        "upload.progress",
        "upload.progress",
        "upload.finished",
    ]
    assert [d.json["upload"]["offset"] for d in finished] == [0, 10, 30, 40]
    last = finished[-1].json
    assert last["upload"]["metadata"] == {"filename": "a.txt"}
    assert last["upload"]["length"] == 40
    assert last["upload"]["finished_at"].endswith("Z")
    assert "storage" not in last["upload"]
    assert [d.type for d in events_for(receiver, gone)] == ["upload.created", "upload.terminated"]
    assert events_for(receiver, gone)[-1].json["reason"] == "terminated"
    assert [d.type for d in events_for(receiver, stale)] == ["upload.created", "upload.expired"]
    assert events_for(receiver, stale)[-1].json["reason"] == "expired"
    for delivery in receiver.deliveries:
        verify(delivery)
        assert delivery.path == "/events"
        assert delivery.headers["idempotency-key"] == delivery.json["id"]
    keys = [d.headers["idempotency-key"] for d in receiver.deliveries]
    assert len(set(keys)) == len(keys)


async def test_a_purge_is_a_termination_with_its_reason(tmp_path: Path, receiver: Receiver) -> None:
    async with tus(settings(tmp_path, receiver), None) as http:
        url = await create(http, 3)
        service = runtime_of(http.app).service  # type: ignore[attr-defined]
        info = await service.ctx.state.get(upload_id(url))
        await service.terminate(info, event="upload.purged")
        await receiver.wait_count(2)
    assert receiver.deliveries[-1].type == "upload.terminated"
    assert receiver.deliveries[-1].json["reason"] == "purged"


async def test_5xx_is_retried_with_the_same_idempotency_key(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_next(1, 503)
    receiver.fail_next(1, 500, **{"Retry-After": "0"})
    async with tus(settings(tmp_path, receiver)) as http:
        url = await create(http, 0)  # created and finished at once
        seen = await receiver.wait_count(4)
    assert [d.type for d in seen] == ["upload.created"] * 3 + ["upload.finished"]
    created = seen[:3]
    assert {d.headers["idempotency-key"] for d in created} == {created[0].json["id"]}
    assert {d.body for d in created} == {created[0].body}  # the same event, byte for byte
    assert seen[3].headers["idempotency-key"] != created[0].headers["idempotency-key"]
    for delivery in seen:
        verify(delivery)
    assert seen[0].json["upload"]["id"] == upload_id(url)


async def test_4xx_is_not_retried(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_next(1, 400)
    caplog.set_level(logging.INFO, logger="tusserver.webhook")
    async with tus(settings(tmp_path, receiver, webhook_events="created")) as http:
        first = await create(http, 5)
        second = await create(http, 5)
        # Delivery is in order: the second event arriving means the first was not retried.
        seen = await receiver.wait_count(2)
    assert [d.json["upload"]["id"] for d in seen] == [upload_id(first), upload_id(second)]
    assert len(receiver.deliveries) == 2
    assert any(r.getMessage() == "webhook.rejected" for r in caplog.records)


async def test_a_hanging_receiver_does_not_slow_the_upload(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.hang_next(5)
    async with tus(settings(tmp_path, receiver)) as http:
        started = time.monotonic()
        url = await create(http, 20)
        await receiver.wait_count(1)  # the created event is stuck at the receiver
        await patch(http, url, 0, b"y" * 10)
        await patch(http, url, 10, b"y" * 10)
        elapsed = time.monotonic() - started
        head = await http.head(url)
        assert head.headers["Upload-Offset"] == "20"
        assert elapsed < 2.0  # the receiver sleeps up to 10 s; generous slack
        receiver.release()
        await receiver.wait_for(lambda seen: "upload.finished" in [d.type for d in seen])


async def test_stopping_gives_a_stuck_delivery_a_bounded_time(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.hang_next(1)
    async with tus(settings(tmp_path, receiver)) as http:
        await create(http, 5)
        await receiver.wait_count(1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5.0  # about 2 s, not the receiver's 10


async def test_a_full_queue_drops_and_logs(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hang_next(1)
    caplog.set_level(logging.WARNING, logger="tusserver.webhook")
    async with tus(settings(tmp_path, receiver, webhook_queue_size=1)) as http:
        first = await create(http, 5)
        await receiver.wait_count(1)  # in flight, stuck
        queued = await create(http, 5)  # fills the one slot
        dropped = [await create(http, 5) for _ in range(2)]
        receiver.release()
        await receiver.wait_count(2)
    drops = [r for r in caplog.records if r.getMessage() == "webhook.dropped"]
    assert sorted(r.upload_id for r in drops) == sorted(upload_id(u) for u in dropped)
    assert [d.json["upload"]["id"] for d in receiver.deliveries] == [
        upload_id(first),
        upload_id(queued),
    ]


async def test_progress_waiting_in_the_queue_is_replaced_by_the_latest(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock(time.time())
    receiver.hang_next(1)
    async with tus(settings(tmp_path, receiver), clock) as http:
        url = await create(http, 40)
        await receiver.wait_count(1)
        for offset in (0, 10, 20):
            await patch(http, url, offset, b"z" * 10)
            clock.advance(2)
        receiver.release()
        seen = await receiver.wait_count(2)
        await patch(http, url, 30, b"z" * 10)
        seen = await receiver.wait_count(3)
    assert [d.type for d in seen] == ["upload.created", "upload.progress", "upload.finished"]
    assert seen[1].json["upload"]["offset"] == 30


async def test_only_the_chosen_events_are_sent(tmp_path: Path, receiver: Receiver) -> None:
    async with tus(settings(tmp_path, receiver, webhook_events="finished")) as http:
        url = await create(http, 4)
        await patch(http, url, 0, b"abcd")
        seen = await receiver.wait_count(1)
    assert [d.type for d in seen] == ["upload.finished"]


async def test_the_secret_and_signatures_never_reach_the_logs(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.reply_next(Reply(200))  # the pre-create hook admits the upload
    receiver.fail_next(1, 503, **{"Retry-After": "0"})  # its created event is retried...
    receiver.fail_next(1, 401)  # ...and then refused
    caplog.set_level(logging.DEBUG)
    hook = receiver.url("/gate")
    async with tus(settings(tmp_path, receiver, pre_create_hook_url=hook)) as http:
        url = await create(http, 2)
        await patch(http, url, 0, b"ok")
        await receiver.wait_count(4)
    formatter = KeyValueFormatter()
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert "webhook.retry" in text
    assert "webhook.rejected" in text
    assert SECRET not in text
    for delivery in receiver.deliveries:
        assert delivery.headers["x-tus-signature"].split("v1=")[1] not in text


# -- the pre-create hook -------------------------------------------------------------------


async def all_uploads(http: httpx.AsyncClient) -> list[Any]:
    state = runtime_of(http.app).service.ctx.state  # type: ignore[attr-defined]
    return [info async for info in state.expired(math.inf)]


async def test_a_4xx_from_the_hook_refuses_the_upload_with_its_message(
    tmp_path: Path, receiver: Receiver
) -> None:
    message = "quota exceeded\r\nX-Injected: yes " + "!" * 300
    receiver.reply_next(Reply(403, body={"message": message}))
    config = settings(tmp_path, receiver, pre_create_hook_url=receiver.url("/gate"))
    async with tus(config) as http:
        response = await http.post(
            FILES,
            headers={"Upload-Length": "5", "Upload-Metadata": encode_metadata({"name": "x"})},
        )
        assert await all_uploads(http) == []
    assert response.status_code == 403
    line = response.text.rstrip("\n")
    assert line.startswith("ERR_UPLOAD_REJECTED: quota exceeded X-Injected: yes !")
    assert "\n" not in line
    assert "\r" not in line
    assert len(line) <= len("ERR_UPLOAD_REJECTED: ") + 200
    assert "x-injected" not in response.headers
    [asked] = receiver.deliveries  # only the hook; no upload, so no created event
    verify(asked)
    assert asked.path == "/gate"
    assert asked.type == "upload.pre_create"
    assert asked.json["upload"] == {
        "length": 5,
        "metadata": {"name": "x"},
        "owner": "local",
        "concat": "none",
        "partials": [],
    }


async def test_a_2xx_from_the_hook_may_add_metadata(tmp_path: Path, receiver: Receiver) -> None:
    receiver.reply_next(Reply(200, body={"metadata": {"tenant": "acme", "name": "renamed"}}))
    config = settings(tmp_path, None, pre_create_hook_url=receiver.url("/gate"))
    async with tus(config) as http:
        sent = "keep YWJj,name eA=="
        url = await create(http, 3, sent)
        head = await http.head(url)
    assert parse_metadata(head.headers["Upload-Metadata"]) == {
        "keep": "abc",
        "name": "renamed",
        "tenant": "acme",
    }
    assert head.headers["Upload-Metadata"].startswith("keep YWJj,")  # client bytes kept


async def test_an_empty_2xx_admits_the_upload_unchanged(tmp_path: Path, receiver: Receiver) -> None:
    config = settings(tmp_path, None, pre_create_hook_url=receiver.url("/gate"))
    async with tus(config) as http:
        url = await create(http, 3, "keep YWJj")
        head = await http.head(url)
    assert head.headers["Upload-Metadata"] == "keep YWJj"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(500),
        Reply(302, headers={"Location": "http://127.0.0.1:9/"}),
        Reply(200, body={"metadata": {"bad key": "x"}}),
        Reply(200, body={"metadata": {"n": 1}}),
        Reply(200, body={"metadata": {"k": "v" * 5000}}),
        Reply(200, body=["not", "an", "object"]),
        Reply(hang=True),
    ],
    ids=["5xx", "redirect", "bad-key", "non-string", "too-large", "not-object", "timeout"],
)
async def test_a_failing_hook_fails_closed(
    tmp_path: Path, receiver: Receiver, reply: Reply
) -> None:
    receiver.reply_next(reply)
    config = settings(
        tmp_path, None, pre_create_hook_url=receiver.url("/gate"), pre_create_hook_timeout=0.5
    )
    async with tus(config) as http:
        response = await http.post(FILES, headers={"Upload-Length": "5"})
        assert await all_uploads(http) == []
    assert response.status_code == 503
    assert response.text.startswith("ERR_HOOK_UNAVAILABLE:")


async def test_an_unreachable_hook_fails_closed(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/gate"
    async with tus(settings(tmp_path, None, pre_create_hook_url=down)) as http:
        response = await http.post(FILES, headers={"Upload-Length": "5"})
    assert response.status_code == 503
    assert response.text.startswith("ERR_HOOK_UNAVAILABLE:")


def test_merge_keeps_untouched_client_pairs_verbatim() -> None:
    raw = "a YQ==, b Yg==,flag"
    merged, new_raw = merge_metadata(parse_metadata(raw), raw, {"b": "B", "c": ""})
    assert merged == {"a": "a", "b": "B", "flag": None, "c": None}
    assert new_raw == "a YQ==,flag,b Qg==,c"
    assert parse_metadata(new_raw) == merged
    assert merge_metadata({"a": "a"}, "a YQ==", {}) == ({"a": "a"}, "a YQ==")


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"webhook_url": "http://127.0.0.1:1/events"},
        {"pre_create_hook_url": "http://127.0.0.1:1/gate"},
        {"webhook_url": "ftp://example.com/", "webhook_secret": SECRET},
        {"webhook_events": "created,uploaded", "webhook_secret": SECRET},
    ],
    ids=["webhook-without-secret", "pre-create-without-secret", "bad-scheme", "unknown-event"],
)
def test_bad_hook_settings_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]


def test_hook_settings_defaults_and_lists() -> None:
    config = Settings(
        webhook_url="https://hooks.example.com/tus",
        webhook_secret=SECRET,  # type: ignore[arg-type]
        webhook_events="Finished, expired",  # type: ignore[arg-type]
    )
    assert config.webhook_events == ("finished", "expired")
    assert Settings().webhook_events == (
        "created",
        "progress",
        "finished",
        "terminated",
        "expired",
    )
    assert SECRET not in repr(config)
