"""Which worker of a ``tusserver serve --workers N`` group this process is, if any.

The supervisor (``tusserver.workers``) starts each worker with the group's run directory;
the worker joins before it builds its app, and the state backend reads it to choose locks
that work across the group's processes. ``tusserver sweep`` takes the same OS locks without
joining (it serves no request, so it needs no mailbox). Any other process (a single server,
a test) is alone, and keeps the in-process locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerGroup:
    """Where the workers of one server meet: a private directory made by the supervisor."""

    run_dir: Path
    # This worker's place in the group (0-based), and how many there are.
    index: int
    size: int

    @property
    def mailbox_dir(self) -> Path:
        """One unix datagram socket per live worker (``state.mailbox``)."""
        return self.run_dir / "mailbox"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``)."""
        return self.run_dir / "metrics"


_joined: list[WorkerGroup] = []
_beside: list[bool] = []


def join(group: WorkerGroup) -> None:
    """Make this process a member of ``group`` (once, before its app is built)."""
    _joined[:] = [group]


def current() -> WorkerGroup | None:
    """The group this process serves in, or None for a process on its own."""
    return _joined[0] if _joined else None


def lock_beside_workers() -> None:
    """Take the upload locks the workers take, without joining a group: ``tusserver sweep``
    run as a process of its own beside ``serve --workers N`` on the same data dir."""
    _beside[:] = [True]


def locks_across_processes() -> bool:
    """Whether this process's upload locks must hold against other processes."""
    return bool(_joined or _beside)
