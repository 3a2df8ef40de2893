"""Which worker of a ``tusserver serve --workers N`` group this process is, if any.

The supervisor (``tusserver.workers``) starts each worker with the group's run directory;
the worker joins before it builds its app, and the state backend reads it to choose locks
that work across the group's processes. A process that never joined (a single server, a test,
``tusserver sweep``) is alone, and keeps the in-process locks.
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


def join(group: WorkerGroup) -> None:
    """Make this process a member of ``group`` (once, before its app is built)."""
    _joined[:] = [group]


def current() -> WorkerGroup | None:
    """The group this process serves in, or None for a process on its own."""
    return _joined[0] if _joined else None
