"""Who is asking: the principal every owner-scoped route acts for.

Until authentication is configured there is one anonymous local user (``TUS_ANONYMOUS_OWNER``);
an auth layer puts its verified principal in the ASGI scope under ``SCOPE_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from starlette.requests import HTTPConnection

from tusserver.runtime import TusApp

SCOPE_KEY = "tusserver.principal"
# The user id becomes the owner of uploads and files: the catalog's owner column holds 255.
_MAX_SUBJECT = 255


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


def is_valid_subject(value: object) -> TypeGuard[str]:
    """A subject usable as an owner id: stored in the catalog, logged, hashed into keys.

    Printable only (no controls, which would forge log lines or key separators, and no lone
    surrogates, which cannot be encoded) and no surrounding whitespace ("alice " is not
    "alice" to the database, yet looks like it).
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_SUBJECT
        and value.isprintable()
        and value == value.strip()
    )
