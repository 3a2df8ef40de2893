"""The machine's limit: a loopback socket sink that reads request bytes and discards them.

Run as its own process (``python -m bench.sink --port N``), it speaks just enough HTTP/1.1
for the benchmark's tus client to drive it exactly as it drives a real server: it finds the
end of each request head, reads ``Content-Length`` body bytes into one reused buffer and
drops them, and answers with a canned tus reply (201 with a ``Location`` for POST, 204 with
the ``Upload-Offset`` the client expects for PATCH). No state, no storage: the same client,
the same requests and the same bytes over loopback, with a peer that does nothing, is the
ceiling our server and the reference are compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import cast

_BUFFER = 1 << 20
_ids = itertools.count(1)


class NullTus(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self._buffer = bytearray(_BUFFER)
        self._view = memoryview(self._buffer)
        self._head = bytearray()
        self._remaining = 0  # body bytes of the current request still to discard
        self._reply = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        pos = 0
        while pos < nbytes:
            if self._remaining:
                take = min(self._remaining, nbytes - pos)
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._send()
                continue
            if not self._head:  # the usual case: the whole head is in this buffer
                end = self._buffer.find(b"\r\n\r\n", pos, nbytes)
                if end >= 0:
                    head = bytes(self._buffer[pos:end])
                    pos = end + 4
                    self._start(head)
                    continue
            self._head += self._view[pos:nbytes]
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            consumed = nbytes - pos - (len(self._head) - end - 4)
            pos += consumed
            head = bytes(self._head[:end])
            del self._head[:]
            self._start(head)

    def _start(self, head: bytes) -> None:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method = request_line.split(" ", 1)[0]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        offset = int(headers.get("upload-offset", "0")) + length
        if method == "POST":
            self._reply = (
                "HTTP/1.1 201 Created\r\nTus-Resumable: 1.0.0\r\n"
                f"Location: /files/sink-{next(_ids)}\r\nUpload-Offset: {offset}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        else:
            self._reply = (
                "HTTP/1.1 204 No Content\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: {offset}\r\n\r\n"
            ).encode()
        self._remaining = length
        if not length:
            self._send()

    def _send(self) -> None:
        if self._transport is not None:
            self._transport.write(self._reply)

    def eof_received(self) -> bool:
        return False


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(NullTus, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="a null tus peer on loopback (the limit)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, a little slower
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
