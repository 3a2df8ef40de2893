"""Rate limits per user, per IP and on creations, counted in this process and in Redis: the
request past the limit is 429 with an integer Retry-After, the next window lets it through,
and uploads in progress, health checks and preflights are never limited."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
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
from tusserver.principal import SCOPE_KEY, Principal
from tusserver.ratelimit import RateLimiter, RateLimitMiddleware, client_ip
from tusserver.settings import Settings

FILES_API = f"{ORIGIN}/api/v1/files"
# The clock starts 15 s into a minute, so the first window has 45 s left.
START = 1_700_000_040.0 + 15


def limits(**values: int) -> dict[str, int]:
    """Every limit off except the given ones."""
    return {
        "rate_limit_per_user": 0,
        "rate_limit_per_ip": 0,
        "rate_limit_creations_per_user": 0,
        **{f"rate_limit_{k}": v for k, v in values.items()},
    }


def assert_limited(response: httpx.Response, retry_after: int = 45) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    if response.headers.get("content-type", "").startswith("application/json"):
        assert response.json()["error"]["code"] == "ERR_RATE_LIMITED"
    else:  # a tus path answers in tus's shape
        assert response.text.startswith("ERR_RATE_LIMITED: ")
        assert response.headers["tus-resumable"] == "1.0.0"


async def test_per_user_limit_and_its_window(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    clock = Clock(START)
    settings = Settings(**guard_options, jwt_secret=SECRET, **limits(per_user=3))
    async with serving(settings, clock=clock) as http:
        alice, bob = bearer("alice"), bearer("bob")
        for _ in range(3):
            assert (await http.get(FILES_API, headers=alice)).status_code == 200
        assert_limited(await http.get(FILES_API, headers=alice))
        assert_limited(await init(http, 10, headers=alice))  # every /api/ route counts
        # Another user from the same address has a budget of their own.
        assert (await http.get(FILES_API, headers=bob)).status_code == 200
        clock.now += 44
        assert_limited(await http.get(FILES_API, headers=alice), retry_after=1)
        clock.now += 1  # the next minute
        assert (await http.get(FILES_API, headers=alice)).status_code == 200


async def test_per_ip_limit(guard_options: dict[str, Any]) -> None:  # noqa: F811
    clock = Clock(START)
    settings = Settings(**guard_options, **limits(per_ip=2))
    async with serving(settings, clock=clock, wrap=FromClient) as http:
        one, two = {"X-Test-Client": "203.0.113.1"}, {"X-Test-Client": "203.0.113.2"}
        for _ in range(2):
            assert (await http.get(FILES_API, headers=one)).status_code == 200
        assert_limited(await http.get(FILES_API, headers=one))
        assert (await http.get(FILES_API, headers=two)).status_code == 200
        # X-Forwarded-For is the client's to write unless a trusted proxy overwrites it.
        spoofed = {**one, "X-Forwarded-For": "198.51.100.9"}
        assert_limited(await http.get(FILES_API, headers=spoofed))
        clock.now += 60
        assert (await http.get(FILES_API, headers=one)).status_code == 200


async def test_behind_a_trusted_proxy_the_last_forwarded_hop_counts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, trust_proxy=True, **limits(per_ip=1))
    async with serving(settings, clock=Clock(START)) as http:

        def via_proxy(chain: str) -> dict[str, str]:
            return {"X-Forwarded-For": chain}

        assert (await http.get(FILES_API, headers=via_proxy("10.0.0.1, 203.0.113.7"))).is_success
        # The left part is whatever the client sent: changing it does not make a new caller.
        assert_limited(await http.get(FILES_API, headers=via_proxy("10.9.9.9, 203.0.113.7")))
        assert (await http.get(FILES_API, headers=via_proxy("203.0.113.8"))).is_success


async def test_creations_are_limited_but_uploading_is_not(
    guard_options: dict[str, Any],  # noqa: F811
) -> None:
    settings = Settings(**guard_options, **limits(creations_per_user=2))
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
    settings = Settings(data_dir=tmp_path, **limits(per_ip=1, per_user=1, creations_per_user=1))
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


async def test_default_limits_are_generous(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.rate_limit_per_user, settings.rate_limit_per_ip) == (600, 1200)
    assert settings.rate_limit_creations_per_user == 120
    async with serving(settings, clock=Clock(START)) as http:
        for _ in range(50):
            assert (await http.get(FILES_API)).status_code == 200


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
    async def hit(self, keys: Sequence[str], limits: Sequence[int], ttl: float) -> int | None:
        raise ConnectionError("redis is down")


async def test_a_failing_counter_lets_requests_through() -> None:
    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    middleware = RateLimitMiddleware(
        ok,
        limiter=RateLimiter(Broken()),
        settings=Settings(rate_limit_per_ip=1),
        creation_paths=("/files/",),
    )
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            assert (await http.get(f"{ORIGIN}/api/v1/files")).text == "ok"


async def test_anonymous_callers_count_per_address_authenticated_ones_per_user() -> None:
    seen: list[Sequence[tuple[str, int]]] = []

    class Recording(RateLimiter):
        async def check(self, limits: Sequence[tuple[str, int]]) -> int | None:
            seen.append(limits)
            return None

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    middleware = RateLimitMiddleware(
        ok, limiter=Recording(Broken()), settings=Settings(), creation_paths=("/files/",)
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
