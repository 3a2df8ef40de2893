"""Pure tus 1.0.0 wire helpers: parsing and formatting the protocol's header values.

This module owns the *syntax* of the tus headers and nothing else:

- upload ids (generation and validation),
- non-negative integers (``Upload-Offset``, ``Upload-Length``, ``Content-Length``),
- the PATCH media type (``Content-Type: application/offset+octet-stream``),
- ``Upload-Metadata`` (strict parser and its inverse),
- ``Upload-Concat`` (``partial`` / ``final;<urls>`` to upload ids),
- ``Upload-Checksum`` (algorithm + digest) and the running hashers that verify it,
- ``Upload-Expires`` (IMF-fixdate),
- the scheme and host for an absolute ``Location``, optionally from proxy headers.

It does no I/O and imports nothing from Starlette, so every rule here is testable as a plain
function. Whether a header is *allowed* on a request (extension enabled, upload state, limits)
is the handlers' business; they call in here only to turn strings into values. Every parser
raises a ``tusserver.errors`` class, so a malformed header always maps to the same stable code.
Why each rule is what it is: docs/protocol.md, cited by section heading.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol
from urllib.parse import unquote, urlsplit

from tusserver.errors import (
    InvalidChecksum,
    InvalidConcat,
    InvalidMetadata,
    TusError,
    UnsupportedChecksum,
)
from tusserver.models import ConcatKind, is_valid_upload_id

__all__ = [
    "DIGEST_SIZES",
    "MAX_CONCAT_PARTS",
    "MAX_INT",
    "TUS_CONTENT_TYPE",
    "Checksum",
    "ConcatRequest",
    "Hasher",
    "encode_metadata",
    "format_http_date",
    "is_offset_content_type",
    "new_hasher",
    "parse_checksum",
    "parse_concat",
    "parse_metadata",
    "parse_non_negative_int",
    "request_base_url",
]

TUS_CONTENT_TYPE = "application/offset+octet-stream"

# Largest offset or length we accept: the biggest signed 64-bit integer, which is what tusd
# (Go int64) and every storage backend can represent. It has 19 decimal digits.
MAX_INT = 2**63 - 1
_MAX_INT_DIGITS = len(str(MAX_INT))

# An Upload-Concat final list longer than this is refused outright, so a hostile header cannot
# make us look up thousands of uploads.
MAX_CONCAT_PARTS = 1000

# HTTP optional whitespace (RFC 9110 section 5.6.3) is SP and HTAB only. str.strip() would also
# remove e.g. U+0085 or U+00A0, which can appear in latin-1 decoded headers and must not be
# silently accepted.
_OWS = " \t"

# Longest piece of client input quoted back in an error message.
_ECHO_LIMIT = 32


def _echo(value: str) -> str:
    """Quote client input for an error message: bounded length, control characters escaped.

    Error messages end up in response bodies and logs; repr() keeps a CR/LF in a hostile
    header from becoming a new line there.
    """
    if len(value) > _ECHO_LIMIT:
        return repr(value[:_ECHO_LIMIT]) + "..."
    return repr(value)


# --- integers ---------------------------------------------------------------------------------

# [0-9], not \d or str.isdigit(): those accept non-ASCII digits such as "٣" that int() then
# happily converts.
_DIGITS = re.compile(r"[0-9]+")


def parse_non_negative_int(value: str | None, error: type[TusError]) -> int | None:
    """Parse ``Upload-Offset``/``Upload-Length``-style values; None when the header is absent.

    Only ASCII digits are accepted (docs/protocol.md, "Numbers and header syntax"):
    ``+5``, ``-1``, ``1.5``, ``5x`` and inner spaces raise ``error``, as does an empty value or
    anything above ``MAX_INT``. Surrounding spaces and tabs are optional whitespace in HTTP and are
    trimmed.
    """
    if value is None:
        return None
    text = value.strip(_OWS)
    if _DIGITS.fullmatch(text) is None:
        raise error(f"expected a non-negative integer, got {_echo(value)}")
    # Check the length first so a 10,000-digit header never reaches int() (CPython refuses
    # int() on huge strings anyway, with a ValueError we would otherwise have to translate).
    if len(text) > _MAX_INT_DIGITS or int(text) > MAX_INT:
        raise error(f"value too large (maximum {MAX_INT})")
    return int(text)


# --- content type -----------------------------------------------------------------------------


def is_offset_content_type(value: str | None) -> bool:
    """True when ``value`` names ``application/offset+octet-stream``.

    Media types are case-insensitive and may carry parameters
    (``Application/Offset+Octet-Stream; charset=utf-8``), so compare only the type/subtype,
    case-insensitively. tusd's exact string compare would reject both
    (docs/protocol.md, "Content types").
    """
    if value is None:
        return False
    media_type = value.split(";", 1)[0].strip(_OWS)
    # isascii(): str.lower() maps some non-ASCII letters (e.g. KELVIN SIGN) onto ASCII ones.
    return media_type.isascii() and media_type.lower() == TUS_CONTENT_TYPE


# --- base64 -----------------------------------------------------------------------------------


def _strict_b64decode(value: str) -> bytes:
    """Decode standard base64 with padding, rejecting everything else.

    Raises ValueError for: characters outside the alphabet (including whitespace and the
    URL-safe ``-``/``_``), missing or misplaced padding, data after padding, and
    non-canonical encodings (non-zero pad bits such as ``YR==``), so every byte string has
    exactly one accepted spelling.
    """
    if not value.isascii():
        raise ValueError("non-ASCII character in base64")
    raw = value.encode("ascii")
    decoded = binascii.a2b_base64(raw, strict_mode=True)
    if base64.b64encode(decoded) != raw:
        raise ValueError("non-canonical base64")
    return decoded


# --- Upload-Metadata --------------------------------------------------------------------------

# Printable ASCII without the space (0x20) and the comma (0x2c), which delimit pairs.
_METADATA_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")


def parse_metadata(raw: str | None) -> dict[str, str | None]:
    """Decode ``Upload-Metadata`` into ``{key: value or None}``.

    Product decision: this parser is *strict*. Any malformed pair rejects the whole header
    with ``InvalidMetadata`` (400), rather than tusd's "drop the bad pair and log" (the spec
    allows both; docs/protocol.md, "Upload-Metadata strictness"). Rules:

    - absent or blank -> ``{}`` (tuspy always sends the header, empty when it has no
      metadata; ``@tus/server`` wrongly answers 400 there);
    - pairs are separated by ``,``; each element is trimmed of spaces/tabs
      (``a YQ==, b Yg==`` is what some clients send);
    - an element is ``key`` or ``key value`` separated by exactly one space;
    - keys are printable ASCII without comma; values are standard padded base64 of
      bytes, decoded as UTF-8 with U+FFFD for invalid sequences; a key without a value maps
      to None;
    - empty elements (``a YQ==,,b``, a trailing comma) and duplicate keys are errors.

    Callers keep ``raw`` itself for HEAD, which must echo the header verbatim.
    """
    if raw is None or raw.strip(_OWS) == "":
        return {}
    result: dict[str, str | None] = {}
    for position, element in enumerate(raw.split(","), start=1):
        element = element.strip(_OWS)
        if element == "":
            raise InvalidMetadata(f"Upload-Metadata: empty element at position {position}")
        parts = element.split(" ")
        if len(parts) > 2:
            raise InvalidMetadata(
                f"Upload-Metadata: element {position} must be 'key' or 'key value' "
                "separated by one space"
            )
        key = parts[0]
        # After trimming, parts[0] is never empty; the regex is what rejects a tab, a
        # control character or a non-ASCII key.
        if _METADATA_KEY.fullmatch(key) is None:
            raise InvalidMetadata(f"Upload-Metadata: invalid key {_echo(key)}")
        if key in result:
            raise InvalidMetadata(f"Upload-Metadata: duplicate key {_echo(key)}")
        if len(parts) == 1:
            result[key] = None
            continue
        try:
            decoded = _strict_b64decode(parts[1])
        except ValueError:
            raise InvalidMetadata(
                f"Upload-Metadata: value of {_echo(key)} is not padded standard base64"
            ) from None
        # Values are bytes (docs/protocol.md, "Upload-Metadata strictness"): every client sends
        # UTF-8, but binary is legal tus. HEAD echoes the raw header, so the lossy text form only
        # feeds our own consumers.
        result[key] = decoded.decode("utf-8", errors="replace")
    return result


def encode_metadata(values: Mapping[str, str | None]) -> str:
    """Build an ``Upload-Metadata`` value; the inverse of ``parse_metadata``.

    Pairs keep the mapping's order. None is written as a bare key. An empty string has no
    base64 spelling that survives trimming, so it is written as a bare key too and parses
    back as None. Invalid keys or unencodable values raise ``InvalidMetadata``.
    """
    elements: list[str] = []
    for key, value in values.items():
        if _METADATA_KEY.fullmatch(key) is None:
            raise InvalidMetadata(f"Upload-Metadata: invalid key {_echo(key)}")
        if value is None or value == "":
            elements.append(key)
            continue
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMetadata(
                f"Upload-Metadata: value of {_echo(key)} is not encodable as UTF-8"
            ) from None
        elements.append(f"{key} {base64.b64encode(encoded).decode('ascii')}")
    return ",".join(elements)


# --- Upload-Concat ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConcatRequest:
    """A parsed ``Upload-Concat``: a partial (no ids) or a final with its partials in order."""

    kind: ConcatKind
    partial_ids: tuple[str, ...] = ()


# Printable ASCII without space. Applied to each URL before urlsplit(), which would otherwise
# silently delete tabs, CR and LF (bpo-43882) and let a NUL through.
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
_LIST_SEPARATOR = re.compile(r"[ \t]+")


def parse_concat(
    raw: str | None, base_path: str, max_parts: int = MAX_CONCAT_PARTS
) -> ConcatRequest | None:
    """Parse ``Upload-Concat``; None when absent.

    ``partial`` -> a partial. ``final;<url> <url> ...`` -> a final naming at most
    ``max_parts`` distinct partials in the given order. A partial named twice is
    refused: no client does it, and it let one small partial be copied a thousand times into
    one final (amplifying storage writes). Each URL is an absolute ``http(s)`` URL
    (tus-js-client sends those) or an absolute path, may end with ``/`` and the list may
    start with a space. Anything else raises ``InvalidConcat``
    (docs/protocol.md, "Concatenation").
    """
    if raw is None:
        return None
    value = raw.strip(_OWS)
    if value == "partial":
        return ConcatRequest(ConcatKind.PARTIAL)
    if not value.startswith("final;"):
        # "foo" and "partial;x" are errors, not a partial and not ignored.
        raise InvalidConcat(f"Upload-Concat must be 'partial' or 'final;<urls>', got {_echo(raw)}")
    listed = value[len("final;") :].strip(_OWS)
    if listed == "":
        raise InvalidConcat("Upload-Concat: 'final;' names no uploads")
    urls = _LIST_SEPARATOR.split(listed)
    limit = min(max_parts, MAX_CONCAT_PARTS)
    if len(urls) > limit:
        raise InvalidConcat(f"Upload-Concat: more than {limit} uploads")
    ids = tuple(_concat_upload_id(url, base_path) for url in urls)
    if len(set(ids)) != len(ids):
        raise InvalidConcat("Upload-Concat: an upload is named more than once")
    return ConcatRequest(ConcatKind.FINAL, ids)


def _concat_upload_id(url: str, base_path: str) -> str:
    """The upload id an Upload-Concat URL points at, or InvalidConcat."""
    bad = InvalidConcat(f"Upload-Concat: {_echo(url)} is not an upload URL of this server")
    # A query or a fragment would be ignored by the match below but means the client is
    # pointing at something we do not serve; refuse rather than guess.
    if _URL_CHARS.fullmatch(url) is None or "?" in url or "#" in url:
        raise bad
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1" (unbalanced bracket)
        raise bad from None
    if parts.scheme:
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise bad
    elif parts.netloc:
        # A scheme-relative "//host/files/id": no client sends it; keep the rule simple.
        raise bad
    # Match by path only. A proxy may have rewritten scheme and host, and the client
    # built these URLs from the Location it saw, so the host is not ours to check.
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:  # "%ff": not UTF-8, so not one of our ids either
        raise bad from None
    if not path.startswith(base_path):
        raise bad
    rest = path[len(base_path) :]
    if rest.endswith("/"):  # one trailing slash, kept "for compatibility" by tusd
        rest = rest[:-1]
    # The id check also rejects traversal ("../"), NUL and anything else decoding produced.
    if not is_valid_upload_id(rest):
        raise bad
    return rest


# --- Upload-Checksum --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checksum:
    """A parsed ``Upload-Checksum``: lowercase algorithm name and the raw digest bytes."""

    algorithm: str
    digest: bytes


class Hasher(Protocol):
    """A running digest over a request body (hashlib objects satisfy it)."""

    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


DIGEST_SIZES: dict[str, int] = {"sha1": 20, "sha256": 32, "md5": 16, "crc32": 4}


class _Crc32:
    """CRC-32 (zlib/IEEE) as a Hasher; the digest is the value as 4 big-endian bytes."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def new_hasher(algorithm: str) -> Hasher:
    """A fresh running hasher for a lowercase algorithm name from ``DIGEST_SIZES``.

    Raises ``UnsupportedChecksum`` for any other name, so a misuse still renders as a 400 rather
    than a 500. ``usedforsecurity=False``: these are integrity checks
    (docs/protocol.md, "Checksums"), and it keeps md5/sha1 available on FIPS-restricted OpenSSL
    builds.
    """
    if algorithm == "sha1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "sha256":
        return hashlib.sha256(usedforsecurity=False)
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "crc32":
        return _Crc32()
    raise UnsupportedChecksum(f"unsupported checksum algorithm {_echo(algorithm)}")


