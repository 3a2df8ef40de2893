"""uvicorn's httptools protocol, with request bodies handed over without copying them twice.

Stock uvicorn appends every body piece httptools parses to a ``bytearray`` and copies that
into a new ``bytes`` on each ``receive()``: two copies of every uploaded byte on the event
loop's thread, which is what bounds a single large PATCH on a machine with slow memory (each
copy costs about 0.4 s per GiB on the 2-core benchmark box). Here the pieces are kept as they
came, and ``receive()`` gets the single piece as is (or one join when several arrived).
Reading pauses once ``BODY_HIGH_WATER`` bytes wait, as in uvicorn: measured, a larger mark
(256 KiB, 512 KiB) bought no throughput and doubled the memory of 100 concurrent uploads.

This leans on uvicorn internals (``cycle.body`` and the flow control), so ``protocol_class``
checks that they look as expected and otherwise returns uvicorn's own protocol unchanged.
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("tusserver")

# Bytes a connection may buffer before its socket stops being read (uvicorn's value).
BODY_HIGH_WATER = 64 * 1024


class _Pieces:
    """Body pieces waiting for ``receive()``; ``bytes()`` of it is the body so far."""

    __slots__ = ("pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def append(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.size += len(piece)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        pieces = self.pieces
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)


def protocol_class() -> type[asyncio.Protocol] | str:
    """Our protocol class, or ``"auto"`` when httptools or the expected internals are missing."""
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional in uvicorn; h11 needs no help
        return "auto"
    base = httptools_impl.HttpToolsProtocol
    cycle = httptools_impl.RequestResponseCycle
    if not (callable(getattr(base, "on_body", None)) and callable(getattr(cycle, "receive", None))):
        logger.warning("uvicorn's httptools protocol changed shape; using it unmodified")
        return "auto"

    class TusHttpToolsProtocol(base):  # type: ignore[misc, valid-type]
        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
                return
            pending = cycle.body
            if type(pending) is not _Pieces:
                # A new request, or receive() just took the last batch and left a bytearray.
                fresh = _Pieces()
                if pending:
                    fresh.append(bytes(pending))
                pending = cycle.body = fresh
            pending.append(body)
            if pending.size > BODY_HIGH_WATER:
                self.flow.pause_reading()
            cycle.message_event.set()

    TusHttpToolsProtocol.__name__ = TusHttpToolsProtocol.__qualname__ = "TusHttpToolsProtocol"
    return TusHttpToolsProtocol
