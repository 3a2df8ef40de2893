"""Small file-system durability helpers shared by the local store and local state."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path


def check_writable_dir(path: Path) -> None:
    """Raise ``OSError`` unless ``path`` is a directory this process may create files in
    (the readiness check of the local backends: an unmounted volume, a lost permission)."""
    if not stat.S_ISDIR(os.stat(path).st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not writable")


def fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    # A name of its own per call: two writers of the same file (a worker and a request
    # processing one upload) must not share, and so truncate or rename away, one temp file.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_dir(path.parent)
