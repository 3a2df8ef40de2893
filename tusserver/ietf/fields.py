"""The draft's header fields: Structured Field items (RFC 9651) and RFC 9530 digests.

Only the shapes the draft uses: a Boolean (``?0``/``?1``), a non-negative Integer, the
``Upload-Limit`` Dictionary we send, and the ``sha-256`` member of ``Content-Digest``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from tusserver import errors
from tusserver.tus.protocol import DIGEST_SIZES, MAX_INT, Checksum

_OWS = " \t"
# An sf-integer has at most 15 digits; ours are offsets and lengths, never negative.
_SF_INTEGER = re.compile(r"[0-9]{1,15}")
# One Dictionary member whose value is a Byte Sequence, parameters ignored.
_BYTES_MEMBER = re.compile(r"\s*([a-z*][a-z0-9_.*-]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?")

# RFC 9530 algorithm names -> names of the checksum machinery (``tusserver.protocol``).
# "sha-512" has no hasher there yet, and md5/sha/crc32c are deprecated by RFC 9530.
DIGEST_ALGORITHMS = {"sha-256": "sha256"}


def parse_sf_boolean(raw: str) -> bool | None:
    """``?1`` -> True, ``?0`` -> False, anything else -> None (the draft: ignore the field)."""
    text = raw.strip(_OWS)
    if text == "?1":
        return True
    if text == "?0":
        return False
    return None


def parse_sf_offset(raw: str | None, name: str) -> int | None:
    """A non-negative sf-integer (``Upload-Offset``, ``Upload-Length``); None when absent.

    The draft says to ignore a malformed value; we refuse it with a 400 instead, as tus does,
    so a client bug is seen rather than silently becoming "no length" (docs/protocol.md,
    "IETF draft: disagreements and choices").
    """
    if raw is None:
        return None
    text = raw.strip(_OWS)
    if _SF_INTEGER.fullmatch(text) is None or int(text) > MAX_INT:
        raise errors.InvalidDraftField(f"{name} must be a non-negative integer")
    return int(text)


def upload_limit(members: Iterable[tuple[str, int]]) -> str:
    """The ``Upload-Limit`` Dictionary; ``min-size=0`` first, so it is never empty."""
    return ", ".join(f"{key}={value}" for key, value in [("min-size", 0), *members])


def parse_content_digest(
    raw: str | None, supported: Iterable[str], name: str = "Content-Digest"
) -> Checksum | None:
    """The ``Content-Digest`` (or ``Repr-Digest``: ``name``) member this server can verify,
    or None.

    Members with algorithms we do not compute are ignored, as RFC 9530 allows; a member we do
    compute that is malformed is a 400, so a corrupt digest never passes as "not sent".
    """
    if raw is None:
        return None
    wanted = set(supported)
    for part in raw.split(","):
        match = _BYTES_MEMBER.fullmatch(part)
        if match is None:
            raise errors.InvalidDraftField(f"{name} is not a dictionary of byte sequences")
        algorithm = DIGEST_ALGORITHMS.get(match.group(1))
        if algorithm is None or algorithm not in wanted:
            continue
        try:
            digest = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise errors.InvalidDraftField(f"{name}: the digest is not base64") from None
        if len(digest) != DIGEST_SIZES[algorithm]:
            raise errors.InvalidDraftField(f"{name}: wrong {match.group(1)} digest size")
        return Checksum(algorithm, digest)
    return None