def parse_checksum(raw: str | None, supported: Sequence[str]) -> Checksum | None:
    """Parse ``Upload-Checksum: <algorithm> <base64 digest>``; None when absent.

    - The algorithm is matched case-insensitively and returned lowercase (names are
      defined lowercase, but tusdotnet accepts ``SHA1`` and so do we;
      docs/protocol.md, "Checksums").
    - An algorithm outside ``supported`` (or one we cannot compute) raises
      ``UnsupportedChecksum``. Callers parse this before reading the body.
    - A header without exactly two parts, an empty digest, a digest that is not strict
      base64, or one whose decoded length is wrong for the algorithm raises
      ``InvalidChecksum``. The length check is what turns a hex digest into a 400 (the
      spec allows 460 or 400 there; never 204).
    """
    if raw is None:
        return None
    parts = raw.strip(_OWS).split(" ")
    if len(parts) != 2 or parts[0] == "" or parts[1] == "":
        raise InvalidChecksum("Upload-Checksum must be '<algorithm> <base64 digest>'")
    name, encoded = parts
    algorithm = name.lower() if name.isascii() else name
    allowed = {alg.lower() for alg in supported}
    if algorithm not in allowed or algorithm not in DIGEST_SIZES:
        raise UnsupportedChecksum(f"unsupported checksum algorithm {_echo(name)}")
    try:
        digest = _strict_b64decode(encoded)
    except ValueError:
        raise InvalidChecksum("Upload-Checksum digest is not padded standard base64") from None
    if len(digest) != DIGEST_SIZES[algorithm]:
        raise InvalidChecksum(
            f"Upload-Checksum {algorithm} digest must be {DIGEST_SIZES[algorithm]} bytes, "
            f"got {len(digest)}"
        )
    return Checksum(algorithm, digest)


