"""Pure multipart planning: how big each S3 part of an upload should be.

S3 (and most S3-compatible stores) allow at most 10,000 parts per multipart upload, every part
but the last at least 5 MiB and at most 5 GiB, and objects of at most 5 TiB. The part size is
chosen once, when the upload is created, so that the whole upload fits in 10,000 parts; an
upload whose length is deferred is planned for the largest size it may reach.

No I/O here: the planning is a function of its arguments and tested alone.
"""

from __future__ import annotations

from tusserver.errors import SizeExceeded

MiB = 1024 * 1024
MIN_PART = 5 * MiB
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT = 5 * 1024 * 1024 * MiB


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def parts_needed(length: int, part_size: int) -> int:
    """How many parts ``length`` bytes take with ``part_size`` (a zero-length upload: 0)."""
    return _ceil_div(length, part_size)


def plan_part_size(
    length: int | None, *, preferred: int, max_size: int | None, fixed: int | None = None
) -> int:
    """The part size for an upload of ``length`` bytes (None: deferred).

    ``preferred`` is the configured size; it is raised to ``ceil(length / 10,000)`` when the
    upload would otherwise need more parts, and never goes below 5 MiB. ``fixed`` is a size
    the store insists on (R2 wants equal parts): it is used as is, if it fits.

    Raises ``SizeExceeded`` (413) for uploads S3 cannot hold, ``ValueError`` for a bad
    configuration.
    """
    if preferred <= 0:
        raise ValueError(f"preferred part size must be positive, got {preferred}")
    if max_size is not None and max_size <= 0:
        raise ValueError(f"max_size must be positive or None, got {max_size}")
    if fixed is not None and not MIN_PART <= fixed <= MAX_PART:
        raise ValueError(f"fixed part size must be within [{MIN_PART}, {MAX_PART}], got {fixed}")
    if length is not None:
        if length < 0:
            raise ValueError(f"length must not be negative, got {length}")
        if length > MAX_OBJECT or (max_size is not None and length > max_size):
            raise SizeExceeded()
        target = length
    else:
        # Deferred: plan for the largest upload that may arrive. A configured maximum above
        # what S3 can store is capped; a write beyond 10,000 parts is refused at write time.
        target = min(max_size, MAX_OBJECT) if max_size is not None else MAX_OBJECT
    if fixed is not None:
        if length is not None and parts_needed(target, fixed) > MAX_PARTS:
            raise SizeExceeded(f"{length} bytes need more than {MAX_PARTS} parts of {fixed}")
        return fixed
    size = max(preferred, MIN_PART, _ceil_div(target, MAX_PARTS))
    # Unreachable with target <= 5 TiB (ceil(5 TiB / 10,000) is about 524 MiB); a preferred
    # size above the S3 limit is a configuration mistake we quietly correct.
    return min(size, MAX_PART)
