"""The in-process download quota: a bucket per IP, and a bounded table."""

from __future__ import annotations

import asyncio

import pytest

from delivery.quota import LocalQuota
from tusserver import errors


def test_the_local_quota_keeps_a_bounded_number_of_addresses() -> None:
    # A flood of distinct addresses (one IPv6 client holds many /64s) must not grow the
    # table for the rest of the day; the oldest address is forgotten first.
    quota = LocalQuota(5, clock=lambda: 1_700_000_000.0, max_subjects=100)

    async def flood() -> None:
        for n in range(1000):
            await quota.charge(f"10.0.{n // 256}.{n % 256}")

    asyncio.run(flood())
    assert len(quota) == 100


def test_the_local_quota_still_refuses_past_its_limit() -> None:
    quota = LocalQuota(2, clock=lambda: 1_700_000_000.0, max_subjects=100)

    async def charge() -> None:
        await quota.charge("10.0.0.1")

    asyncio.run(charge())
    asyncio.run(charge())
    with pytest.raises(errors.RateLimited):
        asyncio.run(charge())
