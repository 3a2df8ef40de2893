"""The ASGI middleware: CORS, the tus envelope and ids (docs/protocol.md, "CORS")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusserver.edge.middleware import (
    ALLOW_METHODS,
    DEFAULT_ALLOW_HEADERS,
    EXPOSE_HEADERS,
    CORSMiddleware,
    RequestIdMiddleware,
    TusProtocolMiddleware,
)

ORIGIN = "https://app.example"
TUS_EXPOSED = [
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Max-Size",
    "Tus-Extension",
    "Tus-Checksum-Algorithm",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
    "Upload-Limit",
]
TUSD_ALLOW_HEADERS = [
    "Authorization",
    "Origin",
    "X-Requested-With",
    "X-Request-ID",
    "X-HTTP-Method-Override",
    "Content-Type",
    "Upload-Length",
    "Upload-Offset",
    "Tus-Resumable",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Incomplete",
    "Upload-Complete",
    "Upload-Draft-Interop-Version",
]


def client(app: ASGIApp, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def csv(value: str | None) -> list[str]:
    assert value is not None
    return [item.strip() for item in value.split(",")]


def single(response: httpx.Response, name: str) -> str:
    """The header's value, asserting it was sent exactly once."""
    values = response.headers.get_list(name)
    assert len(values) == 1, (name, values)
    return values[0]


class Recorder:
    """An inner app that answers 200 and remembers what it saw."""

    def __init__(self, headers: dict[str, str] | None = None, status: int = 200) -> None:
        self.calls: list[Scope] = []
        self.headers = headers or {}
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope)
        body = "" if self.status == 204 else scope["method"]
        response = PlainTextResponse(body, status_code=self.status, headers=self.headers)
        await response(scope, receive, send)


def cors(app: ASGIApp, **options: Any) -> CORSMiddleware:
    settings: dict[str, Any] = {"origins": ["*"], "allow_credentials": False, "max_age": 86400}
    settings.update(options)
    return CORSMiddleware(app, **settings)


def preflight_headers(method: str = "PATCH", request_headers: str | None = None) -> dict[str, str]:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": method}
    if request_headers is not None:
        headers["Access-Control-Request-Headers"] = request_headers
    return headers


# -- CORS: preflight ---------------------------------------------------------------------------


def tus_extra(scope: Scope) -> list[tuple[bytes, bytes]]:
    if scope["path"].startswith("/files"):
        return [(b"tus-resumable", b"1.0.0"), (b"tus-version", b"1.0.0")]
    return []


@pytest.mark.parametrize("path", ["/files/", "/files/abc123", "/files/no-such-upload", "/other"])
async def test_preflight_answered_for_any_path_without_calling_the_app(path: str) -> None:
    inner = Recorder()
    app = cors(inner, extra_preflight_headers=tus_extra, max_age=600)
    async with client(app) as c:
        r = await c.options(
            path, headers=preflight_headers("PATCH", "tus-resumable,upload-offset,content-type")
        )
    assert inner.calls == []
    assert r.status_code == 200  # not 204
    assert r.content == b""
    assert single(r, "content-length") == "0"
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert single(r, "vary") == "Origin"
    assert csv(single(r, "access-control-allow-methods")) == [
        "POST",
        "HEAD",
        "PATCH",
        "OPTIONS",
        "GET",
        "DELETE",
        "PUT",
    ]
    assert single(r, "access-control-max-age") == "600"
    assert single(r, "x-content-type-options") == "nosniff"
    assert csv(single(r, "access-control-expose-headers"))[: len(TUS_EXPOSED)] == TUS_EXPOSED
    assert "access-control-allow-credentials" not in r.headers
    if path.startswith("/files"):
        assert single(r, "tus-resumable") == "1.0.0"
        assert single(r, "tus-version") == "1.0.0"
    else:
        assert "tus-resumable" not in r.headers


