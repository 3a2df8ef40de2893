"""RFC 9530 digests on the draft's requests: which one a request's content is verified
against, with the tus checksum machinery (``UploadService.write``: a mismatch stores nothing).

See (docs/protocol.md, "IETF draft: append").
"""

from __future__ import annotations

from starlette.datastructures import Headers

from tusserver.core.uploads import UploadService
from tusserver.ietf.fields import parse_content_digest
from tusserver.tus.protocol import Checksum


def creation_digest(service: UploadService, headers: Headers, *, complete: bool) -> Checksum | None:
    """The digest a creation's content is verified against: ``Content-Digest``, or on a
    creation that carries the whole representation, its ``Repr-Digest`` (the same bytes).

    A ``Repr-Digest`` on an upload spread over several requests is not verified
    (docs/protocol.md, "IETF draft: disagreements and choices").
    """
    checksum = content_digest(service, headers)
    if checksum is None and complete and service.features.checksum:
        raw = headers.get("repr-digest")
        checksum = parse_content_digest(raw, service.settings.checksum_algorithms, "Repr-Digest")
    return checksum


def content_digest(service: UploadService, headers: Headers) -> Checksum | None:
    """The ``Content-Digest`` to verify, when the server verifies digests at all."""
    if not service.features.checksum:
        return None
    return parse_content_digest(headers.get("content-digest"), service.settings.checksum_algorithms)
