"""HTTP ``Range`` request parsing for downloads (RFC 9110 §14).

This module owns one decision: which single byte range, if any, a GET should serve. It knows
nothing about responses; the caller turns the result into a 206 and lets the error renderer turn
``RangeNotSatisfiable`` into a 416.

Deliberately narrow: only the ``bytes`` unit and a single range. RFC 9110 §14.2 lets a server
ignore a ``Range`` header it does not want to honour and answer 200 with the whole
representation, which is what ``None`` means here (several ranges would need a
multipart/byteranges body that no tus client asks for).
"""

from __future__ import annotations

import re

from tusserver.errors import RangeNotSatisfiable

# ASCII digits only: str.isdigit() would accept "²" and other Unicode digits.
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` to serve of a ``size``-byte body, or None for "all".

    None: no header, a syntax error, another unit, or several ranges (RFC 9110 §14.2: a
    server MAY ignore Range). Raises ``RangeNotSatisfiable`` (carrying
    ``Content-Range: bytes */size``) when the single range is valid but selects nothing.
    """
    if header is None:
        return None
    unit, sep, range_set = header.strip().partition("=")
    # Range units are case-insensitive (RFC 9110 §14.1).
    if not sep or unit.strip().lower() != "bytes":
        return None
    # A list: recipients must tolerate empty elements and whitespace around commas (§5.6.1).
    specs = [part.strip() for part in range_set.split(",") if part.strip()]
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None  # a bare "-"
    try:
        start = int(first) if first else None
        end = int(last) if last else None
    except ValueError:  # thousands of digits exceed int()'s limit: not a range we can honour
        return None

    if start is None:
        # Suffix form "-n": the last n bytes; "-0" selects nothing.
        assert end is not None
        if end == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - end, 0), size - 1
    if end is not None and end < start:
        return None  # "a-b" with b < a is invalid, hence ignored (§14.1.1)
    if start >= size:
        raise _unsatisfiable(size)
    return start, size - 1 if end is None else min(end, size - 1)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    # RFC 9110 §15.5.17: a 416 to a byte range request should say how big the body is.
    return RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
