"""Drive an ASGI app with a scripted client: send body parts, then finish, hang or disconnect.

httpx and TestClient buffer request bodies, so they cannot play a client whose connection
dies mid-PATCH. This harness can, which is what the locking and interruption tests need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.types import ASGIApp, Message

Ending = Literal["complete", "hang", "disconnect"]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    parts: Sequence[bytes] = (),
    *,
    ending: Ending = "complete",
    drained: asyncio.Event | None = None,
) -> Reply:
    """Send one request; ``ending`` says what the client does after the last part.

    ``drained`` is set once the app has asked for more than the parts hold, i.e. it has read
    every byte the client sent.
    """
    pending = list(parts)
    sent_all = drained or asyncio.Event()

    async def receive() -> Message:
        if pending:
            chunk = pending.pop(0)
            more = bool(pending) or ending != "complete"
            return {"type": "http.request", "body": chunk, "more_body": more}
        sent_all.set()
        if ending == "hang":
            await asyncio.Event().wait()  # a dead connection that never says so
        if ending == "disconnect" or ending == "hang":
            return {"type": "http.disconnect"}
        # After a complete body, ASGI servers report a disconnect only when it happens.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if parts and not any(k == b"content-length" for k, _ in raw) and ending == "complete":
        raw.append((b"content-length", str(sum(len(p) for p in parts)).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *raw],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    pairs = [(k.decode(), v.decode()) for k, v in start.get("headers", [])]
    return Reply(start["status"], dict(pairs), body, pairs)