def test_default_lists_are_tusd_plus_ours() -> None:
    assert list(DEFAULT_ALLOW_HEADERS) == [
        *TUSD_ALLOW_HEADERS,
        "Upload-Checksum",
        "Idempotency-Key",
    ]
    assert list(EXPOSE_HEADERS[: len(TUS_EXPOSED)]) == TUS_EXPOSED
    assert {"ETag", "Content-Range", "Content-Disposition", "X-Request-ID", "Retry-After"} <= set(
        EXPOSE_HEADERS
    )
    assert ALLOW_METHODS == "POST, HEAD, PATCH, OPTIONS, GET, DELETE, PUT"


@pytest.mark.parametrize(
    ("method", "requested"),
    [
        ("PATCH", "tus-resumable,upload-offset,content-type"),
        (
            "POST",
            "tus-resumable,upload-length,upload-metadata,upload-concat,upload-defer-length,"
            "x-request-id,authorization",
        ),
        ("HEAD", "tus-resumable"),
        ("DELETE", "tus-resumable"),
        ("PATCH", "tus-resumable,upload-offset,content-type,upload-checksum"),
        ("POST", "tus-resumable,x-http-method-override,upload-offset"),
        ("POST", "idempotency-key, authorization"),
    ],
)
async def test_preflight_allows_every_requested_header(method: str, requested: str) -> None:
    async with client(cors(Recorder())) as c:
        r = await c.options("/files/x", headers=preflight_headers(method, requested))
    allowed = {name.lower() for name in csv(r.headers["access-control-allow-headers"])}
    assert {name.strip() for name in requested.split(",")} <= allowed
    assert method in csv(r.headers["access-control-allow-methods"])


async def test_preflight_reflects_app_specific_headers_once() -> None:
    # the tus-js-client `headers` option adds names nobody can list in advance.
    requested = "x-custom-thing, Tus-Resumable,x-custom-thing,x-tenant-id"
    async with client(cors(Recorder())) as c:
        r = await c.options("/files/", headers=preflight_headers("POST", requested))
    allowed = csv(r.headers["access-control-allow-headers"])
    assert allowed[: len(DEFAULT_ALLOW_HEADERS)] == list(DEFAULT_ALLOW_HEADERS)
    assert allowed[len(DEFAULT_ALLOW_HEADERS) :] == ["x-custom-thing", "x-tenant-id"]


async def test_preflight_reflects_only_token_names() -> None:
    requested = "x-ok, bad header, x(y), a@b, é-name, , x-also-ok".encode()
    headers = {
        b"Origin": ORIGIN.encode(),
        b"Access-Control-Request-Method": b"POST",
        b"Access-Control-Request-Headers": requested,
    }
    async with client(cors(Recorder())) as c:
        r = await c.options("/files/", headers=headers)
    allowed = csv(r.headers["access-control-allow-headers"])
    assert allowed[len(DEFAULT_ALLOW_HEADERS) :] == ["x-ok", "x-also-ok"]


async def test_preflight_without_requested_headers_gets_the_default_list() -> None:
    async with client(cors(Recorder())) as c:
        r = await c.options("/files/", headers=preflight_headers("HEAD"))
    assert csv(r.headers["access-control-allow-headers"]) == list(DEFAULT_ALLOW_HEADERS)


async def test_options_without_request_method_reaches_the_app() -> None:
    # tus feature detection from JS is an actual OPTIONS; it needs Expose (and tusd
    # also sends the preflight set on it).
    inner = Recorder(headers={"Tus-Extension": "creation"})
    async with client(cors(inner)) as c:
        r = await c.options("/files/", headers={"Origin": ORIGIN})
    assert len(inner.calls) == 1
    assert r.status_code == 200
    assert r.text == "OPTIONS"
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert csv(single(r, "access-control-expose-headers"))[: len(TUS_EXPOSED)] == TUS_EXPOSED
    assert single(r, "access-control-allow-methods") == ALLOW_METHODS
    assert csv(single(r, "access-control-allow-headers")) == list(DEFAULT_ALLOW_HEADERS)
    assert single(r, "tus-extension") == "creation"


