"""Rate limits per user, per IP and on creations, as token buckets counted in this process and
in Redis: the shipped defaults admit a folder of a thousand files at once, the request past a
bucket is 429 with an integer Retry-After after which it is admitted, idle buckets cost no
memory, and uploads in progress, health checks and preflights are never limited."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from tests.api.support import (
    FILES,
    ORIGIN,
    SECRET,
    FromClient,
    bearer,
    guard_options,  # noqa: F401  (fixture)
    init,
    patch,
)
from tests.apphttp import serving
from tests.clocks import Clock
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tusserver.runtime import runtime_of
from tusserver.security.buckets import EXPIRY_GRACE_MS
from tusserver.security.principal import SCOPE_KEY, Principal
from tusserver.security.ratelimit import (
    LocalBuckets,
    Rate,
    RateLimiter,
    RateLimitMiddleware,
    client_ip,
)
from tusserver.settings import Settings

FILES_API = f"{ORIGIN}/api/v1/files"
START = 1_700_000_055.0


def limits(**values: int) -> dict[str, int]:
    """Every limit off except the given ones (``per_user=60, per_user_burst=3``)."""
    return {
        "rate_limit_per_user": 0,
        "rate_limit_per_ip": 0,
        "rate_limit_creations_per_user": 0,
        **{f"rate_limit_{k}": v for k, v in values.items()},
    }


def assert_limited(response: httpx.Response, retry_after: int = 1) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    if response.headers.get("content-type", "").startswith("application/json"):
        assert response.json()["error"]["code"] == "ERR_RATE_LIMITED"
    else:  # a tus path answers in tus's shape
        assert response.text.startswith("ERR_RATE_LIMITED: ")
        assert response.headers["tus-resumable"] == "1.0.0"


def is_redis(options: dict[str, Any]) -> bool:
    return options.get("state") == "redis"


async def test_per_user_bucket_refills_at_its_rate(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    clock = Clock(START)
    # One request a second, three at once.
    settings = Settings(**guard_options, jwt_secret=SECRET, **limits(per_user=60, per_user_burst=3))
    async with serving(settings, clock=clock) as http:
        alice, bob = bearer("alice"), bearer("bob")
        for _ in range(3):
            assert (await http.get(FILES_API, headers=alice)).status_code == 200
        assert_limited(await http.get(FILES_API, headers=alice))
        assert_limited(await init(http, 10, headers=alice))  # every /api/ route counts
        # Another user from the same address has a bucket of their own.
        assert (await http.get(FILES_API, headers=bob)).status_code == 200
        clock.now += 0.5
        assert_limited(await http.get(FILES_API, headers=alice))
        clock.now += 0.5  # Retry-After said 1: one token is back, and only one
        assert (await http.get(FILES_API, headers=alice)).status_code == 200
        assert_limited(await http.get(FILES_API, headers=alice))
        clock.now += 3  # idle long enough: the whole burst again
        for _ in range(3):
            assert (await http.get(FILES_API, headers=alice)).status_code == 200
        assert_limited(await http.get(FILES_API, headers=alice))


async def test_retry_after_counts_the_seconds_until_a_token(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    clock = Clock(START)
    # Two requests a minute: a token every 30 s.
    settings = Settings(**guard_options, **limits(per_ip=2, per_ip_burst=1))
    async with serving(settings, clock=clock) as http:
        assert (await http.get(FILES_API)).status_code == 200
        assert_limited(await http.get(FILES_API), retry_after=30)
        clock.now += 29.5
        assert_limited(await http.get(FILES_API), retry_after=1)  # rounded up, never 0
        clock.now += 0.5
        assert (await http.get(FILES_API)).status_code == 200


async def test_a_client_waiting_exactly_one_interval_is_admitted(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    """Seven a minute: 60 / 7 s apart, a value no float holds exactly; the sums must not drift
    into refusing a client that keeps that pace."""
    clock = Clock(START)
    settings = Settings(**guard_options, **limits(per_ip=7, per_ip_burst=1))
    async with serving(settings, clock=clock) as http:
        assert (await http.get(FILES_API)).status_code == 200
        assert_limited(await http.get(FILES_API), retry_after=9)
        for _ in range(30):
            clock.now += 60 / 7
            assert (await http.get(FILES_API)).status_code == 200
        assert_limited(await http.get(FILES_API), retry_after=9)


async def test_a_refused_request_takes_nothing(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    """A client hammering while refused is not pushed further back: once it waits as told,
    it is admitted."""
    clock = Clock(START)
    settings = Settings(**guard_options, **limits(per_ip=60, per_ip_burst=2))
    async with serving(settings, clock=clock) as http:
        for _ in range(2):
            assert (await http.get(FILES_API)).status_code == 200
        for _ in range(20):
            assert_limited(await http.get(FILES_API))
        clock.now += 1
        assert (await http.get(FILES_API)).status_code == 200


async def test_per_ip_limit(guard_options: dict[str, Any]) -> None:  # noqa: F811
    clock = Clock(START)
    settings = Settings(**guard_options, **limits(per_ip=60, per_ip_burst=2))
    async with serving(settings, clock=clock, wrap=FromClient) as http:
        one, two = {"X-Test-Client": "203.0.113.1"}, {"X-Test-Client": "203.0.113.2"}
        for _ in range(2):
            assert (await http.get(FILES_API, headers=one)).status_code == 200
        assert_limited(await http.get(FILES_API, headers=one))
        assert (await http.get(FILES_API, headers=two)).status_code == 200
        # X-Forwarded-For is the client's to write unless a trusted proxy overwrites it.
        spoofed = {**one, "X-Forwarded-For": "198.51.100.9"}
        assert_limited(await http.get(FILES_API, headers=spoofed))
        clock.now += 1
        assert (await http.get(FILES_API, headers=one)).status_code == 200


async def test_behind_a_trusted_proxy_the_last_forwarded_hop_counts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, trust_proxy=True, **limits(per_ip=1, per_ip_burst=1))
    async with serving(settings, clock=Clock(START)) as http:

        def via_proxy(chain: str) -> dict[str, str]:
            return {"X-Forwarded-For": chain}

        assert (await http.get(FILES_API, headers=via_proxy("10.0.0.1, 203.0.113.7"))).is_success
        # The left part is whatever the client sent: changing it does not make a new caller.
        refused = await http.get(FILES_API, headers=via_proxy("10.9.9.9, 203.0.113.7"))
        assert_limited(refused, retry_after=60)
        assert (await http.get(FILES_API, headers=via_proxy("203.0.113.8"))).is_success


async def test_creations_are_limited_but_uploading_is_not(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    settings = Settings(
        **guard_options, **limits(creations_per_user=60, creations_per_user_burst=2)
    )
    async with serving(settings, clock=Clock(START)) as http:
        made = await http.post(FILES, headers={"Upload-Length": "4"})
        assert made.status_code == 201
        assert (await init(http, 10)).status_code == 201
        assert_limited(await http.post(FILES, headers={"Upload-Length": "4"}))
        assert_limited(await init(http, 10))
        url = made.headers["location"]
        # Resuming is never locked out: HEAD and PATCH far past the creation limit.
        for _ in range(5):
            assert (await http.head(url)).status_code == 200
        assert (await patch(http, url, 0, b"data")).status_code == 204
        assert (await http.get(url)).status_code == 200
        # Other API routes are not creations.
        assert (await http.get(FILES_API)).status_code == 200


async def test_health_metrics_and_preflights_are_never_limited(tmp_path: Path) -> None:
    one_each = limits(per_ip=1, per_ip_burst=1, per_user=1, per_user_burst=1, creations_per_user=1)
    settings = Settings(data_dir=tmp_path, **one_each, rate_limit_creations_per_user_burst=1)
    async with serving(settings, clock=Clock(START)) as http:
        for _ in range(3):
            assert (await http.get(f"{ORIGIN}/healthz")).status_code == 200
            assert (await http.get(f"{ORIGIN}/readyz")).status_code == 200
            assert (await http.get(f"{ORIGIN}/metrics")).status_code == 200
            assert (await http.options(FILES)).status_code in (200, 204)
            preflight = await http.options(
                f"{ORIGIN}/api/v1/uploads/init",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert preflight.status_code in (200, 204)


# ---- the shipped defaults ---------------------------------------------------------------------


async def create_many(http: httpx.AsyncClient, count: int, headers: dict[str, str]) -> list[int]:
    statuses = []
    for _ in range(count):
        made = await http.post(FILES, headers={"Upload-Length": "1", **headers})
        statuses.append(made.status_code)
    return statuses


@pytest.mark.parametrize("auth", [False, True], ids=["anonymous", "jwt"])
async def test_defaults_admit_a_folder_of_files_and_refuse_a_flood(
    guard_options: dict[str, Any],  # noqa: F811
    auth: bool,
) -> None:
    """With the shipped settings one caller may attempt 2,000 creations in the same instant
    (a folder of a thousand files dropped on a page, twice); the flood past that is refused
    with Retry-After 1, and is then admitted at the sustained rate, ten a second. (The e2e
    test in tests/e2e/test_bulk_uploads.py sends a thousand real files with tus-js-client.)"""
    clock = Clock(START)  # frozen: no refill helps
    extra = {"jwt_secret": SECRET} if auth else {}
    settings = Settings(**guard_options, **extra)
    headers = bearer("alice") if auth else {}
    async with serving(settings, clock=clock) as http:
        assert await create_many(http, 200, headers) == [201] * 200
        # Every creation attempt counts, valid or not: the cheap way to drain the burst.
        for _ in range(1800):
            assert (await http.post(FILES, headers=headers)).status_code == 400
        assert_limited(await http.post(FILES, headers={"Upload-Length": "1", **headers}))
        assert (await http.get(FILES_API, headers=headers)).status_code == 200  # not a creation
        clock.now += 1
        assert await create_many(http, 11, headers) == [201] * 10 + [429]


# ---- memory -----------------------------------------------------------------------------------


async def test_idle_buckets_are_dropped_in_process(tmp_path: Path) -> None:
    clock = Clock(START)
    settings = Settings(data_dir=tmp_path, **limits(per_ip=60, per_ip_burst=5))
    async with serving(settings, clock=clock, wrap=FromClient) as http:
        buckets = runtime_of(http.app).limiter.buckets  # type: ignore[attr-defined]
        for n in range(200):
            caller = {"X-Test-Client": f"198.51.100.{n}" if n < 100 else f"2001:db8:{n}::1"}
            assert (await http.get(FILES_API, headers=caller)).status_code == 200
        assert len(buckets) == 200
        clock.now += 1  # one request a second: every one of those buckets is full again
        assert (await http.get(FILES_API, headers={"X-Test-Client": "203.0.113.1"})).is_success
        assert len(buckets) == 1


async def test_local_buckets_keep_at_most_max_keys() -> None:
    buckets = LocalBuckets(max_keys=100)
    rate = Rate(per_minute=1, burst=1)  # nothing refills within the test
    for n in range(1000):
        assert await buckets.take([f"k{n}"], [rate], START) is None
        assert len(buckets) <= 100
    # The most recently used survive; the oldest went first.
    assert await buckets.take(["k999"], [rate], START) is not None
    assert await buckets.take(["k0"], [rate], START) is None


async def test_redis_buckets_expire_when_they_have_refilled(
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}:"
    settings = Settings(
        data_dir=tmp_path,
        media_probe=False,
        state="redis",
        redis_url=redis_url,
        redis_prefix=prefix,
        **limits(per_ip=60, per_ip_burst=5, per_user=600, per_user_burst=100),
    )
    client = aioredis.from_url(redis_url)
    try:
        async with serving(settings, clock=Clock(START)) as http:
            for _ in range(3):
                assert (await http.get(FILES_API)).status_code == 200
            keys = sorted([k.decode() async for k in client.scan_iter(f"{prefix}rl:*")])
            assert keys == [f"{prefix}rl:ip:127.0.0.1", f"{prefix}rl:user:ip:127.0.0.1"]
            # Three requests drained three seconds of the per-IP bucket and 0.3 s of the
            # per-user one: each key lives until its bucket is full again, plus the grace.
            grace = EXPIRY_GRACE_MS
            assert 2900 + grace < await client.pttl(keys[0]) <= 3000 + grace
            assert 200 + grace < await client.pttl(keys[1]) <= 300 + grace
    finally:
        await client.aclose()


# ---- pieces -----------------------------------------------------------------------------------


def scope(client: str, xff: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", xff.encode())] if xff is not None else []
    return {"client": (client, 1234), "headers": headers}


@pytest.mark.parametrize(
    ("client", "xff", "trust", "expected"),
    [
        ("203.0.113.5", None, False, "203.0.113.5"),
        ("10.0.0.2", "198.51.100.1, 203.0.113.9", False, "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1, 203.0.113.9", True, "203.0.113.9"),
        ("10.0.0.2", "not-an-ip", True, "not-an-ip"),
        ("10.0.0.2", "", True, "10.0.0.2"),
        # One IPv6 subscriber holds a whole /64.
        ("2001:db8:1:2:3:4:5:6", None, False, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", None, False, "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", None, False, "192.0.2.1"),
    ],
)
def test_client_ip(client: str, xff: str | None, trust: bool, expected: str) -> None:
    assert client_ip(scope(client, xff), trust_proxy=trust) == expected


class Broken:
    async def take(
        self, keys: Sequence[str], rates: Sequence[Rate], now: float, *, cost: int = 1
    ) -> float | None:
        raise ConnectionError("redis is down")


async def test_a_failing_counter_lets_requests_through() -> None:
    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    middleware = RateLimitMiddleware(
        ok,
        limiter=lambda scope: RateLimiter(Broken()),
        settings=Settings(rate_limit_per_ip=1),
        creation_paths=("/files/",),
    )
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            assert (await http.get(f"{ORIGIN}/api/v1/files")).text == "ok"


async def test_anonymous_callers_count_per_address_authenticated_ones_per_user() -> None:
    seen: list[Sequence[tuple[str, Rate]]] = []

    class Recording(RateLimiter):
        async def check(self, limits: Sequence[tuple[str, Rate]]) -> int | None:
            seen.append(limits)
            return None

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    recording = Recording(Broken())
    middleware = RateLimitMiddleware(
        ok, limiter=lambda scope: recording, settings=Settings(), creation_paths=("/files/",)
    )

    async def as_alice(scope: Scope, receive: Receive, send: Send) -> None:
        scope[SCOPE_KEY] = Principal("alice")
        await middleware(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware)) as http:
        await http.post(f"{ORIGIN}/files/")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=as_alice)) as http:
        await http.post(f"{ORIGIN}/files/")
    assert [name for name, _ in seen[0]] == [
        "ip:127.0.0.1",
        "user:ip:127.0.0.1",
        "new:ip:127.0.0.1",
    ]
    assert [name for name, _ in seen[1]] == ["ip:127.0.0.1", "user:u:alice", "new:u:alice"]
