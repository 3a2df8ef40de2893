"""Content-type sniffing for finished uploads: what the first bytes say, and what we serve.

This module owns two decisions: which MIME type a file's leading bytes identify (``detect``),
and how that is reconciled with the type the uploader declared (``reconcile``). The bytes win
whenever they are recognised, because the declared type is whatever the client typed and
serving it verbatim would let an upload pick how a browser treats it.

Detection is the ``filetype`` library (pure Python magic numbers) plus a few containers it
gets wrong or misses that matter for a video upload server; see ``_patched``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import filetype

# filetype never looks past its first 8192 bytes, so reading more is wasted I/O. It is also
# enough for the patches below: 43 MPEG-TS packets, a full EBML header, the first Ogg pages.
SNIFF_BYTES: Final = 8192

OCTET_STREAM: Final = "application/octet-stream"

# RFC 9110 §5.6.2: a media type is token "/" token. The same grammar and 127-character cap as
# tusserver.edge.disposition.safe_media_type, so a type accepted here is accepted when served.
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"{_TCHARS}/{_TCHARS}")
_MAX_MEDIA_TYPE = 127

# Types a browser renders as a document (and runs script in) or loads as script. Served from
# our origin they would be stored XSS, or a way around a CSP of script-src 'self'. Any
# "+xml" subtype is included: an XML document can pull in the XHTML namespace and run script.
_ACTIVE_TYPES: Final = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/javascript",
        "text/ecmascript",
        "application/x-shockwave-flash",
    }
)

# Different names for the same format, mapped to one spelling so that an uploader saying
# "image/jpg" about a JPEG is not reported as a mismatch. Only true synonyms belong here:
# video/quicktime vs video/mp4 or video/webm vs video/x-matroska are different containers as
# far as a player is concerned, so they stay distinct.
_ALIASES: Final = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/vnd.microsoft.icon": "image/x-icon",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-pn-wav": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "audio/x-aac": "audio/aac",
    "audio/m4a": "audio/mp4",
    "audio/x-m4a": "audio/mp4",
    "audio/x-aiff": "audio/aiff",
    "video/avi": "video/x-msvideo",
    "video/msvideo": "video/x-msvideo",
    "video/vnd.dlna.mpeg-tts": "video/mp2t",  # what Windows registers for .ts/.m2ts
    "application/x-zip-compressed": "application/zip",
    "application/x-zip": "application/zip",
    "application/x-pdf": "application/pdf",
    "application/x-gzip": "application/gzip",
}


@dataclass(frozen=True)
class ContentTypeVerdict:
    """What we serve for an upload, and the evidence it was decided from."""

    content_type: str  # what the server reports and serves; never an active type
    declared: str | None  # the uploader's type, normalised; None when absent or malformed
    detected: str | None  # what the leading bytes identify; None when unrecognised
    mismatch: bool  # both known and naming different formats (aliases are equal)


def detect(head: bytes) -> str | None:
    """The MIME type the leading bytes of a file identify, or None when unrecognised.

    Pass at least the first ``SNIFF_BYTES`` bytes (fewer when the file is shorter).
    """
    if not head:
        return None
    patched = _patched(head)
    if patched is not None:
        return patched
    mime = filetype.guess_mime(bytes(head[:SNIFF_BYTES]))
    # filetype answers "application/octet-stream" for its weakest signature (EOT fonts), which
    # is no information at all; treat it as unknown so it cannot override a declared type.
    if not isinstance(mime, str) or mime == OCTET_STREAM:
        return None
    return mime


def reconcile(declared: str | None, detected: str | None) -> ContentTypeVerdict:
    """Decide the served type from the declared one and the sniffed one.

    Recognised bytes win. Without them, the declared type is used unless it is one a browser
    would render actively (HTML, SVG, XML, script): bytes we could not identify are not
    evidence that the file is harmless, and the declared type alone would let an uploader
    turn a download into a page on our origin. Those become ``application/octet-stream``.
    """
    declared_type = normalize_media_type(declared)
    detected_type = normalize_media_type(detected)
    content_type = detected_type or declared_type or OCTET_STREAM
    if is_active(content_type):
        content_type = OCTET_STREAM
    mismatch = (
        declared_type is not None
        and detected_type is not None
        # "application/octet-stream" is what clients send when they do not know; it claims
        # nothing, so it cannot contradict the bytes.
        and declared_type != OCTET_STREAM
        and _canonical(declared_type) != _canonical(detected_type)
    )
    return ContentTypeVerdict(
        content_type=content_type,
        declared=declared_type,
        detected=detected_type,
        mismatch=mismatch,
    )


def normalize_media_type(value: str | None) -> str | None:
    """``type/subtype`` lowercased with parameters dropped, or None when not a media type."""
    if not value:
        return None
    essence = value.split(";", 1)[0].strip().lower()
    if len(essence) > _MAX_MEDIA_TYPE or _MEDIA_TYPE.fullmatch(essence) is None:
        return None
    # "*" is a token character, but "video/*" or "*/*" is a range for Accept, not a type.
    return None if "*" in essence else essence


def is_active(media_type: str) -> bool:
    """Whether a browser would render or execute this (normalised) type from our origin."""
    return media_type in _ACTIVE_TYPES or media_type.endswith("+xml")


def _canonical(media_type: str) -> str:
    return _ALIASES.get(media_type, media_type)


# -- what filetype gets wrong --------------------------------------------------------------


def _patched(head: bytes) -> str | None:
    """Containers filetype 1.2 misidentifies or misses; None defers to filetype.

    - ISO-BMFF: filetype calls anything with an "isom"/"mp4x" compatible brand video/mp4, so
      3GPP (3gp4...), 3GPP2 (3g2a) and M4V files, which all list "isom", come out as mp4. Its
      own 3GP matcher looks for "ftyp3gp" at offset 0 instead of 4 and never fires. The
      major brand is the file's own claim of what it is, so classify by that.
    - QuickTime files from before the ftyp box (first atom moov/mdat/wide/free/skip).
    - Matroska/WebM: filetype only matches the DocType with a one-byte size; a writer may
      legally use a longer size encoding, so parse the EBML header.
    - MPEG transport streams (.ts, and .m2ts with 4-byte timestamps), which it does not know.
    - Ogg with a Theora video stream, which it reports as audio/ogg like any Ogg file.
    """
    return _isobmff(head) or _classic_quicktime(head) or _ebml(head) or _mpeg_ts(head) or _ogg(head)


# Major brands (ISO/IEC 14496-12 ftyp, registered at mp4ra.org) we can name precisely. Brands
# not listed (heic, avif, mif1, crx...) fall through to filetype.
_MP4_BRANDS: Final = frozenset(
    {"isom", "iso2", "iso3", "iso4", "iso5", "iso6", "iso7", "iso8", "iso9", "mp41", "mp42"}
    | {"mp71", "avc1", "dash", "msnv", "f4v ", "xavc", "mmp4", "ndas", "ndsc", "ndsh", "ndsm"}
)
_M4V_BRANDS: Final = frozenset({"m4v ", "m4vh", "m4vp"})
_M4A_BRANDS: Final = frozenset({"m4a ", "m4b ", "m4p "})


def _isobmff(head: bytes) -> str | None:
    if len(head) < 12 or head[4:8] != b"ftyp" or int.from_bytes(head[:4], "big") < 16:
        return None
    brand = head[8:12].decode("latin-1").lower()
    if brand == "qt  ":
        return "video/quicktime"
    if brand.startswith("3g2"):
        return "video/3gpp2"
    if brand.startswith("3g"):  # 3gp4..3gp7, 3gs7, 3ge6, 3gg6, 3gr6...
        return "video/3gpp"
    if brand in _M4V_BRANDS:
        return "video/x-m4v"
    if brand in _M4A_BRANDS:
        return "audio/mp4"
    if brand in _MP4_BRANDS:
        return "video/mp4"
    return None


_QT_TOP_LEVEL: Final = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_QT_MOOV_FIRST_CHILD: Final = frozenset({b"mvhd", b"cmov", b"prfl", b"iods"})


def _classic_quicktime(head: bytes) -> str | None:
    """Walk top-level atoms; a chain of QuickTime atoms reaching moov or mdat is a movie.

    Requiring a well-formed chain (and moov's first child to be a movie header) keeps text
    that happens to have "free" at offset 4 from being called a movie.
    """
    offset = 0
    while offset + 8 <= len(head):
        size = int.from_bytes(head[offset : offset + 4], "big")
        kind = head[offset + 4 : offset + 8]
        if kind not in _QT_TOP_LEVEL:
            return None
        if size == 1 and offset + 16 <= len(head):  # 64-bit size follows the type
            size = int.from_bytes(head[offset + 8 : offset + 16], "big")
        if kind == b"moov":
            child = head[offset + 12 : offset + 16]
            return "video/quicktime" if child in _QT_MOOV_FIRST_CHILD else None
        if kind == b"mdat":
            # mdat first carries no evidence beyond four letters; after another atom it does.
            return "video/quicktime" if offset > 0 else None
        if size < 8:
            return None
        offset += size
    return None


_EBML_MAGIC: Final = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE: Final = 0x4282
_DOCTYPES: Final = {b"webm": "video/webm", b"matroska": "video/x-matroska"}


def _ebml(head: bytes) -> str | None:
    if not head.startswith(_EBML_MAGIC):
        return None
    size, offset = _vint(head, len(_EBML_MAGIC))
    if size is None:
        return None
    end = min(len(head), offset + size)
    while offset < end:
        element, offset = _element_id(head, offset)
        length, offset = _vint(head, offset)
        if element is None or length is None or offset + length > end:
            return None
        if element == _EBML_DOCTYPE:
            # DocType is an ASCII string, possibly NUL-padded.
            return _DOCTYPES.get(head[offset : offset + length].rstrip(b"\x00"))
        offset += length
    return None


def _element_id(buf: bytes, offset: int) -> tuple[int | None, int]:
    """An EBML element ID: a variable-length integer kept with its length marker bits."""
    if offset >= len(buf) or buf[offset] == 0:
        return None, offset
    width = 8 - buf[offset].bit_length() + 1
    if width > 4 or offset + width > len(buf):
        return None, offset
    return int.from_bytes(buf[offset : offset + width], "big"), offset + width


def _vint(buf: bytes, offset: int) -> tuple[int | None, int]:
    """An EBML data size: a variable-length integer with its length marker bit cleared."""
    if offset >= len(buf) or buf[offset] == 0:
        return None, offset
    width = 8 - buf[offset].bit_length() + 1
    if offset + width > len(buf):
        return None, offset
    value = int.from_bytes(buf[offset : offset + width], "big")
    return value & ((1 << (7 * width)) - 1), offset + width


_TS_SYNC: Final = 0x47
_TS_MIN_PACKETS: Final = 3


def _mpeg_ts(head: bytes) -> str | None:
    # A transport stream is fixed-size packets each starting with the sync byte 0x47: 188
    # bytes (ISO/IEC 13818-1), or 192 with a 4-byte timestamp in front (BDAV .m2ts). One 'G'
    # is any text file; every packet boundary in the head being 0x47 is not chance.
    for stride, start in ((188, 0), (192, 4)):
        positions = range(start, len(head), stride)
        if len(positions) >= _TS_MIN_PACKETS and all(head[p] == _TS_SYNC for p in positions):
            return "video/mp2t"
    return None


def _ogg(head: bytes) -> str | None:
    """video/ogg when one of the Ogg beginning-of-stream pages opens a Theora stream."""
    offset = 0
    # Every logical stream's first page comes before any data page (RFC 3533 §4), each flagged
    # beginning-of-stream; walk them and look at the packet each one opens with.
    while head[offset : offset + 4] == b"OggS" and offset + 27 <= len(head):
        if not head[offset + 5] & 0x02:  # not a beginning-of-stream page: headers are over
            return None
        segments = head[offset + 26]
        body = offset + 27 + segments
        if head[body : body + 7] == b"\x80theora":
            return "video/ogg"
        offset = body + sum(head[offset + 27 : body])
    return None
