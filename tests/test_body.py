"""BodyReader: every early end of a body is a clean end of stream with a reason."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from starlette.types import Message

from tusserver.edge.body import BodyEnd, BodyReader
from tusserver.tus.protocol import new_hasher


def scripted(parts: list[bytes], then: str = "end"):  # type: ignore[no-untyped-def]
    queue = list(parts)

    async def receive() -> Message:
        if queue:
            chunk = queue.pop(0)
            return {
                "type": "http.request",
                "body": chunk,
                "more_body": bool(queue) or then != "end",
            }
        if then == "disconnect":
            return {"type": "http.disconnect"}
        if then == "hang":
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


async def drain(reader: BodyReader) -> bytes:
    return b"".join([chunk async for chunk in reader.chunks()])


async def test_complete_body_is_hashed_on_the_way() -> None:
    reader = BodyReader(
        scripted([b"hello ", b"world"]), limit=None, read_timeout=1, hasher=new_hasher("sha1")
    )
    assert await drain(reader) == b"hello world"
    assert reader.end is BodyEnd.COMPLETE
    assert reader.received == 11
    assert reader.hasher is not None
    assert reader.hasher.digest() == hashlib.sha1(b"hello world").digest()


@pytest.mark.parametrize(
    ("parts", "limit", "kept", "end"),
    [
        ([b"abc", b"def"], 6, b"abcdef", BodyEnd.COMPLETE),  # exactly the limit is fine
        ([b"abc", b"defg"], 6, b"abcdef", BodyEnd.TOO_LARGE),  # keep what fits (as tusd)
        ([b"abcdefgh"], 0, b"", BodyEnd.TOO_LARGE),
        ([b"", b"abc"], 3, b"abc", BodyEnd.COMPLETE),  # empty messages are harmless
    ],
)
async def test_limit(parts: list[bytes], limit: int, kept: bytes, end: BodyEnd) -> None:
    reader = BodyReader(scripted(parts), limit=limit, read_timeout=1)
    assert await drain(reader) == kept
    assert reader.end is end


async def test_disconnect_ends_cleanly() -> None:
    reader = BodyReader(scripted([b"abc"], then="disconnect"), limit=None, read_timeout=1)
    assert await drain(reader) == b"abc"
    assert reader.end is BodyEnd.DISCONNECTED


async def test_idle_timeout_ends_cleanly() -> None:
    reader = BodyReader(scripted([b"abc"], then="hang"), limit=None, read_timeout=0.05)
    assert await drain(reader) == b"abc"
    assert reader.end is BodyEnd.TIMED_OUT


async def test_interrupt_wakes_a_parked_receive() -> None:
    reader = BodyReader(scripted([b"abc"], then="hang"), limit=None, read_timeout=60)
    task = asyncio.create_task(drain(reader))
    await asyncio.sleep(0.01)
    reader.interrupt()
    assert await asyncio.wait_for(task, 1) == b"abc"
    assert reader.end is BodyEnd.RELEASED


async def test_interrupt_still_takes_bytes_already_arriving() -> None:
    # Bytes that reached the server are kept rather than re-sent by the client.
    reader = BodyReader(scripted([b"abc", b"def"]), limit=None, read_timeout=1)
    reader.interrupt()
    assert await drain(reader) == b"abcdef"
    assert reader.end is BodyEnd.COMPLETE


async def test_interrupt_drain_is_capped_for_a_client_that_keeps_sending() -> None:
    async def endless() -> Message:
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b"x", "more_body": True}

    reader = BodyReader(endless, limit=None, read_timeout=60)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(drain(reader))
    await asyncio.sleep(0.05)
    reader.interrupt()
    await asyncio.wait_for(task, 2)
    assert reader.end is BodyEnd.RELEASED
    assert loop.time() - started < 1.0
