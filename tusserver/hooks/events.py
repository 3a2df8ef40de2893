"""Webhook event bodies: what a receiver learns about an upload, serialised once.

Only public facts about the upload go out: never the storage backend's private mapping, never
anything from the server's configuration.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tusserver.models import UploadInfo

# Namespace of the stable event ids (uuid5); any fixed value works, it must never change.
_EVENT_NAMESPACE = uuid.UUID("5b0c7f42-2a43-4c55-9a8e-1f4c7f0b6d21")


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    upload_id: str
    body: bytes  # the exact bytes signed and sent, the same on every retry


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def upload_view(info: UploadInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "length": info.length,
        "offset": info.offset,
        "metadata": dict(info.metadata),
        "owner": info.owner,
        "concat": info.concat.value,
        "partials": list(info.partials),
        "created_at": iso_time(info.created_at),
        "expires_at": iso_time(info.expires_at),
        "finished_at": iso_time(info.finished_at),
        "sha256": info.sha256,
    }


def stable_event_id(upload_id: str, event_type: str) -> str:
    """The id of an event that happens once per upload (created, finished, terminated).

    Derived, not random: the service may announce a finish twice (a crash between finishing
    and recording), and the repeat then carries the same Idempotency-Key as the first.
    """
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{upload_id}/{event_type}"))


def build_event(
    event_type: str,
    upload: Mapping[str, Any],
    *,
    upload_id: str,
    now: float,
    event_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Event:
    event_id = event_id or str(uuid.uuid4())
    payload = {
        "id": event_id,
        "type": event_type,
        "created_at": iso_time(now),
        **(extra or {}),
        "upload": dict(upload),
    }
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Event(id=event_id, type=event_type, upload_id=upload_id, body=body)
