"""parse_range: which single byte range a download serves (RFC 9110 §14)."""

from __future__ import annotations

import pytest

from tusserver.edge.ranges import parse_range
from tusserver.errors import RangeNotSatisfiable


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=0-9", 10, (0, 9)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=9-", 10, (9, 9)),
        ("bytes=5-100", 10, (5, 9)),  # end clamped to size - 1
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-10", 10, (0, 9)),
        ("bytes=-100", 10, (0, 9)),  # suffix longer than the body: the whole body
        ("Bytes=1-2", 10, (1, 2)),  # the unit is case-insensitive
        ("  bytes=1-2  ", 10, (1, 2)),
        ("bytes= 1-2 ", 10, (1, 2)),  # whitespace around list elements
        ("bytes=1-2,", 10, (1, 2)),  # empty list elements are tolerated
        ("bytes=,1-2", 10, (1, 2)),
        ("bytes=0007-0008", 10, (7, 8)),
    ],
)
def test_satisfiable(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-a",
        "bytes=5-2",  # last < first: invalid, so ignored
        "bytes=1 - 2",
        "bytes=+1-2",
        "bytes=-+2",
        "bytes=1.5-2",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits are not ASCII digits
        "bytes=\u00b2-",  # str.isdigit() would accept a superscript two
        "items=0-1",
        "0-1",
        "bytes=0-1,3-4",  # several ranges: the whole body is served instead
        "bytes=0-1, -2",
        "bytes=" + "9" * 5000 + "-",  # beyond int()'s digit limit
    ],
)
def test_ignored(header: str | None) -> None:
    assert parse_range(header, 10) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=11-11", 10),
        ("bytes=-0", 10),
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-1", 0),
        ("bytes=" + "9" * 30 + "-", 10),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, size)
    assert caught.value.status == 416
    assert caught.value.headers == {"Content-Range": f"bytes */{size}"}


def test_huge_end_is_clamped() -> None:
    assert parse_range("bytes=3-" + "9" * 30, 10) == (3, 9)