async def test_options_without_origin_is_not_a_preflight() -> None:
    inner = Recorder()
    async with client(cors(inner)) as c:
        r = await c.options("/files/", headers={"Access-Control-Request-Method": "PATCH"})
    assert len(inner.calls) == 1
    assert not any(name.startswith("access-control-") for name in r.headers)


# -- CORS: actual responses --------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 404, 409, 423, 460, 500, 503])
async def test_actual_responses_carry_origin_and_expose(status: int) -> None:
    # errors included, or a browser sees status 0 and tus-js-client retries.
    async with client(cors(Recorder(status=status))) as c:
        r = await c.patch("/files/abc", headers={"Origin": ORIGIN}, content=b"x")
    assert r.status_code == status
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert single(r, "vary") == "Origin"
    assert csv(single(r, "access-control-expose-headers"))[: len(TUS_EXPOSED)] == TUS_EXPOSED
    assert "access-control-allow-methods" not in r.headers
    assert "access-control-allow-credentials" not in r.headers


async def test_star_never_echoed_and_credentials_sent_when_configured() -> None:
    # with credentials the exact origin, never "*", on preflight and actual response.
    app = cors(Recorder(), origins=["*"], allow_credentials=True)
    async with client(app) as c:
        pre = await c.options("/files/", headers=preflight_headers("POST", "tus-resumable"))
        actual = await c.post("/files/", headers={"Origin": ORIGIN})
    for r in (pre, actual):
        assert single(r, "access-control-allow-origin") == ORIGIN
        assert single(r, "access-control-allow-credentials") == "true"
        assert single(r, "vary") == "Origin"


async def test_listed_origin_allowed() -> None:
    app = cors(Recorder(), origins=["https://other.example", ORIGIN], allow_credentials=True)
    async with client(app) as c:
        r = await c.get("/files/x", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert single(r, "access-control-allow-origin") == ORIGIN


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "https://app.example.evil", "http://app.example", "null", "*"],
)
@pytest.mark.parametrize("preflight", [True, False])
async def test_disallowed_origin_is_403_without_cors_headers(origin: str, preflight: bool) -> None:
    inner = Recorder()
    app = cors(inner, origins=[ORIGIN], allow_credentials=True)
    async with client(app) as c:
        if preflight:
            headers = {"Origin": origin, "Access-Control-Request-Method": "PATCH"}
            r = await c.options("/files/x", headers=headers)
        else:
            r = await c.patch("/files/x", headers={"Origin": origin}, content=b"abc")
    assert inner.calls == []
    assert r.status_code == 403
    assert r.text.startswith("ERR_ORIGIN_NOT_ALLOWED:")
    assert not any(name.startswith("access-control-") for name in r.headers)
    assert single(r, "tus-resumable") == "1.0.0"
    assert single(r, "x-content-type-options") == "nosniff"


async def test_disallowed_origin_on_head_has_no_body() -> None:
    app = cors(Recorder(), origins=[ORIGIN])
    async with client(app) as c:
        r = await c.head("/files/x", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert r.content == b""


async def test_no_origin_passes_through_untouched() -> None:
    inner = Recorder(headers={"X-Thing": "1"})
    async with client(cors(inner, origins=[ORIGIN])) as c:
        r = await c.patch("/files/x", content=b"abc")
    assert r.status_code == 200
    assert list(r.headers.keys()) == ["x-thing", "content-length", "content-type"]


async def test_inner_cors_headers_are_replaced_and_vary_merged() -> None:
    inner = Recorder(
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Expose-Headers": "X-Nothing",
            "Vary": "Accept-Encoding",
        }
    )
    async with client(cors(inner)) as c:
        r = await c.get("/files/x", headers={"Origin": ORIGIN})
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert "X-Nothing" not in single(r, "access-control-expose-headers")
    assert single(r, "vary") == "Accept-Encoding, Origin"


