"""Signed, expiring tokens for the part URLs this server serves itself (local storage).

On S3 a part URL is S3's own presigned URL. On local disk the same flow needs URLs that work
without a bearer token, as S3's do, yet admit exactly one thing: the bytes of one part of one
upload, until a deadline. The token format, key rotation and constant-time checks are the
download links' (``tusserver.security.url_signing.UrlSigner``) under a purpose of its own,
so a download token never verifies here; the claims are ``u`` (upload id), ``n`` (part
number; 0 is the single PUT of a presigned upload) and, for a single PUT, ``t`` (the content
type it must carry).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tusserver import errors
from tusserver.security.url_signing import UrlSigner

PURPOSE = "direct-upload part v1"
MAX_PART_NUMBER = 10_000
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class PartClaim:
    upload_id: str
    part_number: int
    expires_at: int
    content_type: str | None = None


class PartSigner:
    def __init__(self, keys: Sequence[bytes]) -> None:
        self._signer = UrlSigner(PURPOSE, keys)

    def sign(self, claim: PartClaim) -> str:
        claims: dict[str, object] = {"u": claim.upload_id, "n": claim.part_number}
        if claim.content_type is not None:
            claims["t"] = claim.content_type
        return self._signer.sign(claims, expires_at=claim.expires_at)

    def verify(self, token: str, *, now: float) -> PartClaim:
        """The claim of a genuine, unexpired token; ``SignatureInvalid`` or ``UrlExpired``."""
        body = self._signer.verify(token, now=now)
        upload_id, number, content_type = body.get("u"), body.get("n"), body.get("t")
        # Signed by us, so well-formed unless a key leaked: still checked, because the id
        # becomes a path.
        if (
            not isinstance(upload_id, str)
            or _ID.fullmatch(upload_id) is None
            or type(number) is not int
            or not 0 <= number <= MAX_PART_NUMBER
            or not (content_type is None or isinstance(content_type, str))
        ):
            raise errors.SignatureInvalid()
        return PartClaim(upload_id, number, int(body["e"]), content_type)
