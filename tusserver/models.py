"""The upload record shared by every layer: what an upload is, independent of where it lives."""

from __future__ import annotations

import dataclasses
import enum
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
