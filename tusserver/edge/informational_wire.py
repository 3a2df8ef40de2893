"""The server side of ``http.response.informational``: our uvicorn protocols write ``1xx``.

uvicorn builds one ``RequestResponseCycle`` per request, and its ``run_asgi`` hands the app
``self.send`` when the task first runs. The protocols below mark the request's scope and put a
``CycleSend`` in front of the cycle's ``send`` right after uvicorn made the cycle (its task is
scheduled then, never yet running), so informational messages stop here and every other
message goes on to uvicorn unchanged.

Ordering rules, and why they hold:
- One cycle's app only ever writes for its own request: a pipelined request's app starts after
  the answer before it is complete, and a ``1xx`` after ``http.response.start`` (this cycle's
  ``response_started``) is dropped, so nothing lands inside or after a final response.
- ``Expect: 100-continue``: uvicorn writes ``100 Continue`` on the app's first ``receive()``.
  A ``1xx`` sent before that goes out first and leaves uvicorn's pending 100 alone; an app
  that sends ``100`` itself clears it, so the client never gets two for one expectation.
- HTTP/1.0 clients cannot parse a ``1xx`` (RFC 9110, section 15.2): dropped.
- A full write buffer is waited for as uvicorn's own ``send`` does.

docs/protocol.md, "Informational responses", says which servers offer the extension.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tusserver.edge import informational

if TYPE_CHECKING:
    _UvicornProtocol = Any
else:
    _UvicornProtocol = object


class CycleSend:
    """The ``send`` one request's app gets: informational messages are written here."""

    __slots__ = ("cycle", "inner", "protocol")

    def __init__(self, protocol: _Informational, cycle: Any) -> None:
        self.protocol = protocol
        self.cycle = cycle
        self.inner = cycle.send

    async def __call__(self, message: Any) -> None:
        if message["type"] != informational.MESSAGE_TYPE:
            await self.inner(message)
            return
        status, headers = informational.checked(message)
        cycle = self.cycle
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if (
            cycle.response_started
            or cycle.disconnected
            or cycle.transport.is_closing()
            or cycle.scope["http_version"] == "1.0"
        ):
            return
        if status == 100:
            cycle.waiting_for_100_continue = False
        cycle.transport.write(self.protocol.encode_informational(cycle, status, headers))


class _Informational(_UvicornProtocol):  # type: ignore[misc]
    """What both protocols share: a new cycle gets the extension in its scope and a
    ``CycleSend``."""

    cycle: Any

    def _offer_informational(self, before: Any) -> None:
        cycle = self.cycle
        if cycle is None or cycle is before:
            return  # no new request (a body piece, an upgrade)
        informational.offer(cycle.scope)
        cycle.send = CycleSend(self, cycle)

    def encode_informational(
        self, cycle: Any, status: int, headers: informational.Headers
    ) -> bytes:
        return informational.encode(status, headers)


class HttpToolsInformational(_Informational):
    """On uvicorn's httptools protocol: the cycle is made when a head is complete."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        self._offer_informational(before)


class H11Informational(_Informational):
    """On uvicorn's h11 protocol: the cycle is made while events are handled (one request per
    call: h11 pauses at the next one until this one is answered). ``_h11`` is the h11 module;
    h11 itself encodes the ``1xx`` so its own state stays in step."""

    _h11: Any

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        self._offer_informational(before)

    def encode_informational(
        self, cycle: Any, status: int, headers: informational.Headers
    ) -> bytes:
        event = self._h11.InformationalResponse(
            status_code=status, headers=headers, reason=informational.reason(status)
        )
        data: bytes = cycle.conn.send(event)
        return data
