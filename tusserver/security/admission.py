"""What a caller may create: the declared content type and the size their role allows.

Owns the creation-time policy shared by the tus ``POST`` and ``/api/v1/uploads/init``:
``TUS_ALLOWED_CONTENT_TYPES`` (415 ``ERR_CONTENT_TYPE_NOT_ALLOWED``) and the per-role
maximum, ``TUS_MAX_SIZE_USER`` / ``TUS_MAX_SIZE_ADMIN`` (413 ``ERR_UPLOAD_SIZE_EXCEEDED``).
``Tus-Max-Size`` keeps advertising the global ``TUS_MAX_SIZE``: discovery is the same for
everyone, and a role's limit can only be lower.
"""

from __future__ import annotations

from collections.abc import Mapping

from tusserver import errors
from tusserver.models import ConcatKind
from tusserver.security.principal import Principal
from tusserver.settings import Settings
from tusserver.state.base import StateStore
from tusserver.tus.protocol import ConcatRequest

# The metadata keys tus clients declare a type with (tus-js-client/Uppy: filetype, type).
TYPE_KEYS = ("filetype", "type")


def declared_type(metadata: Mapping[str, str | None]) -> str | None:
    """The declared media type, lowercased, parameters (``; codecs=...``) dropped."""
    for key in TYPE_KEYS:
        value = metadata.get(key)
        if value:
            return value.split(";", 1)[0].strip().lower() or None
    return None


def check_content_type(settings: Settings, content_type: str | None) -> None:
    allowed = settings.allowed_content_types
    if not allowed:
        return
    if content_type is None:
        raise errors.ContentTypeNotAllowed(
            "declare the file's type (filetype metadata); allowed: " + ", ".join(allowed)
        )
    if content_type.split(";", 1)[0].strip().lower() not in allowed:
        raise errors.ContentTypeNotAllowed("allowed types: " + ", ".join(allowed))


def role_max_size(settings: Settings, principal: Principal) -> int:
    """The caller's largest upload in bytes; 0 means no limit."""
    own = settings.max_size_admin if principal.admin else settings.max_size_user
    return own or settings.max_size


def check_length(settings: Settings, principal: Principal, length: int | None) -> None:
    limit = role_max_size(settings, principal)
    if not limit or limit == settings.max_size:
        return  # the global maximum is enforced by the upload service itself
    if length is None:
        # A deferred length could grow past the role's limit at PATCH time, which only
        # checks the global maximum; so it is not offered under a role limit.
        raise errors.DeferNotSupported("deferred lengths are not available under a size limit")
    if length > limit:
        raise errors.SizeExceeded(f"the upload exceeds your maximum size of {limit}")


async def admit_creation(
    settings: Settings,
    state: StateStore,
    principal: Principal,
    *,
    length: int | None,
    metadata: Mapping[str, str | None],
    concat: ConcatRequest | None,
) -> None:
    """Refuse a tus creation the caller's policy does not allow (before anything exists)."""
    kind = concat.kind if concat is not None else ConcatKind.NONE
    # A partial is not a file: its final upload declares (and is checked for) the type.
    if kind is not ConcatKind.PARTIAL:
        check_content_type(settings, declared_type(metadata))
    if kind is ConcatKind.FINAL:
        assert concat is not None
        # The final's length is the partials' sum; missing ones are refused later anyway.
        total = 0
        for partial_id in concat.partial_ids:
            partial = await state.get(partial_id)
            if partial is not None and partial.length is not None:
                total += partial.length
        check_length(settings, principal, total)
        return
    check_length(settings, principal, length)
