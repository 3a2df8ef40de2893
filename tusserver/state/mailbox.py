"""Release requests between the worker processes of one server: one datagram socket each.

A request that finds an upload locked by another worker must ask the holder to store what
arrived and let go (the in-process locker does this with a method call). Each worker binds a
unix datagram socket named after its pid in the group's mailbox directory; the asker sends
the upload id to every other socket there, and the worker that holds the upload calls its
handle's ``request_release``, the others ignore it. Nothing is sent or read while no upload
is contended, so the cost is one datagram per peer and ask, and a file descriptor the event
loop watches.

Datagrams can be lost (a full receive queue); the asker repeats its request while it waits.
A dead worker's socket stays behind until the supervisor removes it: sending to it fails at
once (``ECONNREFUSED``) and is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

from tusserver.state.base import LockHandle

log = logging.getLogger("tusserver.state")

# An upload id is 32 hex characters; anything longer is not ours.
_MAX_MESSAGE = 64


class ReleaseMailbox:
    """This worker's socket, the uploads it holds, and the way to ask the others."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._name = str(os.getpid())
        self._path = directory / self._name
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._path.unlink(missing_ok=True)  # a previous process with this pid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(str(self._path))
        self._held: dict[str, LockHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def hold(self, upload_id: str, handle: LockHandle) -> None:
        """``handle`` holds ``upload_id`` here: a request from another worker reaches it."""
        self._listen()
        self._held[upload_id] = handle

    def drop(self, upload_id: str, handle: LockHandle) -> None:
        if self._held.get(upload_id) is handle:
            del self._held[upload_id]

    def ask(self, upload_id: str) -> None:
        """Ask whichever other worker holds ``upload_id`` to let go."""
        message = upload_id.encode("ascii")
        with os.scandir(self._dir) as entries:
            peers = [entry.path for entry in entries if entry.name != self._name]
        for peer in peers:
            # Refused (a dead worker's socket), full (asked again soon) or gone: all ignored.
            with contextlib.suppress(OSError):
                self._sock.sendto(message, peer)

    def _listen(self) -> None:
        # Started with the first lock this process takes: only then is there a loop, and
        # only a holder has anything to hear.
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._sock.fileno(), self._receive)

    def _receive(self) -> None:
        while True:
            try:
                message = self._sock.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.exception("mailbox.receive_failed")
                return
            handle = self._held.get(message.decode("ascii", "replace"))
            if handle is not None:
                handle.request_release()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._path.unlink(missing_ok=True)
