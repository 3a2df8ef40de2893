"""The pre-create hook: an operator's service that may refuse an upload or add metadata.

Owns the call made before an upload exists (``POST /files/`` waits for it) and what its answer
means: 2xx admits the upload, optionally adding ``{"metadata": {...}}``; 4xx refuses it with
that status and the hook's one-line ``message``; anything else, a timeout or a network error
refuses it with 503. Failing closed is deliberate: an operator who configured a gate wants it
enforced, and the client retries a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from tusserver import errors
from tusserver.hooks.events import build_event
from tusserver.hooks.signing import signed_headers
from tusserver.runtime import running
from tusserver.security import safejson
from tusserver.settings import Settings
from tusserver.tus.protocol import ConcatRequest, encode_metadata

if TYPE_CHECKING:
    import httpx

# httpx is imported when the hook starts: a server without hooks never loads it.
log = logging.getLogger("tusserver.hooks")

# More than any sensible answer; a hook cannot make us buffer more.
MAX_RESPONSE_BYTES = 64 * 1024
# Bounds on what a hook may add (the encoded Upload-Metadata of the added pairs).
MAX_ADDED_METADATA_BYTES = 4096
MESSAGE_LIMIT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class PreCreateHook:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = secret.encode()
        self._timeout = timeout
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PreCreateHook:
        assert settings.pre_create_hook_url is not None
        assert settings.webhook_secret is not None
        return cls(
            settings.pre_create_hook_url,
            settings.webhook_secret.get_secret_value(),
            timeout=settings.pre_create_hook_timeout,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PreCreateHook]:
        import httpx

        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        try:
            yield self
        finally:
            client, self._client = self._client, None
            await client.aclose()

    async def screen(self, upload: Mapping[str, Any]) -> dict[str, str]:
        """Ask the hook about a proposed upload; the metadata it adds, or a TusError."""
        import httpx

        if self._client is None:  # not started (no lifespan): the gate is not there, so closed
            raise errors.HookUnavailable()
        event = build_event("upload.pre_create", upload, upload_id="", now=self._clock())
        headers = signed_headers(self._secret, event.id, event.body, self._clock())
        try:
            # An overall deadline: httpx's timeout applies per read, not to the whole exchange.
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", self._url, content=event.body, headers=headers) as r,
            ):
                status = r.status_code
                body = await _read_limited(r)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            log.warning("pre_create.unavailable", extra={"error": type(exc).__name__})
            raise errors.HookUnavailable() from None
        if 200 <= status < 300:
            try:
                return _added_metadata(body)
            except ValueError as exc:
                log.warning("pre_create.invalid_response", extra={"reason": str(exc)})
                raise errors.HookUnavailable() from None
        if 400 <= status < 500:
            log.info("pre_create.rejected", extra={"status": status})
            raise errors.UploadRejected(_message(body), status=status)
        log.warning("pre_create.unavailable", extra={"status": status})
        raise errors.HookUnavailable()


async def _read_limited(response: httpx.Response) -> bytes | None:
    """The body, or None when it is larger than MAX_RESPONSE_BYTES."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            return None
    return bytes(data)


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    if not body or not body.strip():
        return None
    try:
        value = safejson.loads(body)
    except errors.TusError:
        return None
    return value if isinstance(value, dict) else None


def _added_metadata(body: bytes | None) -> dict[str, str]:
    if body is None:
        raise ValueError("response too large")
    if not body.strip():
        return {}
    answer = _json_object(body)
    if answer is None:
        raise ValueError("response is not a JSON object")
    added = answer.get("metadata")
    if added is None:
        return {}
    if not isinstance(added, dict) or not all(isinstance(v, str) for v in added.values()):
        raise ValueError("metadata must map keys to strings")
    try:
        encoded = encode_metadata(added)  # also checks every key is a valid tus key
    except errors.InvalidMetadata:
        raise ValueError("metadata has an invalid key or value") from None
    if len(encoded) > MAX_ADDED_METADATA_BYTES:
        raise ValueError("metadata too large")
    return dict(added)


def _message(body: bytes | None) -> str | None:
    """The hook's ``message``, made safe to show: one line, printable, at most 200 chars."""
    answer = _json_object(body)
    message = answer.get("message") if answer is not None else None
    if not isinstance(message, str):
        return None
    cleaned = " ".join(_CONTROL.sub(" ", message).split())[:MESSAGE_LIMIT]
    return cleaned or None


def merge_metadata(
    metadata: Mapping[str, str | None], raw: str | None, added: Mapping[str, str]
) -> tuple[dict[str, str | None], str | None]:
    """Client metadata plus the hook's (the hook wins), and the ``Upload-Metadata`` HEAD
    echoes: the client's pairs stay byte for byte, except those the hook replaced."""
    if not added:
        return dict(metadata), raw
    # An empty value has no base64 spelling: it is a bare key, which reads back as None.
    merged = {**metadata, **{key: value or None for key, value in added.items()}}
    # ``raw`` already passed the strict parser, so splitting it like this is exact.
    kept = [
        element
        for element in (part.strip(" \t") for part in (raw or "").split(","))
        if element and element.split(" ")[0] not in added
    ]
    return merged, ",".join([*kept, encode_metadata(added)])


async def screen_creation(
    request: Request,
    *,
    length: int | None,
    metadata: Mapping[str, str | None],
    metadata_raw: str | None,
    owner: str | None,
    concat: ConcatRequest | None,
) -> tuple[dict[str, str | None], str | None]:
    """Run the pre-create hook, if configured, for a POST; the metadata to create with."""
    runtime = running(request.scope)
    hook = runtime.hooks.pre_create if runtime is not None else None
    if hook is None:
        return dict(metadata), metadata_raw
    added = await hook.screen(
        {
            "length": length,
            "metadata": dict(metadata),
            "owner": owner,
            "concat": concat.kind.value if concat is not None else "none",
            "partials": list(concat.partial_ids) if concat is not None else [],
        }
    )
    return merge_metadata(metadata, metadata_raw, added)
