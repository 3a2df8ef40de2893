"""The upload record shared by every layer: what an upload is, independent of where it lives.

Also owns upload ids (their shape, and the check every store applies before an id becomes a
file name or a key): every wire protocol hands out the same ids.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConcatKind(enum.StrEnum):
    """Role of an upload in the concatenation extension."""

    NONE = "none"
    PARTIAL = "partial"
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """Everything known about one upload.

    ``offset`` counts bytes that are durable in storage; it never runs ahead of them.
    ``length`` is None while the length is deferred. ``metadata_raw`` is the
    ``Upload-Metadata`` header exactly as the client sent it (echoed verbatim on HEAD);
    ``metadata`` is its decoded form. ``storage`` is private to the storage backend.
    """

    id: str
    length: int | None
    offset: int = 0
    metadata: Mapping[str, str | None] = field(default_factory=dict)
    metadata_raw: str | None = None
    concat: ConcatKind = ConcatKind.NONE
    # For a final upload: the partial ids in order, and the header as received.
    partials: tuple[str, ...] = ()
    concat_raw: str | None = None
    owner: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    finished_at: float | None = None
    # Hex SHA-256 of the whole file, when it was hashed as it streamed in (else None: the
    # catalog computes it from the stored bytes).
    sha256: str | None = None
    storage: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.concat is ConcatKind.FINAL

    @property
    def is_partial(self) -> bool:
        return self.concat is ConcatKind.PARTIAL

    @property
    def is_complete(self) -> bool:
        return self.length is not None and self.offset >= self.length

    @property
    def size_deferred(self) -> bool:
        return self.length is None

    def replace(self, **changes: Any) -> UploadInfo:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``from_dict(to_dict(x)) == x``."""
        # Field by field rather than dataclasses.asdict, which deep-copies recursively and
        # cost about a tenth of a small creation's CPU. ``storage`` values are JSON scalars.
        return {
            "id": self.id,
            "length": self.length,
            "offset": self.offset,
            "metadata": dict(self.metadata),
            "metadata_raw": self.metadata_raw,
            "concat": self.concat.value,
            "partials": list(self.partials),
            "concat_raw": self.concat_raw,
            "owner": self.owner,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "finished_at": self.finished_at,
            "sha256": self.sha256,
            "storage": dict(self.storage),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UploadInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["concat"] = ConcatKind(values.get("concat", "none"))
        values["partials"] = tuple(values.get("partials", ()))
        values["metadata"] = dict(values.get("metadata") or {})
        values["storage"] = dict(values.get("storage") or {})
        return cls(**values)


# --- upload ids -------------------------------------------------------------------------------

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def new_upload_id() -> str:
    """A fresh upload id: 128 random bits as 32 lowercase hex characters, as tusd.

    See (docs/protocol.md, "Upload ids").
    """
    return secrets.token_hex(16)


def is_valid_upload_id(value: str) -> bool:
    """True for exactly 32 lowercase hex characters.

    fullmatch, not ``match`` with ``$``: ``$`` also matches before a trailing newline, so
    ``"<id>\\n"`` would pass and could reach a file name or a storage key.
    """
    return _UPLOAD_ID.fullmatch(value) is not None


def checked_upload_id(value: str) -> str:
    """``value`` itself when it is a well-formed upload id, else ValueError.

    Every store builds file names or keys from ids, so each checks them here: a malformed id
    reaching one is a bug upstream, never a path or key to use.
    """
    if not isinstance(value, str) or not is_valid_upload_id(value):
        raise ValueError(f"invalid upload id: {value[:40] if isinstance(value, str) else value!r}")
    return value
