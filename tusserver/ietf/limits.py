"""``Upload-Limit``: what the server enforces, announced where the interop version has it.

``max-size`` is ``TUS_MAX_SIZE`` (or the caller's role's limit); the lifetime (``max-age``,
``expires`` before draft -06) is what remains of the upload's expiry, or the full expiry before
an upload exists (docs/protocol.md, "IETF draft: Upload-Limit").
"""

from __future__ import annotations

import math

from tusserver.core.uploads import UploadService
from tusserver.ietf.fields import upload_limit
from tusserver.ietf.versions import InteropRules
from tusserver.models import UploadInfo
from tusserver.security.admission import role_max_size
from tusserver.security.principal import Principal


def limit_header(
    service: UploadService, rules: InteropRules, info: UploadInfo | None, principal: Principal
) -> dict[str, str]:
    """``{"Upload-Limit": ...}``, or nothing for versions before the field existed.

    ``max-size`` is the caller's own (``TUS_MAX_SIZE_USER``/``_ADMIN`` when set): the draft
    wants no limit announced looser than the one applied.
    """
    if not rules.upload_limit:
        return {}
    members: list[tuple[str, int]] = []
    max_size = role_max_size(service.settings, principal)
    if max_size:
        members.append(("max-size", max_size))
    age = _remaining_life(service, info)
    if age is not None:
        members.append((rules.max_age_key, age))
    return {"Upload-Limit": upload_limit(members)}


def _remaining_life(service: UploadService, info: UploadInfo | None) -> int | None:
    if not service.expires:
        return None
    if info is None:
        return service.settings.expiration
    if info.is_complete or info.expires_at is None:
        return None  # a finished upload does not expire (docs/protocol.md, "Expiration")
    return max(0, math.floor(info.expires_at - service.ctx.clock()))
