"""A spy on ``os.pwritev``: how big each write was, how many ran at once, on which threads.

The stores batch their writes into worker threads one batch at a time; tests check that by
watching the real system call (it still writes), not by mocking the stores.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest


class PwritevSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.peak = 0
        self.threads: set[int] = set()
        self.loop_thread = threading.get_ident()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._delay = delay
        self._real = os.pwritev
        monkeypatch.setattr(os, "pwritev", self._pwritev)

    @property
    def on_the_loop(self) -> bool:
        """True if any write ran on the thread that created the spy (the event loop's)."""
        return self.loop_thread in self.threads

    def _pwritev(self, fd: int, buffers: Any, position: int) -> int:
        with self._lock:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
        self.threads.add(threading.get_ident())
        try:
            if self._delay:
                time.sleep(self._delay)  # lets the next batch fill (and overlap, if it could)
            self.sizes.append(sum(len(b) for b in buffers))
            return self._real(fd, buffers, position)
        finally:
            with self._lock:
                self._in_flight -= 1
