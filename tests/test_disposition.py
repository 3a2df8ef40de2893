"""Content-Disposition and media types built from hostile upload metadata."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from tusserver.edge.disposition import content_disposition, is_inline_safe, safe_media_type

# What a header parser would take apart: disposition, quoted filename, optional filename*.
_SHAPE = re.compile(
    r"(inline|attachment); filename=\"([ -~]*)\""
    r"(?:; filename\*=UTF-8''([A-Za-z0-9!#$&+\-.^_`|~%]+))?"
)


def parts(header: str) -> tuple[str, str, str | None]:
    match = _SHAPE.fullmatch(header)
    assert match is not None, header
    kind, fallback, encoded = match.groups()
    assert '"' not in fallback
    assert "\\" not in fallback
    return kind, fallback, None if encoded is None else unquote(encoded, encoding="utf-8")


def test_plain_ascii_name_has_no_extended_form() -> None:
    assert content_disposition("report.pdf", inline=False) == 'attachment; filename="report.pdf"'
    assert content_disposition("cat.png", inline=True) == 'inline; filename="cat.png"'


@pytest.mark.parametrize("name", [None, "", "   ", "...", "\r\n", "\x00", "\u202e", ". \u2028."])
def test_empty_or_nothing_left_falls_back(name: str | None) -> None:
    assert content_disposition(name, inline=False) == 'attachment; filename="download"'


def test_quotes_and_backslashes_cannot_break_the_quoted_string() -> None:
    kind, fallback, encoded = parts(content_disposition('a"b\\c.txt', inline=False))
    assert kind == "attachment"
    assert fallback == "a_b_c.txt"
    # The backslash is a path separator and never survives; the quote survives only encoded.
    assert encoded == 'a"b_c.txt'


@pytest.mark.parametrize("name", ["a\r\nSet-Cookie: x=1.txt", "a\nb.txt", "a\tb\x7f\x1b.txt"])
def test_control_characters_are_removed(name: str) -> None:
    header = content_disposition(name, inline=False)
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in header)
    _, fallback, encoded = parts(header)
    assert encoded is None
    assert "\r" not in fallback
    assert "\n" not in fallback


def test_header_injection_attempt_stays_one_parameter() -> None:
    header = content_disposition('x.txt"; filename="evil.html', inline=False)
    _, fallback, encoded = parts(header)
    assert fallback == "x.txt_; filename=_evil.html"
    assert encoded == 'x.txt"; filename="evil.html'


def test_non_ascii_gets_fallback_and_utf8_form() -> None:
    header = content_disposition("café résumé.pdf", inline=False)
    assert header == (
        'attachment; filename="caf_ r_sum_.pdf"; '
        "filename*=UTF-8''caf%C3%A9%20r%C3%A9sum%C3%A9.pdf"
    )


def test_non_bmp_and_cjk() -> None:
    _, fallback, encoded = parts(content_disposition("报告🎉.txt", inline=True))
    assert fallback == "___.txt"
    assert encoded == "报告🎉.txt"


def test_nfc_normalised() -> None:
    decomposed = "cafe\u0301.txt"
    _, _, encoded = parts(content_disposition(decomposed, inline=False))
    assert encoded == "caf\u00e9.txt"


def test_percent_is_kept_out_of_the_fallback() -> None:
    # Some user agents percent-decode filename=, so "%41" could turn into "A".
    _, fallback, encoded = parts(content_disposition("100%41.txt", inline=False))
    assert fallback == "100_41.txt"
    assert encoded == "100%41.txt"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../etc/passwd", "_etc_passwd"),
        ("..\\..\\windows\\system32", "_.._windows_system32"),
        ("/abs/path.txt", "_abs_path.txt"),
        ("/", "_"),
        (".bashrc", "bashrc"),
        ("trailing. . ", "trailing"),
    ],
)
def test_never_a_path(name: str, expected: str) -> None:
    _, fallback, _ = parts(content_disposition(name, inline=False))
    assert fallback == expected
    assert "/" not in fallback
    assert "\\" not in fallback


def test_bidi_override_is_removed() -> None:
    # Would display as "invoiceexe.pdf" in a download bar.
    _, fallback, encoded = parts(content_disposition("invoice\u202efdp.exe", inline=False))
    assert fallback == "invoicefdp.exe"
    assert encoded is None


def test_very_long_name_is_truncated_keeping_the_extension() -> None:
    _, fallback, encoded = parts(content_disposition("a" * 10_000 + ".mp4", inline=False))
    assert encoded is None
    assert len(fallback) == 255
    assert fallback.endswith(".mp4")


def test_very_long_multibyte_name_cut_on_a_character_boundary() -> None:
    _, _, encoded = parts(content_disposition("é" * 1000 + ".txt", inline=False))
    assert encoded is not None
    assert len(encoded.encode()) <= 255
    assert encoded.endswith(".txt")
    assert set(encoded[:-4]) == {"é"}


def test_long_name_with_silly_extension_is_cut_as_a_whole() -> None:
    _, fallback, _ = parts(content_disposition("x." + "y" * 1000, inline=False))
    assert len(fallback) == 255


def test_header_is_latin1_encodable() -> None:
    content_disposition("ø\u2028ß\ufeff.txt", inline=False).encode("latin-1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("image/png", "image/png"),
        ("IMAGE/PNG", "image/png"),
        ("  text/plain ; charset=utf-8", "text/plain"),
        ("application/vnd.ms-excel", "application/vnd.ms-excel"),
        ("image/svg+xml", "image/svg+xml"),
        ("text/html", "text/html"),
        ("image", "application/octet-stream"),
        ("image/", "application/octet-stream"),
        ("/png", "application/octet-stream"),
        ("image/png/x", "application/octet-stream"),
        ("image/p ng", "application/octet-stream"),
        ("text/html\r\nX-Evil: 1", "application/octet-stream"),
        ("imáge/png", "application/octet-stream"),
        ("a/" + "b" * 125, "a/" + "b" * 125),
        ("a/" + "b" * 126, "application/octet-stream"),
    ],
)
def test_safe_media_type(value: str | None, expected: str) -> None:
    assert safe_media_type(value) == expected


@pytest.mark.parametrize(
    ("media_type", "inline"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("audio/mpeg", True),
        ("video/mp4", True),
        ("text/plain", True),
        ("image/svg+xml", False),
        ("image/x-svg", False),
        ("text/html", False),
        ("text/xml", False),
        ("application/xhtml+xml", False),
        ("application/pdf", False),
        ("application/javascript", False),
        ("application/octet-stream", False),
        ("text/plainx", False),
    ],
)
def test_is_inline_safe(media_type: str, inline: bool) -> None:
    assert is_inline_safe(media_type) is inline
