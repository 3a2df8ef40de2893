"""The metadata a draft creation carries, stored as tus metadata so downloads, the catalog,
hooks and tus clients see the usual names (docs/protocol.md, "IETF draft: creation").
"""

from __future__ import annotations

from email.message import Message

from starlette.datastructures import Headers

from tusserver.core.uploads import UploadService, check_metadata_size
from tusserver.tus.protocol import encode_metadata, parse_metadata


def creation_metadata(
    service: UploadService, headers: Headers
) -> tuple[dict[str, str | None], str | None]:
    """The upload's metadata and the ``Upload-Metadata`` a tus ``HEAD`` echoes for it.

    tus-js-client sends tus's ``Upload-Metadata`` in its draft modes too; it is read with tus's
    rules, and the representation's own headers fill the names it does not give.
    """
    raw = headers.get("upload-metadata")
    limit = service.settings.max_metadata_size
    if raw is not None and len(raw) > limit:
        check_metadata_size(limit, {}, raw)  # refused before the cost of decoding it
    metadata = parse_metadata(raw)
    added = {k: v for k, v in representation_metadata(headers).items() if k not in metadata}
    if raw is not None and raw.strip() and not added:
        return metadata, raw  # verbatim, as tus keeps it
    metadata.update(added)
    return metadata, encode_metadata(metadata) or None


def representation_metadata(headers: Headers) -> dict[str, str | None]:
    """``filename`` (Content-Disposition) and ``filetype`` (Content-Type): the representation
    metadata the draft's creation carries, stored as tus metadata so downloads, the catalog
    and hooks see the same names (docs/protocol.md, "IETF draft: creation")."""
    metadata: dict[str, str | None] = {}
    disposition = headers.get("content-disposition")
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        filename = message.get_filename()
        if filename:
            metadata["filename"] = filename
    content_type = headers.get("content-type")
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type and media_type != "application/partial-upload":
            metadata["filetype"] = media_type
    return metadata
