"""Schemathesis against the JSON routes, described by ``GET /api/v1/openapi.json``.

The real app (lifespan included: catalog, delivery, direct uploads) runs in-process behind
schemathesis's ASGI client, with authentication on. Every operation gets generated requests,
valid and invalid (schemathesis's positive and negative modes), and the answers must never be
a 5xx, and must conform to the description: a documented status, the documented content type,
a body matching the documented schema. A second run without a token expects 401 from every
operation that is not public.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from requests.structures import CaseInsensitiveDict
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from tusserver.app import create_app
from tusserver.edge.openapi import PATH, build_document
from tusserver.security.auth import mint_token
from tusserver.settings import Settings

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

BASE = "http://testserver"
# Answers of the run with a token, by status class (2 -> 2xx...), printed at the end.
STATUSES: Counter[int] = Counter()
SECRET = "fault-tests-secret-" + "x" * 32
# Examples per operation and mode; about 30 operations, so a few hundred requests in all.
EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def bearer(*, admin: bool) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(SECRET, "fuzzer", admin=admin)}


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("schemathesis")),
        jwt_secret=SECRET,
        media_probe=False,
        # Hundreds of requests a second from one user and IP: limits would answer 429 only.
        rate_limit_per_user=0,
        rate_limit_per_ip=0,
        rate_limit_creations_per_user=0,
        delivery_daily_quota_per_ip=0,
    )
    app = create_app(settings)
    yield app
    asgi.shutdown_lifespans()  # the lifespan schemathesis started for this app


@pytest.fixture(scope="module")
def api_client(api_app: Starlette) -> Iterator[asgi.ASGIClient]:
    """schemathesis's in-process client; entering it starts the app's lifespan once."""
    with asgi.get_client(cast(asgi.ASGIApp, api_app)) as client:
        # A few real files, so lists and lookups have records to describe.
        for name in ("one.txt", "two.bin"):
            reply = client.post(
                f"{BASE}/api/v1/uploads/direct?filename={name}",
                data=b"seed bytes of " + name.encode(),
                headers={"Content-Type": "text/plain", **bearer(admin=True)},
            )
            assert reply.status_code == 201, reply.text
        served = client.get(BASE + PATH)
        assert served.status_code == 200
        assert served.json() == DOCUMENT  # what is tested is what the app serves
        yield client
    print(
        f"\nschemathesis with a token: {sum(STATUSES.values())} requests, by class {dict(STATUSES)}"
    )


# Loaded from the document itself (the app serves the same, checked above): schemathesis's
# lazy fixture loader does not work with this pytest, and an eager ASGI load would need the
# app at import time.
DOCUMENT = build_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_description_covers_every_api_route(api_app: Starlette) -> None:
    """Each JSON route of the app is described (with its methods), and nothing else is."""
    described = {
        (path, method.upper())
        for path, item in build_document()["paths"].items()
        for method in item
    }
    served: set[tuple[str, str]] = set()
    for route in api_app.routes:
        path = getattr(route, "path", "")
        if not path.startswith(("/api/", "/d/")) or path == PATH:
            continue
        handlers = getattr(route, "endpoint", None)
        methods = getattr(handlers, "_handlers", {})
        # {upload_id:upload_id} -> {upload_id}, as OpenAPI writes path parameters.
        path = path.replace(":upload_id}", "}").replace(":path}", "}")
        served |= {(path, method) for method in methods if method != "HEAD"}
    assert described == served


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzzed_requests_never_fail_the_server(
    case: schemathesis.Case[Any], api_client: asgi.ASGIClient
) -> None:
    # Negative cases may bring an Authorization header of their own: ours wins.
    headers = CaseInsensitiveDict(case.headers or {})
    headers.update(bearer(admin=True))
    case.headers = headers
    response = case.call_and_validate(BASE, api_client, checks=CHECKS)
    assert response.status_code != 401, response.text  # the token is good
    STATUSES[response.status_code // 100] += 1


@schema.parametrize()
@FUZZ_SETTINGS
def test_without_a_token_every_private_route_is_401(
    case: schemathesis.Case[Any], api_client: asgi.ASGIClient
) -> None:
    headers = CaseInsensitiveDict(case.headers or {})
    headers.pop("Authorization", None)
    case.headers = headers
    response = case.call_and_validate(BASE, api_client, checks=CHECKS)
    public = case.operation.definition.raw.get("security") == []
    # Negative cases may swap the method; OPTIONS (a CORS preflight) needs no token.
    if not public and case.method.upper() == case.operation.method.upper() != "OPTIONS":
        assert response.status_code == 401, (case.method, case.path, response.status_code)
        assert response.headers.get("www-authenticate", [""])[0].startswith("Bearer")