# --- dates ------------------------------------------------------------------------------------


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, e.g. ``Wed, 25 Jun 2014 16:00:00 GMT`` (docs/protocol.md, "Expiration").

    formatdate() uses fixed English names; strftime("%a") would follow the process locale.
    """
    return formatdate(timestamp, usegmt=True)


# --- Location base URL ------------------------------------------------------------------------

# A host, optionally with a port: a DNS name or IPv4 address, or a bracketed IPv6 literal.
# Anything else (spaces, CR/LF, "/", "@", quotes) is refused: the value is copied into the
# Location header, so this is the line that stops header injection and URL confusion.
_SAFE_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_MAX_HOST_LENGTH = 255
_PROTOS = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 7239 section 4: forwarded-pair = token "=" value; value = token / quoted-string.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_FORWARDED_PAIR = re.compile(
    rf'[ \t]*({_TCHARS})=({_TCHARS}|"(?:[^"\\]|\\.)*")[ \t]*',
)


def _safe_host(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip(_OWS)
    if len(value) > _MAX_HOST_LENGTH or _SAFE_HOST.fullmatch(value) is None:
        return None
    return value


def _safe_proto(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip(_OWS).lower()
    return value if value in _PROTOS else None


def _first_list_value(value: str | None) -> str | None:
    """First member of a comma-separated header (``X-Forwarded-*``), the client-facing hop."""
    if value is None:
        return None
    return value.split(",", 1)[0]


def _first_forwarded_element(value: str | None) -> dict[str, str]:
    """The parameters of the first element of an RFC 7239 ``Forwarded`` header.

    Names are lowercased and quoted values unescaped. A header we cannot parse up to the
    end of its first element yields ``{}``, so the next source is used.
    """
    params: dict[str, str] = {}
    if value is None:
        return params
    position = 0
    while True:
        match = _FORWARDED_PAIR.match(value, position)
        if match is None:
            return {}
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        # RFC 7239 section 4: a parameter must not occur more than once per element.
        if name in params:
            return {}
        params[name] = raw
        position = match.end()
        if position == len(value) or value[position] == ",":
            return params
        if value[position] != ";":
            return {}
        position += 1


def _server_host(server: tuple[str, int] | None, scheme: str) -> str | None:
    if server is None:
        return None
    address, port = server
    if ":" in address:  # IPv6 literal
        address = f"[{address}]"
    if _DEFAULT_PORTS.get(scheme) == port:
        return address
    return f"{address}:{port}"


def request_base_url(
    *,
    scheme: str,
    host: str | None,
    server: tuple[str, int] | None,
    headers: Mapping[str, str],
    trust_proxy: bool,
) -> str:
    """``scheme://host[:port]`` (no trailing slash) for an absolute ``Location``
    (docs/protocol.md, "Location and proxies").

    Sources, first usable one wins:

    - scheme: ``Forwarded: proto=`` > ``X-Forwarded-Proto`` > the connection's scheme;
    - host: ``Forwarded: host=`` > ``X-Forwarded-Host`` > ``Host`` > the server address >
      ``localhost``.

    The forwarded headers are read only when ``trust_proxy`` is set (tusd likewise
    ignores them unless told to respect them); otherwise any client could steer Location
    (docs/protocol.md, "Location and proxies").
    A proto other than http/https, or a host failing ``_SAFE_HOST``, is skipped.
    """
    # Header names are case-insensitive (docs/protocol.md, "Versioning and Tus-Resumable"); callers
    # pass ASGI's lowercase names, but a Mapping built elsewhere should not silently lose its proxy
    # headers.
    lowered = {name.lower(): value for name, value in headers.items()}
    protos: list[str | None] = []
    hosts: list[str | None] = []
    if trust_proxy:
        forwarded = _first_forwarded_element(lowered.get("forwarded"))
        protos += [forwarded.get("proto"), _first_list_value(lowered.get("x-forwarded-proto"))]
        hosts += [forwarded.get("host"), _first_list_value(lowered.get("x-forwarded-host"))]
    protos.append(scheme)
    final_scheme = next((p for p in map(_safe_proto, protos) if p is not None), "http")
    hosts.append(host)
    hosts.append(_server_host(server, final_scheme))
    final_host = next((h for h in map(_safe_host, hosts) if h is not None), "localhost")
    return f"{final_scheme}://{final_host}"
