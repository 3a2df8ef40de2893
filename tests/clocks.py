"""A settable clock for the code that takes ``clock=`` (expiry, TTLs, windows): tests move
time by assigning ``now`` instead of sleeping."""

from __future__ import annotations

import time


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now
