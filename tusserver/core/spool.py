"""A request body parked on local disk until its checksum verifies.

Stores that cannot take bytes back (S3 parts are immutable once uploaded) get a checksummed chunk
only after it verified, so the chunk stays all or nothing (docs/protocol.md, "Checksums"). The spool
lives on local disk, so memory stays bounded whatever the chunk size.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from types import TracebackType

_BATCH = 4 * 1024 * 1024


class Spool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._fd = -1
        self.size = 0

    async def __aenter__(self) -> Spool:
        fd, path = await asyncio.to_thread(tempfile.mkstemp, dir=self._directory, suffix=".spool")
        # Unlinked at once: nothing is left behind even if the process dies.
        await asyncio.to_thread(os.unlink, path)
        self._fd = fd
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.close(self._fd)

    async def fill(self, chunks: AsyncIterable[bytes]) -> int:
        """Append every chunk; batches keep it to one thread hop per few MiB."""
        buffer = bytearray()
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) >= _BATCH:
                await asyncio.to_thread(self._append, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(self._append, bytes(buffer))
        return self.size

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self.size)
            self.size += written
            view = view[written:]

    async def chunks(self, block: int = 1024 * 1024) -> AsyncIterator[bytes]:
        position = 0
        while position < self.size:
            data = await asyncio.to_thread(
                os.pread, self._fd, min(block, self.size - position), position
            )
            if not data:
                break
            position += len(data)
            yield data
