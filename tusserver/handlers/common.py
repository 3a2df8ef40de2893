"""Header building shared by the tus handlers."""

from __future__ import annotations

from starlette.requests import Request

from tusserver.models import UploadInfo
from tusserver.protocol import format_http_date, request_base_url
from tusserver.settings import Settings


def upload_url(request: Request, settings: Settings, upload_id: str) -> str:
    """Absolute upload URL for ``Location`` (T063): a relative one breaks tuspy's urljoin."""
    if settings.public_url is not None:
        base = settings.public_url
    else:
        scope = request.scope
        server = scope.get("server")
        base = request_base_url(
            scheme=scope.get("scheme", "http"),
            host=request.headers.get("host"),
            server=(server[0], server[1]) if server else None,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            trust_proxy=settings.trust_proxy,
        )
    return f"{base}{settings.base_path}{upload_id}"


def expires_header(info: UploadInfo) -> dict[str, str]:
    """``Upload-Expires`` for unfinished uploads only (T110, T111, T115)."""
    if info.expires_at is None or info.is_complete:
        return {}
    return {"Upload-Expires": format_http_date(info.expires_at)}
