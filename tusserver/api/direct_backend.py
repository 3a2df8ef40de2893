"""What a storage backend does for direct uploads, and the pure rules both backends share.

``DirectBackend`` is implemented by ``direct_s3`` (real presigned S3 URLs; the server never
touches the bytes) and ``direct_local`` (URLs to our own signed PUT endpoint; complete
assembles the parts). Either way the finished object lands at the upload id's data key, where
the store's reader and locator find it.

The pure parts live here: planning a multipart upload within S3's limits, and checking the
part list a client sends to complete.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tusserver.api.direct_state import DirectUpload
from tusserver.storage.base import KnownCheck
from tusserver.storage.parts import MAX_OBJECT, MAX_PART, MAX_PARTS, MIN_PART, plan_part_size

MAX_ETAG = 128


@dataclass(frozen=True)
class Target:
    """Where and how the client sends bytes: the URL, the method, headers it must send."""

    url: str
    method: str = "PUT"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompletedPart:
    number: int
    etag: str


@dataclass(frozen=True)
class Stored:
    """The finished object: its size, and its SHA-256 when the backend read the bytes."""

    size: int
    sha256: str | None = None


class PartsRejected(Exception):
    """The part list does not match what storage holds (an ETag, a missing or small part).
    The message names the problem for the client; it never quotes storage's own text."""


class DirectBackend(Protocol):
    @property
    def name(self) -> str:
        """``s3`` or ``local``."""
        ...

    def storage_key(self, upload_id: str) -> str: ...

    async def start(self, upload: DirectUpload) -> DirectUpload:
        """Prepare storage for a new upload (S3: initiate the multipart upload)."""
        ...

    async def target(
        self, upload: DirectUpload, part_number: int, *, expires_at: int, base_url: str
    ) -> Target:
        """A URL for part ``part_number`` (0: the single PUT), valid until ``expires_at``."""
        ...

    async def received_parts(self, upload: DirectUpload) -> list[int]:
        """Part numbers storage holds so far (multipart uploads)."""
        ...

    async def finish(self, upload: DirectUpload, parts: Sequence[CompletedPart]) -> Stored:
        """Put the whole object at the final key; say what it holds.

        ``parts`` is empty for a single PUT. Raises ``UploadIncomplete`` when nothing was
        uploaded, ``PartsRejected`` when the list does not match the stored parts.
        """
        ...

    async def store(self, upload: DirectUpload, data: bytes) -> None:
        """Write a small object at the final key in one step (the admin direct upload)."""
        ...

    async def discard(self, upload: DirectUpload) -> None:
        """Drop every unfinished piece (S3: abort the multipart upload; local: the parts)."""
        ...

    async def delete_object(self, upload: DirectUpload) -> None:
        """Remove the final object (a completion that found it wrong)."""
        ...

    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        """Remove pieces no record knows, older than ``older_than``; returns how many."""
        ...


@dataclass(frozen=True)
class Plan:
    part_size: int
    num_parts: int


def plan_multipart(size: int, *, requested: int | None, preferred: int, fixed: int | None) -> Plan:
    """The part size and count for ``size`` bytes; ``ValueError`` explains a refusal.

    A requested size is honoured when S3 allows it (5 MiB to 5 GiB, at most 10,000 parts);
    otherwise the configured preference, raised so the parts fit. A store that insists on a
    fixed size (R2) gets it whatever was asked.
    """
    if not 1 <= size <= MAX_OBJECT:
        raise ValueError(f"file_size must be within [1, {MAX_OBJECT}]")
    if fixed is None and requested is not None:
        if not MIN_PART <= requested <= MAX_PART:
            raise ValueError(f"part_size must be within [{MIN_PART}, {MAX_PART}]")
        if math.ceil(size / requested) > MAX_PARTS:
            raise ValueError(f"part_size is too small: more than {MAX_PARTS} parts")
        part_size = requested
    else:
        part_size = plan_part_size(size, preferred=preferred, max_size=None, fixed=fixed)
    return Plan(part_size=part_size, num_parts=math.ceil(size / part_size))


def check_part_list(parts: Sequence[CompletedPart], num_parts: int) -> list[str]:
    """Problems with a client's part list (empty when it is exactly parts 1..num_parts, in
    order, each with a plausible ETag)."""
    problems: list[str] = []
    seen: set[int] = set()
    previous = 0
    for index, part in enumerate(parts):
        where = f"parts[{index}]"
        if not 1 <= part.number <= num_parts:
            problems.append(f"{where}: part {part.number} is not in 1..{num_parts}")
        elif part.number in seen:
            problems.append(f"{where}: part {part.number} is listed twice")
        elif part.number < previous:
            problems.append(f"{where}: part {part.number} is out of order")
        seen.add(part.number)
        previous = max(previous, part.number)
        etag = part.etag.strip().strip('"')
        if not etag or len(part.etag) > MAX_ETAG:
            problems.append(f"{where}: the etag must be 1 to {MAX_ETAG} characters")
    missing = sorted(set(range(1, num_parts + 1)) - seen)
    if missing:
        shown = ", ".join(str(n) for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        problems.append(f"missing parts: {shown}{more}")
    return problems


def bare_etag(etag: str) -> str:
    """An ETag without quotes or a weak marker, for comparing ours with a client's copy."""
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').lower()