@pytest.mark.parametrize("vary", ["Origin", "origin, Accept", "*"])
async def test_vary_already_covering_origin_is_left_alone(vary: str) -> None:
    async with client(cors(Recorder(headers={"Vary": vary}))) as c:
        r = await c.get("/files/x", headers={"Origin": ORIGIN})
    assert single(r, "vary") == vary


async def test_412_from_the_version_check_has_cors_and_expose() -> None:
    # Errors carry CORS headers with the real stack order too: CORS outside the tus envelope.
    inner = Recorder()
    app = cors(TusProtocolMiddleware(inner, base_path="/files/"))
    async with client(app) as c:
        r = await c.post("/files/", headers={"Origin": ORIGIN, "Upload-Length": "5"})
    assert inner.calls == []
    assert r.status_code == 412
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert csv(single(r, "access-control-expose-headers"))[: len(TUS_EXPOSED)] == TUS_EXPOSED
    assert single(r, "tus-version") == "1.0.0"
    assert single(r, "tus-resumable") == "1.0.0"


async def test_500_sent_by_an_inner_app_has_cors() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"boom"})

    async with client(cors(failing)) as c:
        r = await c.patch("/files/x", headers={"Origin": ORIGIN})
    assert r.status_code == 500
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert csv(single(r, "access-control-expose-headers"))[: len(TUS_EXPOSED)] == TUS_EXPOSED


