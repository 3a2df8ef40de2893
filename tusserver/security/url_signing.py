"""Signed, expiring URL tokens: pure functions, no I/O.

Shared by delivery's download links and the local direct-upload part URLs
(``tusserver.api.part_tokens``), each under a purpose of its own.

A token is ``base64url(payload) "." base64url(mac)``. The payload is compact JSON holding the
claims, the expiry (``e``, Unix seconds) and the id of the key that signed it (``k``); the mac
is HMAC-SHA256 over a purpose label and the payload, so a token minted for one purpose (a
download) never verifies for another (a part upload) even with the same keys. Keys rotate:
the first signs, every key verifies, found by its id; comparisons are constant-time and the
payload is trusted only after its mac verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tusserver import errors
from tusserver.security import safejson

MAX_TOKEN = 2048
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def key_id(key: bytes) -> str:
    """A short public name for a key (never the key): the first 8 hex of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UrlSigner:
    def __init__(self, purpose: str, keys: Sequence[bytes]) -> None:
        if not keys or any(len(key) < 32 for key in keys):
            raise ValueError("signing keys must be given and at least 32 bytes each")
        self._purpose = f"tusserver {purpose}\n".encode()
        self._keys = {key_id(key): key for key in keys}
        self._signing_id = key_id(keys[0])

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, self._purpose + payload, hashlib.sha256).digest()

    def sign(self, claims: Mapping[str, Any], *, expires_at: int) -> str:
        body = {**claims, "e": expires_at, "k": self._signing_id}
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        mac = self._mac(self._keys[self._signing_id], payload)
        return f"{b64encode(payload)}.{b64encode(mac)}"

    def verify(self, token: str, *, now: float) -> dict[str, Any]:
        """The claims of a genuine, unexpired token; ``SignatureInvalid`` or ``UrlExpired``."""
        # Whole-token match: the base64 decoder skips characters outside its alphabet, so a
        # genuine token followed by a newline (or anything else) would otherwise verify.
        if len(token) > MAX_TOKEN or _TOKEN.fullmatch(token) is None:
            raise errors.SignatureInvalid()
        encoded_payload, encoded_mac = token.split(".")
        try:
            payload = b64decode(encoded_payload)
            mac = b64decode(encoded_mac)
            # The key id is read before the mac is checked, but only to pick which key to
            # check with: a forged id finds no key, or a key whose mac will not match.
            body = safejson.loads(payload)
        except (binascii.Error, ValueError, errors.TusError):
            raise errors.SignatureInvalid() from None
        if not isinstance(body, dict):
            raise errors.SignatureInvalid()
        key = self._keys.get(str(body.get("k")))
        if key is None or not hmac.compare_digest(self._mac(key, payload), mac):
            raise errors.SignatureInvalid()
        expires = body.get("e")
        if type(expires) is not int:
            raise errors.SignatureInvalid()
        if now >= expires:
            raise errors.UrlExpired()
        return body
