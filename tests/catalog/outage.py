"""Breaking the catalog's database for real, and bringing it back, for outage tests.

SQLite: another connection renames the ``files`` table away, so every statement on it fails
at once (a locked database would instead stall each write for the 30 s busy timeout).
Postgres: the database refuses new connections and its open ones are terminated, as when the
server restarts or a failover cuts them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from tests.services_postgres import _admin, _run_in_thread


@dataclass
class Database:
    """The catalog's database (its SQLAlchemy URL), and a way to break and restore it."""

    url: str
    kind: str

    def _name(self) -> str:
        return self.url.rsplit("/", 1)[1]

    def break_(self) -> None:
        if self.kind == "sqlite":
            self._sqlite("ALTER TABLE files RENAME TO files_away")
            return
        name = self._name()
        _run_in_thread(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        _run_in_thread(
            _admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        )

    def restore(self) -> None:
        if self.kind == "sqlite":
            self._sqlite("ALTER TABLE files_away RENAME TO files")
            return
        _run_in_thread(_admin(f'ALTER DATABASE "{self._name()}" ALLOW_CONNECTIONS true'))

    def _sqlite(self, statement: str) -> None:
        connection = sqlite3.connect(self.url.split(":///", 1)[1], timeout=30)
        try:
            connection.execute(statement)
            connection.commit()
        finally:
            connection.close()
