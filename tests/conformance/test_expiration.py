"""Expiration (docs/protocol.md, "Expiration").

Time moves through the app's injected clock, never by sleeping (except one test that lets the
periodic sweeper run).
"""

from __future__ import annotations

import time

import httpx
import pytest

from tusserver import errors

from .tusclient_http import (
    EXTENSIONS,
    EXTENSIONS_NO_EXPIRATION,
    HTTP_DATE_RE,
    FakeClock,
    MakeClient,
    TusHTTP,
    assert_error,
    assert_status,
    describe,
    http_date_to_ts,
    upload_path,
)

TTL = 3600


@pytest.fixture
def timed(make_client: MakeClient, clock: FakeClock) -> TusHTTP:
    return make_client(clock=clock, expiration=TTL)


def expires_at(response: httpx.Response) -> float:
    value = response.headers.get("upload-expires")
    assert value is not None, f"no Upload-Expires: {describe(response)}"
    assert HTTP_DATE_RE.match(value), f"not IMF-fixdate: {value!r}"
    return http_date_to_ts(value)


def assert_window(response: httpx.Response, now: float) -> None:
    """Upload-Expires lies in (now, now + TTL] (second resolution)."""
    ts = expires_at(response)
    assert now < ts <= now + TTL + 1, (ts - now, describe(response))


def test_extension_advertised_iff_enabled(make_client: MakeClient) -> None:
    """``expiration`` is in Tus-Extension exactly when expiration > 0."""
    assert make_client(expiration=TTL).options().headers["tus-extension"] == EXTENSIONS
    assert make_client(expiration=0).options().headers["tus-extension"] == EXTENSIONS_NO_EXPIRATION


def test_creation_carries_upload_expires(timed: TusHTTP, clock: FakeClock) -> None:
    """The 201 carries an IMF-fixdate Upload-Expires."""
    response = timed.create(10)
    assert_status(response, 201)
    assert_window(response, clock.now)


def test_patch_carries_expires_until_complete(timed: TusHTTP, clock: FakeClock) -> None:
    """Every 204 for an unfinished upload has Upload-Expires;
    the PATCH that completes it has none."""
    url = timed.new(10)
    clock.advance(60)
    response = timed.append(url, 0, b"abc")
    assert_window(response, clock.now)
    clock.advance(60)
    response = timed.append(url, 3, b"")
    assert_window(response, clock.now)
    response = timed.append(url, 3, b"defghij")
    assert "upload-expires" not in response.headers, describe(response)


def test_head_carries_expires_until_complete(timed: TusHTTP, clock: FakeClock) -> None:
    """HEAD of an unfinished upload has Upload-Expires; none once
    complete."""
    url = timed.new(10)
    timed.append(url, 0, b"abc")
    head = timed.head(url)
    assert_window(head, clock.now)
    timed.append(url, 3, b"defghij")
    head = timed.head(url)
    assert_status(head, 200)
    assert "upload-expires" not in head.headers, describe(head)


def test_deferred_upload_patch_carries_expires(timed: TusHTTP, clock: FakeClock) -> None:
    """A deferred-length upload is unfinished: its 204s carry Upload-Expires."""
    url = timed.new(defer=True)
    response = timed.append(url, 0, b"abc")
    assert_window(response, clock.now)
    response = timed.append(url, 3, b"", headers={"Upload-Length": "3"})
    assert "upload-expires" not in response.headers


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
def test_expired_upload_404(timed: TusHTTP, clock: FakeClock, method: str) -> None:
    """Past Upload-Expires -> 404 at request time (before any sweep),
    and nothing is appended."""
    url = timed.new(10)
    timed.append(url, 0, b"abc")
    clock.advance(TTL + 10)
    response = timed.patch(url, 3, b"def") if method == "PATCH" else timed.request(method, url)
    assert_error(response, 404, errors.NotFound.code)
    assert timed.head(url).status_code == 404


