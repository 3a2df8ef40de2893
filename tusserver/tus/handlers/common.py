"""Header building shared by the tus handlers."""

from __future__ import annotations

from starlette.requests import Request

from tusserver.edge.urls import public_base
from tusserver.models import UploadInfo
from tusserver.settings import Settings
from tusserver.tus.protocol import format_http_date


def upload_url(request: Request, settings: Settings, upload_id: str) -> str:
    """Absolute upload URL for ``Location``: a relative one breaks tuspy's urljoin.

    See (docs/protocol.md, "Location and proxies").
    """
    return f"{public_base(request, settings)}{settings.base_path}{upload_id}"


def expires_header(info: UploadInfo) -> dict[str, str]:
    """``Upload-Expires`` for unfinished uploads only (docs/protocol.md, "Expiration")."""
    if info.expires_at is None or info.is_complete:
        return {}
    return {"Upload-Expires": format_http_date(info.expires_at)}
