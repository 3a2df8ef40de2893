"""The S3 store's settings (``S3Config``) and the checks on them, made once at startup."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tusserver.storage.parts import plan_part_size

MiB = 1024 * 1024
# S3 "safe characters" only, in non-empty segments each ending with '/': no leading '/', no
# '//', and '.'/'..' segments are refused separately.
_PREFIX = re.compile(r"(?:[A-Za-z0-9!_.*'()-]+/)*")
_MAX_PREFIX = 512


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe key prefix ('' or segments ending with '/')."""
    if (
        len(prefix) > _MAX_PREFIX
        or _PREFIX.fullmatch(prefix) is None
        or any(segment in {".", ".."} for segment in prefix.split("/"))
    ):
        raise ValueError(
            f"invalid S3 key prefix {prefix!r}: use safe characters in segments ending with "
            "'/', without a leading '/', '//' or '..'"
        )
    return prefix


@dataclass(frozen=True)
class S3Config:
    """Everything ``S3Store`` needs besides the client."""

    bucket: str
    prefix: str = ""
    preferred_part_size: int = 16 * MiB
    fixed_part_size: int | None = None
    max_size: int | None = None
    concurrency: int = 4
    # Shared by every upload of the process: bounds the parts in flight (connections, and
    # the spooled parts they hold on disk).
    parts_in_flight: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    # Where parts spill to disk (None: the system temp dir), and the bytes of a part kept in
    # memory before they do.
    spool_dir: Path | None = None
    spool_memory: int = MiB
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    # ListParts page size (S3's maximum is 1000); tests make it small to exercise paging.
    list_parts_page: int = 1000

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("bucket is required")
        validate_prefix(self.prefix)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.spool_memory < 0:
            raise ValueError("spool_memory must not be negative")
        if not 1 <= self.list_parts_page <= 1000:
            raise ValueError("list_parts_page must be within [1, 1000]")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise ValueError(f"unsupported server-side encryption {self.sse!r}")
        if self.sse == "aws:kms" and not self.kms_key_id:
            raise ValueError("sse=aws:kms needs kms_key_id")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id is only used with sse=aws:kms")
        # Validates the part size settings once, at startup, rather than on the first upload.
        plan_part_size(
            0, preferred=self.preferred_part_size, max_size=None, fixed=self.fixed_part_size
        )
