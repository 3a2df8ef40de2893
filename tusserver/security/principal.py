"""Who is asking: the principal every owner-scoped route acts for.

Until authentication is configured there is one anonymous local user (``TUS_ANONYMOUS_OWNER``);
an auth layer puts its verified principal in the ASGI scope under ``SCOPE_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from tusserver.runtime import TusApp

SCOPE_KEY = "tusserver.principal"


@dataclass(frozen=True)
class Principal:
    user_id: str
    admin: bool = False

    @property
    def owner_filter(self) -> str | None:
        """The owner to scope queries to; None (everything) only for admins."""
        return None if self.admin else self.user_id


def principal_of(connection: HTTPConnection) -> Principal:
    given = connection.scope.get(SCOPE_KEY)
    if isinstance(given, Principal):
        return given
    app = connection.scope.get("app")
    if not isinstance(app, TusApp):
        raise TypeError("principal_of serves the tusserver app's requests only")
    return Principal(user_id=app.settings.anonymous_owner)
