"""Where a host application mounted us: the prefix every URL we hand out must carry.

Owns reading the mount prefix off an ASGI scope and turning a mounted request into the one
the app would see on its own, so that every route and middleware keeps matching plain paths
(``/files/<id>``, ``/api/v1/...``, ``/static/...``) however the host mounted it.

Hosts say where they mounted an app in two ways:

- the ASGI convention (``root_path``; Starlette's ``Mount``, FastAPI, ``uvicorn
  --root-path``): ``path`` is the full path and ``root_path`` the prefix it starts with;
- a host that rewrites ``path`` to the rest and leaves ``root_path`` alone (Litestar's
  ``asgi(..., is_mount=True)``, older Starlette): the prefix is what the unmodified
  ``raw_path`` has in front of ``path``. Litestar also appends a slash to that rest, which is
  dropped again when ``raw_path`` has none.

``rebase`` does that once, at the outermost layer of the embedded app, and records the
prefix, percent-encoded for URLs, under ``SCOPE_KEY``; ``prefix_of`` reads it where URLs
are built. A scope that never went through ``rebase`` (``tusserver serve``) has no prefix.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from starlette.types import Scope

SCOPE_KEY = "tusserver.mount_prefix"
# What may stay as it is in a URL path (RFC 3986 pchar and "/"); everything else, controls
# and spaces above all, is percent-encoded before it goes into a Location header.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def prefix_of(scope: Scope) -> str:
    """The mount prefix as it goes into URLs (``""`` or ``/uploads``, percent-encoded, never
    a trailing slash)."""
    prefix = scope.get(SCOPE_KEY, "")
    return prefix if isinstance(prefix, str) else ""


def split(scope: Scope) -> tuple[str, str]:
    """``(prefix, path below it)`` for a request the host routed to us."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "") or ""
    root = root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return root, path[len(root) :] or "/"
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):
        return root, path
    # As the ASGI server decoded ``path`` from it (uvicorn: percent-decoding of ASCII).
    full = unquote(raw.decode("latin-1").partition("?")[0])
    if full.endswith(path):
        return full[: len(full) - len(path)].rstrip("/"), path
    trimmed = path[:-1]
    if path.endswith("/") and trimmed and full.endswith(trimmed):
        return full[: len(full) - len(trimmed)].rstrip("/"), trimmed
    # Not a suffix (the host normalised the path some other way): trust root_path alone.
    return root, path


def rebase(scope: Scope) -> Scope:
    """A copy of ``scope`` as if we were the top-level app, with the prefix recorded."""
    prefix, path = split(scope)
    rebased = dict(scope)
    rebased["path"] = path
    rebased["raw_path"] = _raw_below(scope.get("raw_path"), prefix, path)
    rebased["root_path"] = ""
    rebased[SCOPE_KEY] = quote(prefix, safe=_PATH_SAFE)
    return rebased


def _raw_below(raw: object, prefix: str, path: str) -> bytes:
    if isinstance(raw, bytes):
        encoded = prefix.encode("utf-8")
        if prefix and raw.startswith(encoded):
            return raw[len(encoded) :]
    return path.encode("utf-8")
