"""Signed tokens and storage-key checks: pure functions, every way to break them."""

from __future__ import annotations

import pytest

from delivery.keys import normalize_key
from delivery.signing import UrlSigner, b64decode, b64encode
from tusserver import errors

OLD, NEW = b"o" * 32, b"n" * 32


def test_a_token_round_trips_and_expires() -> None:
    signer = UrlSigner("download v1", [NEW])
    token = signer.sign({"f": "a" * 32}, expires_at=1000)
    assert signer.verify(token, now=999)["f"] == "a" * 32
    with pytest.raises(errors.UrlExpired):
        signer.verify(token, now=1000)


def test_keys_rotate_the_first_signs_all_verify() -> None:
    before = UrlSigner("download v1", [OLD]).sign({"f": "x"}, expires_at=10**10)
    rotated = UrlSigner("download v1", [NEW, OLD])
    assert rotated.verify(before, now=0)["f"] == "x"
    after = rotated.sign({"f": "y"}, expires_at=10**10)
    with pytest.raises(errors.SignatureInvalid):
        UrlSigner("download v1", [OLD]).verify(after, now=0)  # retired signer knows no NEW


def _tamper_payload(token: str) -> str:
    payload, mac = token.split(".")
    raw = b64decode(payload).replace(b'"f":"a', b'"f":"b')
    return f"{b64encode(raw)}.{mac}"


def _extend_expiry(token: str) -> str:
    payload, mac = token.split(".")
    raw = b64decode(payload).replace(b'"e":1000', b'"e":9999999999')
    return f"{b64encode(raw)}.{mac}"


@pytest.mark.parametrize(
    "forge",
    [
        _tamper_payload,
        _extend_expiry,
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0] + ".",
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: "%%%.%%%",
        lambda t: "",
        lambda t: "a" * 5000,
    ],
)
def test_tampered_tokens_are_refused(forge: object) -> None:
    signer = UrlSigner("download v1", [NEW])
    token = signer.sign({"f": "a" * 32}, expires_at=1000)
    with pytest.raises(errors.SignatureInvalid):
        signer.verify(forge(token), now=0)  # type: ignore[operator]


def test_a_token_for_another_purpose_never_verifies() -> None:
    part = UrlSigner("direct-upload part v1", [NEW]).sign({"f": "a"}, expires_at=10**10)
    with pytest.raises(errors.SignatureInvalid):
        UrlSigner("download v1", [NEW]).verify(part, now=0)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        UrlSigner("x", [b"short"])


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "uploads/../secret.bin",
        "uploads/./x.bin",
        "uploads//x.bin",
        "/abs/x.bin",
        "uploads\\x.bin",
        "uploads/x.bin\x00.mp4",
        "uploads/%2e%2e/x.bin",
        "uploads/%2E%2E%2Fx.bin",
        "uploads/%252e%252e/x.bin",
        "uploads%2fx.bin",
        "uploads/x.bin%00",
        "uploads/x y.bin",
        "uploads/..",
        "",
        "a" * 1025,
    ],
)
def test_traversal_and_odd_keys_are_refused(key: str) -> None:
    with pytest.raises(errors.InvalidKey):
        normalize_key(key, prefixes=("uploads/",))


def test_prefixes_and_extensions_are_enforced() -> None:
    assert normalize_key("uploads/a1.mp4", prefixes=("uploads/",)) == "uploads/a1.mp4"
    with pytest.raises(errors.InvalidKey, match="prefix"):
        normalize_key("private/a1.mp4", prefixes=("uploads/",))
    assert normalize_key("a.MP4", extensions=(".mp4",)) == "a.MP4"
    with pytest.raises(errors.InvalidKey, match="extension"):
        normalize_key("a.exe", extensions=(".mp4", ".webm"))
