"""Safe download headers from client-supplied metadata: ``Content-Disposition`` and the type.

Upload metadata (``filename``, ``filetype``) is whatever the uploader typed, so it is hostile input
by the time someone downloads it. This module owns turning it into headers that cannot inject header
syntax, traverse paths, spoof extensions or make a browser render active content from our origin
(docs/protocol.md, "Downloads"; RFC 6266 for the disposition, RFC 5987/8187 for the UTF-8 form).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

FALLBACK_NAME = "download"
OCTET_STREAM = "application/octet-stream"

# Most filesystems cap a name at 255 bytes; longer names get truncated (or refused) by the
# browser anyway, so trim here, keeping the extension that decides how the file opens.
_MAX_NAME_BYTES = 255
_MAX_EXTENSION_CHARS = 16

# Bidirectional controls let "evil\u202egnp.exe" display as "evilexe.png"; they never belong
# in a file name.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_DROPPED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})  # control chars, line/paragraph separators

# Printable ASCII minus what breaks a quoted-string ('"', '\\') and '%', which some user agents
# percent-decode inside filename= (RFC 6266 appendix D advises against it).
_FALLBACK_UNSAFE = frozenset('"\\%')

# RFC 5987 attr-char beyond ALPHA / DIGIT (which quote() always keeps).
_ATTR_CHAR_EXTRA = "!#$&+-.^_`|~"

# RFC 9110 §5.6.2 token: a media type is token "/" token.
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"{_TCHARS}/{_TCHARS}")
_MAX_MEDIA_TYPE = 127

_INLINE_PREFIXES = ("image/", "audio/", "video/")
_INLINE_EXACT = frozenset({"text/plain"})


def content_disposition(filename: str | None, *, inline: bool) -> str:
    """``inline|attachment; filename="<ascii>"[; filename*=UTF-8''<pct-encoded>]``.

    The quoted ASCII form is always present (old user agents read only that); the UTF-8 form
    is added only when the ASCII form had to change the name.
    """
    kind = "inline" if inline else "attachment"
    name = clean_filename(filename)
    fallback = "".join(
        "_" if (not " " <= char <= "~" or char in _FALLBACK_UNSAFE) else char for char in name
    )
    header = f'{kind}; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe=_ATTR_CHAR_EXTRA, encoding='utf-8')}"
    return header


def clean_filename(filename: str | None) -> str:
    """A single path component with no control characters, within the length cap."""
    if not filename:
        return FALLBACK_NAME
    # One canonical form, so a name is not encoded differently depending on the uploader's OS.
    name = unicodedata.normalize("NFC", filename)
    name = "".join(
        char
        for char in name
        if char not in _BIDI_CONTROLS and unicodedata.category(char) not in _DROPPED_CATEGORIES
    )
    # A name, never a path: "../etc/passwd" becomes "_etc_passwd" below.
    name = name.replace("/", "_").replace("\\", "_")
    # Leading dots make hidden files or "..", trailing dots and spaces are dropped by Windows.
    name = name.strip(" \t").lstrip(".").rstrip(". ")
    name = _truncate(name)
    return name or FALLBACK_NAME


def _truncate(name: str) -> str:
    if len(name.encode("utf-8")) <= _MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION_CHARS:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = _MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    # Cut on a character boundary: decode with "ignore" drops a split multi-byte sequence.
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
    return stem + suffix


def safe_media_type(value: str | None) -> str:
    """A lowercase ``type/subtype`` from untrusted input, else ``application/octet-stream``.

    Parameters (``; charset=...``) are dropped: we cannot vouch for them, and a bare type is
    what the inline allowlist is checked against.
    """
    if not value:
        return OCTET_STREAM
    essence = value.split(";", 1)[0].strip().lower()
    if len(essence) > _MAX_MEDIA_TYPE or _MEDIA_TYPE.fullmatch(essence) is None:
        return OCTET_STREAM
    return essence


def is_inline_safe(media_type: str) -> bool:
    """Whether a browser may render this type in place without running anything of ours.

    HTML, SVG, XML, PDF and anything unknown are served as attachments
    (docs/protocol.md, "Downloads").
    """
    media_type = media_type.lower()
    if media_type in _INLINE_EXACT:
        return True
    if not media_type.startswith(_INLINE_PREFIXES):
        return False
    # SVG is XML that may carry script: rendered inline from our origin it is stored XSS. Any
    # XML-flavoured subtype ("image/svg+xml", "image/x-svg", "video/x-foo+xml") is refused.
    subtype = media_type.partition("/")[2]
    return "svg" not in subtype and "xml" not in subtype
