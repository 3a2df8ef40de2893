"""uvicorn's httptools protocol, with request bodies handed over without copying them twice.

Stock uvicorn appends every body piece httptools parses to a ``bytearray`` and copies that
into a new ``bytes`` on each ``receive()``: two copies of every uploaded byte on the event
loop's thread, which is what bounds a single large PATCH on a machine with slow memory (each
copy costs about 0.4 s per GiB on the 2-core benchmark box). Here the pieces are kept as they
came, and ``receive()`` gets the single piece as is (or one join when several arrived).
Reading pauses once ``BODY_HIGH_WATER`` bytes wait, as in uvicorn: measured, a larger mark
(256 KiB, 512 KiB) bought no throughput and doubled the memory of 100 concurrent uploads.

The same class bounds what a request head may cost, which stock uvicorn does not (its h11
limit does not reach httptools): a request line plus headers over ``max_header_size`` bytes
is answered ``431`` and the connection closed, before the bytes are buffered whole; and a
head must arrive within ``header_timeout`` seconds of its first byte (or of the connection
opening, or of the answer to the previous request while that request's unread body still
trickles in), else the connection is closed (``408`` if part of a head came). Without that,
a client that sends half a request line holds a connection open for as long as it likes.
Idle keep-alive connections between requests stay uvicorn's ``timeout_keep_alive``; slow
bodies are the handlers' read timeout (``TUS_READ_TIMEOUT``).

This leans on uvicorn internals (``cycle.body``, the flow control, the parser callbacks), so
``protocol_class`` checks that they look as expected; if they do not, or httptools is
missing, it returns uvicorn's h11 protocol with the same head limits (and stock body
handling).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

from tusserver import TUS_VERSION, errors

logger = logging.getLogger("tusserver")

# Bytes a connection may buffer before its socket stops being read (uvicorn's value).
BODY_HIGH_WATER = 64 * 1024
# Request line plus headers; the figure cli.py also gives h11 (Uppy can send 8 KiB+ of
# Upload-Metadata). TUS_MAX_HEADER_SIZE overrides it.
DEFAULT_MAX_HEADER_SIZE = 64 * 1024
# Seconds a request head may take (TUS_HEADER_TIMEOUT); Go's and hyper's servers use 10-30 s.
DEFAULT_HEADER_TIMEOUT = 10.0
# After an error answer the connection keeps reading (and dropping) what the client still
# sends for this long, so closing does not reset the connection before the answer is read.
LINGER = 1.0
# What a header line costs beyond its name and value: ": " and CRLF.
_LINE_OVERHEAD = 4


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


class _HeadTooLarge(Exception):
    """Raised in a parser callback: stops parsing a head that went over the limit."""


def _error_bytes(error: errors.TusError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete ``Connection: close`` response for ``error``, as ``error_response`` words it."""
    body = f"{error.code}: {error.message}\n".encode()
    phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[error.status]
    lines = [b"HTTP/1.1 %d %b" % (error.status, phrase)]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % len(body),
        b"tus-resumable: " + TUS_VERSION.encode(),
        b"cache-control: no-store",
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _HeadGuard:
    """The head limits of both protocols below: size (431) and time (408 / close).

    Mixed in before uvicorn's protocol; the attributes typed ``Any`` are uvicorn's.
    """

    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    cycle: Any
    transport: Any
    parser: Any
    loop: Any
    client: Any
    server_state: Any

    def _init_guard(self) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_size = 0  # bytes of the current head the parser has handed over
        self._head_unparsed = 0  # bytes received while the current head is unfinished
        self._began = False  # a request began in the data being parsed right now
        self._too_large = False
        self._refused = False  # answered with an error: drop whatever else arrives

    def _answered(self) -> bool:
        cycle = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self._refused:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_header_size:
            self._too_large = True
            raise _HeadTooLarge

    def _after_feed(self, size: int) -> None:
        """Count a piece that arrived wholly inside an unfinished head: the parser keeps a
        header line to itself until it ends, so a huge line is stopped here, at most one
        socket read past the limit."""
        if self._in_head and not self._began:
            self._head_unparsed += size
            if self._head_unparsed > self.max_header_size:
                self._refuse(errors.HeadersTooLarge())

    def _head_partial(self) -> bool:
        """Whether part of a request head has come (and not all of it)."""
        return self._in_head

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        partial = self._head_partial()
        logger.info(
            "http.header_timeout",
            extra={"client": self.client and self.client[0], "partial": partial},
        )
        if partial:
            self._refuse(errors.HeaderTimeout())
        else:
            # Nothing of a request came (or only the rest of an answered request's body):
            # no one to tell anything.
            self._refused = True
            self.transport.close()

    def _refuse(self, error: errors.TusError) -> None:
        self._refused = True
        self._disarm_head_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A pipelined request's head, behind an answer still being written: that answer
            # must not be cut into. The connection closes once it is out.
            cycle.keep_alive = False
            return
        if error.status == 431:
            logger.info("http.headers_too_large", extra={"client": self.client and self.client[0]})
        self.transport.write(_error_bytes(error, self.server_state.default_headers))
        if self.transport.can_write_eof():
            # FIN after the answer, then keep reading (and dropping) briefly: closing with
            # unread bytes would reset the connection and could destroy the answer in flight.
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def _after_response(self) -> None:
        """An answer went out before its request's body was read whole (an error, a timeout):
        the rest of that body gets the head timeout too. Without this the connection waited
        for more data to arrive before the timer started, and a client that simply stopped
        sending held it until uvicorn's keep-alive timeout instead."""
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._arm_head_timer()

    def _end_guard(self) -> None:
        self._disarm_head_timer()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None


