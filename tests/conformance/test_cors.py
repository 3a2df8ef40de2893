"""CORS for browser clients (tus-js-client, Uppy): docs/protocol.md, "CORS"."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tusserver import errors

from .tusclient_http import (
    ENDPOINT,
    EXPOSE_NAMES,
    EXTENSIONS,
    OFFSET_OCTET,
    MakeClient,
    TusHTTP,
    assert_status,
    b64,
    csv_items,
    describe,
    error_code,
)

ORIGIN = "https://app.example"
UNKNOWN = f"{ENDPOINT}{'c' * 32}"
ALL_METHODS = {"POST", "HEAD", "PATCH", "OPTIONS", "GET", "DELETE"}


def preflight(
    tus: TusHTTP, url: str, method: str, headers: str, origin: str = ORIGIN
) -> httpx.Response:
    """A browser preflight: no Tus-Resumable, no credentials."""
    return tus.options(
        url,
        version=None,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def missing_allowed_headers(
    response: httpx.Response, requested: str, *, credentials: bool = False
) -> list[str]:
    allowed = {
        name.lower() for name in csv_items(response.headers.get("access-control-allow-headers"))
    }
    wildcard = "*" in allowed and not credentials
    return [
        name
        for name in csv_items(requested)
        if name.lower() not in allowed and not (wildcard and name.lower() != "authorization")
    ]


def vary_has_origin(response: httpx.Response) -> bool:
    values = [v for k, v in response.headers.multi_items() if k.lower() == "vary"]
    return any(item.lower() == "origin" for v in values for item in csv_items(v))


def cors_headers(response: httpx.Response) -> list[str]:
    return [k for k in response.headers if k.lower().startswith("access-control-")]


PREFLIGHTS = [
    # id, where, method, requested headers
    ("t210-patch-upload", "upload", "PATCH", "tus-resumable,upload-offset,content-type"),
    ("t210-patch-unknown", "unknown", "PATCH", "tus-resumable,upload-offset,content-type"),
    (
        "t211-post-endpoint",
        "endpoint",
        "POST",
        "tus-resumable,upload-length,upload-metadata,upload-concat,upload-defer-length,"
        "x-request-id,authorization",
    ),
    ("t212-head-upload", "upload", "HEAD", "tus-resumable"),
    ("t212-delete-upload", "upload", "DELETE", "tus-resumable"),
    ("t212-head-unknown", "unknown", "HEAD", "tus-resumable"),
    (
        "t213-checksum",
        "upload",
        "PATCH",
        "tus-resumable,upload-offset,content-type,upload-checksum",
    ),
    (
        "t214-t050-override",
        "upload",
        "POST",
        "x-http-method-override,tus-resumable,upload-offset,content-type",
    ),
    ("t221-app-header", "endpoint", "POST", "tus-resumable,upload-length,x-app-token"),
    ("t210-mixed-case", "upload", "PATCH", "Tus-Resumable, Upload-Offset, Content-Type"),
]


@pytest.mark.parametrize(
    ("where", "method", "requested"),
    [pytest.param(w, m, h, id=i) for i, w, m, h in PREFLIGHTS],
)
def test_preflight(tus: TusHTTP, where: str, method: str, requested: str) -> None:
    """Preflights to E, an existing U and an unknown U -> 200 with the origin echoed, the
    method and every requested header allowed, Max-Age and ``Vary: Origin``."""
    url = {"endpoint": ENDPOINT, "upload": tus.new(5), "unknown": UNKNOWN}[where]
    response = preflight(tus, url, method, requested)
    assert_status(response, 200)
    assert response.headers.get("access-control-allow-origin") == ORIGIN, describe(response)
    methods = {m.upper() for m in csv_items(response.headers.get("access-control-allow-methods"))}
    assert method in methods
    assert methods >= ALL_METHODS, methods
    assert not missing_allowed_headers(response, requested), describe(response)
    max_age = response.headers.get("access-control-max-age")
    assert max_age is not None
    assert int(max_age) > 0
    assert vary_has_origin(response), describe(response)


Request = Callable[[TusHTTP, str], httpx.Response]
H = {"Origin": ORIGIN}

ACTUALS: list[tuple[str, Request, int]] = [
    ("post-201", lambda t, u: t.create(5, headers=H), 201),
    ("patch-204", lambda t, u: t.patch(u, 0, b"ab", headers=H), 204),
    ("head-200", lambda t, u: t.head(u, headers=H), 200),
    ("delete-204", lambda t, u: t.delete(u, headers=H), 204),
    ("get-409", lambda t, u: t.get(u, headers=H), 409),
    ("head-404", lambda t, u: t.head(UNKNOWN, headers=H), 404),
    ("patch-404", lambda t, u: t.patch(UNKNOWN, 0, b"x", headers=H), 404),
    ("patch-409", lambda t, u: t.patch(u, 3, b"x", headers=H), 409),
    ("patch-412", lambda t, u: t.patch(u, 0, b"x", headers=H, version="0.2.2"), 412),
    ("post-412", lambda t, u: t.create(5, headers=H, version=None), 412),
    ("patch-415", lambda t, u: t.patch(u, 0, b"x", headers=H, content_type=None), 415),
    ("post-400", lambda t, u: t.create(headers=H), 400),
    ("patch-413", lambda t, u: t.patch(u, 0, b"x" * 6, headers=H), 413),
    (
        "patch-460",
        lambda t, u: t.patch(
            u, 0, b"ab", headers={**H, "Upload-Checksum": f"sha1 {b64(bytes(20))}"}
        ),
        460,
    ),
    ("post-upload-405", lambda t, u: t.request("POST", u, headers=H), 405),
    (
        "override-patch-204",
        lambda t, u: t.patch(
            u, 0, b"ab", method="POST", headers={**H, "X-HTTP-Method-Override": "PATCH"}
        ),
        204,
    ),
]


@pytest.mark.parametrize(
    ("make_request", "status"), [pytest.param(r, s, id=i) for i, r, s in ACTUALS]
)
def test_actual_responses_carry_cors(tus: TusHTTP, make_request: Request, status: int) -> None:
    """Every actual response, errors included, has
    Access-Control-Allow-Origin and exposes the tus headers."""
    url = tus.new(5)
    response = make_request(tus, url)
    assert_status(response, status)
    assert response.headers.get("access-control-allow-origin") in (ORIGIN, "*"), describe(response)
    exposed = {
        name.lower() for name in csv_items(response.headers.get("access-control-expose-headers"))
    }
    missing = [name for name in EXPOSE_NAMES if name.lower() not in exposed]
    assert not missing, f"not exposed: {missing}: {describe(response)}"


def test_js_options_gets_expose_headers(tus: TusHTTP) -> None:
    """A JS-initiated tus OPTIONS (an actual request) carries discovery and Expose
    headers."""
    response = tus.options(ENDPOINT, headers={"Origin": ORIGIN})
    assert_status(response, 200)
    assert response.headers.get("tus-extension") == EXTENSIONS
    assert response.headers.get("access-control-allow-origin") in (ORIGIN, "*")
    exposed = {
        name.lower() for name in csv_items(response.headers.get("access-control-expose-headers"))
    }
    for name in ("Tus-Extension", "Tus-Version", "Tus-Max-Size", "Tus-Checksum-Algorithm"):
        assert name.lower() in exposed, name


def test_browser_upload_flow(tus: TusHTTP) -> None:
    """Preflight, POST, preflight, PATCH; Location
    and Upload-Offset are readable from script (React Native uses the same XHR path)."""
    pre = preflight(tus, ENDPOINT, "POST", "tus-resumable,upload-length,upload-metadata")
    assert_status(pre, 200)
    response = tus.create(11, headers=H)
    assert_status(response, 201)
    exposed = {n.lower() for n in csv_items(response.headers["access-control-expose-headers"])}
    assert "location" in exposed
    url = response.headers["location"]
    pre = preflight(tus, url, "PATCH", "tus-resumable,upload-offset,content-type")
    assert_status(pre, 200)
    response = tus.patch(url, 0, b"hello world", headers=H)
    assert_status(response, 204)
    exposed = {n.lower() for n in csv_items(response.headers["access-control-expose-headers"])}
    assert "upload-offset" in exposed
    assert response.headers["upload-offset"] == "11"


def test_credentials(make_client: MakeClient) -> None:
    """With credentials the exact origin is echoed (never ``*``) with
    ``Allow-Credentials: true`` and ``Vary: Origin`` on preflight and actual responses, and the
    header names are listed (no wildcard)."""
    tus = make_client(cors_allow_credentials=True, cors_origins=(ORIGIN,))
    requested = "tus-resumable,upload-length,upload-metadata,authorization"
    pre = preflight(tus, ENDPOINT, "POST", requested)
    assert_status(pre, 200)
    assert pre.headers.get("access-control-allow-origin") == ORIGIN
    assert pre.headers.get("access-control-allow-credentials") == "true"
    assert vary_has_origin(pre)
    assert not missing_allowed_headers(pre, requested, credentials=True), describe(pre)

    created = tus.create(5, headers={**H, "Cookie": "session=1"})
    url = created.headers["location"]
    for response in (created, tus.head(url, headers=H), tus.patch(url, 3, b"x", headers=H)):
        assert response.headers.get("access-control-allow-origin") == ORIGIN, describe(response)
        assert response.headers.get("access-control-allow-credentials") == "true"
        assert vary_has_origin(response), describe(response)
        exposed = csv_items(response.headers.get("access-control-expose-headers"))
        assert "*" not in exposed
        assert {n.lower() for n in EXPOSE_NAMES} <= {n.lower() for n in exposed}


def test_no_credentials_header_by_default(tus: TusHTTP) -> None:
    """Without the setting, no Allow-Credentials."""
    pre = preflight(tus, ENDPOINT, "POST", "tus-resumable,upload-length")
    assert "access-control-allow-credentials" not in pre.headers
    assert "access-control-allow-credentials" not in tus.create(5, headers=H).headers


GOOD = "https://good.example"
EVIL = "https://evil.example"


@pytest.fixture
def restricted(make_client: MakeClient) -> TusHTTP:
    return make_client(cors_origins=(GOOD,))


def test_disallowed_origin_preflight_403(restricted: TusHTTP) -> None:
    """A preflight from a disallowed origin -> 403 with no CORS headers."""
    response = preflight(restricted, ENDPOINT, "POST", "tus-resumable,upload-length", EVIL)
    assert response.status_code == 403, describe(response)
    assert not cors_headers(response), describe(response)


@pytest.mark.parametrize("verb", ["POST", "HEAD", "PATCH", "DELETE"])
def test_disallowed_origin_actual_403(restricted: TusHTTP, verb: str) -> None:
    """Actual requests from a disallowed origin -> 403, no CORS headers, no effect."""
    url = restricted.new(5)
    before = restricted.snapshot()
    evil = {"Origin": EVIL}
    response = {
        "POST": lambda: restricted.create(5, headers=evil),
        "HEAD": lambda: restricted.head(url, headers=evil),
        "PATCH": lambda: restricted.patch(url, 0, b"abc", headers=evil),
        "DELETE": lambda: restricted.delete(url, headers=evil),
    }[verb]()
    assert response.status_code == 403, describe(response)
    assert not cors_headers(response), describe(response)
    if verb != "HEAD":
        assert error_code(response) == errors.OriginNotAllowed.code
    assert restricted.snapshot() == before
    assert restricted.offset(url) == 0


def test_allowed_origin_and_no_origin(restricted: TusHTTP) -> None:
    """The listed origin is echoed; requests without Origin (tuspy,
    mobile SDKs) are not subject to CORS."""
    pre = preflight(restricted, ENDPOINT, "POST", "tus-resumable,upload-length", GOOD)
    assert_status(pre, 200)
    assert pre.headers.get("access-control-allow-origin") == GOOD
    response = restricted.create(5, headers={"Origin": GOOD})
    assert_status(response, 201)
    assert response.headers.get("access-control-allow-origin") == GOOD
    url = restricted.new(5)
    response = restricted.patch(url, 0, b"hello", content_type=OFFSET_OCTET)
    assert_status(response, 204)
