"""Which protocol a request speaks, from its raw header list (docs/protocol.md,
"IETF draft: detection").

tus 1.0 whenever ``Tus-Resumable`` is present, whatever else the request carries; the draft
when ``Upload-Draft-Interop-Version`` is present, or when the draft's own fields
(``Upload-Complete``, ``Upload-Incomplete``) or media type (``application/partial-upload``)
appear without ``Tus-Resumable``. Anything else is left to the tus layer, which keeps its
own rules (a HEAD without ``Tus-Resumable`` is served as tus).
"""

from __future__ import annotations

from collections.abc import Iterable

_DRAFT_FIELDS = frozenset(
    {b"upload-draft-interop-version", b"upload-complete", b"upload-incomplete"}
)
_PARTIAL_UPLOAD = b"application/partial-upload"


def is_draft_request(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when the request is the draft's (names are lowercase, as ASGI delivers them)."""
    draft = False
    for name, value in headers:
        if name == b"tus-resumable":
            return False
        if name in _DRAFT_FIELDS or (name == b"content-type" and _is_partial_upload(value)):
            draft = True
    return draft


def _is_partial_upload(value: bytes) -> bool:
    return value.split(b";", 1)[0].strip(b" \t").lower() == _PARTIAL_UPLOAD