def protocol_class(
    *,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    implementation: Literal["httptools", "h11"] = "httptools",
) -> type[asyncio.Protocol] | str:
    """Our protocol class: httptools-based, or h11-based when httptools or the internals we
    expect are missing (or when asked); ``"auto"`` (uvicorn's own) if neither fits."""
    cls = _httptools_class() if implementation == "httptools" else None
    if cls is None:
        cls = _h11_class()
    if cls is None:
        logger.warning("uvicorn's protocols changed shape; running without head limits")
        return "auto"
    cls.max_header_size = max_header_size
    cls.header_timeout = header_timeout
    return cls


def _httptools_class() -> type[Any] | None:
    try:
        import httptools
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional in uvicorn
        return None
    base = httptools_impl.HttpToolsProtocol
    cycle = httptools_impl.RequestResponseCycle
    expected = ("on_body", "on_url", "on_header", "on_headers_complete", "on_message_begin")
    if not (
        all(callable(getattr(base, name, None)) for name in expected)
        and callable(getattr(cycle, "receive", None))
    ):
        logger.warning("uvicorn's httptools protocol changed shape; using h11")
        return None
    return _httptools_protocol(base, httptools)


def _h11_class() -> type[Any] | None:
    import h11
    from uvicorn.protocols.http import h11_impl

    base: type[Any] = h11_impl.H11Protocol
    if not all(callable(getattr(base, n, None)) for n in ("handle_events", "data_received")):
        return None

    class TusH11Protocol(_H11Limits, base):  # type: ignore[misc]
        """uvicorn's h11 protocol with the same head limits (h11 copies bodies as it does)."""

        _h11 = h11

    TusH11Protocol.__name__ = TusH11Protocol.__qualname__ = "TusH11Protocol"
    return TusH11Protocol


def _httptools_protocol(base: type[Any], httptools: Any) -> type[Any]:
    class TusHttpToolsProtocol(_HttpToolsLimits, base):  # type: ignore[misc]
        _upgrade_error = httptools.HttpParserUpgrade
        _parser_error = httptools.HttpParserError

    TusHttpToolsProtocol.__name__ = TusHttpToolsProtocol.__qualname__ = "TusHttpToolsProtocol"
    return TusHttpToolsProtocol


# What the mixins below extend: uvicorn's protocol class, known only at runtime (the factories
# above put it after the mixin). For the type checker it is Any, so ``super()`` calls check.
if TYPE_CHECKING:
    _UvicornProtocol = Any
else:
    _UvicornProtocol = object


class _Guarded(_HeadGuard, _UvicornProtocol):  # type: ignore[misc]
    """What both protocols add to uvicorn's connection lifecycle: the guard's state, a head
    timer from the moment a connection opens, and one after an answer that left its body
    unread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_guard()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._after_response()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # A connection that never sends a byte is a stalled head too.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_guard()
        super().connection_lost(exc)


class _H11Limits(_Guarded):
    """The head limits on uvicorn's h11 protocol; ``_h11`` is the h11 module."""

    _h11: Any
    conn: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # h11 buffers no more than this of an unfinished event (a head, a chunk line).
        h11 = self._h11
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_size)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the head limits. h11 itself refuses only an unfinished head
        # over the limit (and with a 400); one that arrives whole in a read passes it.
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._answered():
            self._arm_head_timer()
        self.conn.receive_data(data)
        self.handle_events()
        if not self._answered():
            self._disarm_head_timer()  # a request is in flight: its head came

    def handle_events(self) -> None:
        # Also called once an answer is out, for a pipelined request already buffered.
        if self._refused:
            return
        if self._head_over_limit():
            self._refuse(errors.HeadersTooLarge())
            return
        super().handle_events()

    def _head_over_limit(self) -> bool:
        if self.conn.their_state is not self._h11.IDLE:
            return False
        buffered = self.conn.trailing_data[0]
        end = buffered.find(b"\r\n\r\n")
        return (len(buffered) if end < 0 else end + 4) > self.max_header_size

    def _head_partial(self) -> bool:
        return self.conn.their_state is self._h11.IDLE and bool(self.conn.trailing_data[0])


class _HttpToolsLimits(_Guarded):
    """The head limits and the copy-free body on uvicorn's httptools protocol.

    ``_upgrade_error`` and ``_parser_error`` are httptools' exceptions (httptools is optional,
    so the factory supplies them).
    """

    _upgrade_error: type[Exception]
    _parser_error: type[Exception]

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the head limits: a callback refusing a head must not be taken
        # for a malformed request (400).
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._answered():
            # The next request, or the rest of an answered request's body: either way
            # the connection must get to its next complete head in time.
            self._arm_head_timer()
        self._began = False
        try:
            self.parser.feed_data(data)
        except self._upgrade_error:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except self._parser_error:
            if self._too_large:
                self._refuse(errors.HeadersTooLarge())
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        self._after_feed(len(data))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._began = True, True
        self._head_size = self._head_unparsed = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + _LINE_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

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
