"""The pure part planner: sizes for known, deferred and fixed part sizes, and the 10,000 cap."""

from __future__ import annotations

import pytest

from tusserver.errors import SizeExceeded
from tusserver.storage.parts import (
    MAX_OBJECT,
    MAX_PART,
    MAX_PARTS,
    MIN_PART,
    parts_needed,
    plan_part_size,
)

MiB = 1024 * 1024
GB = 1000**3
PREFERRED = 16 * MiB


@pytest.mark.parametrize(
    ("length", "max_size", "expected"),
    [
        (0, None, PREFERRED),
        (1, None, PREFERRED),
        (5 * MiB, None, PREFERRED),
        (PREFERRED * MAX_PARTS, None, PREFERRED),
        (PREFERRED * MAX_PARTS + 1, None, PREFERRED + 1),
        (60 * GB, None, PREFERRED),  # 60 GB / 10,000 = 6 MB < 16 MiB: preferred wins
        (600 * GB, None, 60_000_000),
        (MAX_OBJECT, None, 549_755_814),  # ceil(5 TiB / 10,000)
        (None, None, 549_755_814),  # deferred, no maximum: plan for 5 TiB
        (None, 100 * GB, PREFERRED),  # deferred with a maximum: plan for the maximum
        (None, 1000 * GB, 100_000_000),
        (None, 2 * MAX_OBJECT, 549_755_814),  # a maximum beyond S3's own is capped
    ],
)
def test_plan(length: int | None, max_size: int | None, expected: int) -> None:
    assert plan_part_size(length, preferred=PREFERRED, max_size=max_size) == expected


def test_60_gb_upload_fits() -> None:
    size = plan_part_size(60 * GB, preferred=5 * MiB, max_size=None)
    assert size == 6_000_000
    assert parts_needed(60 * GB, size) == MAX_PARTS


def test_exactly_5_tib_fits_and_one_byte_more_is_413() -> None:
    size = plan_part_size(MAX_OBJECT, preferred=PREFERRED, max_size=None)
    assert MIN_PART <= size <= MAX_PART
    assert parts_needed(MAX_OBJECT, size) <= MAX_PARTS
    with pytest.raises(SizeExceeded) as caught:
        plan_part_size(MAX_OBJECT + 1, preferred=PREFERRED, max_size=None)
    assert caught.value.status == 413


def test_length_over_the_configured_maximum_is_413() -> None:
    with pytest.raises(SizeExceeded):
        plan_part_size(101, preferred=PREFERRED, max_size=100)


@pytest.mark.parametrize("preferred", [1, MiB, MIN_PART - 1])
def test_preferred_below_5_mib_is_raised_to_5_mib(preferred: int) -> None:
    assert plan_part_size(10 * MiB, preferred=preferred, max_size=None) == MIN_PART


def test_preferred_above_5_gib_is_capped() -> None:
    assert plan_part_size(1, preferred=MAX_PART + 1, max_size=None) == MAX_PART


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_preferred_is_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="preferred"):
        plan_part_size(1, preferred=bad, max_size=None)


def test_negative_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="length"):
        plan_part_size(-1, preferred=PREFERRED, max_size=None)


@pytest.mark.parametrize("fixed", [MIN_PART, 8 * MiB, MAX_PART])
def test_fixed_size_is_used_as_is(fixed: int) -> None:
    assert plan_part_size(1, preferred=PREFERRED, max_size=None, fixed=fixed) == fixed
    # Deferred uploads too: a write past 10,000 parts is refused when it happens.
    assert plan_part_size(None, preferred=PREFERRED, max_size=None, fixed=fixed) == fixed


@pytest.mark.parametrize("fixed", [0, MIN_PART - 1, MAX_PART + 1])
def test_fixed_size_out_of_range_is_rejected(fixed: int) -> None:
    with pytest.raises(ValueError, match="fixed"):
        plan_part_size(1, preferred=PREFERRED, max_size=None, fixed=fixed)


def test_fixed_size_too_small_for_the_length_is_413() -> None:
    assert plan_part_size(MIN_PART * MAX_PARTS, preferred=1, max_size=None, fixed=MIN_PART)
    with pytest.raises(SizeExceeded):
        plan_part_size(MIN_PART * MAX_PARTS + 1, preferred=1, max_size=None, fixed=MIN_PART)


@pytest.mark.parametrize("preferred", [1, MIN_PART, PREFERRED, 100 * MiB, MAX_PART])
def test_every_length_up_to_5_tib_fits_in_10000_parts(preferred: int) -> None:
    # hypothesis is not installed: walk a log-spaced range plus the edges around each step.
    lengths = {0, 1, MAX_OBJECT, MAX_OBJECT - 1}
    length = 1
    while length < MAX_OBJECT:
        lengths.update({length - 1, length, length + 1})
        length = length * 5 // 4 + 1
    for n in sorted(x for x in lengths if 0 <= x <= MAX_OBJECT):
        size = plan_part_size(n, preferred=preferred, max_size=None)
        assert MIN_PART <= size <= MAX_PART, n
        assert parts_needed(n, size) <= MAX_PARTS, n