def test_not_expired_just_before_deadline(timed: TusHTTP, clock: FakeClock) -> None:
    """One second before Upload-Expires the upload is alive."""
    response = timed.create(10)
    deadline = expires_at(response)
    url = response.headers["location"]
    clock.now = deadline - 1
    assert_status(timed.head(url), 200)
    timed.append(url, 0, b"abc")


def test_patch_may_renew_but_never_shortens(timed: TusHTTP, clock: FakeClock) -> None:
    """A sliding window is allowed; the expiry never moves backwards."""
    response = timed.create(10)
    first = expires_at(response)
    url = response.headers["location"]
    clock.advance(TTL // 2)
    second = expires_at(timed.append(url, 0, b"abc"))
    assert second >= first


REJECTIONS: list[tuple[str, dict[str, object]]] = [
    ("409", {"offset": 7}),
    ("412", {"version": "0.2.2"}),
    ("415", {"content_type": "text/plain"}),
    ("400", {"offset": "x"}),
    ("413", {"body": b"x" * 20}),
]


@pytest.mark.parametrize("changes", [pytest.param(c, id=i) for i, c in REJECTIONS])
def test_rejected_patch_does_not_extend_expiry(
    timed: TusHTTP, clock: FakeClock, changes: dict[str, object]
) -> None:
    """A rejected PATCH does not extend the expiry."""
    url = timed.new(10)
    before = expires_at(timed.head(url))
    clock.advance(TTL - 100)
    kwargs: dict[str, object] = {"offset": 0, "body": b"abc"}
    kwargs.update(changes)
    offset = kwargs.pop("offset")
    body = kwargs.pop("body")
    response = timed.patch(url, offset, body, **kwargs)  # type: ignore[arg-type]
    assert 400 <= response.status_code < 500, describe(response)
    assert expires_at(timed.head(url)) == before
    clock.advance(200)
    assert timed.head(url).status_code == 404


def test_completed_upload_never_expires(timed: TusHTTP, clock: FakeClock) -> None:
    """A completed upload outlives any expiry window."""
    url = timed.upload(b"hello")
    clock.advance(100 * TTL)
    head = timed.head(url)
    assert_status(head, 200)
    assert "upload-expires" not in head.headers
    assert timed.content(url) == b"hello"


def test_sweeper_keeps_completed_uploads(make_client: MakeClient, clock: FakeClock) -> None:
    """The periodic sweeper removes the expired unfinished upload (its files go) and
    leaves the completed one alone."""
    tus = make_client(clock=clock, expiration=TTL, sweep_interval=0.05)
    done = tus.upload(b"hello")
    files_before = set(tus.snapshot())
    pending = tus.new(10)
    tus.append(pending, 0, b"abc")
    clock.advance(100 * TTL)
    deadline = time.monotonic() + 5
    while set(tus.snapshot()) != files_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(tus.snapshot()) == files_before, "sweeper left the expired upload's files"
    assert tus.head(pending).status_code == 404
    assert_status(tus.head(done), 200)
    assert tus.content(done) == b"hello"


def test_final_naming_expired_partial_400(timed: TusHTTP, clock: FakeClock) -> None:
    """A final concatenation naming an expired partial -> 400 ERR_INVALID_CONCAT."""
    partial = timed.new(5, concat="partial")
    timed.append(partial, 0, b"ab")
    fresh = timed.upload(b"hello", concat="partial")
    clock.advance(TTL + 10)
    response = timed.create(concat=f"final;{upload_path(fresh)} {upload_path(partial)}")
    assert_error(response, 400, errors.InvalidConcat.code)


def test_disabled_means_no_header_and_no_expiry(make_client: MakeClient, clock: FakeClock) -> None:
    """With expiration off, no Upload-Expires anywhere and nothing expires."""
    tus = make_client(clock=clock, expiration=0)
    response = tus.create(10)
    assert "upload-expires" not in response.headers
    url = response.headers["location"]
    assert "upload-expires" not in tus.append(url, 0, b"abc").headers
    assert "upload-expires" not in tus.head(url).headers
    clock.advance(10 * 365 * 86400)
    assert_status(tus.head(url), 200)
    tus.append(url, 3, b"defghij")
