"""Webhook request signing: the headers that let a receiver trust and de-duplicate a POST.

``X-Tus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` (the Stripe
scheme): the timestamp is inside the MAC, so a receiver that rejects old timestamps also
rejects replays. ``Idempotency-Key`` is the event id, the same on every retry.
"""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def signed_headers(secret: bytes, event_id: str, body: bytes, now: float) -> dict[str, str]:
    """Headers for one delivery attempt; a retry is signed afresh (a new timestamp)."""
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": event_id,
        "X-Tus-Timestamp": str(timestamp),
        "X-Tus-Signature": f"t={timestamp},v1={signature(secret, timestamp, body)}",
    }