async def test_exception_before_any_response_becomes_a_readable_500() -> None:
    async def raising(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("bug")

    async with client(cors(raising), raise_app_exceptions=False) as c:
        r = await c.patch("/files/x", headers={"Origin": ORIGIN})
    assert r.status_code == 500
    assert r.text.startswith("ERR_INTERNAL_SERVER_ERROR:")
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert single(r, "x-content-type-options") == "nosniff"


async def test_exception_is_still_raised_for_the_server_to_log() -> None:
    async def raising(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("bug")

    async with client(cors(raising)) as c:
        with pytest.raises(RuntimeError, match="bug"):
            await c.patch("/files/x", headers={"Origin": ORIGIN})


async def test_starlette_server_error_inside_gets_cors() -> None:
    # A Starlette app answers unhandled exceptions in ServerErrorMiddleware, inside us.
    async def endpoint(request: Request) -> Response:
        raise RuntimeError("bug")

    inner = Starlette(routes=[Route("/files/{id}", endpoint, methods=["PATCH"])])
    async with client(cors(inner), raise_app_exceptions=False) as c:
        r = await c.patch("/files/x", headers={"Origin": ORIGIN})
    assert r.status_code == 500
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert single(r, "vary") == "Origin"


async def test_route_exception_with_cors_in_starlettes_middleware_list() -> None:
    # create_app's shape: Starlette puts ServerErrorMiddleware outside the user middleware, so
    # the exception passes through us first; our 500 must be the only response sent.
    async def endpoint(request: Request) -> Response:
        raise RuntimeError("bug")

    app = Starlette(
        routes=[Route("/files/{id}", endpoint, methods=["PATCH"])],
        middleware=[Middleware(CORSMiddleware, origins=["*"], allow_credentials=False, max_age=5)],
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match="bug"):
        await app(scope_for("PATCH", "/files/x", {"origin": ORIGIN}), empty_receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert starts[0]["status"] == 500
    assert (b"access-control-allow-origin", ORIGIN.encode()) in starts[0]["headers"]


async def test_exception_after_response_started_is_not_answered_twice() -> None:
    sent: list[Message] = []

    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError):
        await cors(half)(scope_for("GET", "/files/x", {"origin": ORIGIN}), never_receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    for middleware in (
        cors(inner, origins=[ORIGIN]),
        TusProtocolMiddleware(inner, base_path="/files/"),
        RequestIdMiddleware(inner),
    ):
        await middleware({"type": "lifespan"}, never_receive, never_send)
    assert seen == ["lifespan"] * 3


# -- TusProtocolMiddleware ---------------------------------------------------------------------


def tus(inner: ASGIApp, base_path: str = "/files/") -> TusProtocolMiddleware:
    return TusProtocolMiddleware(inner, base_path=base_path)


V = {"Tus-Resumable": "1.0.0"}


@pytest.mark.parametrize(
    ("real", "override", "seen"),
    [
        ("POST", "PATCH", "PATCH"),
        ("POST", "DELETE", "DELETE"),
        ("POST", "HEAD", "HEAD"),
        ("POST", "GET", "GET"),
        ("POST", "POST", "POST"),
        ("POST", " patch ", "PATCH"),  # trimmed, case-insensitive
        ("POST", "PUT", "POST"),  # not one of ours: ignored
        ("POST", "TRACE", "POST"),
        ("POST", "", "POST"),
        ("POST", "PATCH, DELETE", "POST"),
        ("GET", "DELETE", "GET"),  # never on a non-POST
        ("PATCH", "DELETE", "PATCH"),
        ("DELETE", "GET", "DELETE"),
    ],
)
async def test_method_override(real: str, override: str, seen: str) -> None:
    inner = Recorder()
    async with client(tus(inner)) as c:
        r = await c.request(real, "/files/abc", headers={**V, "X-HTTP-Method-Override": override})
    assert r.status_code == 200
    assert [scope["method"] for scope in inner.calls] == [seen]


async def test_override_off_the_tus_path_is_ignored() -> None:
    inner = Recorder()
    async with client(tus(inner)) as c:
        await c.post("/api/v1/uploads/init", headers={"X-HTTP-Method-Override": "DELETE"})
    assert inner.calls[0]["method"] == "POST"


async def test_override_does_not_leak_into_the_outer_scope() -> None:
    inner = Recorder()
    scope = scope_for("POST", "/files/a", {"x-http-method-override": "DELETE", **lower(V)})
    await tus(inner)(scope, empty_receive, discard)
    assert inner.calls[0]["method"] == "DELETE"
    assert scope["method"] == "POST"


@pytest.mark.parametrize(
    ("method", "version", "status"),
    [
        ("POST", None, 412),
        ("PATCH", "0.2.2", 412),
        ("DELETE", "2.0.0", 412),
        ("POST", "1.0", 412),
        ("POST", "1.0.0,0.2.2", 412),
        ("PATCH", "1.0.0, 1.0.0", 412),
        ("PATCH", "", 412),
        ("PATCH", None, 412),
        ("DELETE", None, 412),
        ("POST", "1.0.0", 200),
        ("PATCH", " 1.0.0 ", 200),  # trimmed
        ("DELETE", "1.0.0", 200),
        ("HEAD", None, 200),  # exempt without the header
        ("HEAD", "1.0.0", 200),
        ("HEAD", "0.2.2", 412),  # but not with a bad one
        ("OPTIONS", None, 200),
        ("OPTIONS", "9.9.9", 200),
        ("GET", None, 200),
        ("GET", "0.2.2", 200),
    ],
)
async def test_version_check(method: str, version: str | None, status: int) -> None:
    inner = Recorder()
    headers = {} if version is None else {"Tus-Resumable": version}
    async with client(tus(inner)) as c:
        r = await c.request(method, "/files/abc", headers=headers, content=b"hello")
    assert r.status_code == status
    assert single(r, "tus-resumable") == "1.0.0"
    assert single(r, "x-content-type-options") == "nosniff"
    if status == 412:
        assert inner.calls == []
        assert single(r, "tus-version") == "1.0.0"  # tusd omits it, we must not
        if method == "HEAD":
            assert r.content == b""
        else:
            assert r.text.startswith("ERR_UNSUPPORTED_VERSION:")
    else:
        assert len(inner.calls) == 1


async def test_header_name_is_case_insensitive() -> None:
    # TUSKit sends "TUS-Resumable"; ASGI lower-cases names before we see them.
    async with client(tus(Recorder())) as c:
        r = await c.post("/files/", headers={"TUS-Resumable": "1.0.0"})
    assert r.status_code == 200


async def test_two_version_header_lines_are_a_412() -> None:
    scope = scope_for("PATCH", "/files/a", {})
    scope["headers"] += [(b"tus-resumable", b"1.0.0"), (b"tus-resumable", b"0.2.2")]
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await tus(Recorder())(scope, never_receive, send)
    assert sent[0]["status"] == 412


async def test_overridden_head_with_bad_version_is_a_bodyless_412() -> None:
    async with client(tus(Recorder())) as c:
        r = await c.post(
            "/files/a", headers={"X-HTTP-Method-Override": "HEAD", "Tus-Resumable": "0.2.2"}
        )
    assert r.status_code == 412
    assert r.content == b""


async def test_412_reads_no_body_and_skips_the_app() -> None:
    # not processing the request includes not reading it (no 100 Continue either).
    inner = Recorder()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = scope_for("PATCH", "/files/a", {"tus-resumable": "0.2.2", "content-length": "5"})
    await tus(inner)(scope, never_receive, send)
    assert inner.calls == []
    assert sent[0]["status"] == 412


@pytest.mark.parametrize("path", ["/files", "/files/", "/files/abc", "/files/abc/def"])
async def test_tus_paths(path: str) -> None:
    async with client(tus(Recorder())) as c:
        r = await c.post(path)
    assert r.status_code == 412


@pytest.mark.parametrize("path", ["/", "/filesystem", "/file", "/api/files/", "/healthz"])
async def test_other_paths_untouched(path: str) -> None:
    inner = Recorder()
    async with client(tus(inner)) as c:
        r = await c.post(path, headers={"X-HTTP-Method-Override": "DELETE"})
    assert r.status_code == 200
    assert inner.calls[0]["method"] == "POST"
    assert "tus-resumable" not in r.headers
    assert "x-content-type-options" not in r.headers


@pytest.mark.parametrize("base_path", ["/files", "/files/", "/up/load/"])
async def test_base_path_with_or_without_slash(base_path: str) -> None:
    root = base_path.rstrip("/")
    async with client(tus(Recorder(), base_path)) as c:
        for path in (root, root + "/", root + "/x"):
            assert (await c.post(path)).status_code == 412
        assert (await c.post(root + "x")).status_code == 200


async def test_root_base_path_covers_everything() -> None:
    async with client(tus(Recorder(), "/")) as c:
        assert (await c.post("/anything")).status_code == 412


async def test_headers_added_once_when_the_app_already_set_them() -> None:
    inner = Recorder(headers={"Tus-Resumable": "1.0.0", "X-Content-Type-Options": "nosniff"})
    async with client(tus(inner)) as c:
        r = await c.head("/files/a")
    assert single(r, "tus-resumable") == "1.0.0"
    assert single(r, "x-content-type-options") == "nosniff"


async def test_body_is_streamed_through_unchanged() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with client(cors(tus(streaming))) as c:
        r = await c.get("/files/a", headers={"Origin": ORIGIN})
    assert r.content == b"abc"
    assert single(r, "tus-resumable") == "1.0.0"


# -- RequestIdMiddleware -----------------------------------------------------------------------


class StateEcho:
    """Answers with the request id the app sees in ``request.state``."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await PlainTextResponse(request.state.request_id, headers=self.headers)(
            scope, receive, send
        )


async def test_request_id_generated() -> None:
    async with client(RequestIdMiddleware(StateEcho())) as c:
        first = await c.get("/x")
        second = await c.get("/x")
    rid = single(first, "x-request-id")
    assert len(rid) == 32
    assert set(rid) <= set("0123456789abcdef")
    assert first.text == rid
    assert second.headers["x-request-id"] != rid


@pytest.mark.parametrize("rid", ["abc", "A.b_c-9", "x" * 128, "0b9f6c1e-2d1f-4c9f"])
async def test_valid_incoming_request_id_is_kept(rid: str) -> None:
    async with client(RequestIdMiddleware(StateEcho())) as c:
        r = await c.get("/x", headers={"X-Request-ID": rid})
    assert single(r, "x-request-id") == rid
    assert r.text == rid


@pytest.mark.parametrize("rid", ["", "x" * 129, "a b", "a/b", "a;b", "é", "a\tb", "<script>"])
async def test_invalid_incoming_request_id_is_replaced(rid: str) -> None:
    async with client(RequestIdMiddleware(StateEcho())) as c:
        r = await c.get("/x", headers={b"X-Request-ID": rid.encode()})
    new = single(r, "x-request-id")
    assert new != rid
    assert len(new) == 32
    assert r.text == new


async def test_request_id_joins_existing_state() -> None:
    scope = scope_for("GET", "/x", {})
    scope["state"] = {"from_lifespan": 1}
    await RequestIdMiddleware(StateEcho())(scope, empty_receive, discard)
    assert scope["state"]["from_lifespan"] == 1
    assert len(scope["state"]["request_id"]) == 32


async def test_app_supplied_request_id_is_not_duplicated() -> None:
    async with client(RequestIdMiddleware(StateEcho(headers={"X-Request-ID": "mine"}))) as c:
        r = await c.get("/x")
    assert single(r, "x-request-id") == "mine"


# -- the stack together ------------------------------------------------------------------------


def stack(inner: ASGIApp) -> ASGIApp:
    return cors(
        RequestIdMiddleware(tus(inner)),
        origins=[ORIGIN],
        allow_credentials=True,
        extra_preflight_headers=tus_extra,
    )


async def test_full_stack_412_has_every_header_exactly_once() -> None:
    async with client(stack(Recorder())) as c:
        r = await c.patch(
            "/files/a",
            headers={"Origin": ORIGIN, "Tus-Resumable": "0.2.2", "X-Request-ID": "req-1"},
            content=b"hello",
        )
    assert r.status_code == 412
    for name, value in [
        ("access-control-allow-origin", ORIGIN),
        ("access-control-allow-credentials", "true"),
        ("vary", "Origin"),
        ("tus-resumable", "1.0.0"),
        ("tus-version", "1.0.0"),
        ("x-content-type-options", "nosniff"),
        ("x-request-id", "req-1"),
    ]:
        assert single(r, name) == value
    assert [k for k, _ in r.headers.multi_items()].count("access-control-expose-headers") == 1


async def test_full_stack_success_and_preflight() -> None:
    inner = Recorder(headers={"Upload-Offset": "5"})
    async with client(stack(inner)) as c:
        pre = await c.options("/files/a", headers=preflight_headers("PATCH", "tus-resumable"))
        r = await c.patch(
            "/files/a", headers={"Origin": ORIGIN, **V, "Upload-Offset": "0"}, content=b"hello"
        )
    assert pre.status_code == 200
    assert single(pre, "tus-resumable") == "1.0.0"
    assert r.status_code == 200
    assert single(r, "upload-offset") == "5"
    assert single(r, "tus-resumable") == "1.0.0"
    assert single(r, "access-control-allow-origin") == ORIGIN
    assert len(single(r, "x-request-id")) == 32


# -- raw ASGI helpers --------------------------------------------------------------------------


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def scope_for(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def never_receive() -> Message:
    raise AssertionError("the request body must not be read")


async def empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def never_send(message: Message) -> None:
    raise AssertionError("nothing should be sent")


async def discard(message: Message) -> None:
    pass
